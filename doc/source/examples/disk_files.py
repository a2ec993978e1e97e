# SPDX-License-Identifier: Apache-2.0
"""A disk to a file and a file to a disk: image uploads, config drives, live migration.

Run it against any cluster (for example a dev cluster)::

    python disk_files.py CEPH_CONF USER KEYRING CONFIG_ISO WORKDIR

It makes a small disk, exports a snapshot of it to WORKDIR as raw and as
qcow2 (what an image upload needs when the image store is not RBD), imports
CONFIG_ISO as the instance's config drive, and removes the instance's disks.
"""

import os
import sys
import uuid

from oslo_config import cfg

import rbd_driver
from rbd_driver import exception, imagebackend


def main(ceph_conf: str, user: str, keyring: str, config_iso: str, workdir: str) -> None:
    conf = cfg.ConfigOpts()
    rbd_driver.register_opts(conf)
    conf([], project="my-compute-agent", default_config_files=[])
    conf.set_override("ceph_conf", ceph_conf, group="rbd")
    conf.set_override("user", user, group="rbd")
    conf.set_override("keyring", keyring, group="rbd")
    conf.set_override("pool", "vms", group="rbd")
    instance = str(uuid.uuid4())

    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(instance, "disk", image_type="rbd")
        print("shared block storage:", disk.is_shared_block_storage())

        base = os.path.join(workdir, "base.raw")  # stands in for a downloaded image
        with open(base, "wb") as f:
            f.truncate(32 << 20)
            f.write(b"a raw image\n" * 1000)
        disk.create_image(lambda target: None, base, None)

        # A consistent copy: snapshot, export the snapshot, drop the snapshot.
        disk.create_snap("upload")
        try:
            for out_format in ("raw", "qcow2"):
                target = os.path.join(workdir, f"upload.{out_format}")
                disk.snapshot_extract(target, out_format, snapshot="upload")
                print(f"extracted {out_format}: {target} ({os.path.getsize(target)} bytes)")
        finally:
            disk.remove_snap("upload")
        try:
            disk.snapshot_extract(os.path.join(workdir, "upload.vmdk"), "vmdk")
        except exception.UnsupportedFormat as err:
            print("refused:", err)

        config = backend.by_name(instance, "disk.config", image_type="rbd")
        config.import_file(config_iso)
        print(f"imported {config.path}: {config.get_disk_size()} bytes")
        try:
            config.import_file(config_iso)
        except exception.ImageExists as err:
            print("refused:", err)

        report = backend.backend("rbd").cleanup_instance(conf, instance,
                                                         driver=backend.driver("rbd"))
        print("removed", sorted(report.removed), "failed", report.failed)
        if not report.ok:
            sys.exit(1)


if __name__ == "__main__":
    main(*sys.argv[1:6])
