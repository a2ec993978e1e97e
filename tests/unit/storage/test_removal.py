# SPDX-License-Identifier: Apache-2.0
"""A disk that a client has open is never removed or trashed, on every removal path.

The "guest" here is a second fake client holding a writable handle, which
watches the image as QEMU's librbd does. Each test checks the fake cluster's
own state (images listed, trash), not only the library's report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.backends.rbd import Rbd
from rbd_driver.ops.golden import GoldenImages
from tests.unit.backends.test_rbd import RAW, Env
from tests.unit.storage.test_spares import Env as SparesEnv


class Guest:
    """Another client of the same cluster with images open for writing."""

    def __init__(self, env: Env) -> None:
        self.rados = env.rados.Rados(conffile=env.conf.rbd.ceph_conf)
        self.rados.connect()
        self.rbd = env.rbd
        self.images: list[Any] = []

    def open(self, pool: str, name: str) -> str:
        """Open ``pool/name`` writable; return this client's watcher address."""
        ioctx = self.rados.open_ioctx(pool)
        image = self.rbd.Image(ioctx, name)
        self.images.append((ioctx, image))
        return f"client.{self.rados.get_instance_id()} at "

    def close(self) -> None:
        for ioctx, image in self.images:
            image.close()
            ioctx.close()
        self.images.clear()
        self.rados.shutdown()


@pytest.fixture
def guest(env: Env) -> Iterator[Guest]:
    guest = Guest(env)
    yield guest
    guest.close()


def _disk(env: Env, inst: str, name: str = "disk") -> str:
    env.cluster.add_image("vms", f"{inst}_{name}", 1 << 20)
    return f"{inst}_{name}"


def test_cleanup_instance_leaves_an_open_disk_and_says_who_has_it(env, guest) -> None:
    inst = str(uuid.uuid4())
    watched, idle = _disk(env, inst), _disk(env, inst, "disk.local")
    env.cluster.image("vms", watched).create_snap("before-evacuation", protect=True)
    who = guest.open("vms", watched)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert report.removed == [idle]
    assert list(report.busy) == [watched] and who in report.busy[watched]
    assert not report.trashed and not report.failed and not report.ok
    assert env.slept == []  # a watcher is a reason, not a transient error
    assert env.vms() == [watched] and env.trash() == []
    # Not even its snapshots were touched.
    assert [s.name for s in env.cluster.image("vms", watched).snaps.values()] == \
        ["before-evacuation"]
    guest.close()
    again = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert again.removed == [watched] and again.ok
    assert env.vms() == [] and env.trash() == []


def test_a_watcher_that_appears_while_retrying_stops_the_trash(env, tmp_path) -> None:
    inst = str(uuid.uuid4())
    name = _disk(env, inst)
    guest = Guest(env)

    def sleep(seconds: float) -> None:  # the guest starts while cleanup waits
        env.slept.append(seconds)
        if not guest.images:
            guest.open("vms", name)

    env.driver._sleep = sleep
    env.cluster.fail_next("RBD.remove", env.rbd.ImageBusy, times=1)
    try:
        report = env.driver.remove_image(name)
    finally:
        guest.close()
    assert name in report.busy and not report.trashed and not report.removed
    assert env.slept == [2.5]
    assert env.vms() == [name] and env.trash() == []


def test_busy_without_watchers_still_goes_to_the_trash_with_the_reason(env) -> None:
    inst = str(uuid.uuid4())
    name = _disk(env, inst)
    env.cluster.fail_next("RBD.remove", env.rbd.ImageBusy, times=None)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert report.busy == {} and "busy" in report.trashed[name]
    assert env.trash() == [name]


def test_cleanup_volumes_skips_open_disks(env, guest) -> None:
    names = [_disk(env, str(uuid.uuid4())) for _ in range(3)]
    guest.open("vms", names[1])
    report = env.driver.cleanup_volumes(lambda n: n in names)
    assert sorted(report.removed) == sorted([names[0], names[2]])
    assert list(report.busy) == [names[1]]
    assert env.vms() == [names[1]] and env.trash() == []


def test_remove_raises_image_in_use(env, guest) -> None:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, 1 << 20)
    who = guest.open("vms", disk.rbd_name)
    with pytest.raises(exception.ImageInUse, match=who) as info:
        disk.remove()
    assert isinstance(info.value, exception.CleanupFailed)  # callers of old still catch it
    assert env.vms() == [disk.rbd_name] and env.trash() == []


def test_move_to_trash_refuses_an_open_image(env, guest) -> None:
    env.cluster.add_image("vms", "open", 1 << 20)
    guest.open("vms", "open")
    with pytest.raises(exception.ImageInUse):
        env.driver.move_to_trash("open")
    assert env.vms() == ["open"] and env.trash() == []


def test_golden_delete_leaves_an_open_golden(env, guest) -> None:
    env.golden()
    golden = GoldenImages(env.driver, pool="images")
    guest.open("images", "golden")
    with pytest.raises(exception.ImageInUse, match="images/golden"):
        golden.delete("golden")
    disk = env.disk()
    disk.direct_fetch("img", RAW, [{"url": f"rbd://{env.fsid}/images/golden/snap"}])
    with pytest.raises(exception.ImageInUse):  # force trashes a golden with clones, not an open one
        golden.delete("golden", force=True)
    with env.driver.client.ioctx("images") as ioctx:
        assert list(env.rbd.RBD().list(ioctx)) == ["golden"]
    assert env.trash("images") == []


def test_spare_removal_leaves_an_open_spare(tmp_path) -> None:
    env = SparesEnv(tmp_path)
    try:
        env.launch()
        assert env.driver.wait_spares(5)
        spares = env.spares()
        assert spares
        client = env.rados.Rados(conffile=env.conf.rbd.ceph_conf)
        client.connect()
        ioctx = client.open_ioctx("vms")
        image = env.rbd.Image(ioctx, spares[0])
        spare_id = image.id()
        try:
            with pytest.raises(exception.ImageInUse):
                env.driver.remove_spares("vms")
        finally:
            image.close()
            ioctx.close()
            client.shutdown()
        names = env.cluster.pool("vms").image_names()
        # Left in place under some name (claimed for removal), not trashed.
        assert spare_id in {env.cluster.image("vms", n).id for n in names}
        assert not [i for i in env.cluster.pool("vms").images.values() if i.trash is not None]
    finally:
        env.close()


# -- finding an instance's disks without listing the pool ------------------------------


def test_cleanup_finds_disks_by_name_prefix_without_listing_the_pool(env, monkeypatch) -> None:
    from rbd_driver.storage import rbd_utils

    monkeypatch.setattr(rbd_utils, "_DIRECTORY_PAGE", 3)  # several pages of matches
    inst = str(uuid.uuid4())
    mine = [_disk(env, inst, f"disk.{i}") for i in range(7)]
    others = [_disk(env, str(uuid.uuid4())) for _ in range(20)]
    env.cluster.add_image("vms", inst, 1 << 20)  # the bare uuid is not one of its disks
    assert env.driver.list_images_named(f"{inst}_") == sorted(mine)
    assert env.driver.list_images_named("no-such-prefix") == []
    env.cluster.calls.clear()
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert sorted(report.removed) == sorted(mine)
    assert "RBD.list" not in env.cluster.calls and "RBD.list2" not in env.cluster.calls
    assert env.vms() == sorted(others + [inst])


def test_prefix_listing_of_a_pool_that_never_had_an_image(env) -> None:
    assert env.driver.list_images_named("x", pool="images") == []
    report = Rbd.cleanup_instance(env.conf, str(uuid.uuid4()), driver=env.driver)
    assert report.ok and report.removed == []


def test_an_image_removed_by_another_client_meanwhile_counts_as_removed(env) -> None:
    # librbd fails a remove racing another client's with ESTALE; then the image is gone.
    env.cluster.add_image("vms", "raced", 1 << 20)
    env.driver.destroy_retries = 0
    env.cluster.fail_next("RBD.remove", env.rbd.OSError, times=1)
    real_trash = env.driver.move_to_trash

    def gone_first(name: str, pool: str | None = None) -> None:
        with env.driver.client.ioctx("vms") as ioctx:
            env.rbd.RBD().remove(ioctx, name)  # the other client
        real_trash(name, pool)

    env.driver.move_to_trash = gone_first  # type: ignore[method-assign]
    report = env.driver.remove_image("raced")
    assert report.removed == ["raced"] and report.ok
    assert env.vms() == [] and env.trash() == []


def test_an_open_disk_is_never_handed_to_librbds_remove(env, guest, monkeypatch) -> None:
    """librbd's remove takes the exclusive lock from the guest before it sees the
    watchers, and a guest write meanwhile fails with EROFS (measured on a real
    cluster: tests/functional/test_cleanup_busy.py): the watchers are looked at
    first, with a read-only open, and a watched disk never reaches remove."""
    inst = str(uuid.uuid4())
    watched, idle = _disk(env, inst), _disk(env, inst, "disk.local")
    guest.open("vms", watched)
    removed: list[str] = []
    real = env.rbd.RBD.remove

    def remove(self: Any, ioctx: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        removed.append(name)
        return real(self, ioctx, name, *args, **kwargs)

    monkeypatch.setattr(env.rbd.RBD, "remove", remove)
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert list(report.busy) == [watched] and report.removed == [idle]
    assert removed == [idle]
