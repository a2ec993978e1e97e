# SPDX-License-Identifier: Apache-2.0
"""The background removal of direct_snapshot's temporary disk snapshot, on fakes.

The oracle is the fake cluster's own state (the snapshots an image has), not
the queue's report alone.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pytest

from rbd_driver.backends import instance_snapshot
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage import snapshot_removal
from rbd_driver.storage.snapshot_removal import SnapshotRemovalQueue
from tests.unit.backends.test_instance_snapshot import GOLDEN, MIB, RAW
from tests.unit.backends.test_instance_snapshot import Env as SnapshotEnv
from tests.unit.storage.test_removal import Guest

TEMP = instance_snapshot.TEMP_SNAPSHOT_PREFIX


class Env(SnapshotEnv):
    def __init__(self, tmp_path: Any) -> None:
        super().__init__(tmp_path)
        self.driver.close()
        # Removal retries as in production, without the waits.
        self.driver = self.new_driver(destroy_retries=3, destroy_retry_interval=0,
                                      sleep=time.sleep)


def test_the_location_is_whole_before_the_removal_runs_and_the_snapshot_goes_after(
        env) -> None:
    disk = env.launched(b"changed" * 1000)
    before = env.cluster.image("vms", disk.rbd_name).read(0, GOLDEN)
    gate, started = threading.Event(), threading.Event()
    real = env.driver.remove_snap

    def held(*args: Any, **kwargs: Any) -> None:
        started.set()
        assert gate.wait(10)
        real(*args, **kwargs)

    env.driver.remove_snap = held  # type: ignore[method-assign]
    url = disk.direct_snapshot("s1", "raw", "snap-img")
    assert started.wait(10)
    spec = f"vms/{disk.rbd_name}@{TEMP}s1"
    assert env.driver.snapshot_remover.pending() == [spec]
    assert env.snaps("vms", disk.rbd_name) == [TEMP + "s1"]  # not removed yet
    made = env.cluster.image("images", "snap-img")
    assert made.snap_by_name("snap").protected
    assert made.read(0, GOLDEN, snapshot="snap") == before
    again = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    again.direct_fetch("snap-img", RAW, [{"url": url, "metadata": {}}])
    assert env.cluster.image("vms", again.rbd_name).read(0, GOLDEN) == before
    gate.set()
    assert env.driver.snapshot_remover.wait(10)
    assert env.snaps("vms", disk.rbd_name) == []
    assert env.driver.snapshot_remover.pending() == []
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_a_failed_removal_is_retried_until_it_works(env, caplog) -> None:
    disk = env.launched(b"changed")
    env.cluster.fail_next("Image.remove_snap", env.rbd.IOError, times=3)  # 1 + 2 retries
    with caplog.at_level(logging.WARNING, logger="rbd_driver.storage.snapshot_removal"):
        disk.direct_snapshot("s1", "raw", "snap-img")
        assert env.driver.snapshot_remover.wait(10)
    assert env.snaps("vms", disk.rbd_name) == []
    assert env.driver.snapshot_remover.failed() == {}
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3 and all(r.levelno == logging.WARNING for r in retries)


def test_a_removal_that_keeps_failing_is_reported_and_can_be_queued_again(
        env, caplog) -> None:
    disk = env.launched(b"changed")
    env.cluster.fail_next("Image.remove_snap", env.rbd.IOError, times=4)  # every try
    with caplog.at_level(logging.ERROR, logger="rbd_driver.storage.snapshot_removal"):
        disk.direct_snapshot("s1", "raw", "snap-img")
        assert env.driver.snapshot_remover.wait(10)
    spec = f"vms/{disk.rbd_name}@{TEMP}s1"
    assert list(env.driver.snapshot_remover.failed()) == [spec]
    assert env.snaps("vms", disk.rbd_name) == [TEMP + "s1"]
    assert any(spec in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    # Queued again (the cluster works now): removed, and no longer a failure.
    env.driver.snapshot_remover.submit("vms", disk.rbd_name, TEMP + "s1").result(10)
    assert env.snaps("vms", disk.rbd_name) == []
    assert env.driver.snapshot_remover.failed() == {}


def _died_before_removal(env: Env, disk: Rbd, name: str) -> None:
    """direct_snapshot as if the process died before its background removal ran."""
    queue = env.driver.snapshot_remover
    submit = queue.submit
    queue.submit = lambda *args: None  # type: ignore[method-assign,assignment,return-value]
    try:
        disk.direct_snapshot(name, "raw", f"img-{name}")
    finally:
        queue.submit = submit  # type: ignore[method-assign]


@pytest.mark.parametrize("flatten", [False, True])
def test_cleanup_of_the_instance_removes_a_leftover_from_a_disk_in_use(env, flatten) -> None:
    env.conf.set_override("snapshot_flatten", flatten, group="rbd")
    disk = env.launched(b"changed")
    _died_before_removal(env, disk, "s1")
    env.cluster.image("vms", disk.rbd_name).create_snap("users-own")
    assert env.snaps("vms", disk.rbd_name) == [TEMP + "s1", "users-own"]
    guest = Guest(env)  # a running guest: the disk itself stays
    try:
        guest.open("vms", disk.rbd_name)
        report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
        assert list(report.busy) == [disk.rbd_name] and report.failed == {}
        assert env.snaps("vms", disk.rbd_name) == ["users-own"]
        assert env.cluster.image("images", "img-s1").read(5 * MIB, 7, snapshot="snap") == b"changed"
    finally:
        guest.close()
    report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
    assert report.removed == [disk.rbd_name]
    assert disk.rbd_name not in env.images("vms")


def test_a_leftover_that_cannot_be_removed_is_reported(env) -> None:
    disk = env.launched(b"changed")
    _died_before_removal(env, disk, "s1")
    guest = Guest(env)
    try:
        guest.open("vms", disk.rbd_name)
        env.cluster.fail_next("Image.remove_snap", env.rbd.IOError)
        report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
        assert list(report.failed) == [f"{disk.rbd_name}@{TEMP}s1"] and not report.ok
    finally:
        guest.close()


def test_close_gives_queued_removals_one_last_try_without_waiting_out_retries(env) -> None:
    env.driver.destroy_retry_interval = 3600  # a retry wait that close() must cut short
    disk = env.launched(b"changed")
    env.cluster.fail_next("Image.remove_snap", env.rbd.IOError, times=None)
    disk.direct_snapshot("s1", "raw", "snap-img")
    queue: SnapshotRemovalQueue = env.driver.snapshot_remover
    env.driver.close()  # returns: the hour-long wait was cut short
    assert list(queue.failed()) == [f"vms/{disk.rbd_name}@{TEMP}s1"]
    env.cluster.clear_failures()
    env.cluster.assert_no_open_handles()


def _removal_holding_the_disk(env, monkeypatch) -> tuple[Any, threading.Event, threading.Thread]:
    """Launch a disk and snapshot it with its background removal held open on the
    disk (as librbd does while it removes a snapshot: the disk is open, watched).
    Return the disk, the gate that lets the removal go on, and a thread that opens
    the gate once something waits for the removal (start it, then remove)."""
    disk = env.launched(b"changed")
    gate, held = threading.Event(), threading.Event()
    real = env.driver.remove_snap

    def holding_the_disk(name: str, *args: Any, **kwargs: Any) -> None:
        with env.driver.client.open_image("vms", name, op="test"):
            held.set()
            assert gate.wait(10)
        real(name, *args, **kwargs)

    env.driver.remove_snap = holding_the_disk  # type: ignore[method-assign]
    waiting = threading.Event()
    real_wait = snapshot_removal.wait_for_images

    def wait_for_images(*args: Any, **kwargs: Any) -> bool:
        waiting.set()
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(snapshot_removal, "wait_for_images", wait_for_images)
    release = threading.Thread(target=lambda: waiting.wait(10) and gate.set())
    disk.direct_snapshot("s1", "raw", "snap-img")
    assert held.wait(10)
    return disk, gate, release


def test_cleanup_of_the_instance_waits_for_a_removal_holding_the_disk_open(
        env, monkeypatch) -> None:
    disk, gate, release = _removal_holding_the_disk(env, monkeypatch)
    other = env.new_driver()  # another driver of the process, as cleanup_instance makes its own
    release.start()
    try:
        report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=other)
    finally:
        gate.set()
        release.join()
        other.close()
    assert report.removed == [disk.rbd_name] and report.ok, report
    assert disk.rbd_name not in env.images("vms")
    assert env.driver.snapshot_remover.wait(10)


def test_remove_image_waits_for_this_process_s_removal_holding_the_disk(env, monkeypatch) -> None:
    # Every removal path, not only cleanup_instance: RBDDriver.remove_image
    # waits for our own background removal instead of reporting it as a client.
    disk, gate, release = _removal_holding_the_disk(env, monkeypatch)
    release.start()
    try:
        report = env.driver.remove_image(disk.rbd_name)
    finally:
        gate.set()
        release.join()
    assert report.removed == [disk.rbd_name] and report.ok, report
    assert disk.rbd_name not in env.images("vms")
