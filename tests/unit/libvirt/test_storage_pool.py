# SPDX-License-Identifier: Apache-2.0
"""libvirt's RBD storage pool: its XML (checked by virt-xml-validate) and defining it
on libvirt's test driver (``test:///default``), which keeps pools but has no
secrets: a small stand-in adds those."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from rbd_driver import exception
from rbd_driver.libvirt import storage_pool
from rbd_driver.libvirt.storage_pool import RbdPoolSource

SECRET = "2ec115d7-3a88-3ceb-bc12-0ac909a6fd87"
SOURCE = RbdPoolSource("vms", (("10.0.0.1", 6789), ("2001:db8::2", 6789)), "compute", SECRET)
CEPH = libvirt.VIR_SECRET_USAGE_TYPE_CEPH


def libvirt_error(message: str, code: int) -> libvirt.libvirtError:
    err = libvirt.libvirtError(message)
    err.err = (code, 0, message, 2, "", None, None, 0, 0)
    return err


def validate(xml: str, schema: str, tmp_path: Path) -> None:
    path = tmp_path / f"{schema}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), schema], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class Secret:
    def __init__(self, secret_uuid: str, usage_type: int, usage_id: str) -> None:
        self.uuid, self.type, self.usage = secret_uuid, usage_type, usage_id

    def UUIDString(self) -> str:  # noqa: N802 (libvirt's names)
        return self.uuid

    def usageType(self) -> int:  # noqa: N802
        return self.type

    def usageID(self) -> str:  # noqa: N802
        return self.usage


class FailingStart:
    """A pool whose start fails, as libvirt's rbd backend does when it cannot connect."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    def create(self, flags: int = 0) -> None:
        raise libvirt_error("failed to connect to the RADOS monitor on: 10.0.0.1:6789,", 38)


class Host:
    """``test:///default`` plus ceph secrets; ``fail_start`` makes new pools fail to start."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.secrets: list[Secret] = []
        self.fail_start = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def storagePoolDefineXML(self, xml: str, flags: int = 0) -> Any:  # noqa: N802
        pool = self.conn.storagePoolDefineXML(xml, flags)
        return FailingStart(pool) if self.fail_start else pool

    def secretLookupByUUIDString(self, wanted: str) -> Secret:  # noqa: N802
        for secret in self.secrets:
            if secret.uuid == wanted:
                return secret
        raise libvirt_error(f"Secret not found: no secret with matching uuid '{wanted}'", 66)

    def secretLookupByUsage(self, usage_type: int, usage_id: str) -> Secret:  # noqa: N802
        for secret in self.secrets:
            if (secret.type, secret.usage) == (usage_type, usage_id):
                return secret
        raise libvirt_error(f"Secret not found: no secret with matching usage '{usage_id}'", 66)


@contextlib.contextmanager
def libvirt_test_host() -> Iterator[Host]:
    """A Host on libvirt's test driver; the pools defined meanwhile are removed after."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open("test:///default")
    before = set(conn.listStoragePools() + conn.listDefinedStoragePools())
    try:
        yield Host(conn)
    finally:
        for pool in conn.listAllStoragePools(0):
            if pool.name() not in before:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        conn.close()


@pytest.fixture
def host() -> Iterator[Host]:
    with libvirt_test_host() as made:
        yield made


def _name() -> str:
    return f"rbd-{uuid.uuid4().hex[:8]}"


# -- XML -----------------------------------------------------------------------


def test_pool_xml_names_the_pool_every_monitor_and_the_secret_only(tmp_path) -> None:
    xml = storage_pool.pool_xml("vms-pool", SOURCE)
    validate(xml, "storagepool", tmp_path)
    root = ET.fromstring(xml)
    assert root.get("type") == "rbd" and root.findtext("name") == "vms-pool"
    assert root.findtext("source/name") == "vms"
    assert [(h.get("name"), h.get("port")) for h in root.findall("source/host")] == [
        ("10.0.0.1", "6789"), ("2001:db8::2", "6789")]
    auth = root.find("source/auth")
    assert auth is not None and (auth.get("type"), auth.get("username")) == ("ceph", "compute")
    assert [(s.tag, dict(s.attrib)) for s in auth] == [("secret", {"uuid": SECRET})]


def test_pool_xml_round_trips_and_brackets_are_dropped(tmp_path) -> None:
    bracketed = RbdPoolSource("vms", (("[2001:db8::2]", 3300),), "compute", SECRET.upper())
    xml = storage_pool.pool_xml("p", bracketed)
    validate(xml, "storagepool", tmp_path)
    assert storage_pool.parse_pool_xml(xml) == (
        "p", RbdPoolSource("vms", (("2001:db8::2", 3300),), "compute", SECRET))
    assert storage_pool.parse_pool_xml(storage_pool.pool_xml("q", SOURCE)) == ("q", SOURCE)
    assert storage_pool.parse_pool_xml(
        "<pool type='dir'><name>d</name><target><path>/x</path></target></pool>") == ("d", None)


@pytest.mark.parametrize("name, source, error", [
    ("p", RbdPoolSource("vms,osd", SOURCE.hosts, "compute", SECRET), exception.InvalidName),
    ("p", RbdPoolSource("vms", SOURCE.hosts, "a b", SECRET), exception.InvalidName),
    ("p", RbdPoolSource("vms", (), "compute", SECRET), ValueError),
    ("p", RbdPoolSource("vms", SOURCE.hosts, "compute", "not-a-uuid"), ValueError),
    ("a/b", SOURCE, ValueError),
    ("", SOURCE, ValueError),
])
def test_pool_xml_refuses_what_libvirt_or_ceph_would_misread(name, source, error) -> None:
    with pytest.raises(error):
        storage_pool.pool_xml(name, source)


def test_differences_name_each_field_and_ignore_host_order() -> None:
    same = RbdPoolSource("vms", tuple(reversed(SOURCE.hosts)), "compute", SECRET.upper())
    assert storage_pool.differences(SOURCE, same) == []
    other = RbdPoolSource("images", SOURCE.hosts[:1], "admin", str(uuid.UUID(int=1)))
    found = storage_pool.differences(SOURCE, other)
    assert found == [
        "Ceph pool images (wanted vms)", "cephx user admin (wanted compute)",
        f"secret UUID {uuid.UUID(int=1)} (wanted {SECRET})",
        "monitors 10.0.0.1:6789 (wanted 10.0.0.1:6789,2001:db8::2:6789)"]
    assert storage_pool.differences(SOURCE, None) == ["it is not an RBD pool"]


def test_volume_disk_xml_is_the_network_disk_of_the_pools_source(tmp_path) -> None:
    disk = storage_pool.volume_disk_xml(storage_pool.pool_xml("p", SOURCE), "vms/inst_disk",
                                        target_dev="vdb")
    domain = (f"<domain type='qemu'><name>d</name><memory>65536</memory><os><type>hvm</type>"
              f"</os><devices>{disk}</devices></domain>")
    validate(domain, "domain", tmp_path)
    root = ET.fromstring(disk)
    assert (root.get("type"), root.find("source").get("protocol"),
            root.find("source").get("name")) == ("network", "rbd", "vms/inst_disk")
    assert [(h.get("name"), h.get("port")) for h in root.findall("source/host")] == [
        ("10.0.0.1", "6789"), ("2001:db8::2", "6789")]
    assert root.find("auth").get("username") == "compute"
    assert root.find("auth/secret").get("uuid") == SECRET
    assert root.find("target").get("dev") == "vdb"
    with pytest.raises(ValueError, match="pool/image"):
        storage_pool.volume_disk_xml(storage_pool.pool_xml("p", SOURCE), "inst_disk")
    with pytest.raises(ValueError, match="not of an RBD pool"):
        storage_pool.volume_disk_xml("<pool type='dir'><name>d</name></pool>", "vms/x")


# -- defining it -----------------------------------------------------------------


def test_define_starts_and_autostarts_then_is_idempotent(host) -> None:
    name = _name()
    first = storage_pool.define_rbd_pool(name, SOURCE, conn=host)
    assert (first.defined, first.started, first.autostart) == (True, True, True)
    pool = host.storagePoolLookupByName(name)
    assert pool.isActive() and pool.autostart() and pool.isPersistent()
    assert storage_pool.parse_pool_xml(pool.XMLDesc(0)) == (name, SOURCE)

    again = storage_pool.define_rbd_pool(name, SOURCE, conn=host)
    assert (again.defined, again.started, again.uuid) == (False, False, first.uuid)
    pool.destroy()
    restarted = storage_pool.define_rbd_pool(name, SOURCE, conn=host, autostart=False)
    assert (restarted.defined, restarted.started, restarted.autostart) == (False, True, False)
    assert pool.isActive() and not pool.autostart()


def test_another_definition_under_the_name_is_an_error_and_left_alone(host) -> None:
    name = _name()
    storage_pool.define_rbd_pool(name, SOURCE, conn=host)
    other = RbdPoolSource("images", SOURCE.hosts, SOURCE.user, SOURCE.secret_uuid)
    with pytest.raises(exception.LibvirtPoolError) as info:
        storage_pool.define_rbd_pool(name, other, conn=host)
    assert "another definition: Ceph pool vms (wanted images)" in str(info.value)
    assert f"virsh pool-undefine {name}" in str(info.value)
    assert storage_pool.parse_pool_xml(
        host.storagePoolLookupByName(name).XMLDesc(0)) == (name, SOURCE)


def test_a_non_rbd_pool_under_the_name_is_an_error(host, tmp_path) -> None:
    name = _name()
    host.storagePoolDefineXML(f"<pool type='dir'><name>{name}</name><target><path>{tmp_path}"
                              "</path></target></pool>", 0)
    with pytest.raises(exception.LibvirtPoolError, match="it is not an RBD pool"):
        storage_pool.define_rbd_pool(name, SOURCE, conn=host)


def test_a_pool_that_does_not_start_is_not_left_defined(host) -> None:
    name = _name()
    host.fail_start = True
    with pytest.raises(exception.LibvirtPoolError, match="starting it failed: failed to connect"):
        storage_pool.define_rbd_pool(name, SOURCE, conn=host)
    assert name not in host.listStoragePools() + host.listDefinedStoragePools()


def test_connection_opens_and_closes_the_uri_and_names_the_pool_on_failure() -> None:
    with storage_pool.connection("test:///default", "p") as conn:
        assert conn.getURI() == "test:///default"
    with pytest.raises(libvirt.libvirtError, match="invalid connection"):
        conn.isAlive()  # closed
    with pytest.raises(exception.LibvirtPoolError, match="storage pool p: cannot connect to bad"), \
            storage_pool.connection("bad:///", "p"):
        pass


# -- the secret ------------------------------------------------------------------


def test_find_ceph_secret_by_uuid_or_by_the_libraries_usage_name(host, caplog) -> None:
    host.secrets.append(Secret(SECRET, CEPH, "client.compute secret"))
    assert storage_pool.find_ceph_secret("compute", SECRET.upper(), host) == SECRET
    assert storage_pool.find_ceph_secret("compute", None, host) == SECRET
    other = str(uuid.uuid4())
    host.secrets.append(Secret(other, CEPH, "ceph-by-hand"))
    with caplog.at_level(logging.WARNING, logger="rbd_driver"):
        assert storage_pool.find_ceph_secret("compute", other, host) == other
    assert "usage name 'ceph-by-hand'" in caplog.text


def test_find_ceph_secret_refuses_a_missing_or_non_ceph_secret(host) -> None:
    with pytest.raises(exception.LibvirtPoolError, match=f"no \\[rbd\\] secret_uuid {SECRET}"):
        storage_pool.find_ceph_secret("compute", SECRET, host)
    with pytest.raises(exception.LibvirtPoolError,
                       match="usage name 'client.compute secret'.*--define-secret"):
        storage_pool.find_ceph_secret("compute", None, host)
    host.secrets.append(Secret(SECRET, libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, "/x"))
    with pytest.raises(exception.LibvirtPoolError, match="not of usage type ceph"):
        storage_pool.find_ceph_secret("compute", SECRET, host)
