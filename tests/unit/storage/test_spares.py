# SPDX-License-Identifier: Apache-2.0
"""Spare clones on the fake librbd: claiming by rename, races, refills, removal, repair."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.backends.rbd import Rbd
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage import spares as spares_module
from rbd_driver.storage.claim import encode_string as _encode_string
from rbd_driver.storage.location import parse_location
from rbd_driver.storage.rbd_utils import RBDDriver, SnapshotIdentity
from rbd_driver.testing.fixtures import FakeEnv

RAW = {"disk_format": "raw"}
MIB = 1 << 20


class Env(FakeEnv):
    """A fake cluster (pools vms, images), a golden image, drivers sharing the cluster."""

    def __init__(self, tmp_path: Any, spares: int = 2, clone_format: int = 1) -> None:
        super().__init__(tmp_path, clone_format=clone_format, user=None,
                         options={"clone_spares": spares})
        self.url = self.golden()

    def golden(self, name: str = "golden") -> str:
        image = self.cluster.add_image("images", name, 16 * MIB, data=b"plain raw bytes")
        image.create_snap("snap", protect=True)
        return f"rbd://{self.driver.fsid}/images/{name}/snap"

    def disk(self, driver: RBDDriver | None = None, inst: str | None = None) -> Rbd:
        return Rbd(inst or str(uuid.uuid4()), "disk", self.conf, driver=driver or self.driver)

    @contextlib.contextmanager
    def refills_deferred(self, driver: RBDDriver | None = None) -> Iterator[None]:
        """Refills asked for in the block start when it ends, so that counting
        the launch's own clones cannot race the background refill."""
        spares = (driver or self.driver).spares
        real = spares.refill
        asked: list[tuple[Any, Any]] = []
        spares.refill = lambda *a, **k: asked.append((a, k)) or True  # type: ignore[method-assign]
        try:
            yield
        finally:
            spares.refill = real  # type: ignore[method-assign]
            for a, k in asked:
                real(*a, **k)

    def launch(self, driver: RBDDriver | None = None, url: str | None = None) -> Rbd:
        disk = self.disk(driver)
        disk.direct_fetch("img", RAW, [{"url": url or self.url}])
        return disk

    def identity(self, url: str | None = None) -> SnapshotIdentity:
        identity = self.driver.snapshot_identity(parse_location(url or self.url))
        assert identity is not None
        return identity

    def spares(self) -> list[str]:
        return [n for n in self.cluster.pool("vms").image_names()
                if n.startswith("rbd-driver-spare")]

    def disks(self) -> list[str]:
        return [n for n in self.cluster.pool("vms").image_names()
                if not n.startswith("rbd-driver-spare")]

    def raw_id_objects(self) -> list[str]:
        """rbd_id objects not belonging to an image under its own name (leftovers)."""
        return sorted(k for k in self.cluster.pool("vms").objects if k.startswith("rbd_id."))

    def check_consistent(self) -> None:
        """Every listed image opens by its name, and no stray rbd_id object exists."""
        pool = self.cluster.pool("vms")
        assert self.raw_id_objects() == []
        for name in pool.image_names():
            assert pool.resolve_name(name) is pool.image_by_name(name), name


@pytest.fixture(params=[1, 2], ids=["clone-v1", "clone-v2"])
def env(tmp_path: Any, request: pytest.FixtureRequest) -> Any:
    """Every test runs on both clone formats of the fake."""
    env = Env(tmp_path, clone_format=request.param)
    yield env
    env.close()
    env.cluster.assert_no_open_handles()


def _parent(env: Env, name: str) -> tuple[str, str, str] | None:
    return env.cluster.image("vms", name).parent


# -- claiming ------------------------------------------------------------------


def test_first_launch_clones_then_launches_take_spares(env: Env) -> None:
    first = env.launch()
    assert first.parent_info() == ("images", "golden", "snap")
    assert env.driver.wait_spares(5)
    spares = env.spares()
    identity = env.identity()
    prefix = f"rbd-driver-spare.{env.cluster.pool('images').id}.{identity.image_id}.{identity.snap_id}."
    assert len(spares) == 2 and all(s.startswith(prefix) for s in spares)

    clones_before = env.cluster.calls.count("RBD.clone")
    with env.refills_deferred():
        second = env.launch()
        assert env.cluster.calls.count("RBD.clone") == clones_before  # no clone at launch
    assert second.exists() and second.parent_info() == ("images", "golden", "snap")
    assert second.get_disk_size() == 16 * MIB
    assert len(env.spares()) == 1
    env.check_consistent()
    assert env.driver.wait_spares(5)
    assert len(env.spares()) == 2  # refilled


def test_claim_rename_moves_directory_and_id_objects(env: Env) -> None:
    env.driver.clone(parse_location(env.url), "spare", "vms")
    image_id = env.cluster.image("vms", "spare").id
    assert env.driver.claims.claim_rename("spare", "mine", "vms") is True
    with env.driver.client.ioctx("vms") as ioctx:
        assert ioctx.read("rbd_id.mine")[4:].decode() == image_id
        with pytest.raises(env.rados.ObjectNotFound):
            ioctx.stat("rbd_id.spare")
    assert env.cluster.pool("vms").image_names() == ["mine"]
    assert env.driver.parent_info("mine") == ("images", "golden", "snap")
    env.check_consistent()
    # Claiming a name that is gone changes nothing.
    assert env.driver.claims.claim_rename("spare", "other", "vms") is False


def test_claim_of_an_existing_disk_name_refuses_and_keeps_the_spare(env: Env) -> None:
    env.driver.clone(parse_location(env.url), "spare", "vms")
    env.driver.create("taken", MIB)
    with pytest.raises(exception.ImageExists):
        env.driver.claims.claim_rename("spare", "taken", "vms")
    assert env.cluster.pool("vms").image_names() == ["spare", "taken"]
    assert env.cluster.image("vms", "taken").parent is None
    env.check_consistent()
    assert env.driver.exists("spare")


def test_claim_undoes_when_the_id_object_of_the_name_appears(env: Env) -> None:
    """EEXIST on rbd_id.<dst>, say a librbd create of that name in progress."""
    env.driver.clone(parse_location(env.url), "spare", "vms")
    spare_id = env.cluster.image("vms", "spare").id
    with env.driver.client.ioctx("vms") as ioctx:
        real_create = env.driver.claims.create_id

        def racing_create(ioctx_: Any, name: str, image_id: str) -> None:
            if name == "dst":
                ioctx.write_full("rbd_id.dst", _encode_string("0123456789ab"))
            real_create(ioctx_, name, image_id)

        env.driver.claims.create_id = racing_create  # type: ignore[method-assign]
        with pytest.raises(exception.ImageExists):
            env.driver.claims.claim_rename("spare", "dst", "vms")
        # The spare is whole again under its name; the other id object is untouched.
        assert ioctx.read("rbd_id.spare")[4:].decode() == spare_id
        assert ioctx.read("rbd_id.dst")[4:].decode() == "0123456789ab"
    assert env.cluster.pool("vms").image_names() == ["spare"]


def test_claim_lost_to_another_host_falls_back_to_a_clone(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    other = env.new_driver()
    spares = set(env.spares())
    # The other host takes every spare between our read of rbd_id and its removal.
    real_read = env.driver.claims.read_id
    stolen: list[str] = []

    def read_then_lose(ioctx: Any, name: str) -> str | None:
        found = real_read(ioctx, name)
        if name in spares and name not in stolen:
            stolen.append(name)
            assert other.claims.claim_rename(name, f"{uuid.uuid4()}_disk", "vms")
        return found

    env.driver.claims.read_id = read_then_lose  # type: ignore[method-assign]
    clones_before = env.cluster.calls.count("RBD.clone")
    with env.refills_deferred():
        disk = env.launch()
        assert sorted(stolen) == sorted(spares)
        assert env.cluster.calls.count("RBD.clone") == clones_before + 1  # fell back
    assert disk.parent_info() == ("images", "golden", "snap")
    env.driver.claims.read_id = real_read  # type: ignore[method-assign]
    assert env.driver.wait_spares(5)
    env.check_consistent()
    for name in env.disks():
        assert _parent(env, name) == ("images", "golden", "snap")


def test_two_drivers_never_get_the_same_spare(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    a, b = env.new_driver(), env.new_driver()
    ids = []
    for driver in (a, b, a, b):
        spare_ids = {env.cluster.image("vms", s).id for s in env.spares()}
        disk = env.launch(driver)
        ids.append(env.cluster.image("vms", disk.rbd_name).id)
        assert ids[-1] in spare_ids  # took a spare, did not clone
        assert driver.wait_spares(5)
    assert len(set(ids)) == 4
    env.check_consistent()


def test_directory_entry_gone_after_the_claim_point(env: Env) -> None:
    """dir_rename_image says ENOENT: the spare was removed (by librbd) meanwhile."""
    env.driver.clone(parse_location(env.url), "spare", "vms")
    env.cluster.fail_next("Ioctx.execute", env.rados.ObjectNotFound)
    assert env.driver.claims.claim_rename("spare", "dst", "vms") is False


def test_a_failed_claim_puts_the_spare_back_and_the_launch_clones(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    before = sorted(env.spares())
    env.cluster.fail_next("Ioctx.execute", env.rados.PermissionError)
    disk = env.launch()
    assert disk.parent_info() == ("images", "golden", "snap")
    assert env.driver.wait_spares(5)
    assert set(before) <= set(env.spares())  # the spare tried is a spare again
    env.check_consistent()


def test_timeout_after_the_directory_moved_completes_the_claim(env: Env) -> None:
    """An error with unknown outcome is checked before anything is undone."""
    env.driver.clone(parse_location(env.url), "spare", "vms")
    real = env.driver.claims.dir_rename

    def applied_then_timed_out(ioctx: Any, src: str, dst: str, image_id: str) -> None:
        real(ioctx, src, dst, image_id)
        raise env.rados.TimedOut("timed out", errno=110)

    env.driver.claims.dir_rename = applied_then_timed_out  # type: ignore[method-assign]
    assert env.driver.claims.claim_rename("spare", "dst", "vms") is True
    env.check_consistent()
    assert env.cluster.pool("vms").image_names() == ["dst"]


def test_errors_are_translated(env: Env) -> None:
    env.driver.clone(parse_location(env.url), "spare", "vms")
    env.cluster.fail_next("Ioctx.read", env.rados.PermissionDeniedError)
    with pytest.raises(exception.PermissionDenied) as info:
        env.driver.claims.claim_rename("spare", "dst", "vms")
    assert isinstance(info.value.__cause__, env.rados.PermissionDeniedError)


# -- which spares --------------------------------------------------------------


def test_a_spare_of_another_snapshot_is_never_used(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    old = set(env.spares())
    # Recreate the golden's snapshot under the same name: a new snapshot id.
    golden = env.cluster.image("images", "golden")
    for child in env.disks() + env.spares():
        env.driver.remove_image(child)
    golden.snaps.clear()
    golden.create_snap("snap", protect=True)
    assert not old & set(env.spares())
    env.driver.clone(parse_location(env.url), next(iter(old)), "vms")  # an impostor
    disk = env.launch()
    assert disk.parent_info() == ("images", "golden", "snap")
    assert env.cluster.image("vms", disk.rbd_name).head.parent.snap_id == golden.snap_by_name("snap").id
    assert next(iter(old)) in env.spares()  # the old-named one was not taken


def test_spares_of_a_different_golden_are_not_taken(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    url2 = env.golden("other")
    spares = set(env.spares())
    disk = env.launch(url=url2)
    assert disk.parent_info() == ("images", "other", "snap")
    assert spares <= set(env.spares())


def test_a_new_process_adopts_the_spares_already_in_the_pool(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    spares = set(env.spares())  # made by the first "process"
    spare_ids = {env.cluster.image("vms", s).id for s in spares}
    newcomer = env.new_driver()
    clones_before = env.cluster.calls.count("RBD.clone")
    with env.refills_deferred(newcomer):
        disk = env.launch(newcomer)
        assert env.cluster.image("vms", disk.rbd_name).id in spare_ids
        assert env.cluster.calls.count("RBD.clone") == clones_before
    assert len(set(env.spares()) & spares) == 1
    assert newcomer.wait_spares(5)
    assert len(env.spares()) == 2


def test_a_spare_being_made_is_never_taken(env: Env) -> None:
    """librbd lists a clone long before it is complete: spares are made under a
    making- name and renamed when done, so another host cannot take a half-made one."""
    gate, made = threading.Event(), threading.Event()
    real_rename = env.driver.claims.claim_rename

    def slow_publish(src: str, dst: str, pool: str | None = None) -> bool:
        if src.startswith("rbd-driver-spare-making."):
            made.set()
            assert gate.wait(5)
        return real_rename(src, dst, pool)

    env.driver.claims.claim_rename = slow_publish  # type: ignore[method-assign]
    env.launch()  # clones, and starts the refill, which stops before publishing
    assert made.wait(5)
    making = [n for n in env.spares() if n.startswith("rbd-driver-spare-making.")]
    assert len(making) == 1
    other = env.new_driver()
    disk = env.launch(other)  # adopts what is listed: not the one being made
    assert env.cluster.image("vms", disk.rbd_name).id != env.cluster.image("vms", making[0]).id
    gate.set()
    assert env.driver.wait_spares(5) and other.wait_spares(5)
    assert not [n for n in env.spares() if n.startswith("rbd-driver-spare-making.")]
    env.check_consistent()


def test_no_spares_when_clone_spares_is_zero(env: Env) -> None:
    env.conf.set_override("clone_spares", 0, group="rbd")
    for _ in range(3):
        env.launch()
    # wait_spares() would be True here whatever happened: with no worker
    # there is nothing to wait for. The cluster is the oracle.
    assert env.driver._spares is None  # no worker, no listing
    assert env.spares() == []
    assert env.cluster.calls.count("RBD.clone") == 3  # one per launch, none for spares
    assert "RBD.list" not in env.cluster.calls


# -- refilling ------------------------------------------------------------------


def test_refill_stops_at_clone_spares(env: Env) -> None:
    env.conf.set_override("clone_spares", 3, group="rbd")
    for _ in range(5):
        env.launch()
        assert env.driver.wait_spares(5)
        assert len(env.spares()) == 3
    # Five launches: one clone, then four claims each refilled by one clone.
    assert env.cluster.calls.count("RBD.clone") == 1 + 3 + 4


def test_one_refill_job_per_snapshot_at_a_time(env: Env) -> None:
    gate = threading.Event()
    real_clone = env.driver.clone
    started = threading.Event()

    def slow_clone(*args: Any, **kwargs: Any) -> None:
        if str(args[1]).startswith("rbd-driver-spare-making."):
            started.set()
            assert gate.wait(5)
        real_clone(*args, **kwargs)

    env.driver.clone = slow_clone  # type: ignore[method-assign]
    location, identity = parse_location(env.url), env.identity()
    assert env.driver.spares.refill(location, identity, 2, "vms") is True
    assert started.wait(5)
    assert env.driver.spares.refill(location, identity, 2, "vms") is False
    assert env.driver.wait_spares(0.05) is False
    gate.set()
    assert env.driver.wait_spares(5)
    assert len(env.spares()) == 2
    assert env.driver.spares.refill(location, identity, 2, "vms") is True  # a new job
    assert env.driver.wait_spares(5)
    assert len(env.spares()) == 2


def test_close_cancels_queued_refills_and_waits_for_the_running_clone(env: Env) -> None:
    gate = threading.Event()
    started = threading.Event()
    real_clone = env.driver.clone

    def slow_clone(*args: Any, **kwargs: Any) -> None:
        started.set()
        assert gate.wait(5)
        real_clone(*args, **kwargs)

    env.driver.clone = slow_clone  # type: ignore[method-assign]
    url2 = env.golden("other")
    env.driver.spares.refill(parse_location(env.url), env.identity(), 5, "vms")
    env.driver.spares.refill(parse_location(url2), env.identity(url2), 5, "vms")  # queued
    assert started.wait(5)
    closer = threading.Thread(target=env.driver.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waiting for the clone in progress
    gate.set()
    closer.join(5)
    assert not closer.is_alive()
    assert len(env.spares()) == 1  # the running clone finished; nothing more
    assert env.driver.wait_spares(0)
    # The driver is usable again, with a new worker.
    env.driver.clone = real_clone  # type: ignore[method-assign]
    assert env.driver.spares.refill(parse_location(env.url), env.identity(), 2, "vms")
    assert env.driver.wait_spares(5)
    assert len([s for s in env.spares() if s.startswith("rbd-driver-spare.")]) == 2


def test_backend_close_stops_the_worker(env: Env) -> None:
    from rbd_driver import imagebackend

    backend = imagebackend.Backend(env.conf)
    backend._drivers["rbd"] = env.driver
    env.launch()
    backend.close()


def test_a_failing_refill_is_logged_and_held(env: Env, caplog: Any) -> None:
    location, identity = parse_location(env.url), env.identity()
    env.cluster.fail_next("RBD.clone", env.rbd.PermissionError)
    with caplog.at_level(logging.WARNING, logger="rbd_driver.storage.spares"):
        assert env.driver.spares.refill(location, identity, 2, "vms")
        assert env.driver.wait_spares(5)
    assert "could not make spare clones" in caplog.text
    assert env.spares() == []
    assert env.driver.spares.refill(location, identity, 2, "vms") is False  # on hold
    disk = env.launch()  # launches still work, by cloning
    assert disk.parent_info() == ("images", "golden", "snap")


# -- cleanup, removal, golden deletion -------------------------------------------


def test_cleanup_instance_never_touches_spares(env: Env) -> None:
    disk = env.launch()
    assert env.driver.wait_spares(5)
    spares = env.spares()
    report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
    assert report.removed == [disk.rbd_name]
    assert env.spares() == spares


def test_remove_spares_of_one_snapshot_or_all(env: Env) -> None:
    env.launch()
    url2 = env.golden("other")
    env.launch(url=url2)
    assert env.driver.wait_spares(5)
    assert len(env.spares()) == 4
    removed = env.driver.remove_spares("vms", parent=env.identity(url2))
    assert len(removed) == 2 and all(n.startswith("rbd-driver-spare.") for n in removed)
    left = env.spares()
    assert len(left) == 2 and not set(removed) & set(left)
    assert all(_parent(env, n) == ("images", "golden", "snap") for n in left)
    assert sorted(env.driver.remove_spares()) == sorted(left)
    assert env.spares() == []
    env.check_consistent()
    # Refills are held for a while after a removal.
    assert not env.driver.spares.refill(parse_location(env.url), env.identity(), 2, "vms")


def test_golden_delete_removes_spares_first(env: Env) -> None:
    disk = env.launch()
    assert env.driver.wait_spares(5)
    golden = GoldenImages(env.driver, pool="images")
    with pytest.raises(exception.GoldenImageHasClones) as info:
        golden.delete("golden")
    assert disk.rbd_name in str(info.value) and "rbd-driver-spare" not in str(info.value)
    assert env.spares() == []
    Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
    assert golden.delete("golden") == "removed"
    assert env.cluster.pool("images").image_names() == []
    golden.close()


# -- interrupted claims -------------------------------------------------------------


def _interrupted_claim(env: Env, spare: str, dst: str, steps: int) -> str:
    """Run the first ``steps`` steps of a claim by hand (a crash after them)."""
    with env.driver.client.ioctx("vms") as ioctx:
        image_id = env.driver.claims.read_id(ioctx, spare)
        assert image_id is not None
        ioctx.remove_object(f"rbd_id.{spare}")
        if steps >= 2:
            env.driver.claims.dir_rename(ioctx, spare, dst, image_id)
    return image_id


def test_crash_after_the_directory_moved_is_repaired_by_the_next_launch(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    disk = env.disk()
    spare = env.spares()[0]
    image_id = _interrupted_claim(env, spare, disk.rbd_name, steps=2)
    assert not disk.exists()  # listed, but it cannot be opened
    assert disk.rbd_name in env.cluster.pool("vms").image_names()
    with pytest.raises(exception.ImageNotFound):
        disk.parent_info()
    restarted = env.new_driver()  # the agent restarts and launches again
    disk = Rbd(disk.instance_uuid, "disk", env.conf, driver=restarted)
    disk.direct_fetch("img", RAW, [{"url": env.url}])
    assert disk.exists() and disk.parent_info() == ("images", "golden", "snap")
    assert env.cluster.image("vms", disk.rbd_name).id == image_id
    env.check_consistent()


def test_crash_after_the_directory_moved_is_repaired_by_cleanup(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    disk = env.disk()
    _interrupted_claim(env, env.spares()[0], disk.rbd_name, steps=2)
    report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
    assert report.removed == [disk.rbd_name]
    assert disk.rbd_name not in env.cluster.pool("vms").image_names()


def test_crash_after_the_claim_point_leaves_a_spare_nobody_takes(env: Env) -> None:
    env.launch()
    assert env.driver.wait_spares(5)
    dead = env.spares()[0]
    _interrupted_claim(env, dead, "never", steps=1)
    other = env.new_driver()
    for _ in range(3):
        disk = env.launch(other)
        assert disk.exists() and disk.parent_info() == ("images", "golden", "snap")
        assert other.wait_spares(5)
    assert dead in env.spares()  # not taken: it has no id object
    # Removing the spares gives it an id object back first, so librbd detaches
    # it from its parent; then the golden can go.
    for name in env.disks():
        env.driver.remove_image(name)
    removed = env.driver.remove_spares()
    assert dead in removed and env.spares() == []
    assert GoldenImages(env.driver, pool="images").delete("golden") == "removed"


def test_leftover_of_an_interrupted_removal_is_removed(env: Env) -> None:
    env.driver.clone(parse_location(env.url), "rbd-driver-spare-removing.2.x.4.0123abcd", "vms")
    assert spares_module.is_spare_name("rbd-driver-spare-removing.2.x.4.0123abcd")
    assert env.driver.remove_spares() == ["rbd-driver-spare-removing.2.x.4.0123abcd"]
    assert env.spares() == []


def test_spare_names() -> None:
    identity = SnapshotIdentity("images", "10f2ab34cd56", 7, 1)
    prefix = spares_module.spare_prefix(3, identity)
    assert prefix == "rbd-driver-spare.3.10f2ab34cd56.7."
    assert spares_module.is_spare_name(prefix + "0123abcd")
    for name in (prefix + "0123abc", prefix + "0123ABCD", "rbd-driver-spare.3.x.y.0123abcd",
                 "x_disk", "rbd-driver-spare.3.10f2ab34cd56.7.0123abcd.more"):
        assert not spares_module.is_spare_name(name), name


# -- the fake's cls calls and write ops, as the real binding has them ------------------


def _enc(*names: str) -> bytes:
    return b"".join(_encode_string(n) for n in names)


def test_fake_write_op_and_execute_follow_the_real_binding(env: Env) -> None:
    import inspect

    real = pytest.importorskip("rados")
    rados = env.rados
    for method in ("execute", "operate_write_op", "get_pool_id", "remove_object"):
        fake_params = list(inspect.signature(getattr(rados.Ioctx, method)).parameters)
        assert fake_params == list(inspect.signature(getattr(real.Ioctx, method)).parameters)
    for method in ("new", "write_full", "remove", "create", "release"):
        fake_params = list(inspect.signature(getattr(rados.WriteOp, method)).parameters)
        assert fake_params == list(inspect.signature(getattr(real.WriteOp, method)).parameters)
    assert [c.__name__ for c in rados.WriteOpCtx.__mro__] == [
        c.__name__ for c in real.WriteOpCtx.__mro__]
    assert rados.LIBRADOS_CREATE_EXCLUSIVE == real.LIBRADOS_CREATE_EXCLUSIVE
    assert rados.LIBRADOS_CREATE_IDEMPOTENT == real.LIBRADOS_CREATE_IDEMPOTENT


def test_fake_directory_methods_errnos(env: Env) -> None:
    """The same cases tests/functional/test_spares.py checks on a real OSD."""
    import errno

    env.driver.create("a", MIB)
    env.driver.create("b", MIB)
    a_id = env.cluster.image("vms", "a").id
    with env.driver.client.ioctx("vms") as ioctx:
        assert ioctx.execute("rbd_directory", "rbd", "dir_get_id", _enc("a")) == (
            4 + len(a_id), _encode_string(a_id))
        cases = [
            ("dir_get_id", _enc("nope"), errno.ENOENT),
            ("dir_rename_image", _enc("nope", "x", a_id), errno.ENOENT),
            ("dir_rename_image", _enc("b", "x", a_id), errno.ESTALE),
            ("dir_rename_image", _enc("a", "b", a_id), errno.EEXIST),
            ("dir_rename_image", _enc("a", "", a_id), errno.EINVAL),
            ("dir_rename_image", b"\x05", errno.EINVAL),
            ("no_such_method", b"", errno.EOPNOTSUPP),
        ]
        for method, data, code in cases:
            with pytest.raises(env.rados.Error) as info:
                ioctx.execute("rbd_directory", "rbd", method, data)
            assert info.value.errno == code, method
        assert env.cluster.pool("vms").image_names() == ["a", "b"]
        with env.rados.WriteOpCtx() as op:
            op.new(env.rados.LIBRADOS_CREATE_EXCLUSIVE)
            op.write_full(b"x")
            with pytest.raises(env.rados.ObjectExists):
                ioctx.operate_write_op(op, "rbd_id.a")
        with env.rados.WriteOpCtx() as op:  # all or nothing
            op.write_full(b"data")
            op.remove()
            op.remove()
            with pytest.raises(env.rados.ObjectNotFound):
                ioctx.operate_write_op(op, "plain")
        with pytest.raises(env.rados.ObjectNotFound):
            ioctx.stat("plain")
