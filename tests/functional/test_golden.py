# SPDX-License-Identifier: Apache-2.0
"""Golden images and instance snapshots against a real cluster; the rbd CLI (as admin) is the oracle."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.ops.snapshots import InstanceSnapshots
from rbd_driver.storage.location import RbdLocation, parse_location
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState
from tests.functional.conftest import ClonePools

MIB = 1 << 20
DATA = os.urandom(MIB) + b"golden" * 1000


@pytest.fixture
def driver(backend: imagebackend.Backend, pools: ClonePools) -> RBDDriver:
    """The backend's driver; every test here runs once per clone format."""
    assert backend.conf.rbd.pool == pools.vms
    return backend.driver("rbd")


@pytest.fixture
def made(driver: RBDDriver, ceph_admin: Callable[..., Any],
         ceph_cluster: ClusterState) -> Iterator[list[tuple[str, str]]]:
    """(pool, image) the test created; removed newest first, from the trash too."""
    images: list[tuple[str, str]] = []
    yield images
    for pool, name in reversed(images):
        for entry in ceph_admin("rbd", "trash", "ls", pool) or []:
            if entry["name"] == name:
                subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "trash", "restore",
                                f"{pool}/{entry['id']}"], check=True, timeout=60)
        report = driver.remove_image(name, pool)
        assert report.ok and not report.trashed, report


@pytest.fixture
def raw_file(tmp_path: Any) -> str:
    path = tmp_path / "golden.raw"
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
        f.write(DATA)
    return str(path)


def _name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def _read(driver: RBDDriver, pool: str, name: str) -> bytes:
    with driver.client.open_image(pool, name, read_only=True) as image:
        return bytes(image.read(0, len(DATA)))


def test_register_clone_list_children_refuse_delete_then_trash(
        driver, made, raw_file, ceph_admin, pools) -> None:
    with GoldenImages(driver, pool=pools.images) as golden:
        name = _name("golden")
        image = golden.register(name, raw_file)
        made.append((pools.images, name))
        assert parse_location(image.location) == RbdLocation(driver.fsid, pools.images, name, "snap")
        info = ceph_admin("rbd", "info", f"{pools.images}/{name}@snap")
        assert info["protected"] == "true" and info["size"] == 16 * MIB
        assert name in [g.name for g in golden.list()]
        disks = sorted(_name("disk") for _ in range(2))
        for disk in disks:
            result = golden.clone(name, disk)
            made.append((pools.vms, disk))
            assert (result.depth, result.flatten) == (1, "none")
            assert _read(driver, pools.vms, disk) == DATA
        children = [f"{pools.vms}/{d}" for d in disks]
        assert golden.children(name) == children
        cli = ceph_admin("rbd", "children", f"{pools.images}/{name}@snap")
        assert sorted(f"{c['pool']}/{c['image']}" for c in cli) == children
        clone_info = ceph_admin("rbd", "info", f"{pools.vms}/{disks[0]}")
        assert ("clone-child" in clone_info.get("op_features", [])) is (pools.format == 2)

        with pytest.raises(exception.GoldenImageHasClones) as info:
            golden.delete(name)
        assert all(child in str(info.value) for child in children)
        assert name in ceph_admin("rbd", "ls", pools.images)

        assert golden.delete(name, force=True) == "trashed"
        assert name in [e["name"] for e in ceph_admin("rbd", "trash", "ls", pools.images)]
        assert name not in ceph_admin("rbd", "ls", pools.images)
        assert _read(driver, pools.vms, disks[0]) == DATA  # clones still read through


def test_depth_policy_flattens_at_the_limit_and_in_the_background(
        driver, made, raw_file, ceph_admin, pools) -> None:
    snapshots = InstanceSnapshots(driver)
    with GoldenImages(driver, pool=pools.images, max_clone_depth=2, soft_limit=2) as golden:
        base = _name("golden")
        golden.register(base, raw_file)
        made.append((pools.images, base))
        disk1 = _name("disk")
        golden.clone(base, disk1)
        made.append((pools.vms, disk1))
        snapshots.create(disk1, "for-golden")
        # A golden image made from an instance's snapshot: depth 2, at the limit.
        second = _name("golden2")
        golden.register_from_snapshot(second, RbdLocation(driver.fsid, pools.vms, disk1,
                                                          "for-golden"))
        made.append((pools.images, second))
        assert golden.depth(second, pools.images) == 2
        assert ceph_admin("rbd", "info", f"{pools.images}/{second}")["parent"]["image"] == disk1

        deep = _name("disk")
        result = golden.clone(second, deep)  # would be depth 3 > 2: flattened now
        made.append((pools.vms, deep))
        assert (result.depth, result.flatten) == (3, "done")
        assert "parent" not in ceph_admin("rbd", "info", f"{pools.vms}/{deep}")
        assert _read(driver, pools.vms, deep) == DATA

    with GoldenImages(driver, pool=pools.images, max_clone_depth=5, soft_limit=1) as golden:
        queued = _name("disk")
        result = golden.clone(second, queued)  # depth 3 > soft limit 1: in the background
        made.append((pools.vms, queued))
        assert (result.depth, result.flatten) == (3, "queued")
        assert result.future is not None
        result.future.result(timeout=120)
        assert "parent" not in ceph_admin("rbd", "info", f"{pools.vms}/{queued}")
        assert _read(driver, pools.vms, queued) == DATA

    # The instance snapshot under golden2 cannot go while golden2 is its clone...
    with pytest.raises(exception.SnapshotHasClones) as info:
        snapshots.delete(disk1, "for-golden")
    assert f"{pools.images}/{second}" in str(info.value)
    # ... unless its clones are flattened first.
    assert snapshots.delete(disk1, "for-golden", flatten_children=True) == [f"{pools.images}/{second}"]
    assert "parent" not in ceph_admin("rbd", "info", f"{pools.images}/{second}")
    assert snapshots.list(disk1) == []


def test_instance_snapshots_list_rollback_delete(driver, made, ceph_admin, pools) -> None:
    disk = _name("disk")
    driver.create(disk, 8 * MIB)
    made.append((pools.vms, disk))
    snapshots = InstanceSnapshots(driver)
    with driver.client.open_image(pools.vms, disk) as image:
        image.write(b"before", 0)
    first = snapshots.create(disk, "first")
    with driver.client.open_image(pools.vms, disk) as image:
        image.write(b"after!", 0)
    snapshots.create(disk, "second")
    listed = snapshots.list(disk)
    assert [s.name for s in listed] == ["first", "second"]
    cli = {s["name"]: s for s in ceph_admin("rbd", "snap", "ls", f"{pools.vms}/{disk}")}
    assert set(cli) == {"first", "second"} and cli["first"]["id"] == first.id
    assert first.timestamp.tzinfo is not None and listed[0].timestamp <= listed[1].timestamp
    snapshots.rollback(disk, "first")
    with driver.client.open_image(pools.vms, disk, read_only=True) as image:
        assert image.read(0, 6) == b"before"
    driver.protect_snap(disk, "second")
    snapshots.delete(disk, "second")  # unprotected for the caller
    assert [s["name"] for s in ceph_admin("rbd", "snap", "ls", f"{pools.vms}/{disk}")] == ["first"]
    with pytest.raises(exception.SnapshotNotFound):
        snapshots.rollback(disk, "second")
