# SPDX-License-Identifier: Apache-2.0
"""The cluster-wide lock (storage/rados_lock.py), on the fake librados."""

from __future__ import annotations

import threading
import time

import pytest

from rbd_driver import exception
from rbd_driver.storage.rados_lock import LOCK_NAME, cluster_lock
from rbd_driver.testing.fixtures import FakeEnv


@pytest.fixture
def clients(tmp_path):
    fake = FakeEnv(tmp_path, pools=("cache",))
    made = [fake.new_client(user=u) for u in ("a", "b")]
    yield made, fake.cluster
    for c in made:
        c.close()


def test_lock_is_held_in_the_block_and_released_after(clients) -> None:
    (a, _), cluster = clients
    with cluster_lock(a, "cache", "obj", timeout=1):
        assert len(cluster.lockers("cache", "obj", LOCK_NAME)) == 1
    assert cluster.lockers("cache", "obj", LOCK_NAME) == []


def test_lock_is_released_when_the_block_raises(clients) -> None:
    (a, b), cluster = clients
    with pytest.raises(RuntimeError):
        with cluster_lock(a, "cache", "obj", timeout=1):
            raise RuntimeError("import failed")
    with cluster_lock(b, "cache", "obj", timeout=1):
        pass


def test_second_holder_waits_then_times_out(clients) -> None:
    (a, b), _ = clients
    with cluster_lock(a, "cache", "obj", timeout=1):
        started = time.monotonic()
        with pytest.raises(exception.OperationTimeout, match="cache/obj"):
            with cluster_lock(b, "cache", "obj", timeout=0.5, poll=0.1):
                pass
        assert 0.4 < time.monotonic() - started < 3


def test_waiter_gets_the_lock_when_released(clients) -> None:
    (a, b), _ = clients
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with cluster_lock(a, "cache", "obj", timeout=1):
            held.set()
            time.sleep(0.3)
            order.append("a")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with cluster_lock(b, "cache", "obj", timeout=5, poll=0.05):
        order.append("b")
    t.join()
    assert order == ["a", "b"]


def test_lease_is_renewed_while_held(clients) -> None:
    (a, b), cluster = clients
    with cluster_lock(a, "cache", "obj", timeout=1, lease=3):
        time.sleep(3.5)  # past the first lease: renewals must have kept it
        with pytest.raises(exception.OperationTimeout):
            with cluster_lock(b, "cache", "obj", timeout=0.2, poll=0.05):
                pass


def test_expired_lease_of_a_dead_holder_is_taken_over(clients) -> None:
    (a, b), _ = clients
    a.get_ioctx("cache").lock_exclusive("obj", LOCK_NAME, "dead", "", 1, 0)
    started = time.monotonic()
    with cluster_lock(b, "cache", "obj", timeout=5, poll=0.1):
        assert time.monotonic() - started >= 0.9
