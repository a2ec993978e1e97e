"""The session guard that stops a run when the test cluster is full."""

from __future__ import annotations

from rbd_driver.testing.fixtures import full_osds

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
