# SPDX-License-Identifier: Apache-2.0
"""``rbd_driver.testing.migration.destination_xml``: what the destination is given.

The source domain's XML is made by the hypervisor fixture's own
``domain_xml`` with a disk that libvirt gave a PCI address and an alias; the
destination's disk XML (another monitor list) must replace it, keeping the
address and alias, and the kernel, initramfs and console must move to the
destination's directory.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from rbd_driver.testing.guest import GuestImage
from rbd_driver.testing.hypervisor import Guest, domain_xml
from rbd_driver.testing.migration import destination_xml

OLD_DISK = ("<disk type='network' device='disk'><source protocol='rbd' name='vms/x_disk'>"
            "<host name='127.0.0.1' port='6789'/></source><target dev='vda' bus='virtio'/>"
            "<alias name='virtio-disk0'/>"
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>")
NEW_DISK = ("<disk type='network' device='disk'><source protocol='rbd' name='vms/x_disk'>"
            "<host name='127.0.0.1' port='6789'/><host name='127.0.0.1' port='7000'/></source>"
            "<target dev='vda' bus='virtio'/></disk>")


class FakeDomain:
    def __init__(self, xml: str) -> None:
        self.xml = xml

    def name(self) -> str:
        return "guest-1"

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802 (libvirt's name)
        return self.xml


class FakeHypervisor:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def install(self, image: GuestImage) -> GuestImage:
        return GuestImage(os.path.join(self.directory, "kernel"),
                          os.path.join(self.directory, "initramfs.cpio"), image.version)


def test_destination_gets_its_disks_paths_and_keeps_the_guests_hardware(tmp_path: Any) -> None:
    image = GuestImage("/src/kernel", "/src/initramfs.cpio", "6.1")
    source = domain_xml("guest-1", image, [OLD_DISK], "console=ttyS0", "/src/guest-1.console")
    guest = Guest(FakeDomain(source), "/src/guest-1.console")
    xml, console = destination_xml(guest, FakeHypervisor(str(tmp_path)), image,  # type: ignore[arg-type]
                                   [NEW_DISK])
    domain = ET.fromstring(xml)
    assert console.startswith(str(tmp_path / "guests" / "guest-1-"))
    assert domain.findtext("./os/kernel") == str(tmp_path / "kernel")
    assert domain.findtext("./os/initrd") == str(tmp_path / "initramfs.cpio")
    assert [s.get("path") for s in domain.findall("./devices/serial/source")] == [console]
    [disk] = domain.findall("./devices/disk")
    assert [h.get("port") for h in disk.findall("./source/host")] == ["6789", "7000"]
    assert disk.find("alias").get("name") == "virtio-disk0"  # type: ignore[union-attr]
    assert disk.find("address").get("slot") == "0x04"  # type: ignore[union-attr]


def test_a_disk_the_guest_does_not_have_is_an_error(tmp_path: Any) -> None:
    image = GuestImage("/src/kernel", "/src/initramfs.cpio", "6.1")
    source = domain_xml("guest-1", image, [OLD_DISK], "console=ttyS0", "/src/c")
    guest = Guest(FakeDomain(source), "/src/c")
    with pytest.raises(ValueError, match="no disk vdb"):
        destination_xml(guest, FakeHypervisor(str(tmp_path)), image,  # type: ignore[arg-type]
                        [NEW_DISK.replace("dev='vda'", "dev='vdb'")])
