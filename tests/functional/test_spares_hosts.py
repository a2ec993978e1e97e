# SPDX-License-Identifier: Apache-2.0
"""Spares shared by hosts, on a real cluster: each Launcher is a host with its own
connection. Judged by the admin CLI (`rbd ls`, `rbd info`, `rbd children`, `rados ls`).
Runs on both clone formats.

The two race tests stop the hosts at the points where the race was lost, with
events around spies on the library's calls (never sleeps), and check from the
admin CLI that the interleaving really happened."""

from __future__ import annotations

import threading
from typing import Any

from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.storage.spares import MAKING_PREFIX, REMOVING_PREFIX
from rbd_driver.testing.local_cluster import make_conf
from tests.functional.test_spares import Golden, Launcher, _spares_of, _stray_id_objects, agents, golden

__all__ = ["agents", "golden"]  # fixtures, used by name

WAIT = 60  # seconds an event may take on a busy machine before the test fails


def test_clone_spares_counts_the_pools_spares_across_hosts(golden, agents, ceph_admin,
                                                           pools) -> None:
    g = golden()
    hosts = [agents(2), agents(2)]
    for _ in range(3):
        for host in hosts:
            host.launch(g.url)
            for each in hosts:
                assert each.driver.spares.wait(30)
            assert len(_spares_of(ceph_admin, g)) == 2  # the pool's count, not 2 per host
    # Each host took spares it had not made: the disks' parents are all the golden.
    for host in hosts:
        for inst in host.instances:
            parent = ceph_admin("rbd", "info", f"{pools.vms}/{inst}_disk")["parent"]
            assert parent["image"] == g.name


def _ours(ceph_admin: Any, pool: str, g: Golden) -> list[str]:
    """Images in ``pool`` named for a spare of ``g``: made, being made or removed."""
    return sorted(n for n in ceph_admin("rbd", "ls", pool) or []
                  if n.startswith("rbd-driver-spare") and g.identity.image_id in n)


def _children(ceph_admin: Any, g: Golden) -> list[str]:
    return sorted(c["image"] for c in
                  ceph_admin("rbd", "children", f"{g.pools.images}/{g.name}@snap") or [])


def _one_refill_started(refiller: Launcher, g: Golden) -> None:
    """Launch a disk (its refill makes one spare in the background), then remove the disk."""
    disk = refiller.launch(g.url)
    assert refiller.backend.backend("rbd").cleanup_instance(
        refiller.conf, disk.instance_uuid, driver=refiller.driver).ok
    refiller.instances.clear()


def test_golden_delete_racing_another_hosts_refill_removes_the_golden(
        ceph_cluster, agents, ceph_admin, pools, monkeypatch) -> None:
    """The refill's clone is held until the delete looked for spares (none yet), and the
    delete until the clone is attached: its look for clones finds the spare, and it
    looks again (GoldenImages.delete's retry loop)."""
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool=pools.vms))
    try:
        g = Golden(driver, pools)
        refiller: Launcher = agents(1)
        in_clone, looked, cloned, checked = (threading.Event() for _ in range(4))
        real_clone, real_children = refiller.driver.clone, driver.snap_children
        looks: list[tuple[list[str], list[str]]] = []  # (the library's view, rbd children)

        def clone(location: Any, name: str, pool: str | None = None) -> None:
            if not name.startswith(MAKING_PREFIX) or in_clone.is_set():
                return real_clone(location, name, pool)
            in_clone.set()
            assert looked.wait(WAIT)
            real_clone(location, name, pool)
            cloned.set()
            assert checked.wait(WAIT)
            return None

        def children(name: str, snap: str, pool: str | None = None) -> list[dict[str, Any]]:
            found = real_children(name, snap, pool)
            if len(looks) < 2:
                looks.append(([c["image"] for c in found], _children(ceph_admin, g)))
                if len(looks) == 1:  # the delete looks for spares: the clone is in flight
                    assert in_clone.is_set() and not cloned.is_set()
                    looked.set()
                    assert cloned.wait(WAIT)
                else:  # and for clones: the refill's is attached
                    checked.set()
            return found

        monkeypatch.setattr(refiller.driver, "clone", clone)
        monkeypatch.setattr(driver, "snap_children", children)
        _one_refill_started(refiller, g)
        assert in_clone.wait(WAIT)
        outcome = GoldenImages(driver, pool=pools.images).delete(g.name)
        assert refiller.driver.spares.wait(WAIT)
        assert looks[0] == ([], [])
        assert looks[1][0] == looks[1][1] and len(looks[1][1]) == 1, looks
        assert looks[1][1][0].startswith(MAKING_PREFIX)
        assert outcome == "removed"
        assert g.name not in (ceph_admin("rbd", "ls", pools.images) or [])
        assert _ours(ceph_admin, pools.vms, g) == []
        assert _stray_id_objects(ceph_cluster, ceph_admin, pools.vms) == []
    finally:
        driver.close()


def test_a_making_spare_is_moved_by_its_maker_or_the_golden_delete_never_both(
        ceph_cluster, agents, ceph_admin, pools, monkeypatch) -> None:
    """The maker's clone has returned and it is about to publish the spare (a rename
    from its making- name) when the golden delete removes it: the delete claims it
    first (Spares.remove), so the maker's rename finds nothing to move."""
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool=pools.vms))
    try:
        g = Golden(driver, pools)
        refiller: Launcher = agents(1)
        publishing, go, done = threading.Event(), threading.Event(), threading.Event()
        published: list[bool] = []
        seen: dict[str, list[str]] = {}
        real_claim, real_remove = refiller.driver.claims.claim_rename, driver.remove_image

        def claim_rename(src: str, dst: str, pool: str | None = None) -> bool:
            if not src.startswith(MAKING_PREFIX):
                return real_claim(src, dst, pool)
            publishing.set()
            assert go.wait(WAIT)
            try:
                published.append(real_claim(src, dst, pool))
                return published[-1]
            finally:
                done.set()

        def remove_image(name: str, pool: str | None = None) -> Any:
            if name.startswith(REMOVING_PREFIX) and not go.is_set():
                assert publishing.is_set() and not done.is_set()  # the maker is publishing
                seen["ls"] = _ours(ceph_admin, pools.vms, g)
                go.set()
                assert done.wait(WAIT)
            return real_remove(name, pool)

        monkeypatch.setattr(refiller.driver.claims, "claim_rename", claim_rename)
        monkeypatch.setattr(driver, "remove_image", remove_image)
        _one_refill_started(refiller, g)
        assert publishing.wait(WAIT)
        [making] = _ours(ceph_admin, pools.vms, g)
        assert making.startswith(MAKING_PREFIX)
        outcome = GoldenImages(driver, pool=pools.images).delete(g.name)
        assert refiller.driver.spares.wait(WAIT)
        assert "ls" in seen, "the delete never claimed the making- spare"
        # While the maker was publishing, the pool listed the spare under the delete's name.
        assert seen["ls"] == [REMOVING_PREFIX + making[len(MAKING_PREFIX):]]
        assert published == [False]
        assert outcome == "removed"
        assert g.name not in (ceph_admin("rbd", "ls", pools.images) or [])
        assert _ours(ceph_admin, pools.vms, g) == []
        assert _stray_id_objects(ceph_cluster, ceph_admin, pools.vms) == []
    finally:
        driver.close()


def test_a_spare_whose_maker_died_after_the_deletes_last_look_is_swept(
        ceph_cluster, agents, ceph_admin, pools, monkeypatch) -> None:
    """The refill's clone attaches after the delete's last look, just before librbd
    removes the golden, and its maker dies before it can remove it: the golden goes
    to the trash (a snapshot with a clone), and the delete's final sweep removes the
    spare (GoldenImages._sweep_spares)."""
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool=pools.vms))
    try:
        g = Golden(driver, pools)
        refiller: Launcher = agents(1)
        in_clone, go, cloned, finished = (threading.Event() for _ in range(4))
        real_clone, real_remove = refiller.driver.clone, driver.remove_image
        seen: dict[str, Any] = {}

        def clone(location: Any, name: str, pool: str | None = None) -> None:
            if not name.startswith(MAKING_PREFIX) or in_clone.is_set():
                return real_clone(location, name, pool)
            in_clone.set()
            assert go.wait(WAIT)
            real_clone(location, name, pool)
            cloned.set()
            assert finished.wait(WAIT)
            raise RuntimeError("the maker died")  # its making- clone is left behind

        def remove_image(name: str, pool: str | None = None) -> Any:
            if name == g.name and not go.is_set():
                seen["before"] = _children(ceph_admin, g)  # the delete's last look: none
                go.set()
                assert cloned.wait(WAIT)
                seen["during"] = _children(ceph_admin, g)
            return real_remove(name, pool)

        monkeypatch.setattr(refiller.driver, "clone", clone)
        monkeypatch.setattr(driver, "remove_image", remove_image)
        _one_refill_started(refiller, g)
        assert in_clone.wait(WAIT)
        try:
            outcome = GoldenImages(driver, pool=pools.images).delete(g.name)
        finally:
            finished.set()
        assert refiller.driver.spares.wait(WAIT)
        assert seen["before"] == [] and len(seen["during"]) == 1, seen
        assert seen["during"][0].startswith(MAKING_PREFIX)
        assert outcome == "trashed"  # librbd could not remove it under the clone
        assert _ours(ceph_admin, pools.vms, g) == []  # swept
        assert g.name not in (ceph_admin("rbd", "ls", pools.images) or [])
        assert _stray_id_objects(ceph_cluster, ceph_admin, pools.vms) == []
        # Its protected snapshot keeps it there (the trash cannot purge it): restore it,
        # and the usual removal takes the snapshot, then the image.
        _restore_from_trash(driver, pools.images, g.name)
        assert driver.remove_image(g.name, pools.images).ok
    finally:
        driver.close()
    assert not [e for e in ceph_admin("rbd", "trash", "ls", pools.images) or []
                if e["name"] == g.name]


def _restore_from_trash(driver: RBDDriver, pool: str, name: str) -> None:
    with driver.client.ioctx(pool) as ioctx:
        for entry in driver.rbd.RBD().trash_list(ioctx):
            if entry["name"] == name:
                driver.rbd.RBD().trash_restore(ioctx, entry["id"], name)
