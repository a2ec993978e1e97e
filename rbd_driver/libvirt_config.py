"""libvirt ``<disk>`` XML for RBD disks.

Userspace access is a ``<disk type='network'>`` with protocol ``rbd``: QEMU
opens the image itself through librbd, authenticating with the libvirt
secret named in ``<auth>``, so the key never appears in the XML or on QEMU's
command line. Kernelspace access is a ``<disk type='block'>`` on the mapped
``/dev/rbdN`` device.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

__all__ = ["block_disk_xml", "file_disk_xml", "network_disk_xml"]


def _disk(kind: str, device: str, driver_format: str, cache_mode: str) -> ET.Element:
    disk = ET.Element("disk", type=kind, device=device)
    ET.SubElement(disk, "driver", name="qemu", type=driver_format, cache=cache_mode)
    return disk


def _finish(disk: ET.Element, target_dev: str, target_bus: str, boot_order: str | None,
            readonly: bool, serial: str | None) -> str:
    ET.SubElement(disk, "target", dev=target_dev, bus=target_bus)
    if boot_order:
        ET.SubElement(disk, "boot", order=str(boot_order))
    if readonly:
        ET.SubElement(disk, "readonly")
    if serial:
        ET.SubElement(disk, "serial").text = serial
    return ET.tostring(disk, encoding="unicode")


def network_disk_xml(
    pool: str,
    image: str,
    hosts: Sequence[tuple[str, int]],
    user: str | None = None,
    secret_uuid: str | None = None,
    target_dev: str = "vda",
    target_bus: str = "virtio",
    device: str = "disk",
    cache_mode: str = "none",
    boot_order: str | None = None,
    driver_format: str = "raw",
    readonly: bool = False,
    serial: str | None = None,
) -> str:
    """Return userspace ``<disk type='network'>`` XML for ``pool/image``.

    Every monitor in ``hosts`` gets a ``<host>`` element (IPv6 without
    brackets, as libvirt expects). ``<auth>`` is added when both ``user`` and
    ``secret_uuid`` are given.
    """
    disk = _disk("network", device, driver_format, cache_mode)
    source = ET.SubElement(disk, "source", protocol="rbd", name=f"{pool}/{image}")
    for host, port in hosts:
        ET.SubElement(source, "host", name=host.strip("[]"), port=str(port))
    if user and secret_uuid:
        auth = ET.SubElement(disk, "auth", username=user)
        ET.SubElement(auth, "secret", type="ceph", uuid=secret_uuid)
    return _finish(disk, target_dev, target_bus, boot_order, readonly, serial)


def block_disk_xml(
    device_path: str,
    target_dev: str = "vda",
    target_bus: str = "virtio",
    device: str = "disk",
    cache_mode: str = "none",
    boot_order: str | None = None,
    readonly: bool = False,
    serial: str | None = None,
) -> str:
    """Return kernelspace ``<disk type='block'>`` XML for a mapped ``/dev/rbdN``."""
    disk = _disk("block", device, "raw", cache_mode)
    ET.SubElement(disk, "source", dev=device_path)
    return _finish(disk, target_dev, target_bus, boot_order, readonly, serial)


def file_disk_xml(
    path: str,
    target_dev: str = "vda",
    target_bus: str = "virtio",
    device: str = "disk",
    cache_mode: str = "none",
    boot_order: str | None = None,
    readonly: bool = False,
    serial: str | None = None,
) -> str:
    """Return ``<disk type='file'>`` XML for a raw file on local disk."""
    disk = _disk("file", device, "raw", cache_mode)
    ET.SubElement(disk, "source", file=path)
    return _finish(disk, target_dev, target_bus, boot_order, readonly, serial)
