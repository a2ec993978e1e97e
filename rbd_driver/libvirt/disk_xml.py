# SPDX-License-Identifier: Apache-2.0
"""libvirt ``<disk>`` XML for RBD disks.

Userspace access is a ``<disk type='network'>`` with protocol ``rbd``: QEMU
opens the image itself through librbd, authenticating with the libvirt
secret named in ``<auth>``, so the key never appears in the XML or on QEMU's
command line. Kernelspace access is a ``<disk type='block'>`` on the mapped
``/dev/rbdN`` device.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DETECT_ZEROES_MODES", "DISCARD_MODES", "IOTUNE_KEYS", "block_disk_xml", "file_disk_xml",
           "network_disk_xml"]


#: The ``<iotune>`` limits libvirt knows, in the order its schema lists them.
IOTUNE_KEYS = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
    "total_bytes_sec_max", "read_bytes_sec_max", "write_bytes_sec_max",
    "total_iops_sec_max", "read_iops_sec_max", "write_iops_sec_max",
    "size_iops_sec",
)
DISCARD_MODES = ("unmap", "ignore")
DETECT_ZEROES_MODES = ("off", "on", "unmap")


def _disk(kind: str, device: str, driver_format: str, cache_mode: str,
          discard: str | None = None, detect_zeroes: str | None = None) -> ET.Element:
    disk = ET.Element("disk", type=kind, device=device)
    driver = ET.SubElement(disk, "driver", name="qemu", type=driver_format, cache=cache_mode)
    if discard:
        if discard not in DISCARD_MODES:
            raise ValueError(f"discard must be one of {DISCARD_MODES}, not {discard!r}")
        driver.set("discard", discard)
    if detect_zeroes:
        if detect_zeroes not in DETECT_ZEROES_MODES:
            raise ValueError(f"detect_zeroes must be one of {DETECT_ZEROES_MODES}, "
                             f"not {detect_zeroes!r}")
        driver.set("detect_zeroes", detect_zeroes)
    return disk


def _iotune(disk: ET.Element, iotune: Mapping[str, int] | None) -> None:
    """Add ``<iotune>`` with the non-zero limits of ``iotune`` (see IOTUNE_KEYS)."""
    if not iotune:
        return
    unknown = set(iotune) - set(IOTUNE_KEYS)
    if unknown:
        raise ValueError(f"unknown iotune limits: {', '.join(sorted(unknown))}")
    limits = [(key, int(iotune[key])) for key in IOTUNE_KEYS if iotune.get(key)]
    if any(value < 0 for _, value in limits):
        raise ValueError("iotune limits must not be negative")
    if limits:
        element = ET.SubElement(disk, "iotune")
        for key, value in limits:
            ET.SubElement(element, key).text = str(value)


def _finish(disk: ET.Element, target_dev: str, target_bus: str, boot_order: str | None,
            readonly: bool, serial: str | None,
            iotune: Mapping[str, int] | None = None) -> str:
    ET.SubElement(disk, "target", dev=target_dev, bus=target_bus)
    _iotune(disk, iotune)
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
    discard: str | None = None,
    iotune: Mapping[str, int] | None = None,
    detect_zeroes: str | None = None,
    encryption: Any = None,
) -> str:
    """Return userspace ``<disk type='network'>`` XML for ``pool/image``.

    With ``encryption`` (a :class:`rbd_driver.encryption.DiskEncryption`), the
    source gets ``<encryption engine='librbd' format='luks2|luks'>`` naming
    the passphrase secret by UUID: QEMU's rbd driver opens the LUKS image
    through librbd with that secret's value.

    Every monitor in ``hosts`` gets a ``<host>`` element (IPv6 without
    brackets, as libvirt expects). ``<auth>`` is added when both ``user`` and
    ``secret_uuid`` are given. ``discard`` (``unmap`` or ``ignore``) and
    ``iotune`` (limits named as in :data:`IOTUNE_KEYS`; zero means none)
    and ``detect_zeroes`` (``off``, ``on``, ``unmap``) apply to every kind of disk.

    :raises ValueError: an unknown discard mode or iotune limit.
    """
    disk = _disk("network", device, driver_format, cache_mode, discard, detect_zeroes)
    source = ET.SubElement(disk, "source", protocol="rbd", name=f"{pool}/{image}")
    for host, port in hosts:
        ET.SubElement(source, "host", name=host.strip("[]"), port=str(port))
    if user and secret_uuid:
        auth = ET.SubElement(disk, "auth", username=user)
        ET.SubElement(auth, "secret", type="ceph", uuid=secret_uuid)
    if encryption is not None:
        crypt = ET.SubElement(source, "encryption", engine="librbd",
                              format=_LIBVIRT_LUKS[encryption.format])
        ET.SubElement(crypt, "secret", type="passphrase", uuid=encryption.secret_uuid)
    return _finish(disk, target_dev, target_bus, boot_order, readonly, serial, iotune)


# libvirt names LUKS1 plain ``luks``.
_LIBVIRT_LUKS = {"luks1": "luks", "luks2": "luks2"}


def block_disk_xml(
    device_path: str,
    target_dev: str = "vda",
    target_bus: str = "virtio",
    device: str = "disk",
    cache_mode: str = "none",
    boot_order: str | None = None,
    readonly: bool = False,
    serial: str | None = None,
    discard: str | None = None,
    iotune: Mapping[str, int] | None = None,
    detect_zeroes: str | None = None,
) -> str:
    """Return kernelspace ``<disk type='block'>`` XML for a mapped ``/dev/rbdN``."""
    disk = _disk("block", device, "raw", cache_mode, discard, detect_zeroes)
    ET.SubElement(disk, "source", dev=device_path)
    return _finish(disk, target_dev, target_bus, boot_order, readonly, serial, iotune)


def file_disk_xml(
    path: str,
    target_dev: str = "vda",
    target_bus: str = "virtio",
    device: str = "disk",
    cache_mode: str = "none",
    boot_order: str | None = None,
    readonly: bool = False,
    serial: str | None = None,
    discard: str | None = None,
    iotune: Mapping[str, int] | None = None,
    detect_zeroes: str | None = None,
) -> str:
    """Return ``<disk type='file'>`` XML for a raw file on local disk."""
    disk = _disk("file", device, "raw", cache_mode, discard, detect_zeroes)
    ET.SubElement(disk, "source", file=path)
    return _finish(disk, target_dev, target_bus, boot_order, readonly, serial, iotune)
