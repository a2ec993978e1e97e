# SPDX-License-Identifier: Apache-2.0
"""direct_snapshot, cleanup_direct_snapshot and the clone-depth policy of direct_fetch, on fakes."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.backends import clone_depth, instance_snapshot
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage.location import parse_location
from rbd_driver.testing.fixtures import FakeEnv

MIB = 1 << 20
GOLDEN = 16 * MIB
RAW = {"disk_format": "raw"}
GOLDEN_DATA = b"golden data " * 1000


class Env(FakeEnv):
    def __init__(self, tmp_path: Any) -> None:
        super().__init__(tmp_path, pools=("vms", "images", "snaps"))
        self.fsid = self.driver.fsid
        image = self.cluster.add_image("images", "golden", GOLDEN, data=GOLDEN_DATA)
        image.create_snap("snap", protect=True)
        self.golden_url = f"rbd://{self.fsid}/images/golden/snap"

    def launched(self, written: bytes = b"", offset: int = 5 * MIB) -> Rbd:
        disk = Rbd(str(uuid.uuid4()), "disk", self.conf, driver=self.driver)
        disk.direct_fetch("img", RAW, [{"url": self.golden_url, "metadata": {}}])
        if written:
            self.cluster.image("vms", disk.rbd_name).write(written, offset)
        return disk

    def images(self, pool: str) -> list[str]:
        return self.cluster.pool(pool).image_names()

    def snaps(self, pool: str, name: str) -> list[str]:
        return sorted(s.name for s in self.cluster.image(pool, name).snaps.values())


def _expected(disk_bytes: bytes) -> bytes:
    return disk_bytes


@pytest.mark.parametrize("flatten", [False, True])
def test_snapshot_has_the_disk_bytes_and_launches(env, flatten) -> None:
    env.conf.set_override("snapshot_flatten", flatten, group="rbd")
    disk = env.launched(b"written after launch" * 100)
    before = env.cluster.image("vms", disk.rbd_name).read(0, GOLDEN)
    seen: list[tuple[int, int]] = []
    url = disk.direct_snapshot("tmp-snap", "raw", "snap-img",
                               progress=lambda d, t: seen.append((d, t)))
    env.cluster.image("vms", disk.rbd_name).write(b"LATER", 5 * MIB)  # after: not in it
    loc = parse_location(url)
    assert (loc.pool, loc.image, loc.snapshot) == ("images", "snap-img", "snap")
    made = env.cluster.image("images", "snap-img")
    assert made.snap_by_name("snap").protected
    assert made.read(0, GOLDEN, snapshot="snap") == before
    parent = made.head.parent
    if flatten:
        assert parent is None
    else:  # shares the golden, never the instance disk
        assert parent is not None and parent.image.name == "golden"
    assert env.driver.snapshot_remover.wait(10)
    assert env.snaps("vms", disk.rbd_name) == []  # the temporary snapshot is gone
    assert env.images("images") == ["golden", "snap-img"]
    assert seen and seen[-1][0] == seen[-1][1]
    again = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    again.direct_fetch("snap-img", RAW, [{"url": url, "metadata": {}}])
    assert env.cluster.image("vms", again.rbd_name).read(0, GOLDEN) == before
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_a_flat_disk_goes_to_snapshot_pool_and_parent_pool_wins(env) -> None:
    disk = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    env.cluster.add_image("vms", disk.rbd_name, 4 * MIB, data=b"flat disk")
    with pytest.raises(exception.ImageUnacceptable, match="snapshot_pool is unset"):
        disk.direct_snapshot("s", "raw", "x")
    env.conf.set_override("snapshot_pool", "snaps", group="rbd")
    assert parse_location(disk.direct_snapshot("s", "raw", "x")).pool == "snaps"
    assert parse_location(disk.direct_snapshot("s", "raw", "y", parent_pool="images")).pool \
        == "images"
    assert env.cluster.image("snaps", "x").read(0, 9, snapshot="snap") == b"flat disk"


def test_other_formats_and_taken_names_are_refused_with_nothing_made(env) -> None:
    disk = env.launched(b"x")
    with pytest.raises(exception.ImageUnacceptable, match="qcow2"):
        disk.direct_snapshot("s", "qcow2", "new")
    with pytest.raises(exception.ImageExists):
        disk.direct_snapshot("s", "raw", "golden")
    taken = instance_snapshot.TEMP_SNAPSHOT_PREFIX + "mine"
    env.cluster.image("vms", disk.rbd_name).create_snap(taken)  # say, a run going on
    with pytest.raises(exception.ImageExists):
        disk.direct_snapshot("mine", "raw", "new")
    assert env.snaps("vms", disk.rbd_name) == [taken]  # not ours to remove
    assert env.images("images") == ["golden"]
    env.driver.remove_snap(disk.rbd_name, taken)
    env.cluster.image("vms", disk.rbd_name).create_snap("mine")  # a user's: no clash
    disk.direct_snapshot("mine", "raw", "new")
    assert env.driver.snapshot_remover.wait(10)
    assert env.snaps("vms", disk.rbd_name) == ["mine"]


# The calls direct_snapshot makes before it returns, and how many times (a fault at
# each call fires). Kept as a snapshot shares the disk's data: a clone of the golden,
# then the data path copies what the disk changed; only the new image's snapshot is
# protected. Flattened (snapshot_flatten): a clone of the disk snapshot (protected for
# it) that librbd flattens. The disk snapshot's removal runs after the return, on the
# driver's snapshot_remover (its failures are retried: tests/unit/storage/test_snapshot_removal.py).
_BOTH = [("Image.create_snap", 0), ("Image.create_snap", 1), ("Image.protect_snap", 0),
         ("RBD.clone", 0), ("RBD.rename", 0)]
FAULTS = ([(False, step, after) for step, after in _BOTH + [
              ("Image.overlap", 0), ("Image.resize", 0), ("Image.diff_iterate", 0),
              ("Image.aio_read", 0), ("Image.aio_write", 0), ("Image.flush", 0)]]
          + [(True, step, after) for step, after in _BOTH + [
              ("Image.protect_snap", 1), ("Image.flatten", 0)]])


@pytest.mark.parametrize("flatten,step,after", FAULTS,
                         ids=[f"{'flat' if f else 'shared'}-{s}-{a}" for f, s, a in FAULTS])
def test_a_fault_at_any_step_leaves_nothing(env, step, after, flatten) -> None:
    env.conf.set_override("snapshot_flatten", flatten, group="rbd")
    disk = env.launched(b"changed" * 1000)
    if step == "Image.resize":
        env.driver.resize(disk.rbd_name, GOLDEN + 4 * MIB)
    before = env.cluster.calls.count(step)
    env.cluster.fail_next(step, env.rbd.IOError, after=after)
    with pytest.raises(exception.StorageError) as raised:
        disk.direct_snapshot("tmp", "raw", "snap-img")
    assert env.cluster.calls.count(step) > before + after  # the injected failure was consumed
    assert isinstance(raised.value.__cause__, env.rbd.IOError)  # and is what was reported
    assert env.images("images") == ["golden"]
    assert env.snaps("vms", disk.rbd_name) == []
    assert env.cluster.image("images", "golden").read(0, len(GOLDEN_DATA)) == GOLDEN_DATA
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_the_fault_matrix_lists_every_call_direct_snapshot_makes(env) -> None:
    """A call added to (or dropped from) direct_snapshot must be added to FAULTS too."""
    for flatten in (False, True):
        env.conf.set_override("snapshot_flatten", flatten, group="rbd")
        disk = env.launched(b"changed" * 1000)
        if not flatten:
            env.driver.resize(disk.rbd_name, GOLDEN + 4 * MIB)
        start = len(env.cluster.calls)
        disk.direct_snapshot("tmp", "raw", f"snap-{flatten}")
        assert env.driver.snapshot_remover.wait(10)
        made = env.cluster.calls[start:]
        listed = {(s, a) for f, s, a in FAULTS if f is flatten}
        steps = {s for s, _ in listed}
        assert {(s, a) for s in steps for a in range(made.count(s))} == listed, flatten


@pytest.mark.parametrize("flatten", [False, True])
def test_an_interrupt_leaves_nothing(env, flatten) -> None:
    env.conf.set_override("snapshot_flatten", flatten, group="rbd")
    disk = env.launched(b"changed" * 1000)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        disk.direct_snapshot("tmp", "raw", "snap-img", progress=interrupt)
    assert env.images("images") == ["golden"]
    assert env.snaps("vms", disk.rbd_name) == []


def test_cancel_leaves_nothing(env) -> None:
    disk = env.launched(b"changed" * 1000)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(exception.OperationCancelled):
        disk.direct_snapshot("tmp", "raw", "snap-img", cancel=cancel)
    assert env.images("images") == ["golden"]


def test_a_shrunk_disk_is_flattened_not_shared(env) -> None:
    disk = env.launched(b"x")
    image = env.cluster.image("vms", disk.rbd_name)
    env.driver.resize(disk.rbd_name, GOLDEN // 2)
    env.driver.resize(disk.rbd_name, GOLDEN)  # regrown: the parent's second half no longer shows through
    before = image.read(0, GOLDEN)
    url = disk.direct_snapshot("tmp", "raw", "snap-img")
    made = env.cluster.image("images", parse_location(url).image)
    assert made.head.parent is None
    assert made.read(0, GOLDEN, snapshot="snap") == before


def test_cleanup_direct_snapshot(env) -> None:
    disk = env.launched(b"x")
    url = disk.direct_snapshot("tmp", "raw", "snap-img")
    disk.cleanup_direct_snapshot(url)
    assert env.snaps("images", "snap-img") == []
    disk.cleanup_direct_snapshot(url)  # again: already gone
    disk.cleanup_direct_snapshot(url, also_destroy_volume=True)
    assert env.images("images") == ["golden"]
    with pytest.raises(exception.InvalidArgument):
        disk.cleanup_direct_snapshot("rbd://nope")
    disk.cleanup_direct_snapshot("rbd://nope", ignore_errors=True)


def test_no_cap_on_the_image_pool_is_named(env) -> None:
    disk = env.launched(b"x")
    env.cluster.fail_next("RBD.clone", env.rbd.PermissionError)
    with pytest.raises(exception.PermissionDenied) as info:
        disk.direct_snapshot("tmp", "raw", "snap-img")
    assert "pool images" in str(info.value) and "client.compute" in str(info.value)
    assert env.images("images") == ["golden"]
    assert env.snaps("vms", disk.rbd_name) == []


# -- the clone-depth policy of direct_fetch -------------------------------------------


def _chain(env: Env, depth: int) -> str:
    """Return the location of a golden snapshot of depth ``depth`` in images."""
    parent = "golden"
    for level in range(depth):
        name = f"level{level + 1}"
        env.rbd.RBD().clone(env.driver.client.get_ioctx("images"), parent, "snap",
                            env.driver.client.get_ioctx("images"), name)
        env.cluster.image("images", name).create_snap("snap", protect=True)
        parent = name
    return f"rbd://{env.fsid}/images/{parent}/snap"


def test_direct_fetch_flattens_past_max_clone_depth(env) -> None:
    env.conf.set_override("max_clone_depth", 2, group="rbd")
    env.conf.set_override("clone_depth_soft_limit", 2, group="rbd")
    url = _chain(env, 2)  # a new disk would be depth 3
    disk = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    disk.direct_fetch("img", RAW, [{"url": url, "metadata": {}}])
    assert disk.parent_info() is None
    assert env.cluster.image("vms", disk.rbd_name).read(0, len(GOLDEN_DATA)) == GOLDEN_DATA


def test_direct_fetch_queues_a_flatten_past_the_soft_limit(env) -> None:
    env.conf.set_override("max_clone_depth", 5, group="rbd")
    env.conf.set_override("clone_depth_soft_limit", 1, group="rbd")
    url = _chain(env, 1)
    disk = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    disk.direct_fetch("img", RAW, [{"url": url, "metadata": {}}])
    assert env.driver.flattener.wait(10)
    assert disk.parent_info() is None
    shallow = env.launched()
    assert shallow.parent_info() == ("images", "golden", "snap")  # depth 1: left alone


def test_a_failed_flatten_removes_the_disk_and_says_why(env) -> None:
    env.conf.set_override("max_clone_depth", 1, group="rbd")
    url = _chain(env, 1)
    env.cluster.fail_next("Image.flatten", env.rbd.IOError)
    disk = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    with pytest.raises(exception.ImageUnacceptable, match="flatten failed"):
        disk.direct_fetch("img", RAW, [{"url": url, "metadata": {}}])
    assert not disk.exists()


def test_a_golden_depth_is_remembered(env) -> None:
    clone_depth._depths.clear()
    env.launched()
    opens = env.cluster.calls.count("Image.parent_info")
    for _ in range(3):
        env.launched()
    assert env.cluster.calls.count("Image.parent_info") == opens  # no walk again


def test_the_policy_costs_a_known_golden_no_call_to_the_cluster(env) -> None:
    env.launched()  # the golden's depth is now known
    location = parse_location(env.golden_url)
    identity = env.driver.snapshot_identity(location)
    disk = env.launched()
    before = len(env.cluster.calls)
    disk._limit_depth(location, identity)
    assert env.cluster.calls[before:] == []


def test_a_remembered_depth_that_would_flatten_is_walked_again(env) -> None:
    # As if the golden's ancestors were flattened since its depth was remembered.
    identity = env.driver.snapshot_identity(parse_location(env.golden_url))
    clone_depth._depths[(env.fsid, identity)] = 7
    disk = env.launched()
    assert disk.parent_info() == ("images", "golden", "snap")  # depth 1: no flatten
    assert env.driver.flattener.pending() == []
    assert clone_depth._depths[(env.fsid, identity)] == 0
    opens = env.cluster.calls.count("Image.parent_info")
    env.launched()  # 0 decides no flatten: not walked again
    assert env.cluster.calls.count("Image.parent_info") == opens


# -- golden rm and the images that share a golden ------------------------------------


def test_golden_rm_names_and_can_flatten_the_snapshot_images_sharing_it(env) -> None:
    from rbd_driver.ops.golden import GoldenImages

    disk = env.launched(b"changed")
    disk.direct_snapshot("tmp", "raw", "snap-img")
    env.driver.remove_image(disk.rbd_name)
    before = env.cluster.image("images", "snap-img").read(0, GOLDEN, snapshot="snap")
    golden = GoldenImages(env.driver, pool="images")
    with pytest.raises(exception.GoldenImageHasClones, match="snap-img .a golden image made"):
        golden.delete("golden")
    assert golden.delete("golden", flatten_images=True) == "removed"
    assert env.images("images") == ["snap-img"]
    assert env.cluster.image("images", "snap-img").read(0, GOLDEN, snapshot="snap") == before


def test_the_flat_backend_refuses_so_the_caller_falls_back(env) -> None:
    from rbd_driver.backends.flat import Flat

    disk = Flat("i", "disk", env.conf)
    with pytest.raises(exception.ImageUnacceptable, match="Flat backend"):
        disk.direct_snapshot("s", "raw", "img")
    disk.cleanup_direct_snapshot("rbd://x", ignore_errors=True)
