"""Spares shared by hosts, on a real cluster: each Launcher is a host with its own
connection. Judged by the admin CLI (`rbd ls`, `rbd info`). Runs on both clone formats."""

from __future__ import annotations

import time

from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.cluster import make_conf
from tests.functional.test_spares import Golden, Launcher, _spares_of, agents, golden

__all__ = ["agents", "golden"]  # fixtures, used by name


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


def test_golden_delete_racing_another_hosts_refill_removes_the_golden(
        ceph_cluster, agents, ceph_admin, pools) -> None:
    driver = RBDDriver.from_conf(make_conf(ceph_cluster, pool=pools.vms))
    try:
        g = Golden(driver, pools)
        refiller: Launcher = agents(6)
        disk = refiller.launch(g.url)  # its refill starts making six spares
        assert refiller.backend.backend("rbd").cleanup_instance(
            refiller.conf, disk.instance_uuid, driver=refiller.driver).ok
        refiller.instances.clear()
        time.sleep(0.05)  # the refill is cloning now
        started = time.monotonic()
        outcome = GoldenImages(driver, pool=pools.images).delete(g.name)
        elapsed = time.monotonic() - started
        assert outcome == "removed"
        assert refiller.driver.spares.wait(60)
        assert g.name not in (ceph_admin("rbd", "ls", pools.images) or [])
        assert _spares_of(ceph_admin, g) == []
        leftovers = [n for n in ceph_admin("rbd", "ls", pools.vms) or []
                     if n.startswith("rbd-driver-spare") and g.identity.image_id in n]
        assert leftovers == []
        assert elapsed < 30, elapsed
    finally:
        driver.close()
