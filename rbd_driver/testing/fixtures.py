"""pytest fixtures backed by a real throwaway Ceph cluster.

Enable them in a ``conftest.py`` with::

    pytest_plugins = ["rbd_driver.testing.fixtures"]

Environment variables:

``RBD_DRIVER_TEST_CEPH_CONF``
    use an already running local cluster (the ceph.conf printed by
    ``rbd-driver dev-cluster start``) instead of starting one.
``RBD_DRIVER_TEST_OSDS`` / ``RBD_DRIVER_TEST_OBJECTSTORE``
    shape of the cluster started for the session (default 1, memstore).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from oslo_config import cfg

from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.testing.cluster import ClusterState, LocalCluster, load_state, make_conf

__all__ = ["ceph_cluster", "rbd_conf", "rados_client", "unique_name"]


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[ClusterState]:
    """A running cluster for the whole session; stopped at the end if we started it."""
    existing = os.environ.get("RBD_DRIVER_TEST_CEPH_CONF")
    if existing:
        yield load_state(existing)
        return
    cluster = LocalCluster(
        osds=int(os.environ.get("RBD_DRIVER_TEST_OSDS", "1")),
        objectstore=os.environ.get("RBD_DRIVER_TEST_OBJECTSTORE", "memstore"),
    )
    state = cluster.start()
    try:
        yield state
    finally:
        cluster.stop()


@pytest.fixture
def rbd_conf(ceph_cluster: ClusterState) -> cfg.ConfigOpts:
    """A fresh ConfigOpts pointing at the cluster as its non-admin user."""
    conf = make_conf(ceph_cluster)
    # Busy-disk retries are quick in tests; production keeps the defaults.
    conf.set_override("destroy_retry_interval", 0.5, group="rbd")
    conf.set_override("destroy_retries", 4, group="rbd")
    return conf


@pytest.fixture
def rados_client(rbd_conf: cfg.ConfigOpts) -> Iterator[RadosClient]:
    """A connected-on-demand client as the non-admin user, closed afterwards."""
    with RadosClient.from_conf(rbd_conf) as client:
        yield client


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for images and snapshots."""
    return f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
