# SPDX-License-Identifier: Apache-2.0
"""Provisioner on the fake cluster, with a fake monitor for pools, tiers and auth.

The fake monitor answers like pacific does for the commands used here
(``osd pool create`` succeeds on an existing pool, ``auth get-or-create``
fails with EINVAL when the caps differ, ...), and records every command so
tests can check what was, and was not, sent.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver import exception
from rbd_driver.ops import provision
from rbd_driver.storage import cephx
from rbd_driver.testing.fixtures import FakeEnv

Reply = tuple[int, bytes, str]


class FakeMon:
    """Pools (with pg_num, applications, tiers) and cephx users, as the monitor keeps them."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.commands: list[dict[str, Any]] = []
        self.inbufs: list[bytes] = []
        self.pg_num: dict[str, int] = {}
        self.tier_of: dict[str, str] = {}
        self.overlay: dict[str, str] = {}
        self.pool_vars: dict[tuple[str, str], str] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.deny: set[str] = set()
        for prefix in ("osd dump", "osd pool create", "osd pool application get",
                       "osd pool application enable", "osd tier add", "osd tier cache-mode",
                       "osd tier set-overlay", "osd pool set", "auth get-or-create", "auth caps",
                       "auth get", "auth import", "auth del"):
            cluster.mon_commands[prefix] = self._handler(prefix)

    def _handler(self, prefix: str) -> Any:
        method = getattr(self, "_" + prefix.replace(" ", "_").replace("-", "_"))

        def handle(cmd: dict[str, Any], inbuf: bytes) -> Reply:
            self.commands.append(cmd)
            self.inbufs.append(inbuf)
            if prefix in self.deny:
                return -errno.EACCES, b"", "access denied"
            return method(cmd, inbuf)  # type: ignore[no-any-return]

        return handle

    def prefixes(self) -> list[str]:
        return [c["prefix"] for c in self.commands]

    @staticmethod
    def _json(data: Any, status: str = "") -> Reply:
        return 0, json.dumps(data).encode(), status

    def _osd_dump(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        ids = {name: pool.id for name, pool in self.cluster.pools.items()}
        pools = [{"pool_name": name, "pool": pid, "pg_num": self.pg_num.get(name, 8),
                  "tier_of": ids.get(self.tier_of.get(name, ""), -1),
                  "tiers": [ids[t] for t, base in self.tier_of.items() if base == name],
                  "read_tier": ids.get(self.overlay.get(name, ""), -1)}
                 for name, pid in ids.items()]
        return self._json({"pools": pools, "osds": []})

    def _osd_pool_create(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        if cmd["pool"] in self.cluster.pools:
            return 0, b"", f"pool '{cmd['pool']}' already exists"
        self.cluster.add_pool(cmd["pool"])
        self.pg_num[cmd["pool"]] = cmd["pg_num"]
        return 0, b"", f"pool '{cmd['pool']}' created"

    def _osd_pool_application_get(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        pool = self.cluster.pools.get(cmd["pool"])
        if pool is None:
            return -errno.ENOENT, b"", f"unrecognized pool '{cmd['pool']}'"
        return self._json({app: {} for app in pool.applications})

    def _osd_pool_application_enable(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.cluster.pools[cmd["pool"]].applications.add(cmd["app"])
        return 0, b"", ""

    def _osd_tier_add(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.tier_of[cmd["tierpool"]] = cmd["pool"]
        return 0, b"", ""

    def _osd_tier_cache_mode(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.pool_vars[(cmd["pool"], "cache_mode")] = cmd["mode"]
        return 0, b"", ""

    def _osd_tier_set_overlay(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.overlay[cmd["pool"]] = cmd["overlaypool"]
        return 0, b"", ""

    def _osd_pool_set(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.pool_vars[(cmd["pool"], cmd["var"])] = cmd["val"]
        return 0, b"", ""

    @staticmethod
    def _caps(flat: list[str]) -> dict[str, str]:
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def _entry(self, entity: str) -> Reply:
        user = self.users[entity]
        return self._json([{"entity": entity, "key": user["key"], "caps": user["caps"]}])

    def _auth_get_or_create(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        entity, caps = cmd["entity"], self._caps(cmd["caps"])
        if entity in self.users:
            for service, cap in caps.items():
                if self.users[entity]["caps"].get(service) != cap:
                    return -errno.EINVAL, b"", f"key for {entity} exists but cap {service} does not match"
            return self._entry(entity)
        self.users[entity] = {"key": cephx.generate_key().reveal(), "caps": caps}
        return self._entry(entity)

    def _auth_caps(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.users[cmd["entity"]]["caps"] = self._caps(cmd["caps"])
        return 0, b"", f"updated caps for {cmd['entity']}"

    def _auth_get(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        if cmd["entity"] not in self.users:
            return -errno.ENOENT, b"", f"failed to find {cmd['entity']} in keyring"
        return self._entry(cmd["entity"])

    def _auth_import(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        text = inbuf.decode()
        entity = text.split("]", 1)[0].lstrip("[")
        caps = {}
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("caps "):
                service, _, value = line[5:].partition(" = ")
                caps[service] = json.loads(value)
        key = cephx.parse_keyring(text, entity)
        self.users[entity] = {"key": key.reveal(), "caps": caps}
        return 0, b"", "imported keyring"

    def _auth_del(self, cmd: dict[str, Any], inbuf: bytes) -> Reply:
        self.users.pop(cmd["entity"], None)
        return 0, b"", "updated"


class Env(FakeEnv):
    """The fake cluster (pools vms, images for rbd), its monitor, and a Provisioner as admin."""

    def __init__(self, tmp_path: Any) -> None:
        super().__init__(tmp_path, user="admin")
        for name in ("vms", "images"):
            self.cluster.pools[name].applications.add("rbd")
        self.mon = FakeMon(self.cluster)
        self.client = self.new_client()
        self.conf_path = str(self.ceph_conf)
        self.prov = provision.Provisioner(self.client)


# -- pools ------------------------------------------------------------------------


def test_create_pool_creates_enables_rbd_and_inits(env) -> None:
    result = env.prov.create_pool("fresh", pg_num=16)
    assert result == provision.PoolResult("fresh", True, 16)
    create = [c for c in env.mon.commands if c["prefix"] == "osd pool create"]
    assert create == [{"prefix": "osd pool create", "format": "json", "pool": "fresh",
                       "pg_num": 16, "pgp_num": 16, "pool_type": "replicated"}]
    assert "osd pool application enable" in env.mon.prefixes()
    assert env.cluster.pools["fresh"].applications == {"rbd"}
    assert "RBD.pool_init" in env.cluster.calls


def test_create_pool_is_idempotent(env) -> None:
    env.prov.create_pool("fresh", pg_num=16)
    env.mon.commands.clear()
    again = env.prov.create_pool("fresh", pg_num=64)
    assert again == provision.PoolResult("fresh", False, 16)
    assert "osd pool create" not in env.mon.prefixes()
    assert "osd pool application enable" not in env.mon.prefixes()


@pytest.mark.parametrize("bad", ["", "with space", "a,b", "x;allow *", "pool=other", ".hidden",
                                 "-dash", "q\"uote", "n\nl", "x" * 101, "ünï"])
def test_bad_pool_name_fails_before_any_command(env, bad) -> None:
    with pytest.raises(exception.InvalidName) as info:
        env.prov.create_pool(bad)
    assert f"'{bad}'" in str(info.value) and "pool" in str(info.value)
    assert env.mon.commands == []


@pytest.mark.parametrize("pg_num", [0, -1, 1.5, "8"])
def test_bad_pg_count_is_refused(env, pg_num) -> None:
    with pytest.raises(exception.ProvisioningError, match="pool fresh.*pg_num"):
        env.prov.create_pool("fresh", pg_num=pg_num)
    assert "fresh" not in env.cluster.pools


def test_pool_of_another_application_is_refused(env) -> None:
    env.cluster.add_pool("objects").applications.add("rgw")
    with pytest.raises(exception.ProvisioningError) as info:
        env.prov.create_pool("objects")
    assert "pool objects" in str(info.value) and "rgw" in str(info.value)
    assert "osd pool application enable" not in env.mon.prefixes()


def test_no_permission_is_permission_denied(env) -> None:
    env.mon.deny.add("osd pool create")
    with pytest.raises(exception.PermissionDenied, match="osd pool create on pool fresh"):
        env.prov.create_pool("fresh")


# -- caps ---------------------------------------------------------------------------


def test_user_caps_are_least_privilege() -> None:
    assert provision.user_caps(["vms", "cache"], ["images", "vms", "images"]) == {
        "mon": "profile rbd",
        "osd": "profile rbd pool=vms, profile rbd pool=cache, profile rbd-read-only pool=images",
        "mgr": "profile rbd pool=vms, profile rbd pool=cache",
    }


@pytest.mark.parametrize("bad", ["vms, allow *", "vms pool=images", "*"])
def test_cap_injection_through_a_pool_name_is_refused(bad) -> None:
    with pytest.raises(exception.InvalidName):
        provision.user_caps([bad])
    with pytest.raises(exception.InvalidName):
        provision.user_caps(["vms"], [bad])


def test_user_caps_need_a_writable_pool() -> None:
    with pytest.raises(ValueError):
        provision.user_caps([], ["images"])


def test_caps_cover_cache_tiers_with_the_profile_of_their_pool(env) -> None:
    env.prov.add_cache_tier("vms", "vms-cache")
    env.prov.add_cache_tier("images", "images-cache")
    assert env.prov.caps_for(["vms"], ["images"])["osd"] == (
        "profile rbd pool=vms, profile rbd pool=vms-cache, "
        "profile rbd-read-only pool=images, profile rbd-read-only pool=images-cache")


# -- cache tiers ---------------------------------------------------------------------


def test_add_cache_tier_sets_a_writeback_overlay_idempotently(env) -> None:
    result = env.prov.add_cache_tier("vms", "vms-cache", pg_num=8)
    assert result.created
    assert env.mon.tier_of == {"vms-cache": "vms"} and env.mon.overlay == {"vms": "vms-cache"}
    assert env.mon.pool_vars[("vms-cache", "cache_mode")] == "writeback"
    assert env.mon.pool_vars[("vms-cache", "hit_set_type")] == "bloom"
    env.mon.commands.clear()
    env.prov.add_cache_tier("vms", "vms-cache")
    assert "osd tier add" not in env.mon.prefixes()
    assert "osd tier set-overlay" not in env.mon.prefixes()


def test_cache_tier_needs_its_base_and_a_free_tier(env) -> None:
    with pytest.raises(exception.PoolNotFound, match="absent"):
        env.prov.add_cache_tier("absent", "cache")
    env.prov.add_cache_tier("vms", "shared-cache")
    with pytest.raises(exception.ProvisioningError, match="pool shared-cache"):
        env.prov.add_cache_tier("images", "shared-cache")


# -- users ------------------------------------------------------------------------------


def test_ensure_user_creates_it_and_writes_a_0600_keyring(env) -> None:
    keyring = str(env.tmp / "ceph.client.compute.keyring")
    user = env.prov.ensure_user("compute", ["vms"], ["images"], keyring=keyring)
    stored = env.mon.users["client.compute"]
    assert user.caps == stored["caps"] == provision.user_caps(["vms"], ["images"])
    assert user.key.reveal() == stored["key"]
    assert stat.S_IMODE(os.stat(keyring).st_mode) == 0o600
    assert cephx.read_key(keyring, "client.compute") == user.key
    assert user.entity == "client.compute" and user.keyring == keyring


def test_ensure_user_with_an_unwritable_keyring_creates_no_user(env) -> None:
    keyring = str(env.tmp / "no-such-dir" / "ceph.client.compute.keyring")
    with pytest.raises(exception.KeyringError, match="no-such-dir does not exist"):
        env.prov.ensure_user("compute", ["vms"], keyring=keyring)
    assert "client.compute" not in env.mon.users
    assert "auth get-or-create" not in env.mon.prefixes()


def test_ensure_user_converges_caps_and_keeps_the_key(env) -> None:
    first = env.prov.ensure_user("client.compute", ["vms"])
    env.mon.users["client.compute"]["caps"] = {"mon": "allow *", "osd": "allow *"}
    again = env.prov.ensure_user("compute", ["vms"], ["images"])
    assert env.mon.users["client.compute"]["caps"] == provision.user_caps(["vms"], ["images"])
    assert again.key == first.key
    assert env.mon.prefixes()[-2:] == ["auth caps", "auth get"]


@pytest.mark.parametrize("user", ["admin", "client.admin", "bad user", "client."])
def test_protected_or_bad_users_are_refused(env, user) -> None:
    with pytest.raises(exception.InvalidName):
        env.prov.ensure_user(user, ["vms"])
    assert not any(p.startswith("auth") for p in env.mon.prefixes())


def test_rotate_key_keeps_caps_and_sends_the_key_only_in_the_input_buffer(env) -> None:
    keyring = str(env.tmp / "k")
    first = env.prov.ensure_user("compute", ["vms"], ["images"], keyring=keyring)
    rotated = env.prov.rotate_key("compute", keyring=keyring)
    assert rotated.key != first.key
    assert env.mon.users["client.compute"] == {"key": rotated.key.reveal(), "caps": first.caps}
    assert cephx.read_key(keyring, "client.compute") == rotated.key
    index = env.mon.prefixes().index("auth import")
    assert rotated.key.reveal() not in json.dumps(env.mon.commands[index])
    assert rotated.key.reveal().encode() in env.mon.inbufs[index]


def test_rotate_key_of_a_missing_user_fails_clearly(env) -> None:
    with pytest.raises(exception.ProvisioningError, match="client.ghost"):
        env.prov.rotate_key("ghost")


def test_delete_user(env) -> None:
    env.prov.ensure_user("compute", ["vms"])
    env.prov.delete_user("compute")
    env.prov.delete_user("compute")  # a missing user is fine
    assert "client.compute" not in env.mon.users


def test_no_key_in_logs_reprs_or_commands(env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    user = env.prov.ensure_user("compute", ["vms"], ["images"], keyring=str(env.tmp / "k"))
    rotated = env.prov.rotate_key("compute")
    for key in (user.key.reveal(), rotated.key.reveal()):
        assert key not in caplog.text
        assert all(key not in json.dumps(c) for c in env.mon.commands)
    assert user.key.reveal() not in repr(user) and "****" in repr(user)


# -- from the configuration ---------------------------------------------------------------


def _conf(env: Any, **overrides: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    conf.set_override("ceph_conf", env.conf_path, group="rbd")
    for name, value in overrides.items():
        conf.set_override(name, value, group="rbd")
    return conf


def test_provision_from_conf_needs_a_user(env) -> None:
    with pytest.raises(exception.ConfigError, match=r"\[rbd\] user"):
        provision.provision_from_conf(_conf(env), env.client)


def test_provision_from_conf_with_an_unwritable_keyring_creates_nothing(env) -> None:
    conf = _conf(env, user="compute", pool="disks",
                 keyring=str(env.tmp / "missing" / "compute.keyring"))
    with pytest.raises(exception.KeyringError, match=r"missing does not exist.*\[rbd\] keyring"):
        provision.provision_from_conf(conf, env.client)
    assert "disks" not in env.cluster.pools
    assert "client.compute" not in env.mon.users


def test_provision_from_conf_sets_up_everything(env, monkeypatch) -> None:
    from tests.unit.libvirt.test_secret import FakeLibvirt

    libvirt = FakeLibvirt()
    monkeypatch.setitem(sys.modules, "libvirt", libvirt.module)
    conf = _conf(env, user="compute", pool="disks", image_cache_pool="cache",
                 cache_tier_pool="disks-tier", image_pools=["images", "more"],
                 keyring=str(env.tmp / "compute.keyring"))
    env.cluster.add_pool("more").applications.add("rbd")
    report = provision.provision_from_conf(conf, env.client, pg_num=8, define_secret=True,
                                           libvirt_conn=libvirt.conn)
    assert [p.name for p in report.pools] == ["disks", "cache", "disks-tier"]
    assert report.user.caps["osd"] == (
        "profile rbd pool=disks, profile rbd pool=disks-tier, profile rbd pool=cache, "
        "profile rbd-read-only pool=images, profile rbd-read-only pool=more")
    assert cephx.read_key(str(env.tmp / "compute.keyring"), "client.compute") == report.user.key
    secret = libvirt.conn.secrets[report.secret_uuid]
    assert secret.value == report.user.key.raw()


def test_default_keyring_path() -> None:
    assert provision.default_keyring_path("compute") == "/etc/ceph/ceph.client.compute.keyring"
