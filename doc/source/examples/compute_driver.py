# SPDX-License-Identifier: Apache-2.0
"""A minimal compute driver using rbd_driver: launch, inspect and clean up a disk.

Run it against any cluster (for example a dev cluster)::

    python compute_driver.py CEPH_CONF USER KEYRING IMAGE_URL

IMAGE_URL is the ``rbd://fsid/pool/image/snap`` location of a raw golden
image. The disk is cloned when the location qualifies, and copied from a
local download otherwise.
"""

import sys
import uuid

from oslo_config import cfg

import rbd_driver
from rbd_driver import exception, imagebackend


def main(ceph_conf: str, user: str, keyring: str, image_url: str) -> None:
    conf = cfg.ConfigOpts()
    rbd_driver.register_opts(conf)  # on our own conf, never a global
    conf([], project="my-compute-agent", default_config_files=[])
    conf.set_override("ceph_conf", ceph_conf, group="rbd")
    conf.set_override("user", user, group="rbd")
    conf.set_override("keyring", keyring, group="rbd")
    conf.set_override("pool", "vms", group="rbd")

    instance = str(uuid.uuid4())
    image_meta = {"disk_format": "raw"}
    locations = [{"url": image_url, "metadata": {}}]

    with imagebackend.Backend(conf) as backend:  # one connection, shared by all disks
        disk = backend.by_name(instance, "disk", image_type="rbd")
        try:
            disk.direct_fetch("golden", image_meta, locations)
            how = "cloned"
        except exception.ImageUnacceptable as err:
            print("cannot clone:", err)

            def download(target: str) -> None:
                # Your image service client goes here; it must leave a raw file.
                with open(target, "wb") as f:
                    f.truncate(64 << 20)

            disk.create_image(download, f"/tmp/{instance}.base", None)
            how = "copied"
        disk.resize_image(2 * disk.get_disk_size())
        print(f"{how} {disk.path}: {disk.get_disk_size()} bytes, parent {disk.parent_info()}")
        print(disk.libvirt_info({"dev": "vda", "bus": "virtio"}))

        report = backend.backend("rbd").cleanup_instance(conf, instance,
                                                         driver=backend.driver("rbd"))
        print("removed", report.removed, "trashed", report.trashed, "failed", report.failed)
        if not report.ok:
            sys.exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
