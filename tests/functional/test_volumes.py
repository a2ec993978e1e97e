# SPDX-License-Identifier: Apache-2.0
"""Volume XML from a connection_info, against libvirt's schema, its test driver and QEMU.

The connection_info is built as the volume service's RBD driver builds it,
from the admin CLI's ``ceph mon dump`` (the legacy ``addr`` of each monitor,
host and port as strings), for a volume the admin CLI created. The XML is
validated inside a domain with ``virt-xml-validate`` and defined on
``test:///default``; QEMU then reads the volume through the ``<source>`` and
``<host>`` elements of the XML alone (``conf=/dev/null``), as the test user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import exception, volumes
from rbd_driver.storage import convert
from rbd_driver.testing.local_cluster import ClusterState

libvirt = pytest.importorskip("libvirt")

SECRET_UUID = "6e9c0f40-8c1f-4e57-9d3b-2f1f3c0f5a11"
EXAMPLE = Path(__file__).resolve().parents[2] / "doc/source/examples/volume_attach.py"
VOLUME_SIZE = 16 << 20


def _domain(disk_xml: str, name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>128</memory>"
            "<os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{disk_xml}</devices></domain>")


def _validate(tmp_path: Path, xml: str) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), "domain"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{xml}"


def _admin(ceph_cluster: ClusterState, tool: str, *args: str) -> str:
    proc = subprocess.run([tool, "-c", ceph_cluster.conf_path, *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{tool} {args}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def volume(ceph_cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, Path]]:
    """A volume in pool ``rbd`` that the admin CLI imported; yield (pool/name, its data)."""
    name = f"volume-{uuid.uuid4()}"
    data = tmp_path_factory.mktemp("volume") / "volume.raw"
    with open(data, "wb") as f:
        f.truncate(VOLUME_SIZE)
        f.write(b"volume data\n" * 4096)
        f.seek(VOLUME_SIZE - 512)
        f.write(b"end" * 100)
    _admin(ceph_cluster, "rbd", "import", str(data), f"rbd/{name}")
    yield f"rbd/{name}", data
    _admin(ceph_cluster, "rbd", "rm", "--no-progress", f"rbd/{name}")


@pytest.fixture(scope="module")
def mon_hosts(ceph_cluster: ClusterState) -> tuple[list[str], list[str]]:
    """hosts and ports as the volume service derives them from ``ceph mon dump``."""
    dump = json.loads(_admin(ceph_cluster, "ceph", "mon", "dump", "--format", "json"))
    hosts, ports = [], []
    for mon in dump["mons"]:
        host, port = mon["addr"].split("/", 1)[0].rsplit(":", 1)
        hosts.append(host.strip("[]"))
        ports.append(port)
    return hosts, ports


def _connection_info(name: str, mon_hosts: tuple[list[str], list[str]], user: str,
                     auth: bool, mode: str) -> dict[str, Any]:
    hosts, ports = mon_hosts
    return {"driver_volume_type": "rbd", "serial": name.split("/", 1)[1],
            "data": {"name": name, "hosts": hosts, "ports": ports, "cluster_name": "ceph",
                     "auth_enabled": auth, "auth_username": user if auth else None,
                     "secret_type": "ceph", "secret_uuid": SECRET_UUID if auth else None,
                     "volume_id": name.split("/", 1)[1], "discard": True, "keyring": None,
                     "access_mode": mode,
                     "qos_specs": {"total_bytes_sec": "10485760", "read_iops_sec": "500"}}}


@pytest.fixture
def conn() -> Iterator[Any]:
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


def _qemu_spec(disk: ET.Element, user: str, keyring: str) -> str:
    """An ``rbd:`` spec from the XML's source and hosts only (no ceph.conf)."""
    source = disk.find("source")
    assert source is not None
    hosts = ",".join(f"{h.get('name')}:{h.get('port')}" for h in source.findall("host"))
    esc = convert.qemu_escape
    return (f"rbd:{source.get('name')}:id={esc(user)}:keyring={esc(keyring)}"
            f":mon_host={esc(hosts)}:conf=/dev/null")


@pytest.mark.parametrize("mode", ["rw", "ro"])
@pytest.mark.parametrize("auth", [True, False], ids=["auth", "no-auth"])
def test_volume_xml_validates_defines_and_reaches_the_volume(
        auth, mode, volume, mon_hosts, ceph_cluster, conn, tmp_path) -> None:
    name, data = volume
    info = _connection_info(name, mon_hosts, ceph_cluster.user, auth, mode)
    xml = volumes.volume_disk_xml(info, target_dev="vdb", target_bus="virtio")
    domain_xml = _domain(xml, f"rbd-driver-volume-{uuid.uuid4().hex[:6]}")
    _validate(tmp_path, domain_xml)
    dom = conn.defineXML(domain_xml)
    try:
        disk = ET.fromstring(dom.XMLDesc(0)).find("devices/disk")
    finally:
        dom.undefine()
    assert disk is not None and disk.get("type") == "network"
    assert disk.find("source").get("name") == name
    assert [(h.get("name"), h.get("port")) for h in disk.iter("host")] == list(zip(*mon_hosts, strict=True))
    assert (disk.find("readonly") is not None) == (mode == "ro")
    if auth:
        assert disk.find("auth").get("username") == ceph_cluster.user
        assert disk.find("auth/secret").attrib == {"type": "ceph", "uuid": SECRET_UUID}
    else:
        assert disk.find("auth") is None
    assert disk.find("driver").get("discard") == "unmap"
    assert disk.findtext("iotune/total_bytes_sec") == "10485760"
    assert disk.findtext("serial") == name.split("/", 1)[1]
    # QEMU, given only what the XML says, reads the admin-imported bytes.
    spec = _qemu_spec(disk, ceph_cluster.user, ceph_cluster.user_keyring)
    proc = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(data), spec],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_connection_info_is_refused_before_libvirt_sees_it(volume, mon_hosts,
                                                               ceph_cluster) -> None:
    info = _connection_info(volume[0], mon_hosts, ceph_cluster.user, True, "rw")
    info["data"]["hosts"] = [f"{h}:{p}" for h, p in zip(*mon_hosts, strict=True)]
    with pytest.raises(exception.InvalidConnectionInfo) as err:
        volumes.volume_disk_xml(info)
    assert "data['hosts'][0]" in str(err.value)


def test_docs_example_prints_xml_that_validates(volume, mon_hosts, ceph_cluster,
                                                tmp_path) -> None:
    for args in ([], ["real"]):
        if args:
            path = tmp_path / "connection_info.json"
            path.write_text(json.dumps(_connection_info(volume[0], mon_hosts,
                                                        ceph_cluster.user, True, "ro")))
            args = [str(path)]
        proc = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "refused:" in proc.stderr and "data['name']" in proc.stderr
        disk = ET.fromstring(proc.stdout)
        assert disk.get("type") == "network" and disk.find("auth/secret") is not None
        _validate(tmp_path, _domain(proc.stdout, f"rbd-driver-example-{uuid.uuid4().hex[:6]}"))
