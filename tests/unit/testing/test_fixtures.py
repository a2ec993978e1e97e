# SPDX-License-Identifier: Apache-2.0
"""The session guard that stops a run when the test cluster is full, and the fake cluster's setup."""

from __future__ import annotations

import pytest

from rbd_driver.testing.fixtures import FakeEnv, full_osds

# The shape of `ceph osd dump -f json` (Ceph 16.2.15), trimmed to what matters.
HEALTHY = {
    "osds": [{"osd": 0, "up": 1, "in": 1, "state": ["exists", "up"]}],
    "pools": [{"pool_name": "vms", "flags_names": "hashpspool,selfmanaged_snaps"}],
}


def test_a_healthy_cluster_is_not_full() -> None:
    assert full_osds(HEALTHY) == []


def test_a_full_osd_and_full_pools_are_named() -> None:
    dump = {
        "osds": [{"osd": 0, "state": ["exists", "up"]},
                 {"osd": 1, "state": ["exists", "full", "up"]}],
        "pools": [{"pool_name": "vms", "flags_names": "hashpspool,full"},
                  {"pool_name": "images", "flags_names": "hashpspool,full_quota"}],
    }
    assert full_osds(dump) == ["osd.1", "pool vms"]


def test_fake_env_is_a_driver_on_the_fake_cluster(fake_env) -> None:
    assert fake_env.cluster.pools.keys() == {"vms", "images"}
    assert fake_env.conf.rbd.ceph_conf == str(fake_env.ceph_conf)
    assert fake_env.conf.rbd.user == "compute" and fake_env.client.user == "compute"
    assert fake_env.driver.pool == "vms" and fake_env.driver.fsid == fake_env.cluster.fsid
    other = fake_env.new_driver()
    assert other.client is not fake_env.client  # another connection: another host
    fake_env.cluster.add_image("vms", "gone", 1 << 20)
    assert fake_env.driver.remove_image("gone").removed == ["gone"]
    assert fake_env.cluster.pool("vms").image_names() == [] and fake_env.slept == []


def test_fake_env_close_and_check_fails_on_a_leaked_handle(tmp_path) -> None:
    env = FakeEnv(tmp_path, pools=("vms",), clone_format=2, user=None,
                  options={"clone_spares": 3})
    assert env.cluster.clone_format == 2 and env.conf.rbd.clone_spares == 3
    assert env.conf.rbd.user != "compute" and env.client.user is None
    env.cluster.add_image("vms", "disk", 1 << 20)
    ioctx = env.client.get_ioctx("vms")
    env.rbd.Image(ioctx, "disk")
    with pytest.raises(AssertionError):
        env.close_and_check()
