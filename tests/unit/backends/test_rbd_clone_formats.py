# SPDX-License-Identifier: Apache-2.0
"""Clone policy and snapshot removal on both clone formats of the fake librbd.

Clone format 1 needs a protected snapshot and refuses to remove a snapshot
with clones. Format 2 (clusters at ``require_min_compat_client`` mimic or
later) clones unprotected snapshots, and librbd "removes" a snapshot with
clones by moving it to the trash namespace, after which its image could never
be removed while the clones live. The driver refuses such a removal itself,
naming the clones (``_refuse_if_cloned``), and reports a snapshot already in
the trash namespace with the clones that hold it (``_purge_snapshots``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.backends.rbd import Rbd
from rbd_driver.testing.fixtures import FakeEnv

RAW = {"disk_format": "raw"}
MIB = 1 << 20


class Env(FakeEnv):
    """A fake cluster of one clone format, pools vms/images, and a driver on it."""

    def __init__(self, tmp_path: Any, clone_format: int) -> None:
        super().__init__(tmp_path, clone_format=clone_format, user=None,
                         driver_options={"destroy_retries": 3, "destroy_retry_interval": 2.5})
        self.format = clone_format

    def golden(self, protect: bool = True, name: str = "golden") -> str:
        image = self.cluster.add_image("images", name, 16 * MIB, data=b"golden bytes")
        image.create_snap("snap", protect=protect)
        return f"rbd://{self.driver.fsid}/images/{name}/snap"

    def launch(self, url: str) -> Rbd:
        disk = Rbd(str(uuid.uuid4()), "disk", self.conf, driver=self.driver)
        disk.direct_fetch("img", RAW, [{"url": url}])
        return disk

    def snaps(self, pool: str, name: str) -> list[tuple[str, int]]:
        """(name, namespace) of every snapshot of ``pool/name``, from the cluster's state."""
        return [(s.name, s.namespace) for s in self.cluster.image(pool, name).snaps.values()]


@pytest.fixture(params=[1, 2], ids=["clone-v1", "clone-v2"])
def env(tmp_path: Any, request: pytest.FixtureRequest) -> Any:
    env = Env(tmp_path, request.param)
    yield env
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_an_unprotected_snapshot_clones_on_v2_and_is_refused_on_v1(env) -> None:
    url = env.golden(protect=False)
    disk = Rbd(str(uuid.uuid4()), "disk", env.conf, driver=env.driver)
    if env.format == 1:
        with pytest.raises(exception.ImageUnacceptable, match="clone failed"):
            disk.direct_fetch("img", RAW, [{"url": url}])
        assert env.cluster.pool("vms").image_names() == []
        return
    disk.direct_fetch("img", RAW, [{"url": url}])
    assert env.cluster.image("vms", disk.rbd_name).parent == ("images", "golden", "snap")
    assert env.cluster.image("vms", disk.rbd_name).read(0, 12) == b"golden bytes"
    assert env.cluster.image("images", "golden").snap_by_name("snap").protected is False


@pytest.mark.parametrize("protect", [True, False], ids=["protected", "unprotected"])
def test_a_snapshot_with_clones_is_refused_and_never_trashed(env, protect) -> None:
    url = env.golden(protect=protect)
    if env.format == 1 and not protect:  # nothing to refuse: no clone can exist
        with pytest.raises(exception.ImageUnacceptable, match="clone failed"):
            env.launch(url)
        return
    disk = env.launch(url)
    with pytest.raises(exception.SnapshotHasClones) as info:
        env.driver.remove_snap("golden", "snap", force=True, pool="images")
    assert f"vms/{disk.rbd_name}" in str(info.value)
    assert env.snaps("images", "golden") == [("snap", 0)]  # still a user snapshot
    assert env.cluster.image("images", "golden").snap_by_name("snap").protected is protect
    # The golden cannot go while clones read from it: trashed at once, no retries.
    report = env.driver.remove_image("golden", pool="images")
    assert "has clones" in report.trashed["golden"]
    assert env.slept == []
    with env.driver.client.ioctx("images") as ioctx:
        [entry] = env.rbd.RBD().trash_list(ioctx)
    assert entry["name"] == "golden"
    trashed = env.cluster.pool("images").images[entry["id"]]
    assert [(s.name, s.namespace) for s in trashed.snaps.values()] == [("snap", 0)]


def test_cleanup_of_every_clone_then_the_golden_leaves_nothing(env) -> None:
    url = env.golden(protect=env.format == 1)
    disks = [env.launch(url) for _ in range(3)]
    disks[0].create_snap("instance-snap", protect=True)
    for disk in disks:
        report = Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver)
        assert report.ok and not report.trashed, report
    assert env.cluster.pool("vms").image_names() == []
    report = env.driver.remove_image("golden", pool="images")
    assert report.removed == ["golden"], report
    assert env.cluster.pool("images").images == {}  # not in the trash either


def test_a_snapshot_already_in_the_trash_namespace_is_reported_with_its_clones(tmp_path) -> None:
    """Another tool removed the golden's snapshot through librbd (format 2 only):
    the driver says which clones hold it instead of retrying in vain, and the
    golden goes once they are gone."""
    env = Env(tmp_path, 2)
    disk = env.launch(env.golden(protect=False))
    with env.driver.client.open_image("images", "golden") as image:
        image.remove_snap("snap")  # what `rbd snap rm` does with clone v2
    [(trashed_name, namespace)] = env.snaps("images", "golden")
    assert namespace == 2 and trashed_name != "snap"
    report = env.driver.remove_image("golden", pool="images")
    assert env.slept == []
    reason = report.trashed.get("golden") or report.failed.get("golden") or ""
    assert f"vms/{disk.rbd_name}" in reason, report
    with env.driver.client.ioctx("images") as ioctx:
        for entry in env.rbd.RBD().trash_list(ioctx):
            env.rbd.RBD().trash_restore(ioctx, entry["id"], "")
    assert Rbd.cleanup_instance(env.conf, disk.instance_uuid, driver=env.driver).ok
    assert env.snaps("images", "golden") == []  # went with its last clone
    assert env.driver.remove_image("golden", pool="images").removed == ["golden"]
    assert env.cluster.pool("images").images == {}
    env.driver.close()
    env.cluster.assert_no_open_handles()
