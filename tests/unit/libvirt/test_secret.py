# SPDX-License-Identifier: Apache-2.0
"""The libvirt ceph secret, with a fake libvirt module and connection."""

from __future__ import annotations

import sys
import types
import uuid
import xml.etree.ElementTree as ET

import pytest

from rbd_driver import exception
from rbd_driver.libvirt import secret as libvirt_secret
from rbd_driver.storage import cephx


class FakeLibvirtError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return str(self)


class FakeSecret:
    def __init__(self, conn: FakeConn, xml: str) -> None:
        root = ET.fromstring(xml)
        self.conn = conn
        self.xml = xml
        self.uuid = root.findtext("uuid") or str(uuid.uuid4())
        self.usage = root.findtext("usage/name")
        self.value: bytes | None = None

    def UUIDString(self) -> str:  # noqa: N802 (libvirt's name)
        return self.uuid

    def setValue(self, value: bytes, flags: int = 0) -> None:  # noqa: N802
        if self.conn.fail_set_value:
            raise FakeLibvirtError("internal error: cannot store the value", 1)
        self.value = value

    def undefine(self) -> None:
        del self.conn.secrets[self.uuid]


class FakeConn:
    def __init__(self) -> None:
        self.secrets: dict[str, FakeSecret] = {}
        self.defined = 0
        self.closed = False
        self.fail_set_value = False

    def secretLookupByUsage(self, usage_type: int, usage_id: str) -> FakeSecret:  # noqa: N802
        assert usage_type == 2  # VIR_SECRET_USAGE_TYPE_CEPH
        for secret in self.secrets.values():
            if secret.usage == usage_id:
                return secret
        raise FakeLibvirtError(f"Secret not found: no secret with matching usage '{usage_id}'", 66)

    def secretDefineXML(self, xml: str, flags: int = 0) -> FakeSecret:  # noqa: N802
        secret = FakeSecret(self, xml)
        self.secrets[secret.uuid] = secret
        self.defined += 1
        return secret

    def close(self) -> int:
        self.closed = True
        return 0


class FakeLibvirt:
    """A fake ``libvirt`` module; ``open`` returns :attr:`conn`."""

    def __init__(self) -> None:
        self.conn = FakeConn()
        self.opened: list[str] = []
        self.module = types.ModuleType("libvirt")
        self.module.libvirtError = FakeLibvirtError  # type: ignore[attr-defined]
        self.module.VIR_SECRET_USAGE_TYPE_CEPH = 2  # type: ignore[attr-defined]
        self.module.VIR_ERR_NO_SECRET = 66  # type: ignore[attr-defined]
        self.module.open = self._open  # type: ignore[attr-defined]

    def _open(self, uri: str) -> FakeConn:
        if uri == "bad:///":
            raise FakeLibvirtError("no connection driver available for bad:///", 38)
        self.opened.append(uri)
        return self.conn


KEY = cephx.generate_key()


def test_secret_xml_is_private_persistent_ceph() -> None:
    root = ET.fromstring(libvirt_secret.secret_xml("compute", "6E9C0F40-8C1F-4E57-9D3B-2F1F3C0F5A11"))
    assert root.attrib == {"ephemeral": "no", "private": "yes"}
    assert root.findtext("uuid") == "6e9c0f40-8c1f-4e57-9d3b-2f1f3c0f5a11"
    assert root.find("usage").get("type") == "ceph"  # type: ignore[union-attr]
    assert root.findtext("usage/name") == "client.compute secret"
    assert ET.fromstring(libvirt_secret.secret_xml("compute")).find("uuid") is None


def test_secret_xml_refuses_bad_input() -> None:
    with pytest.raises(exception.InvalidName):
        libvirt_secret.secret_xml("comp<ute>")
    with pytest.raises(ValueError):
        libvirt_secret.secret_xml("compute", "not-a-uuid")


def test_define_sets_the_raw_key_and_is_idempotent() -> None:
    fake = FakeLibvirt()
    first = libvirt_secret.define_ceph_secret("compute", KEY, conn=fake.conn,
                                              libvirt_module=fake.module)
    assert fake.conn.secrets[first].value == KEY.raw()
    assert KEY.reveal() not in fake.conn.secrets[first].xml
    new_key = cephx.generate_key()
    again = libvirt_secret.define_ceph_secret("compute", new_key, conn=fake.conn,
                                              libvirt_module=fake.module)
    assert again == first and fake.conn.defined == 1
    assert fake.conn.secrets[first].value == new_key.raw()  # a rotated key reaches libvirt
    assert not fake.conn.closed  # a given connection is not closed


def test_define_with_a_chosen_uuid_and_a_conflicting_one() -> None:
    fake = FakeLibvirt()
    wanted = str(uuid.uuid4())
    assert libvirt_secret.define_ceph_secret("compute", KEY, secret_uuid=wanted, conn=fake.conn,
                                             libvirt_module=fake.module) == wanted
    with pytest.raises(exception.LibvirtSecretError) as info:
        libvirt_secret.define_ceph_secret("compute", KEY, secret_uuid=str(uuid.uuid4()),
                                          conn=fake.conn, libvirt_module=fake.module)
    assert wanted in str(info.value) and "client.compute" in str(info.value)


def test_define_opens_and_closes_the_uri() -> None:
    fake = FakeLibvirt()
    libvirt_secret.define_ceph_secret("compute", KEY, uri="test:///x", libvirt_module=fake.module)
    assert fake.opened == ["test:///x"] and fake.conn.closed
    with pytest.raises(exception.LibvirtSecretError, match="bad:///"):
        libvirt_secret.define_ceph_secret("compute", KEY, uri="bad:///",
                                          libvirt_module=fake.module)


def test_libvirt_failure_is_translated_without_the_key() -> None:
    fake = FakeLibvirt()
    fake.conn.fail_set_value = True
    with pytest.raises(exception.LibvirtSecretError) as info:
        libvirt_secret.define_ceph_secret("compute", KEY, conn=fake.conn,
                                          libvirt_module=fake.module)
    assert isinstance(info.value.__cause__, FakeLibvirtError)
    assert KEY.reveal() not in str(info.value) and "cannot store" in str(info.value)


def test_without_python_libvirt(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt -> ImportError
    with pytest.raises(exception.LibvirtSecretError, match="python3-libvirt"):
        libvirt_secret.define_ceph_secret("compute", KEY)


def test_remove() -> None:
    fake = FakeLibvirt()
    libvirt_secret.define_ceph_secret("compute", KEY, conn=fake.conn, libvirt_module=fake.module)
    assert libvirt_secret.remove_ceph_secret("compute", conn=fake.conn, libvirt_module=fake.module)
    assert fake.conn.secrets == {}
    assert not libvirt_secret.remove_ceph_secret("compute", conn=fake.conn,
                                                 libvirt_module=fake.module)


