# SPDX-License-Identifier: Apache-2.0
"""Disk XML against libvirt's own schema and its test driver, with the real monitors.

Every kind of ``<disk>`` rbd_driver generates (userspace network rbd, with
and without ``<auth>``, kernelspace block, and what the Rbd backend's
``libvirt_info`` returns) is put inside a domain, validated with
``virt-xml-validate`` and defined on ``test:///default``.
"""

from __future__ import annotations

import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbd_driver import imagebackend
from rbd_driver.encryption import DiskEncryption
from rbd_driver.libvirt import disk_xml
from rbd_driver.libvirt import secret as libvirt_secret
from rbd_driver.storage.monitors import MonitorCache
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rbd_utils import MonitorAddress
from rbd_driver.testing.local_cluster import ClusterState

SECRET_UUID = "6e9c0f40-8c1f-4e57-9d3b-2f1f3c0f5a11"
PASSPHRASE_UUID = "0b7c7a52-5f0e-4a51-8f5e-6d1c2b3a4f50"
IPV6_MONITORS = [MonitorAddress("a", ("2001:db8::1", 6789), ("2001:db8::1", 3300)),
                 MonitorAddress("b", ("192.0.2.10", 6789), None)]


def _domain(disk_xml: str, name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>128</memory>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{disk_xml}</devices></domain>")


def _validate(tmp_path: Path, xml: str, schema: str) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), schema],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{xml}"


@pytest.fixture(scope="module")
def monitors(ceph_cluster: ClusterState) -> list[MonitorAddress]:
    with RadosClient(ceph_cluster.conf_path, ceph_cluster.user,
                     ceph_cluster.user_keyring) as client:
        return MonitorCache(client).get()


@pytest.fixture
def conn() -> Iterator[object]:
    # Only the tests that define a domain need the bindings: the others
    # validate with virt-xml-validate or read the cluster.
    libvirt = pytest.importorskip("libvirt")
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


def _disks(monitors: list[MonitorAddress]) -> dict[str, str]:
    hosts = [m.preferred for m in monitors]
    return {
        "userspace": disk_xml.network_disk_xml("vms", "inst_disk", hosts),
        "userspace-auth": disk_xml.network_disk_xml(
            "vms", "inst_disk", hosts, user="compute", secret_uuid=SECRET_UUID,
            target_dev="vdb", serial="inst-disk", discard="unmap",
            iotune={"total_bytes_sec": 10 << 20, "read_iops_sec": 500}),
        "userspace-ipv6": disk_xml.network_disk_xml(
            "vms", "inst_disk", [m.preferred for m in IPV6_MONITORS], user="compute",
            secret_uuid=SECRET_UUID, readonly=True, device="cdrom", target_dev="sda",
            target_bus="scsi"),
        "userspace-encrypted": disk_xml.network_disk_xml(
            "vms", "inst_disk", hosts, user="compute", secret_uuid=SECRET_UUID,
            encryption=DiskEncryption("luks2", PASSPHRASE_UUID)),
        "userspace-encrypted-luks1": disk_xml.network_disk_xml(
            "vms", "inst_disk", hosts, encryption=DiskEncryption("luks1", PASSPHRASE_UUID)),
        "kernelspace": disk_xml.block_disk_xml("/dev/rbd0", boot_order="1",
                                                     discard="unmap"),
        "kernelspace-readonly": disk_xml.block_disk_xml(
            "/dev/rbd3", target_dev="vdc", readonly=True, iotune={"write_bytes_sec": 1 << 20}),
    }


def test_monitors_come_from_mon_dump(monitors, ceph_cluster) -> None:
    # ceph.conf says mon host = [v2:127.0.0.1:P2,v1:127.0.0.1:P1]
    mon_addr = ceph_cluster.mon_addr
    assert len(monitors) == 1
    mon = monitors[0]
    assert mon.v1 is not None and mon.v2 is not None
    assert f"v1:127.0.0.1:{mon.v1[1]}" in mon_addr and f"v2:127.0.0.1:{mon.v2[1]}" in mon_addr


@pytest.mark.parametrize("kind", list(_disks(IPV6_MONITORS)))
def test_every_disk_xml_validates_and_the_test_driver_accepts_it(
        kind, monitors, conn, tmp_path) -> None:
    disk_xml = _disks(monitors)[kind]
    name = f"rbd-driver-{kind}-{uuid.uuid4().hex[:6]}"
    domain_xml = _domain(disk_xml, name)
    _validate(tmp_path, domain_xml, "domain")
    dom = conn.defineXML(domain_xml)
    try:
        disk = ET.fromstring(dom.XMLDesc(0)).find("devices/disk")
        assert disk is not None
        ours = ET.fromstring(disk_xml)
        assert disk.get("type") == ours.get("type")
        source, expected = disk.find("source"), ours.find("source")
        assert source is not None and expected is not None
        assert source.attrib == expected.attrib
        hosts = [(h.get("name"), h.get("port")) for h in source.findall("host")]
        assert hosts == [(h.get("name"), h.get("port")) for h in expected.findall("host")]
        assert all(name and "[" not in name for name, _ in hosts)
        secret = disk.find("auth/secret")
        if ours.find("auth") is not None:
            assert secret is not None and secret.get("uuid") == SECRET_UUID
            assert secret.get("type") == "ceph"
        else:
            assert secret is None
        crypt, wanted = source.find("encryption"), expected.find("encryption")
        if wanted is not None:  # libvirt kept engine, format and the passphrase secret
            assert crypt is not None and crypt.attrib == wanted.attrib
            assert crypt.find("secret").attrib == {"type": "passphrase",  # type: ignore[union-attr]
                                                   "uuid": PASSPHRASE_UUID}
        else:
            assert crypt is None
    finally:
        dom.undefine()


def test_userspace_xml_lists_every_monitor_bare(monitors) -> None:
    xml = _disks(monitors)["userspace-ipv6"]
    names = [h.get("name") for h in ET.fromstring(xml).iter("host")]
    assert names == ["2001:db8::1", "192.0.2.10"]


def test_backend_libvirt_info_validates(backend: imagebackend.Backend, tmp_path, conn) -> None:
    disk = backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
    xml = disk.libvirt_info()
    domain_xml = _domain(xml, f"rbd-driver-backend-{uuid.uuid4().hex[:6]}")
    _validate(tmp_path, domain_xml, "domain")
    conn.defineXML(domain_xml).undefine()


def test_passphrase_secret_xml_validates(tmp_path) -> None:
    from rbd_driver.libvirt.passphrase import passphrase_secret_xml

    _validate(tmp_path, passphrase_secret_xml(PASSPHRASE_UUID), "secret")


def test_secret_xml_validates(tmp_path) -> None:
    _validate(tmp_path, libvirt_secret.secret_xml("compute", SECRET_UUID), "secret")
    _validate(tmp_path, libvirt_secret.secret_xml("compute"), "secret")
