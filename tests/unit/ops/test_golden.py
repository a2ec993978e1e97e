# SPDX-License-Identifier: Apache-2.0
"""Golden images, the clone-depth policy, background flattens and instance snapshots, on fakes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.ops.snapshots import InstanceSnapshots
from rbd_driver.storage import convert
from rbd_driver.storage.flatten_queue import FlattenQueue
from rbd_driver.storage.location import RbdLocation, parse_location
from rbd_driver.testing.fixtures import FakeEnv

MIB = 1 << 20


class Env(FakeEnv):
    def __init__(self, tmp_path: Any) -> None:
        super().__init__(tmp_path, user=None)
        self.raw = tmp_path / "golden.raw"
        with open(self.raw, "wb") as f:
            f.truncate(8 * MIB)
            f.write(b"golden bytes" * 100)

    def golden(self, **kwargs: Any) -> GoldenImages:
        return GoldenImages(self.driver, pool="images", **kwargs)


def test_register_imports_snapshots_protects_and_records_the_location(env) -> None:
    with env.golden() as golden:
        image = golden.register("ubuntu", str(env.raw))
        assert parse_location(image.location) == RbdLocation(env.driver.fsid, "images",
                                                             "ubuntu", "snap")
        assert image.size == 8 * MIB
        stored = env.cluster.image("images", "ubuntu")
        assert stored.snap_by_name("snap").protected
        assert stored.read(0, 12) == b"golden bytes"
        assert [g.name for g in golden.list()] == ["ubuntu"]
        assert golden.get("ubuntu") == image
        with pytest.raises(exception.ImageExists):
            golden.register("ubuntu", str(env.raw))
    assert env.cluster.pool("images").image_names() == ["ubuntu"]


def test_a_failed_registration_leaves_nothing(env, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        env.cluster.add_image("images", args[2].split("/")[1].split(":")[0], MIB)
        raise exception.ImageConversionFailed(path=args[0], source_format="qcow2", detail="x")

    with open(env.raw, "r+b") as f:
        f.write(b"QFI\xfb" + (3).to_bytes(4, "big"))
    monkeypatch.setattr(convert, "convert_to_rbd", broken)
    with pytest.raises(exception.ImageConversionFailed):
        env.golden().register("bad", str(env.raw))
    assert env.cluster.pool("images").image_names() == []


def test_clone_depth_policy(env) -> None:
    golden = env.golden(max_clone_depth=2, soft_limit=1)
    golden.register("base", str(env.raw))
    first = golden.clone("base", "disk1")
    assert (first.depth, first.flatten) == (1, "none")
    assert env.driver.parent_info("disk1") == ("images", "base", "snap")
    env.driver.create_snap("disk1", "s")  # unprotected: the policy protects it
    second = golden.clone(RbdLocation(env.driver.fsid, "vms", "disk1", "s"), "disk2")
    assert (second.depth, second.flatten) == (2, "queued")
    assert env.cluster.image("vms", "disk1").snap_by_name("s").protected
    second.future.result(timeout=10)
    assert env.driver.parent_info("disk2") is None
    env.driver.create_snap("disk1", "t", protect=True)
    golden2 = env.golden(max_clone_depth=1, soft_limit=1)
    third = golden2.clone(RbdLocation(env.driver.fsid, "vms", "disk1", "t"), "disk3")
    assert (third.depth, third.flatten) == (2, "done")
    assert env.driver.parent_info("disk3") is None
    assert env.cluster.image("vms", "disk3").read(0, 12) == b"golden bytes"
    golden.close()
    golden2.close()


def test_register_from_a_snapshot_queues_the_flatten_under_its_final_name(env) -> None:
    golden = env.golden(max_clone_depth=5, soft_limit=1)
    golden.register("base", str(env.raw))
    golden.clone("base", "disk1")
    env.driver.create_snap("disk1", "s")
    made = golden.register_from_snapshot("derived", RbdLocation(env.driver.fsid, "vms",
                                                                "disk1", "s"))
    assert made.name == "derived"
    assert golden.flattener.wait(timeout=10)
    assert env.driver.parent_info("derived", "images") is None
    assert golden.depth("derived", "images") == 0
    golden.close()


def test_delete_refuses_with_children_names_and_force_moves_to_trash(env) -> None:
    golden = env.golden()
    golden.register("base", str(env.raw))
    for disk in ("b-disk", "a-disk"):
        golden.clone("base", disk)
    assert golden.children("base") == ["vms/a-disk", "vms/b-disk"]
    with pytest.raises(exception.GoldenImageHasClones) as info:
        golden.delete("base")
    assert "vms/a-disk, vms/b-disk" in str(info.value) and "force=True" in str(info.value)
    assert isinstance(info.value, exception.SnapshotHasClones)
    assert golden.delete("base", force=True) == "trashed"
    assert env.cluster.pool("images").image_names() == []
    assert env.cluster.image("vms", "a-disk").read(0, 6) == b"golden"
    golden.register("other", str(env.raw))
    assert golden.delete("other") == "removed"
    golden.close()


def test_flatten_queue_bounds_concurrency_and_deduplicates() -> None:
    running, peak, lock, release = [0], [0], threading.Lock(), threading.Event()
    two_running = threading.Event()

    class SlowDriver:
        pool = "vms"

        def parent_info(self, image: str, pool: str) -> Any:
            return ("images", "base", "snap")

        def flatten(self, image: str, pool: str) -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                if running[0] == 2:
                    two_running.set()
            release.wait(10)
            time.sleep(0.01)
            with lock:
                running[0] -= 1

    queue = FlattenQueue(SlowDriver(), concurrency=2)  # type: ignore[arg-type]
    futures = [queue.submit("vms", f"disk{i}") for i in range(6)]
    assert queue.submit("vms", "disk0") is futures[0]
    # Both workers are held inside flatten until release: never set with one.
    assert two_running.wait(10), f"only {peak[0]} flatten(s) ran at once"
    assert peak[0] == 2 and len(queue.pending()) == 6
    release.set()
    assert queue.wait(timeout=10)
    assert peak[0] == 2 and queue.pending() == []
    queue.close()
    with pytest.raises(exception.InvalidArgument):
        FlattenQueue(SlowDriver(), concurrency=0)  # type: ignore[arg-type]


def test_instance_snapshots(env) -> None:
    env.cluster.add_image("vms", "disk", 4 * MIB, data=b"one")
    snaps = InstanceSnapshots(env.driver)
    first = snaps.create("disk", "first")
    assert first.timestamp.tzinfo is not None and not first.protected
    env.cluster.image("vms", "disk").write(b"two")
    snaps.create("disk", "second")
    assert [s.name for s in snaps.list("disk")] == ["first", "second"]
    snaps.rollback("disk", "first")
    assert env.cluster.image("vms", "disk").read(0, 3) == b"one"
    with pytest.raises(exception.InvalidArgument):
        snaps.create("disk", "a@b")
    with pytest.raises(exception.SnapshotNotFound):
        snaps.rollback("disk", "nope")
    # A snapshot with a clone: refused with its name, or flattened first.
    env.driver.protect_snap("disk", "second")
    env.driver.clone(RbdLocation(env.driver.fsid, "vms", "disk", "second"), "child")
    with pytest.raises(exception.SnapshotHasClones, match="vms/child"):
        snaps.delete("disk", "second")
    assert snaps.delete("disk", "second", flatten_children=True) == ["vms/child"]
    assert env.driver.parent_info("child") is None
    assert [s.name for s in snaps.list("disk")] == ["first"]
    env.driver.close()
    env.cluster.assert_no_open_handles()
