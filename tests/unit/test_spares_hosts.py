"""Spares shared by hosts: clone_spares counts the pool's spares, and a golden
delete holds every host's refills (fakes; each driver is another host)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage.location import parse_location
from tests.unit.test_spares import Env


@pytest.fixture
def env(tmp_path: Any) -> Any:
    env = Env(tmp_path, spares=2)
    yield env
    env.close()
    env.cluster.assert_no_open_handles()


def test_clone_spares_is_the_pools_count_whichever_host_made_them(env: Env) -> None:
    hosts = [env.driver, env.new_driver(), env.new_driver()]
    for round_ in range(3):
        for host in hosts:
            disk = env.launch(host)
            assert disk.exists()
            for other in hosts:
                assert other.wait_spares(5)
            assert len(env.spares()) == 2, (round_, env.spares())
    # Nine launches: one clone, two spares, then each claim refilled by one clone.
    assert env.cluster.calls.count("RBD.clone") == 1 + 2 + 8


def test_a_host_takes_spares_another_host_made(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    made = {env.cluster.image("vms", s).id for s in env.spares()}
    other = env.new_driver()
    clones = env.cluster.calls.count("RBD.clone")
    with env.refills_deferred(other):
        disk = env.launch(other)
        assert env.cluster.image("vms", disk.rbd_name).id in made
        assert env.cluster.calls.count("RBD.clone") == clones  # no clone at launch
    assert "RBD.list" not in env.cluster.calls  # found by name prefix, not a pool listing


def test_a_hold_stops_every_hosts_refills_until_it_ends(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    other = env.new_driver()
    identity = env.identity()
    with env.driver.spares.hold_everywhere(identity):
        assert env.cluster.pool("images").objects  # the hold object is in the golden's pool
        env.launch(other)  # claims one; its refill is held
        assert other.wait_spares(5)
        assert len(env.spares()) == 1
    assert not [k for k in env.cluster.pool("images").objects if "spares_hold" in k]
    env.launch(other)
    assert other.wait_spares(5)
    assert len(env.spares()) == 2


def test_an_expired_hold_does_not_hold(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    with env.driver.spares.hold_everywhere(env.identity(), seconds=-1):
        other = env.new_driver()
        env.launch(other)
        assert other.wait_spares(5)
        assert len(env.spares()) == 2


def test_golden_delete_racing_another_hosts_refill_removes_the_golden(env: Env) -> None:
    env.conf.set_override("clone_spares", 4, group="rbd")
    other = env.new_driver()
    started, gate = threading.Event(), threading.Event()
    real_clone = other.clone

    def slow_clone(location: Any, name: str, pool: str | None = None) -> None:
        real_clone(location, name, pool)
        if name.startswith("rbd-driver-spare-making."):
            started.set()
            gate.wait(5)

    other.clone = slow_clone  # type: ignore[method-assign]
    disk = env.launch(other)  # the other host's refill starts and stops mid-spare
    assert started.wait(5)
    from rbd_driver.backends.rbd import Rbd

    assert Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=other).ok
    golden = GoldenImages(env.driver, pool="images")
    done = threading.Event()
    outcome: list[Any] = []

    def delete() -> None:
        try:
            outcome.append(golden.delete("golden"))
        except exception.RbdDriverError as err:
            outcome.append(err)
        done.set()

    worker = threading.Thread(target=delete)
    worker.start()
    gate.set()  # the other host finishes its clone while the delete runs
    worker.join(30)
    assert outcome == ["removed"], outcome
    assert other.wait_spares(5)
    assert env.cluster.pool("images").image_names() == []
    assert env.spares() == []
    with pytest.raises(exception.ImageNotFound):
        env.driver.snapshot_identity(parse_location(env.url))


def test_a_spare_finished_after_a_hold_began_is_removed_by_its_maker(env: Env) -> None:
    """A clone started before the hold finishes after it: its maker removes it."""
    other = env.new_driver()
    cloned, release = threading.Event(), threading.Event()
    real_clone = other.clone

    def slow_clone(location: Any, name: str, pool: str | None = None) -> None:
        real_clone(location, name, pool)
        if name.startswith("rbd-driver-spare-making.") and not cloned.is_set():
            cloned.set()
            assert release.wait(5)

    other.clone = slow_clone  # type: ignore[method-assign]
    env.launch(other)  # the refill's first clone is made, then waits
    assert cloned.wait(5)
    with env.driver.spares.hold_everywhere(env.identity()):
        release.set()
        assert other.wait_spares(5)
        assert env.spares() == []  # made, then removed by its maker
    assert env.cluster.calls.count("RBD.clone") >= 2


def test_a_spare_finished_after_its_golden_is_gone_is_removed(env: Env, monkeypatch) -> None:
    other = env.new_driver()
    real_identity = other.snapshot_identity

    def golden_gone(location: Any) -> Any:
        raise exception.ImageNotFound(pool=location.pool, image=location.image)

    env.launch(other)
    assert other.wait_spares(5)
    made = len(env.spares())
    monkeypatch.setattr(other, "snapshot_identity", golden_gone)
    from rbd_driver.storage.spares import _Job

    job = _Job(other.spares.key(env.identity()), parse_location(env.url), env.identity(), 5)
    assert other.spares._still_wanted(job) is False
    monkeypatch.setattr(other, "snapshot_identity", real_identity)
    assert other.spares._still_wanted(job) is True
    assert made == 2
