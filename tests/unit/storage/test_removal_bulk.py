# SPDX-License-Identifier: Apache-2.0
"""Bulk cleanup: many instances at once, bounded, one report instance by instance (fakes)."""

from __future__ import annotations

import concurrent.futures
import threading
import uuid
from typing import Any

from rbd_driver.backends.rbd import Rbd
from tests.unit.backends.test_rbd import RAW, Env, _KernelMaps
from tests.unit.storage.test_removal import Guest


def _instance(env: Env, disks: tuple[str, ...] = ("disk", "disk.local")) -> tuple[str, list[str]]:
    inst = str(uuid.uuid4())
    for name in disks:
        env.cluster.add_image("vms", f"{inst}_{name}", 1 << 20)
    return inst, [f"{inst}_{n}" for n in disks]


def test_a_mix_of_instances_each_in_its_own_report(env, tmp_path, monkeypatch) -> None:
    maps = _KernelMaps(tmp_path / "sys")
    maps.install(monkeypatch)
    env.conf.set_override("access", "kernelspace", group="rbd")
    env.conf.set_override("cleanup_concurrency", 4, group="rbd")
    env.driver.cleanup_concurrency = 4
    plain, plain_disks = _instance(env)
    watched, (watched_disk,) = _instance(env, ("disk",))
    cloned, (cloned_disk,) = _instance(env, ("disk",))
    mapped, (mapped_disk, mapped_idle) = _instance(env)
    empty = str(uuid.uuid4())
    bystander, bystander_disks = _instance(env)
    env.cluster.image("vms", cloned_disk).create_snap("base", protect=True)
    child = env.disk(bystander, "from-cloned")
    child.direct_fetch("img", RAW, [{"url": f"rbd://{env.fsid}/vms/{cloned_disk}/base"}])
    maps.busy.add(maps.add("vms", mapped_disk))
    maps.add("vms", mapped_idle)
    guest = Guest(env)
    guest.open("vms", watched_disk)
    try:
        report = Rbd.cleanup_instances(env.conf, [plain, watched, cloned, mapped, empty],
                                       driver=env.driver)
    finally:
        guest.close()
    assert list(report.instances) == [plain, watched, cloned, mapped, empty]
    r = report.instances
    assert sorted(r[plain].removed) == sorted(plain_disks) and r[plain].ok
    assert list(r[watched].busy) == [watched_disk] and not r[watched].removed
    assert "has clones" in r[cloned].trashed[cloned_disk]
    assert r[mapped].removed == [mapped_idle] and "/dev/rbd" in r[mapped].busy[mapped_disk]
    assert r[empty].removed == [] and r[empty].ok
    assert not report.ok
    # The fake cluster's own state: the bystander untouched, the busy ones in place.
    assert env.vms() == sorted(bystander_disks + [child.rbd_name, watched_disk, mapped_disk])
    assert env.trash() == [cloned_disk]
    assert report.as_dict()["instances"][watched]["busy"][watched_disk]


def test_removals_in_flight_are_bounded_by_cleanup_concurrency(env, monkeypatch) -> None:
    """Three removals run at once, and no fourth worker thread exists.

    The first three removals wait for each other (so three run at once). The
    third also waits until the engine has submitted every removal of its
    batch: a thread pool starts its threads inside ``submit``, so by then
    every worker thread it will ever have exists, while the three it started
    are still held, and the test counts them. No sleep, no timing."""
    env.driver.cleanup_concurrency = 3
    instances = [_instance(env)[0] for _ in range(6)]
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "entered": 0, "threads": 0}
    workers: set[str] = set()
    together = threading.Barrier(3)
    batch = {"items": 0, "submitted": 0}
    all_submitted = threading.Event()
    pool_class = concurrent.futures.ThreadPoolExecutor

    class CountingPool(pool_class):  # type: ignore[misc, valid-type]
        def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
            future = super().submit(*args, **kwargs)
            with lock:
                batch["submitted"] += 1
                if batch["submitted"] == batch["items"]:
                    all_submitted.set()
            return future

    def cleanup_threads() -> int:
        return sum(t.name.startswith("rbd-driver-cleanup") for t in threading.enumerate())

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", CountingPool)
    remove = env.driver.remove_image
    map_bounded = env.driver.map_bounded

    def spied_map(call: Any, items: list[Any]) -> list[Any]:
        with lock:
            batch.update(items=len(items), submitted=0)
            all_submitted.clear()
        return map_bounded(call, items)

    def spied_remove(name: str, pool: str | None = None) -> Any:
        with lock:
            state["now"] += 1
            state["entered"] += 1
            state["peak"] = max(state["peak"], state["now"])
            workers.add(threading.current_thread().name)
            entered = state["entered"]
        if entered <= 3:
            if entered == 3:
                assert all_submitted.wait(30), batch  # never waited long when green
                state["threads"] = cleanup_threads()
            together.wait(30)  # BrokenBarrierError: fewer than three at once
        try:
            return remove(name, pool)
        finally:
            with lock:
                state["now"] -= 1

    env.driver.map_bounded = spied_map  # type: ignore[method-assign]
    env.driver.remove_image = spied_remove  # type: ignore[method-assign]
    report = Rbd.cleanup_instances(env.conf, instances, driver=env.driver)
    assert report.ok and sum(len(r.removed) for r in report.instances.values()) == 12
    assert batch["items"] == 12, batch  # one batch: every disk of the six instances
    assert state["threads"] == 3, state  # every worker thread, counted while three were held
    assert state["peak"] == 3 and len(workers) == 3, (state, workers)
    assert env.vms() == []


def test_cleanup_volumes_uses_the_same_engine(env) -> None:
    env.driver.cleanup_concurrency = 4
    names = [f"volume-{i}" for i in range(8)]
    for name in names:
        env.cluster.add_image("vms", name, 1 << 20)
    env.cluster.add_image("vms", "keep", 1 << 20)
    seen: set[str] = set()
    remove = env.driver.remove_image

    def record(name: str, pool: str | None = None) -> Any:
        seen.add(threading.current_thread().name)
        return remove(name, pool)

    env.driver.remove_image = record  # type: ignore[method-assign]
    report = env.driver.cleanup_volumes(lambda n: n.startswith("volume-"))
    assert sorted(report.removed) == names and env.vms() == ["keep"]
    assert seen and all(t.startswith("rbd-driver-cleanup") for t in seen)


def test_one_at_a_time_runs_in_the_callers_thread(env) -> None:
    env.driver.cleanup_concurrency = 1
    inst, disks = _instance(env)
    threads: set[str] = set()
    remove = env.driver.remove_image

    def record(name: str, pool: str | None = None) -> Any:
        threads.add(threading.current_thread().name)
        return remove(name, pool)

    env.driver.remove_image = record  # type: ignore[method-assign]
    assert sorted(Rbd.cleanup_instance(env.conf, inst, driver=env.driver).removed) == disks
    assert threads == {threading.current_thread().name}
