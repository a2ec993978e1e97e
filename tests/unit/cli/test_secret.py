# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver secret define`` (as [rbd] user) and ``provision rotate-key`` (as admin)."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

from rbd_driver.storage import cephx
from tests.unit.cli.test_admin import Env
from tests.unit.libvirt.test_secret import FakeLibvirt
from tests.unit.ops.test_provision import FakeMon


@pytest.fixture
def fake_libvirt(monkeypatch: pytest.MonkeyPatch) -> FakeLibvirt:
    fake = FakeLibvirt()
    fake.module.registerErrorHandler = lambda handler, ctx: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "libvirt", fake.module)
    return fake


def _user_keyring(env: Env) -> tuple[Any, cephx.CephxKey]:
    key = cephx.generate_key()
    keyring = env.tmp / "compute.keyring"
    cephx.write_keyring(str(keyring), "client.compute", key)
    return keyring, key


def test_secret_define_from_the_users_own_keyring(env, fake_libvirt) -> None:
    keyring, key = _user_keyring(env)
    wanted = str(uuid.uuid4())
    env.conf.write_text(env.conf.read_text() + f"keyring = {keyring}\nsecret_uuid = {wanted}\n"
                        "libvirt_uri = qemu:///session\n")
    out = env.run("secret", "define")
    assert out["secret_uuid"] == wanted and out["usage"] == "client.compute secret"
    assert fake_libvirt.conn.secrets[wanted].value == key.raw()
    assert fake_libvirt.opened == ["qemu:///session"]
    assert key.reveal() not in str(out)
    # Connected as the user itself, never as admin.
    assert env.cluster.connect_count == 1
    again = env.run("secret", "define", "--uri", "qemu:///system")
    assert again["secret_uuid"] == wanted and fake_libvirt.opened[-1] == "qemu:///system"


def test_secret_define_without_secret_uuid_says_what_to_set(env, fake_libvirt) -> None:
    keyring, _ = _user_keyring(env)
    env.conf.write_text(env.conf.read_text() + f"keyring = {keyring}\n")
    out = env.run("secret", "define")
    assert out["next"] == f"set [rbd] secret_uuid = {out['secret_uuid']} in the config file"


def test_secret_define_without_keyring_names_the_path(env, fake_libvirt) -> None:
    missing = env.tmp / "nowhere.keyring"
    env.conf.write_text(env.conf.read_text() + f"keyring = {missing}\n")
    err = env.run("secret", "define", expect=1)
    assert f"no keyring for client.compute at {missing}" in err
    assert fake_libvirt.conn.secrets == {}


def test_provision_rotate_key_rewrites_the_keyring(env) -> None:
    mon = FakeMon(env.cluster)
    keyring = env.tmp / "compute.keyring"
    env.conf.write_text(env.conf.read_text() + f"keyring = {keyring}\n")
    env.run("provision", "from-conf")
    old = mon.users["client.compute"]["key"]
    caps = mon.users["client.compute"]["caps"]
    out = env.run("provision", "rotate-key")
    new = mon.users["client.compute"]["key"]
    assert new != old and mon.users["client.compute"]["caps"] == caps
    assert cephx.read_key(str(keyring), "client.compute").reveal() == new
    assert out["keyring"] == str(keyring) and "rbd-driver secret define" in out["next"]
    assert new not in str(out) and old not in str(out)
