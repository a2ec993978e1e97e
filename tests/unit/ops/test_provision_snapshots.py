# SPDX-License-Identifier: Apache-2.0
"""Provisioning's explicit choice to let the compute user write instance snapshots."""

from __future__ import annotations

import pytest

from rbd_driver import exception
from rbd_driver.ops import provision
from tests.unit.ops.test_provision import Env, _conf  # noqa: F401 - the env fixture's


def test_least_privilege_by_default(env) -> None:
    conf = _conf(env, user="compute", pool="vms", image_pools=["images"],
                 snapshot_pool="images", keyring=str(env.tmp / "k"))
    report = provision.provision_from_conf(conf, env.client)
    assert report.user.caps["osd"] == "profile rbd pool=vms, profile rbd-read-only pool=images"


def test_allow_snapshots_grants_profile_rbd_on_the_snapshot_and_image_pools(env) -> None:
    conf = _conf(env, user="compute", pool="vms", image_pools=["images"],
                 snapshot_pool="snaps", keyring=str(env.tmp / "k"))
    report = provision.provision_from_conf(conf, env.client, allow_snapshots=True)
    assert [p.name for p in report.pools] == ["vms", "snaps"]
    assert report.user.caps["osd"] == (
        "profile rbd pool=vms, profile rbd pool=snaps, profile rbd pool=images")
    assert report.user.caps["mgr"] == (
        "profile rbd pool=vms, profile rbd pool=snaps, profile rbd pool=images")


def test_allow_snapshots_without_a_pool_creates_nothing(env) -> None:
    conf = _conf(env, user="compute", pool="newpool", image_pools=[],
                 keyring=str(env.tmp / "k"))
    with pytest.raises(exception.ConfigError, match="snapshot_pool"):
        provision.provision_from_conf(conf, env.client, allow_snapshots=True)
    assert "newpool" not in env.cluster.pools
    assert "client.compute" not in env.mon.users
