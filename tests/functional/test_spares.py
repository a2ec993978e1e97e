# SPDX-License-Identifier: Apache-2.0
"""Spare clones against a real cluster, as the non-admin cephx user (``profile rbd``).

The Ceph CLI (as admin) and qemu-img are the independent oracles: ``rbd info``
for the parent of a disk made from a spare, ``rbd ls`` for what the pool
holds, ``rados ls`` for stray id objects, qemu-img for opening the disk.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rados
from oslo_config import cfg

from rbd_driver import exception, imagebackend
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage.location import parse_location
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.storage.spares import SPARE_PREFIX, spare_prefix
from rbd_driver.testing.local_cluster import ClusterState, make_conf
from tests.functional.conftest import ClonePools

GOLDEN_SIZE = 64 << 20
RAW = {"disk_format": "raw"}


class Golden:
    """A golden image in ``pools.images`` (protected snapshot ``snap``) and its spares."""

    def __init__(self, driver: RBDDriver, pools: ClonePools) -> None:
        self.driver = driver
        self.pools = pools
        self.name = f"golden-{uuid.uuid4().hex[:8]}"
        driver.create(self.name, GOLDEN_SIZE, pool=pools.images)
        with driver.client.open_image(pools.images, self.name) as image:
            image.write(b"golden raw data\n" * 256, 0)
        driver.create_snap(self.name, "snap", protect=True, pool=pools.images)
        self.url = f"rbd://{driver.fsid}/{pools.images}/{self.name}/snap"
        identity = driver.snapshot_identity(parse_location(self.url))
        assert identity is not None
        self.identity = identity
        self.prefix = spare_prefix(driver.pool_id(pools.images), identity)


class Launcher:
    """One compute agent: a Backend (one driver, one connection) with its own conf."""

    def __init__(self, ceph_cluster: ClusterState, spares: int, pools: ClonePools) -> None:
        self.conf: cfg.ConfigOpts = make_conf(ceph_cluster, pool=pools.vms)
        self.conf.set_override("clone_spares", spares, group="rbd")
        self.backend = imagebackend.Backend(self.conf)
        self.driver: RBDDriver = self.backend.driver("rbd")
        self.instances: list[str] = []

    def launch(self, url: str) -> Any:
        inst = str(uuid.uuid4())
        self.instances.append(inst)
        disk = self.backend.by_name(inst, "disk", image_type="rbd")
        disk.direct_fetch("img", RAW, [{"url": url}])
        return disk

    def cleanup(self) -> None:
        cls = self.backend.backend("rbd")
        for inst in self.instances:
            report = cls.cleanup_instance(self.conf, inst, driver=self.driver)
            assert report.ok and not report.trashed, report
        self.backend.close()


@pytest.fixture
def agents(ceph_cluster: ClusterState, pools: ClonePools) -> Iterator[Callable[[int], Launcher]]:
    """A factory of launchers; their disks are removed after the test."""
    made: list[Launcher] = []

    def make(spares: int) -> Launcher:
        made.append(Launcher(ceph_cluster, spares, pools))
        return made[-1]

    yield make
    for launcher in made:
        launcher.cleanup()


@pytest.fixture
def golden(ceph_cluster: ClusterState,
           pools: ClonePools) -> Iterator[Callable[[], Golden]]:
    """A factory of golden images; removed after the test with their spares (in pools.vms)."""
    made: list[Golden] = []
    conf = make_conf(ceph_cluster, pool=pools.vms)
    driver = RBDDriver.from_conf(conf)

    def make() -> Golden:
        made.append(Golden(driver, pools))
        return made[-1]

    yield make
    for g in made:
        driver.remove_spares(pools.vms, parent=g.identity)
        report = driver.remove_image(g.name, pool=pools.images)
        assert report.removed == [g.name], report
    driver.close()


@pytest.fixture
def vms(pools: ClonePools) -> str:
    return pools.vms


def _ls(ceph_admin: Callable[..., Any], pool: str) -> list[str]:
    return list(ceph_admin("rbd", "ls", pool) or [])


def _spares_of(ceph_admin: Callable[..., Any], g: Golden) -> list[str]:
    return sorted(n for n in _ls(ceph_admin, g.pools.vms) if n.startswith(g.prefix))


def _info(ceph_admin: Callable[..., Any], name: str, pool: str) -> dict[str, Any]:
    info: dict[str, Any] = ceph_admin("rbd", "info", f"{pool}/{name}")
    return info


def _stray_id_objects(ceph_cluster: ClusterState, ceph_admin: Callable[..., Any],
                      pool: str) -> list[str]:
    """rbd_id objects in ``pool`` whose name is not a listed image (the rados CLI as admin)."""
    proc = subprocess.run(["rados", "-c", ceph_cluster.conf_path, "-p", pool, "ls"],
                          capture_output=True, text=True, timeout=120, check=True)
    ids = {o[len("rbd_id."):] for o in proc.stdout.split() if o.startswith("rbd_id.")}
    return sorted(ids - set(_ls(ceph_admin, pool)))


def _assert_parent(ceph_admin: Callable[..., Any], name: str, g: Golden) -> dict[str, Any]:
    info = _info(ceph_admin, name, g.pools.vms)
    parent = info["parent"]
    assert (parent["pool"], parent["image"], parent["snapshot"]) == (g.pools.images, g.name, "snap")
    assert info["size"] == GOLDEN_SIZE
    assert ("clone-child" in info.get("op_features", [])) is (g.pools.format == 2)
    return info


def _wait_refilled(agent: Launcher, ceph_admin: Callable[..., Any], g: Golden, count: int,
                   timeout: float = 60) -> list[str]:
    """Wait for the agent's refill worker, then return the spares ``rbd ls`` shows;
    fails unless there is a worker and it left exactly ``count`` whole spares.

    ``wait_spares`` alone proves nothing: it is True when there is no worker.
    """
    assert agent.driver._spares is not None, "no spares worker was ever started"
    assert agent.driver.wait_spares(timeout)
    spares = _spares_of(ceph_admin, g)
    assert len(spares) == count, spares
    for spare in spares:
        _assert_parent(ceph_admin, spare, g)
    return spares


def test_direct_fetch_claims_a_spare(golden, agents, ceph_admin, ceph_cluster, vms) -> None:
    g = golden()
    agent = agents(2)
    first = agent.launch(g.url)  # no spare yet: cloned, and a refill asked for
    spares = _wait_refilled(agent, ceph_admin, g, 2)
    spare_ids = {_info(ceph_admin, s, vms)["id"] for s in spares}

    disk = agent.launch(g.url)
    info = _assert_parent(ceph_admin, disk.rbd_name, g)
    assert info["id"] in spare_ids  # it was one of the spares, renamed
    assert disk.parent_info() == (g.pools.images, g.name, "snap")
    listed = _ls(ceph_admin, vms)
    assert first.rbd_name in listed and disk.rbd_name in listed
    assert info["id"] not in {_info(ceph_admin, s, vms)["id"]
                              for s in _wait_refilled(agent, ceph_admin, g, 2)}
    assert _stray_id_objects(ceph_cluster, ceph_admin, vms) == []

    # QEMU opens it through its rbd: path, as the non-admin user, and reads the golden's data.
    path = disk.path
    assert f":id={ceph_cluster.user}:" in path
    proc = subprocess.run(["qemu-img", "info", "--output=json", "-f", "raw", path],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["virtual-size"] == GOLDEN_SIZE
    read = subprocess.run(["qemu-io", "-f", "raw", "-r", "-c", "read -P 0x67 0 1", path],
                          capture_output=True, text=True, timeout=60, check=False)
    assert read.returncode == 0 and "read 1/1 bytes" in read.stdout, read.stdout + read.stderr
    # And it is an ordinary disk: writable, and cleanup removes it.
    proc = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4096", path],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_two_agents_racing_never_take_the_same_spare(golden, agents, ceph_admin,
                                                     ceph_cluster, vms) -> None:
    g = golden()
    a, b = agents(4), agents(4)
    a.launch(g.url)
    _wait_refilled(a, ceph_admin, g, 4)
    # b adopts a's spares; both now launch at once, from the same spares.
    disks: dict[str, list[Any]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(key: str, agent: Launcher) -> None:
        try:
            barrier.wait(30)
            for _ in range(10):
                disks[key].append(agent.launch(g.url))
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k, x)) for k, x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    names = [d.rbd_name for d in disks["a"] + disks["b"]]
    ids = [_assert_parent(ceph_admin, n, g)["id"] for n in names]
    assert len(set(ids)) == len(names) == 20
    assert a.driver._spares is not None and b.driver._spares is not None
    assert a.driver.wait_spares(120) and b.driver.wait_spares(120)
    listed = _ls(ceph_admin, vms)
    assert set(names) <= set(listed)
    left = _spares_of(ceph_admin, g)
    assert 1 <= len(left) <= 8, left  # refilled (each agent keeps up to 4)
    for spare in left:  # every spare left is whole
        assert _assert_parent(ceph_admin, spare, g)["id"] not in ids
    assert _stray_id_objects(ceph_cluster, ceph_admin, vms) == []


def test_golden_delete_removes_its_spares(agents, ceph_admin, ceph_cluster, vms, pools) -> None:
    agent = agents(3)
    g = Golden(agent.driver, pools)
    disk = agent.launch(g.url)
    _wait_refilled(agent, ceph_admin, g, 3)
    goldens = GoldenImages(agent.driver, pool=pools.images)
    agent.backend.backend("rbd").cleanup_instance(agent.conf, disk.instance_uuid,
                                                  driver=agent.driver)
    assert goldens.delete(g.name) == "removed"
    goldens.close()
    assert _spares_of(ceph_admin, g) == []
    assert not [n for n in _ls(ceph_admin, vms) if n.startswith(g.prefix.replace(
        SPARE_PREFIX, "rbd-driver-spare-removing."))]
    assert g.name not in _ls(ceph_admin, g.pools.images)
    assert _stray_id_objects(ceph_cluster, ceph_admin, vms) == []


def test_no_spare_ever_appears_with_clone_spares_zero(golden, agents, ceph_admin, vms) -> None:
    g = golden()
    agent = agents(0)
    for _ in range(3):
        disk = agent.launch(g.url)
        _assert_parent(ceph_admin, disk.rbd_name, g)
    # No worker to wait for (wait_spares would be True anyway): watch the pool
    # for a while instead, since a refill would show within a second or two.
    assert agent.driver._spares is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert not [n for n in _ls(ceph_admin, vms) if n.startswith("rbd-driver-spare") and
                    g.identity.image_id in n]
        time.sleep(0.5)
    children = ceph_admin("rbd", "children", f"{g.pools.images}/{g.name}@snap")
    assert len(children) == 3, children  # the three disks, nothing else


def test_claim_calls_work_with_profile_rbd_caps(golden, ceph_cluster, ceph_admin, vms) -> None:
    """read/remove rbd_id, dir_get_id, dir_rename_image, exclusive create: as the test user."""
    caps = ceph_admin("ceph", "auth", "get", f"client.{ceph_cluster.user}")[0]["caps"]
    assert caps["osd"] == "profile rbd" and caps["mon"] == "profile rbd"
    g = golden()
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool=vms))
    try:
        spare, taken = f"{g.prefix}0123abcd", f"claimed-{uuid.uuid4().hex[:8]}"
        driver.clone(parse_location(g.url), spare)
        spare_id = _info(ceph_admin, spare, vms)["id"]
        driver.create(taken, 1 << 20)
        # The target exists: refused (EEXIST from dir_rename_image), the spare intact.
        with pytest.raises(exception.ImageExists) as info:  # translated, not a raw binding error
            driver.claims.claim_rename(spare, taken)
        assert isinstance(info.value.__cause__, rados.Error)
        assert _info(ceph_admin, spare, vms)["id"] == spare_id
        driver.remove_image(taken)
        assert driver.claims.claim_rename(spare, taken) is True
        assert _assert_parent(ceph_admin, taken, g)["id"] == spare_id
        assert driver.claims.claim_rename(spare, "other") is False  # gone: nothing happens
        assert "other" not in _ls(ceph_admin, vms)
        driver.remove_image(taken)
        assert _stray_id_objects(ceph_cluster, ceph_admin, vms) == []
    finally:
        driver.close()


def test_an_interrupted_claim_is_repaired(golden, agents, ceph_admin, ceph_cluster, vms) -> None:
    """A crash after the directory moved: listed, unopenable; the next launch repairs it."""
    g = golden()
    agent = agents(2)
    agent.launch(g.url)
    spare = _wait_refilled(agent, ceph_admin, g, 2)[0]
    spare_id = _info(ceph_admin, spare, vms)["id"]
    inst = str(uuid.uuid4())
    agent.instances.append(inst)
    name = f"{inst}_disk"
    ioctx = agent.driver.client.get_ioctx(vms)
    ioctx.remove_object(f"rbd_id.{spare}")               # the claim point
    agent.driver.claims.dir_rename(ioctx, spare, name, spare_id)  # then "crash"
    assert name in _ls(ceph_admin, vms)
    assert ceph_admin("rbd", "info", f"{vms}/{name}", check=False) is None  # cannot be opened

    restarted = agents(2)  # the agent restarts and launches the same disk again
    disk = restarted.backend.by_name(inst, "disk", image_type="rbd")
    disk.direct_fetch("img", RAW, [{"url": g.url}])
    assert _assert_parent(ceph_admin, name, g)["id"] == spare_id
    assert _stray_id_objects(ceph_cluster, ceph_admin, vms) == []


def test_a_spare_whose_claim_stopped_at_the_claim_point_is_removed_cleanly(
        agents, ceph_admin, ceph_cluster, vms, pools) -> None:
    """Its id object is gone; removal gives it one back so librbd detaches it from
    the golden, which can then be deleted."""
    agent = agents(2)
    g = Golden(agent.driver, pools)
    disk = agent.launch(g.url)
    dead = _wait_refilled(agent, ceph_admin, g, 2)[0]
    agent.driver.client.get_ioctx(vms).remove_object(f"rbd_id.{dead}")
    agent.backend.backend("rbd").cleanup_instance(agent.conf, disk.instance_uuid,
                                                  driver=agent.driver)
    goldens = GoldenImages(agent.driver, pool=pools.images)
    assert goldens.delete(g.name) == "removed"
    goldens.close()
    assert _spares_of(ceph_admin, g) == []
    assert _stray_id_objects(ceph_cluster, ceph_admin, vms) == []


def test_directory_methods_errnos_on_a_real_osd(ceph_cluster) -> None:
    """What the fake's cls_rbd (rbd_driver/testing/fakes/cls_rbd.py) is modelled on."""
    import errno

    from rbd_driver.storage.claim import encode_string as _encode_string

    def enc(*names: str) -> bytes:
        return b"".join(_encode_string(n) for n in names)

    vms = "vms"
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool=vms))
    a, b = (f"dir-{uuid.uuid4().hex[:8]}" for _ in range(2))
    try:
        driver.create(a, 1 << 20)
        driver.create(b, 1 << 20)
        rados = driver.client.rados
        ioctx = driver.client.get_ioctx(vms)
        a_id = driver.claims.read_id(ioctx, a)
        assert a_id is not None
        ret, out = ioctx.execute("rbd_directory", "rbd", "dir_get_id", enc(a))
        assert (ret, bytes(out)) == (4 + len(a_id), _encode_string(a_id))
        cases = [
            ("dir_get_id", enc("nope"), errno.ENOENT),
            ("dir_rename_image", enc("nope", "x", a_id), errno.ENOENT),
            ("dir_rename_image", enc(b, "x", a_id), errno.ESTALE),
            ("dir_rename_image", enc(a, b, a_id), errno.EEXIST),
            ("dir_rename_image", enc(a, "", a_id), errno.EINVAL),
            ("dir_rename_image", b"\x05", errno.EINVAL),
            ("no_such_method", b"", errno.EOPNOTSUPP),
        ]
        for method, data, code in cases:
            with pytest.raises(rados.Error) as info:
                ioctx.execute("rbd_directory", "rbd", method, data)
            assert info.value.errno == code, method
        with rados.WriteOpCtx() as op:
            op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
            op.write_full(b"x")
            with pytest.raises(rados.ObjectExists):
                ioctx.operate_write_op(op, f"rbd_id.{a}")
        assert driver.claims.read_id(ioctx, a) == a_id
    finally:
        for name in (a, b):
            driver.remove_image(name)
        driver.close()
