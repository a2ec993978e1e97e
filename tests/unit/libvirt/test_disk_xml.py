# SPDX-License-Identifier: Apache-2.0
"""libvirt <disk> XML builders (unit level; schema and test-driver checks are functional)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from rbd_driver.libvirt import disk_xml

HOSTS = [("10.0.0.1", 6789), ("[2001:db8::1]", 6789), ("2001:db8::2", 3300)]
UUID = "6e9c0f40-8c1f-4e57-9d3b-2f1f3c0f5a11"


def test_network_disk_lists_every_monitor_bare_with_auth() -> None:
    disk = ET.fromstring(disk_xml.network_disk_xml("vms", "i_disk", HOSTS, user="compute",
                                                         secret_uuid=UUID))
    assert disk.attrib == {"type": "network", "device": "disk"}
    source = disk.find("source")
    assert source is not None and source.attrib == {"protocol": "rbd", "name": "vms/i_disk"}
    assert [(h.get("name"), h.get("port")) for h in source.findall("host")] == [
        ("10.0.0.1", "6789"), ("2001:db8::1", "6789"), ("2001:db8::2", "3300")]
    auth = disk.find("auth")
    assert auth is not None and auth.get("username") == "compute"
    assert auth.find("secret").attrib == {"type": "ceph", "uuid": UUID}  # type: ignore[union-attr]


@pytest.mark.parametrize("user,secret", [(None, UUID), ("compute", None), (None, None)])
def test_no_auth_without_both_user_and_secret(user, secret) -> None:
    xml = disk_xml.network_disk_xml("vms", "d", HOSTS, user=user, secret_uuid=secret)
    assert ET.fromstring(xml).find("auth") is None


def test_block_disk_for_kernelspace() -> None:
    disk = ET.fromstring(disk_xml.block_disk_xml("/dev/rbd3", readonly=True, serial="s1"))
    assert disk.get("type") == "block"
    assert disk.find("source").attrib == {"dev": "/dev/rbd3"}  # type: ignore[union-attr]
    assert disk.find("readonly") is not None and disk.findtext("serial") == "s1"


def test_discard_and_iotune_on_every_kind() -> None:
    iotune = {"total_bytes_sec": 1000, "read_iops_sec": 0, "write_iops_sec": 50}
    for xml in (disk_xml.network_disk_xml("vms", "d", HOSTS, discard="unmap", iotune=iotune),
                disk_xml.block_disk_xml("/dev/rbd0", discard="unmap", iotune=iotune),
                disk_xml.file_disk_xml("/x", discard="unmap", iotune=iotune)):
        disk = ET.fromstring(xml)
        assert disk.find("driver").get("discard") == "unmap"  # type: ignore[union-attr]
        element = disk.find("iotune")
        assert element is not None
        assert [(e.tag, e.text) for e in element] == [("total_bytes_sec", "1000"),
                                                      ("write_iops_sec", "50")]


def test_no_iotune_element_when_every_limit_is_zero() -> None:
    xml = disk_xml.block_disk_xml("/dev/rbd0", iotune={"total_iops_sec": 0})
    assert ET.fromstring(xml).find("iotune") is None


@pytest.mark.parametrize("kwargs", [{"discard": "trim"}, {"iotune": {"bogus": 1}},
                                    {"iotune": {"total_bytes_sec": -1}}])
def test_bad_discard_or_iotune_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        disk_xml.block_disk_xml("/dev/rbd0", **kwargs)
