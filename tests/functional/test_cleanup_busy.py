# SPDX-License-Identifier: Apache-2.0
"""A disk in use is never removed or trashed: real cluster, non-admin user.

A second client connection holds the disk open for writing, as a running
guest's QEMU does (librbd registers a watch on the image header). The oracle
is the Ceph CLI as admin: `rbd status` for the watcher's address, `rbd ls`
and `rbd trash ls` for where the disk is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rados
import rbd

from rbd_driver import exception
from rbd_driver.testing.local_cluster import ClusterState

RETRIES, INTERVAL = 12, 5.0  # the production defaults: a one-minute budget


def _spy_waits(driver: Any) -> list[float]:
    """Record (and still do) every retry wait of ``driver``'s removals."""
    waits: list[float] = []
    real = driver._sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        real(seconds)

    driver._sleep = sleep
    return waits


class Holder:
    """Another client of the cluster, as the test user, with one image open."""

    def __init__(self, cluster: ClusterState, pool: str, name: str) -> None:
        self.client = rados.Rados(conffile=cluster.conf_path, rados_id=cluster.user)
        self.client.conf_set("keyring", cluster.user_keyring)
        self.client.connect()
        self.ioctx = self.client.open_ioctx(pool)
        self.image = rbd.Image(self.ioctx, name)
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.image.close()
            self.ioctx.close()
            self.client.shutdown()
            self.closed = True


@pytest.fixture
def hold(ceph_cluster) -> Iterator[Callable[[str, str], Holder]]:
    holders: list[Holder] = []

    def open_(pool: str, name: str) -> Holder:
        holders.append(Holder(ceph_cluster, pool, name))
        return holders[-1]

    yield open_
    for holder in holders:
        holder.close()


@pytest.fixture
def conf(rbd_conf):
    rbd_conf.set_override("destroy_retries", RETRIES, group="rbd")
    rbd_conf.set_override("destroy_retry_interval", INTERVAL, group="rbd")
    return rbd_conf


def _ls(ceph_admin: Callable[..., Any], pool: str = "vms") -> list[str]:
    return list(ceph_admin("rbd", "ls", pool) or [])


def _trash(ceph_admin: Callable[..., Any], pool: str = "vms") -> list[str]:
    return [e["name"] for e in ceph_admin("rbd", "trash", "ls", pool) or []]


def _watchers(ceph_admin: Callable[..., Any], pool: str, name: str) -> list[str]:
    return [w["address"] for w in ceph_admin("rbd", "status", f"{pool}/{name}")["watchers"]]


def test_open_disk_is_left_in_place_reported_busy_then_removed_once_closed(
        conf, ceph_admin, hold) -> None:
    from rbd_driver import imagebackend

    inst = str(uuid.uuid4())
    with imagebackend.Backend(conf) as backend:
        cls = backend.backend("rbd")
        driver = backend.driver("rbd")
        disk, local = f"{inst}_disk", f"{inst}_disk.local"
        driver.create(disk, 8 << 20)
        driver.create(local, 8 << 20)
        driver.create_snap(disk, "before", protect=True)
        holder = hold("vms", disk)
        (address,) = _watchers(ceph_admin, "vms", disk)

        waits = _spy_waits(driver)
        report = cls.cleanup_instance(conf, inst, driver=driver)

        assert waits == [], f"waited {waits} on a disk with a watcher"
        assert report.removed == [local]
        assert list(report.busy) == [disk] and address in report.busy[disk]
        assert not report.trashed and not report.failed and not report.ok
        mine = [n for n in _ls(ceph_admin) if n.startswith(inst)]
        assert mine == [disk]  # still listed: the guest keeps its disk
        assert disk not in _trash(ceph_admin)
        snaps = ceph_admin("rbd", "snap", "ls", f"vms/{disk}")
        assert [s["name"] for s in snaps] == ["before"]  # its snapshots untouched too

        with pytest.raises(exception.ImageInUse, match=address):
            backend.by_name(inst, "disk").remove()
        assert disk in _ls(ceph_admin)

        holder.close()
        report = cls.cleanup_instance(conf, inst, driver=driver)
        assert report.removed == [disk] and report.ok and not report.trashed
    assert disk not in _ls(ceph_admin) and disk not in _trash(ceph_admin)


def test_rbd_driver_cleanup_command_reports_the_busy_disk(conf, ceph_cluster, ceph_admin,
                                                          hold, tmp_path) -> None:
    inst = str(uuid.uuid4())
    name = f"{inst}_disk"
    from rbd_driver.storage.rbd_utils import RBDDriver

    with RBDDriver.from_conf(conf) as driver:
        driver.create(name, 4 << 20)
    hold("vms", name)
    (address,) = _watchers(ceph_admin, "vms", name)
    config = tmp_path / "rbd-driver.conf"
    config.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {ceph_cluster.user}\n"
                      f"keyring = {ceph_cluster.user_keyring}\npool = vms\n")
    proc = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file",
                           str(config), "--json", "cleanup", inst],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr  # something was left behind
    out = json.loads(proc.stdout)
    assert address in out["busy"][name] and out["removed"] == [] and out["trashed"] == {}
    assert name in _ls(ceph_admin) and name not in _trash(ceph_admin)


def test_snapshot_with_clones_and_no_watcher_still_goes_to_the_trash(
        conf, ceph_admin) -> None:
    from rbd_driver import imagebackend
    from rbd_driver.storage.location import RbdLocation

    inst, other = str(uuid.uuid4()), str(uuid.uuid4())
    with imagebackend.Backend(conf) as backend:
        cls = backend.backend("rbd")
        driver = backend.driver("rbd")
        disk = f"{inst}_disk"
        driver.create(disk, 8 << 20)
        driver.create_snap(disk, "base", protect=True)
        clone = f"{other}_disk"
        driver.clone(RbdLocation(driver.fsid, "vms", disk, "base"), clone)
        try:
            waits = _spy_waits(driver)
            report = cls.cleanup_instance(conf, inst, driver=driver)
            assert waits == []  # clones are not waited for
            assert report.busy == {} and report.failed == {}
            assert "has clones" in report.trashed[disk] and clone in report.trashed[disk]
            assert disk in _trash(ceph_admin) and disk not in _ls(ceph_admin)
        finally:
            assert cls.cleanup_instance(conf, other, driver=driver).removed == [clone]
            with driver.client.ioctx("vms") as ioctx:
                for entry in driver.rbd.RBD().trash_list(ioctx):
                    if entry["name"] == disk:
                        driver.rbd.RBD().trash_restore(ioctx, entry["id"], disk)
            assert cls.cleanup_instance(conf, inst, driver=driver).removed == [disk]
    assert disk not in _ls(ceph_admin) + _trash(ceph_admin)


def test_prefix_listing_matches_rbd_ls_across_pages(conf, ceph_admin, monkeypatch) -> None:
    from rbd_driver.storage import rbd_utils
    from rbd_driver.storage.rbd_utils import RBDDriver

    monkeypatch.setattr(rbd_utils, "_DIRECTORY_PAGE", 2)  # pages of the real omap read
    inst, other = str(uuid.uuid4()), str(uuid.uuid4())
    with RBDDriver.from_conf(conf) as driver:
        made = [f"{inst}_disk.{i}" for i in range(5)] + [f"{other}_disk", inst]
        for name in made:
            driver.create(name, 1 << 20)
        try:
            expected = sorted(n for n in _ls(ceph_admin) if n.startswith(f"{inst}_"))
            assert len(expected) == 5
            assert driver.list_images_named(f"{inst}_") == expected
            assert driver.list_images_named(f"{inst}_disk.4") == [f"{inst}_disk.4"]
            assert driver.list_images_named(f"{uuid.uuid4()}_") == []
            assert driver.list_images_named("x", pool="rbd") == []  # no image ever there
        finally:
            assert sorted(driver.remove_images(made).removed) == sorted(made)
    assert not set(made) & set(_ls(ceph_admin))


def test_cleanup_instances_on_a_mix_touches_nothing_else(conf, ceph_admin, hold) -> None:
    from rbd_driver import imagebackend
    from rbd_driver.storage.location import RbdLocation

    conf.set_override("cleanup_concurrency", 4, group="rbd")
    plain, busy, cloned, empty, bystander = (str(uuid.uuid4()) for _ in range(5))
    with imagebackend.Backend(conf) as backend:
        cls = backend.backend("rbd")
        driver = backend.driver("rbd")
        made = {plain: ["disk", "disk.local", "disk.config"], busy: ["disk", "disk.local"],
                cloned: ["disk"], bystander: ["disk"]}
        for inst, disks in made.items():
            for disk in disks:
                driver.create(f"{inst}_{disk}", 4 << 20)
        driver.create_snap(f"{cloned}_disk", "base", protect=True)
        child = f"{bystander}_from-cloned"
        driver.clone(RbdLocation(driver.fsid, "vms", f"{cloned}_disk", "base"), child)
        holder = hold("vms", f"{busy}_disk")
        (address,) = _watchers(ceph_admin, "vms", f"{busy}_disk")
        try:
            report = cls.cleanup_instances(conf, [plain, busy, cloned, empty], driver=driver)
            r = report.instances
            assert list(r) == [plain, busy, cloned, empty]
            assert sorted(r[plain].removed) == sorted(f"{plain}_{d}" for d in made[plain])
            assert r[busy].removed == [f"{busy}_disk.local"]
            assert address in r[busy].busy[f"{busy}_disk"] and not r[busy].trashed
            assert "has clones" in r[cloned].trashed[f"{cloned}_disk"]
            assert r[empty].removed == [] and r[empty].ok
            left = _ls(ceph_admin)
            assert [n for n in left if n.startswith((plain, busy, cloned, empty))] == \
                [f"{busy}_disk"]
            assert sorted(n for n in left if n.startswith(bystander)) == \
                sorted([f"{bystander}_disk", child])
            assert [n for n in _trash(ceph_admin) if n.startswith((plain, busy, cloned))] == \
                [f"{cloned}_disk"]
        finally:
            holder.close()
            assert cls.cleanup_instance(conf, bystander, driver=driver).ok
            with driver.client.ioctx("vms") as ioctx:
                for entry in driver.rbd.RBD().trash_list(ioctx):
                    if entry["name"] == f"{cloned}_disk":
                        driver.rbd.RBD().trash_restore(ioctx, entry["id"], entry["name"])
            assert cls.cleanup_instances(conf, [busy, cloned], driver=driver).ok
    assert not [n for n in _ls(ceph_admin) + _trash(ceph_admin)
                if n.startswith((plain, busy, cloned, bystander))]


# A client that writes (and flushes) one sector after another until stdin
# closes, then prints how many writes it made and each one that failed.
WRITER = r"""
import sys, threading, rados, rbd
conf, user, keyring, name = sys.argv[1:5]
cluster = rados.Rados(conffile=conf, rados_id=user)
cluster.conf_set("keyring", keyring)
cluster.connect()
ioctx = cluster.open_ioctx("vms")
image = rbd.Image(ioctx, name)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
n = 0
print("writing", flush=True)
while not done.is_set():
    try:
        image.write(b"w" * 512, (n % 2048) * 512)
        image.flush()
    except Exception as err:
        print("failed", n, err, flush=True)
    n += 1
print("writes", n, flush=True)
image.close(); ioctx.close(); cluster.shutdown()
"""


def test_removing_a_disk_in_use_never_fails_the_writes_of_its_user(conf, ceph_cluster) -> None:
    """librbd's remove of an image in use first takes the exclusive lock from
    its owner; a write of the owner's meanwhile fails with EROFS (a running
    guest's I/O error). The library must find the watcher without that."""
    from rbd_driver.storage.rbd_utils import RBDDriver

    conf.set_override("destroy_retries", 0, group="rbd")
    name = f"{uuid.uuid4()}_disk"
    with RBDDriver.from_conf(conf) as driver:
        driver.create(name, 4 << 20)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, ceph_cluster.conf_path, ceph_cluster.user,
             ceph_cluster.user_keyring, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
            reports = [driver.remove_image(name) for _ in range(40)]
        finally:
            out, err = writer.communicate("", timeout=120)
        assert all(list(r.busy) == [name] and not r.removed for r in reports), reports
        failed = [line for line in out.splitlines() if line.startswith("failed")]
        assert failed == [], f"{len(failed)} writes failed during the removals: {failed[:3]}"
        assert out.splitlines()[-1].startswith("writes "), (out, err)
        assert driver.remove_image(name).removed == [name]
