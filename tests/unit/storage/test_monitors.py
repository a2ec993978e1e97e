# SPDX-License-Identifier: Apache-2.0
"""The monitor list: mon dump parsing, host:port formatting, the cache."""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.storage import monitors
from rbd_driver.storage.monitors import MonitorCache
from rbd_driver.storage.rbd_utils import MonitorAddress
from rbd_driver.testing.fixtures import FakeEnv

DUMP = {"epoch": 3, "mons": [
    {"rank": 1, "name": "b", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "[2001:db8::2]:3300", "nonce": 0},
        {"type": "v1", "addr": "[2001:db8::2]:6789", "nonce": 0}]}},
    {"rank": 0, "name": "a", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "10.0.0.1:3300", "nonce": 0},
        {"type": "v1", "addr": "10.0.0.1:6789", "nonce": 0}]}},
    {"rank": 2, "name": "c", "public_addrs": {"addrvec": [
        {"type": "v2", "addr": "10.0.0.3:3300", "nonce": 0}]}},
    {"rank": 3, "name": "old", "addr": "10.0.0.4:6789/0"},
]}


def test_parse_mon_dump_in_rank_order_with_bare_hosts() -> None:
    assert monitors.parse_mon_dump(DUMP) == [
        MonitorAddress("a", ("10.0.0.1", 6789), ("10.0.0.1", 3300)),
        MonitorAddress("b", ("2001:db8::2", 6789), ("2001:db8::2", 3300)),
        MonitorAddress("c", None, ("10.0.0.3", 3300)),
        MonitorAddress("old", ("10.0.0.4", 6789), None),
    ]


@pytest.mark.parametrize("bad", [None, [], {"epoch": 1}, {"mons": "x"}])
def test_not_a_monmap(bad) -> None:
    with pytest.raises(exception.StorageError, match="mon dump"):
        monitors.parse_mon_dump(bad)


def test_host_port_brackets_ipv6() -> None:
    assert monitors.host_port(("2001:db8::1", 6789)) == "[2001:db8::1]:6789"
    assert monitors.host_port(("10.0.0.1", 3300)) == "10.0.0.1:3300"
    assert monitors.host_port(("mon.example", 6789)) == "mon.example:6789"
    assert monitors.split_addr("[::1]:6789/0") == ("::1", 6789)


def test_mon_host_list_per_messenger_version() -> None:
    mons = monitors.parse_mon_dump(DUMP)
    assert monitors.mon_host_list(mons) == ["10.0.0.1:6789", "[2001:db8::2]:6789", "10.0.0.4:6789"]
    assert monitors.mon_host_list(mons, "v2") == ["10.0.0.1:3300", "[2001:db8::2]:3300",
                                                  "10.0.0.3:3300"]
    with pytest.raises(ValueError):
        monitors.mon_host_list(mons, "v3")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Any) -> Any:
    fake = FakeEnv(tmp_path, pools=(), user=None)
    cluster = fake.cluster
    state = {"dump": DUMP, "fail": 0, "calls": 0}

    def handler(cmd: dict[str, Any], inbuf: bytes) -> tuple[int, bytes, str]:
        state["calls"] += 1
        if state["fail"]:
            return -errno.ETIMEDOUT, b"", "monitor did not answer"
        return 0, json.dumps(state["dump"]).encode(), ""

    cluster.mon_commands["mon dump"] = handler
    client = fake.new_client()
    clock = Clock()
    yield client, state, clock
    client.close()


def test_cache_asks_once_per_ttl(env) -> None:
    client, state, clock = env
    cache = MonitorCache(client, ttl=60, clock=clock)
    first = cache.get()
    clock.now += 59
    assert cache.get() == first and state["calls"] == 1
    state["dump"] = {"mons": DUMP["mons"][:1]}
    clock.now += 2
    assert [m.name for m in cache.get()] == ["b"] and state["calls"] == 2


def test_refresh_and_invalidate_ask_again(env) -> None:
    client, state, clock = env
    cache = MonitorCache(client, ttl=3600, clock=clock)
    cache.get()
    cache.refresh()
    cache.invalidate()
    cache.get()
    assert state["calls"] == 3


def test_zero_ttl_asks_every_time(env) -> None:
    client, state, clock = env
    cache = MonitorCache(client, ttl=0, clock=clock)
    cache.get()
    cache.get()
    assert state["calls"] == 2


def test_a_failed_refresh_falls_back_to_the_last_list(env, caplog) -> None:
    client, state, clock = env
    cache = MonitorCache(client, ttl=10, clock=clock)
    known = cache.get()
    state["fail"] = 1
    clock.now += 11
    with caplog.at_level(logging.WARNING):
        assert cache.get() == known
    assert "monitor list" in caplog.text
    with pytest.raises(exception.OperationTimeout):
        cache.refresh()  # an explicit refresh reports the failure
    state["fail"] = 0
    cache.get()
    assert state["calls"] == 4  # the refresh was retried on the next call


def test_the_first_failure_raises(env) -> None:
    client, state, clock = env
    state["fail"] = 1
    with pytest.raises(exception.OperationTimeout, match="mon dump"):
        MonitorCache(client, clock=clock).get()
    state["fail"], state["dump"] = 0, {"mons": []}
    with pytest.raises(exception.StorageError, match="no monitor"):
        MonitorCache(client, clock=clock).get()
