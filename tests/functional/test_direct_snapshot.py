# SPDX-License-Identifier: Apache-2.0
"""direct_snapshot and the clone-depth policy of direct_fetch on a real cluster.

The library runs as the non-admin test user; the rbd/ceph CLI as admin is the oracle.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import exception, imagebackend
from rbd_driver.backends import instance_snapshot
from rbd_driver.ops import provision
from rbd_driver.storage.location import parse_location
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState, make_conf

MIB = 1 << 20
GOLDEN_SIZE = 32 * MIB
RAW = {"disk_format": "raw"}


def _rbd(state: ClusterState, *args: str) -> None:
    subprocess.run(["rbd", "-c", state.conf_path, *args], check=True, timeout=120,
                   capture_output=True)


@pytest.fixture
def driver(backend: imagebackend.Backend) -> RBDDriver:
    return backend.driver("rbd")


@pytest.fixture
def golden(ceph_cluster: ClusterState, tmp_path: Any) -> Iterator[str]:
    """A golden image images/<name>@snap holding data, made by admin; its name."""
    name = f"golden-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "golden.raw"
    with open(path, "wb") as f:
        f.truncate(GOLDEN_SIZE)
        f.write(os.urandom(2 * MIB))
        f.seek(24 * MIB)
        f.write(os.urandom(MIB))
    _rbd(ceph_cluster, "import", str(path), f"images/{name}")
    _rbd(ceph_cluster, "snap", "create", f"images/{name}@snap")
    _rbd(ceph_cluster, "snap", "protect", f"images/{name}@snap")
    yield name
    # Children first (disks of the test are removed by their own cleanup).
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "snap", "unprotect",
                    f"images/{name}@snap"], timeout=60, capture_output=True)
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "snap", "purge", f"images/{name}"],
                   timeout=60, capture_output=True)
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "rm", f"images/{name}"],
                   timeout=60, capture_output=True)


@pytest.fixture
def made(driver: RBDDriver) -> Iterator[list[tuple[str, str]]]:
    """(pool, image) to remove after the test, newest first."""
    images: list[tuple[str, str]] = []
    yield images
    for pool, name in reversed(images):
        report = driver.remove_image(name, pool)
        assert report.ok, report


def _launch(backend: imagebackend.Backend, fsid: str, pool: str, image: str,
            made: list[tuple[str, str]]) -> Any:
    disk = backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
    made.append(("vms", disk.rbd_name))
    disk.direct_fetch(image, RAW, [{"url": f"rbd://{fsid}/{pool}/{image}/snap",
                                    "metadata": {}}])
    return disk


def _export(state: ClusterState, spec: str, path: Any) -> str:
    _rbd(state, "export", spec, str(path))
    return str(path)


@pytest.mark.parametrize("flatten", [False, True], ids=["shared", "flattened"])
def test_direct_snapshot_is_a_golden_independent_of_the_disk(
        backend, driver, golden, made, ceph_cluster, ceph_admin, rbd_conf, tmp_path,
        monkeypatch, flatten) -> None:
    rbd_conf.set_override("snapshot_flatten", flatten, group="rbd")
    disk = _launch(backend, driver.fsid, "images", golden, made)
    with driver.client.open_image("vms", disk.rbd_name) as image:
        image.write(os.urandom(3 * MIB), 1 * MIB)  # over golden data
        image.write(os.urandom(MIB), 10 * MIB)  # over a hole of the golden
        image.write(bytes(MIB), 24 * MIB)  # zeros hiding golden data
    at_snapshot = _export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path / "disk.raw")
    image_id = f"snap-{uuid.uuid4().hex[:8]}"
    progress: list[tuple[int, int]] = []
    # The background removal of the disk's temporary snapshot is held until
    # the location has been checked: it must be usable before that step runs.
    gate, started = threading.Event(), threading.Event()
    real_remove_snap = driver.remove_snap

    def held_remove_snap(*args: Any, **kwargs: Any) -> None:
        started.set()
        assert gate.wait(30)
        real_remove_snap(*args, **kwargs)

    monkeypatch.setattr(driver, "remove_snap", held_remove_snap)
    try:
        url = disk.direct_snapshot("nova-snap", "raw", image_id,
                                   progress=lambda d, t: progress.append((d, t)))
        made.append(("images", image_id))
        assert started.wait(60)
        temp = instance_snapshot.TEMP_SNAPSHOT_PREFIX + "nova-snap"
        assert [s["name"] for s in ceph_admin("rbd", "snap", "ls", f"vms/{disk.rbd_name}")] \
            == [temp]  # still there: the removal has not run
        assert driver.snapshot_remover.pending() == [f"vms/{disk.rbd_name}@{temp}"]
        assert ceph_admin("rbd", "info", f"images/{image_id}@snap")["protected"] == "true"
        assert filecmp.cmp(at_snapshot, _export(ceph_cluster, f"images/{image_id}@snap",
                                                tmp_path / "early.raw"), shallow=False)
    finally:
        gate.set()
    assert driver.snapshot_remover.wait(120)
    assert driver.snapshot_remover.failed() == {}
    with driver.client.open_image("vms", disk.rbd_name) as image:
        image.write(b"after the snapshot" * 1000, 1 * MIB)

    loc = parse_location(url)
    assert (loc.fsid, loc.pool, loc.image, loc.snapshot) == (driver.fsid, "images", image_id,
                                                             "snap")
    info = ceph_admin("rbd", "info", f"images/{image_id}")
    if flatten:
        assert "parent" not in info
    else:
        assert info["parent"]["pool"] == "images" and info["parent"]["image"] == golden
    snaps = ceph_admin("rbd", "snap", "ls", f"images/{image_id}")
    assert [s["name"] for s in snaps] == ["snap"]
    assert ceph_admin("rbd", "info", f"images/{image_id}@snap")["protected"] == "true"
    assert ceph_admin("rbd", "snap", "ls", f"vms/{disk.rbd_name}") == []
    assert not [n for n in ceph_admin("rbd", "ls", "images") if ".snapshotting-" in n]
    assert filecmp.cmp(at_snapshot, _export(ceph_cluster, f"images/{image_id}@snap",
                                            tmp_path / "snap.raw"), shallow=False)
    assert progress and progress[-1][0] == progress[-1][1] > 0

    relaunched = _launch(backend, driver.fsid, "images", image_id, made)
    assert filecmp.cmp(at_snapshot, _export(ceph_cluster, f"vms/{relaunched.rbd_name}",
                                            tmp_path / "relaunched.raw"), shallow=False)


@pytest.fixture
def no_snapshot_user(ceph_cluster: ClusterState, ceph_admin, tmp_path) -> Iterator[cfg.ConfigOpts]:
    """A conf for a user with profile rbd on vms and only rbd-read-only on images."""
    user = f"nosnap{uuid.uuid4().hex[:6]}"
    out = ceph_admin("ceph", "auth", "get-or-create", f"client.{user}", "mon", "profile rbd",
                     "osd", "profile rbd pool=vms, profile rbd-read-only pool=images")
    keyring = tmp_path / "nosnap.keyring"
    keyring.write_text(f"[client.{user}]\n\tkey = {out[0]['key']}\n")
    keyring.chmod(0o600)
    conf = make_conf(ceph_cluster)
    conf.set_override("user", user, group="rbd")
    conf.set_override("keyring", str(keyring), group="rbd")
    yield conf
    ceph_admin("ceph", "auth", "del", f"client.{user}")


def test_a_user_without_profile_rbd_on_the_image_pool_leaves_nothing(
        backend, driver, golden, made, no_snapshot_user, ceph_admin) -> None:
    disk = _launch(backend, driver.fsid, "images", golden, made)
    before = sorted(ceph_admin("rbd", "ls", "images"))
    with imagebackend.Backend(no_snapshot_user) as limited:
        same = limited.by_name(disk.instance_uuid, "disk", image_type="rbd")
        with pytest.raises(exception.PermissionDenied) as info:
            same.direct_snapshot("nova-snap", "raw", f"snap-{uuid.uuid4().hex[:8]}")
    user = no_snapshot_user.rbd.user
    assert "pool images" in str(info.value) and f"client.{user}" in str(info.value)
    assert sorted(ceph_admin("rbd", "ls", "images")) == before
    assert ceph_admin("rbd", "snap", "ls", f"vms/{disk.rbd_name}") == []


def test_provisioning_grants_the_image_pool_only_when_asked(
        backend, driver, golden, made, ceph_cluster, ceph_admin, tmp_path) -> None:
    disk = _launch(backend, driver.fsid, "images", golden, made)
    user = f"prov{uuid.uuid4().hex[:6]}"
    conf = make_conf(ceph_cluster)
    conf.set_override("user", user, group="rbd")
    conf.set_override("keyring", str(tmp_path / f"{user}.keyring"), group="rbd")
    conf.set_override("image_pools", ["images"], group="rbd")
    image_id = f"snap-{uuid.uuid4().hex[:8]}"
    try:
        with RadosClient(ceph_cluster.conf_path, user="admin",
                         keyring=ceph_cluster.admin_keyring) as admin:
            provision.provision_from_conf(conf, admin)  # least privilege
            with imagebackend.Backend(conf) as limited:
                same = limited.by_name(disk.instance_uuid, "disk", image_type="rbd")
                with pytest.raises(exception.PermissionDenied, match=f"client.{user}"):
                    same.direct_snapshot("nova-snap", "raw", image_id)
            assert image_id not in ceph_admin("rbd", "ls", "images")
            provision.provision_from_conf(conf, admin, allow_snapshots=True)
            with imagebackend.Backend(conf) as allowed:
                same = allowed.by_name(disk.instance_uuid, "disk", image_type="rbd")
                same.direct_snapshot("nova-snap", "raw", image_id)
            made.append(("images", image_id))
            assert ceph_admin("rbd", "snap", "ls", f"images/{image_id}")[0]["name"] == "snap"
    finally:
        ceph_admin("ceph", "auth", "del", f"client.{user}")


_SIGTERM_CHILD = textwrap.dedent("""
    import os, signal, sys
    from rbd_driver import imagebackend
    from rbd_driver.storage import sigterm
    from rbd_driver.testing.local_cluster import load_state, make_conf
    sigterm.enable()  # opt-in, as rbd-driver does
    conf = make_conf(load_state(sys.argv[1]))
    conf.set_override("snapshot_flatten", sys.argv[4] == "1", group="rbd")
    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(sys.argv[2], "disk", image_type="rbd")
        def progress(done, total):
            os.kill(os.getpid(), signal.SIGTERM)
        disk.direct_snapshot("nova-snap", "raw", sys.argv[3], progress=progress)
    print("finished")
""")


@pytest.mark.parametrize("flatten", [False, True], ids=["shared", "flattened"])
def test_sigterm_in_the_middle_leaves_nothing(backend, driver, golden, made, ceph_cluster,
                                              ceph_admin, flatten) -> None:
    disk = _launch(backend, driver.fsid, "images", golden, made)
    with driver.client.open_image("vms", disk.rbd_name) as image:
        image.write(os.urandom(8 * MIB), 0)
    image_id = f"snap-{uuid.uuid4().hex[:8]}"
    before = sorted(ceph_admin("rbd", "ls", "images"))
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD, ceph_cluster.conf_path,
                           disk.instance_uuid, image_id, "1" if flatten else "0"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -15, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert sorted(ceph_admin("rbd", "ls", "images")) == before
    assert ceph_admin("rbd", "snap", "ls", f"vms/{disk.rbd_name}") == []


# -- the clone-depth policy on the launch path -----------------------------------------


def _chain(state: ClusterState, golden: str, depth: int, made: list[tuple[str, str]]) -> str:
    """Clone ``golden`` ``depth`` times in images (admin CLI); return the deepest name."""
    parent = golden
    for _ in range(depth):
        name = f"level-{uuid.uuid4().hex[:8]}"
        _rbd(state, "clone", f"images/{parent}@snap", f"images/{name}")
        made.append(("images", name))
        _rbd(state, "snap", "create", f"images/{name}@snap")
        _rbd(state, "snap", "protect", f"images/{name}@snap")
        parent = name
    return parent


def test_direct_fetch_past_max_clone_depth_gives_a_flat_disk(
        backend, driver, golden, made, ceph_cluster, ceph_admin, rbd_conf, tmp_path) -> None:
    rbd_conf.set_override("max_clone_depth", 2, group="rbd")
    rbd_conf.set_override("clone_depth_soft_limit", 2, group="rbd")
    deepest = _chain(ceph_cluster, golden, 2, made)
    disk = _launch(backend, driver.fsid, "images", deepest, made)
    assert "parent" not in ceph_admin("rbd", "info", f"vms/{disk.rbd_name}")
    assert filecmp.cmp(_export(ceph_cluster, f"images/{golden}@snap", tmp_path / "g.raw"),
                       _export(ceph_cluster, f"vms/{disk.rbd_name}", tmp_path / "d.raw"),
                       shallow=False)
    shallow = _launch(backend, driver.fsid, "images", golden, made)  # depth 1: a clone
    assert ceph_admin("rbd", "info", f"vms/{shallow.rbd_name}")["parent"]["image"] == golden


def test_direct_fetch_past_the_soft_limit_is_flattened_soon_after(
        backend, driver, golden, made, ceph_cluster, ceph_admin, rbd_conf) -> None:
    rbd_conf.set_override("max_clone_depth", 5, group="rbd")
    rbd_conf.set_override("clone_depth_soft_limit", 1, group="rbd")
    deepest = _chain(ceph_cluster, golden, 1, made)
    disk = _launch(backend, driver.fsid, "images", deepest, made)
    deadline = time.monotonic() + 60
    while "parent" in ceph_admin("rbd", "info", f"vms/{disk.rbd_name}"):
        assert time.monotonic() < deadline, "not flattened within 60 s"
        time.sleep(0.2)


def test_cleanup_direct_snapshot(backend, driver, golden, made, ceph_admin) -> None:
    disk = _launch(backend, driver.fsid, "images", golden, made)
    image_id = f"snap-{uuid.uuid4().hex[:8]}"
    url = disk.direct_snapshot("nova-snap", "raw", image_id)
    made.append(("images", image_id))
    disk.cleanup_direct_snapshot(url)
    assert ceph_admin("rbd", "snap", "ls", f"images/{image_id}") == []
    disk.cleanup_direct_snapshot(url, also_destroy_volume=True)
    assert image_id not in ceph_admin("rbd", "ls", "images")


def test_golden_rm_flattens_the_snapshot_images_that_share_it(
        backend, driver, made, ceph_cluster, ceph_admin, tmp_path) -> None:
    from rbd_driver.ops.golden import GoldenImages

    name = f"golden-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "g.raw"
    with open(path, "wb") as f:
        f.truncate(8 * MIB)
        f.write(os.urandom(2 * MIB))
    with GoldenImages(driver, pool="images") as goldens:
        goldens.register(name, str(path))
        made.append(("images", name))
        disk = _launch(backend, driver.fsid, "images", name, made)
        image_id = f"snap-{uuid.uuid4().hex[:8]}"
        disk.direct_snapshot("nova-snap", "raw", image_id)
        made.append(("images", image_id))
        assert ceph_admin("rbd", "info", f"images/{image_id}")["parent"]["image"] == name
        before = _export(ceph_cluster, f"images/{image_id}@snap", tmp_path / "before.raw")
        assert driver.remove_image(disk.rbd_name).ok
        with pytest.raises(exception.GoldenImageHasClones, match=image_id):
            goldens.delete(name)
        assert goldens.delete(name, flatten_images=True) == "removed"
    assert name not in ceph_admin("rbd", "ls", "images")
    assert "parent" not in ceph_admin("rbd", "info", f"images/{image_id}@snap")
    assert filecmp.cmp(before, _export(ceph_cluster, f"images/{image_id}@snap",
                                       tmp_path / "after.raw"), shallow=False)


def test_cleanup_of_the_instance_removes_the_snapshot_a_dead_process_left(
        backend, driver, golden, made, ceph_cluster, ceph_admin, rbd_conf, monkeypatch) -> None:
    from rbd_driver.backends.rbd import Rbd
    from tests.functional.test_cleanup_busy import Holder

    disk = _launch(backend, driver.fsid, "images", golden, made)
    image_id = f"snap-{uuid.uuid4().hex[:8]}"
    # The process dies before its background removal runs: it is never queued.
    monkeypatch.setattr(driver.snapshot_remover, "submit", lambda *args: None)
    disk.direct_snapshot("nova-snap", "raw", image_id)
    made.append(("images", image_id))
    temp = instance_snapshot.TEMP_SNAPSHOT_PREFIX + "nova-snap"
    assert [s["name"] for s in ceph_admin("rbd", "snap", "ls", f"vms/{disk.rbd_name}")] \
        == [temp]
    guest = Holder(ceph_cluster, "vms", disk.rbd_name)  # a guest still runs on the disk
    try:
        report = Rbd.cleanup_instance(rbd_conf, disk.instance_uuid, driver=driver)
        assert list(report.busy) == [disk.rbd_name] and report.failed == {}
        assert ceph_admin("rbd", "snap", "ls", f"vms/{disk.rbd_name}") == []
    finally:
        guest.close()
    assert Rbd.cleanup_instance(rbd_conf, disk.instance_uuid, driver=driver).removed \
        == [disk.rbd_name]
    assert disk.rbd_name not in ceph_admin("rbd", "ls", "vms")
    assert ceph_admin("rbd", "snap", "ls", f"images/{image_id}")[0]["name"] == "snap"
