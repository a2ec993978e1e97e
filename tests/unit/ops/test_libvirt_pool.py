# SPDX-License-Identifier: Apache-2.0
"""provision_libvirt_pool: the [rbd] options, the monitor cache and the secret, turned
into libvirt's RBD pool (fake librados; libvirt's test driver plus stand-in secrets)."""

from __future__ import annotations

import errno
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.libvirt import storage_pool
from rbd_driver.libvirt.storage_pool import RbdPoolSource
from rbd_driver.ops.libvirt_pool import provision_libvirt_pool
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.testing.fixtures import FakeEnv
from rbd_driver.testing.local_cluster import make_conf
from tests.unit.libvirt.test_storage_pool import CEPH, SECRET, Host, Secret, libvirt_test_host

DUMP = {"mons": [
    {"rank": 0, "name": "a", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "10.0.0.1:3300", "nonce": 0},
        {"type": "v1", "addr": "10.0.0.1:6789", "nonce": 0}]}},
    {"rank": 1, "name": "b", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "[2001:db8::2]:3300", "nonce": 0},
        {"type": "v1", "addr": "[2001:db8::2]:6789", "nonce": 0}]}},
    {"rank": 2, "name": "c", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "10.0.0.3:3300", "nonce": 0}]}},
]}
HOSTS = (("10.0.0.1", 6789), ("2001:db8::2", 6789), ("10.0.0.3", 3300))


class State:
    def __init__(self) -> None:
        self.mon_dumps = 0
        self.fail = False


@pytest.fixture
def env(tmp_path) -> Iterator[tuple[Any, RadosClient, State]]:
    fake = FakeEnv(tmp_path, pools=("vms",))
    state = State()

    def mon_dump(cmd: dict[str, Any], inbuf: bytes) -> tuple[int, bytes, str]:
        state.mon_dumps += 1
        if state.fail:
            return -errno.EACCES, b"", "access denied"
        return 0, json.dumps(DUMP).encode(), ""

    fake.cluster.mon_commands["mon dump"] = mon_dump
    conf = make_conf(_State(str(fake.ceph_conf)))
    with fake.new_client() as client:
        yield conf, client, state


class _State:
    """What make_conf reads of a cluster."""

    def __init__(self, conf_path: str) -> None:
        self.conf_path = conf_path
        self.user = "compute"
        self.user_keyring = "/nonexistent/keyring"


@pytest.fixture
def host() -> Iterator[Host]:
    with libvirt_test_host() as made:
        yield made


def _names(host: Host) -> set[str]:
    return set(host.listStoragePools() + host.listDefinedStoragePools())


def test_the_pool_is_on_rbd_pool_with_every_monitor_as_the_user(env, host) -> None:
    conf, client, state = env
    conf.set_override("secret_uuid", SECRET, group="rbd")
    host.secrets.append(Secret(SECRET, CEPH, "client.compute secret"))
    name = f"rbd-{uuid.uuid4().hex[:8]}"
    result = provision_libvirt_pool(conf, client, name, libvirt_conn=host)
    # v1 where a monitor has one (librados reads a bare host:port as v1), else v2.
    assert result.source == RbdPoolSource("vms", HOSTS, "compute", SECRET)
    assert (result.defined, result.started, result.autostart) == (True, True, True)
    pool = host.storagePoolLookupByName(name)
    assert storage_pool.parse_pool_xml(pool.XMLDesc(0)) == (name, result.source)

    again = provision_libvirt_pool(conf, client, name, libvirt_conn=host, autostart=False)
    assert (again.defined, again.autostart) == (False, False)
    assert state.mon_dumps == 2


def test_without_secret_uuid_the_libraries_secret_of_the_user_is_used(env, host) -> None:
    conf, client, _ = env
    host.secrets.append(Secret(SECRET, CEPH, "client.compute secret"))
    result = provision_libvirt_pool(conf, client, f"rbd-{uuid.uuid4().hex[:8]}",
                                    libvirt_conn=host)
    assert result.source.secret_uuid == SECRET


@pytest.mark.parametrize("broken, error, match", [
    ("pool", exception.PoolNotFound, "missing"),
    ("user", exception.ConfigError, r"\[rbd\] user"),
    ("secret", exception.LibvirtPoolError, "has no"),
    ("monitors", exception.RbdDriverError, "mon dump"),
])
def test_nothing_is_defined_when_a_check_fails(env, host, broken, error, match) -> None:
    conf, client, state = env
    if broken != "secret":
        host.secrets.append(Secret(SECRET, CEPH, "client.compute secret"))
    if broken == "pool":
        conf.set_override("pool", "missing", group="rbd")
    elif broken == "user":
        conf.set_override("user", "", group="rbd")
    elif broken == "monitors":
        state.fail = True
    before = _names(host)
    with pytest.raises(error, match=match):
        provision_libvirt_pool(conf, client, f"rbd-{uuid.uuid4().hex[:8]}", libvirt_conn=host)
    assert _names(host) == before


def test_without_a_connection_it_opens_rbd_libvirt_uri(env) -> None:
    conf, client, _ = env
    conf.set_override("libvirt_uri", "bad:///", group="rbd")
    with pytest.raises(exception.LibvirtPoolError, match="cannot connect to bad:///"):
        provision_libvirt_pool(conf, client, "p")
