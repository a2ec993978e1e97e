# SPDX-License-Identifier: Apache-2.0
"""Attach a volume the volume service created: its connection_info to libvirt <disk> XML.

Run it as::

    python volume_attach.py [CONNECTION_INFO.json]

Without an argument it uses the connection_info below, shaped as the volume
service's RBD driver returns it. No cluster is needed for userspace access:
the XML only names the volume, its monitors and the libvirt secret.
"""

import json
import sys

from rbd_driver import exception, volumes

CONNECTION_INFO = {
    "driver_volume_type": "rbd",
    "serial": "0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001",  # the compute side sets it
    "data": {
        "name": "volumes/volume-0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001",
        "hosts": ["192.0.2.1", "192.0.2.2", "2001:db8::3"],
        "ports": ["6789", "6789", "6789"],
        "cluster_name": "ceph",
        "auth_enabled": True,
        "auth_username": "cinder",
        "secret_type": "ceph",
        "secret_uuid": "6e9c0f40-8c1f-4e57-9d3b-2f1f3c0f5a11",
        "volume_id": "0b6d3f86-7d5e-4c39-9d0b-3c7b86b1a001",
        "discard": True,
        "access_mode": "rw",
        "qos_specs": {"total_bytes_sec": "104857600", "read_iops_sec": "2000"},
    },
}


def main(path: str | None = None) -> None:
    connection_info = CONNECTION_INFO
    if path:
        with open(path, encoding="utf-8") as f:
            connection_info = json.load(f)
    # With a conf whose [rbd] access is kernelspace, pass conf=conf: the volume
    # is then mapped through krbd and a <disk type='block'> comes back.
    print(volumes.volume_disk_xml(connection_info, target_dev="vdb", target_bus="virtio"))

    # Bad input is refused before anything is attached, naming the key.
    broken = {**connection_info, "data": {**connection_info["data"], "name": "no-pool"}}
    try:
        volumes.volume_disk_xml(broken)
    except exception.InvalidConnectionInfo as err:
        print("refused:", err, file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:2])
