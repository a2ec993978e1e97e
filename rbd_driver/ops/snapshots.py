# SPDX-License-Identifier: Apache-2.0
"""In-cluster snapshots of instance disks: create, list, roll back, delete.

A snapshot never leaves the cluster (backups, in :mod:`rbd_driver.ops.backup`,
are made from snapshots). Protection is handled here for the caller: a
snapshot is unprotected before it is deleted, and :mod:`rbd_driver.ops.golden`
protects one before cloning it. Deleting a snapshot that has clones is
refused with the list of clones, unless the caller asks to flatten them
first, which copies the snapshot's data into each clone and detaches it.

Policy only; the librbd calls are in
:class:`~rbd_driver.storage.rbd_utils.RBDDriver`.
"""

from __future__ import annotations

import builtins
import logging

from rbd_driver import exception
from rbd_driver.storage.rbd_utils import RBDDriver, SnapshotInfo

__all__ = ["InstanceSnapshots", "SnapshotInfo"]

LOG = logging.getLogger(__name__)


def _check_name(pool: str, disk: str, name: str) -> None:
    if not name or "/" in name or "@" in name or name != name.strip():
        raise exception.InvalidArgument(
            op="snapshot", target=f"{pool}/{disk}",
            detail=f"snapshot name {name!r} must be non-blank, without '/', '@' or "
                   "surrounding spaces")


class InstanceSnapshots:
    """Snapshots of the disks in one driver's pool (or another ``pool``)."""

    def __init__(self, driver: RBDDriver) -> None:
        self.driver = driver

    def create(self, disk: str, name: str, *, pool: str | None = None) -> SnapshotInfo:
        """Snapshot ``pool/disk`` now and return the snapshot with its timestamp.

        The snapshot is crash-consistent; freeze the guest's filesystems first
        for an application-consistent one.

        :raises InvalidArgument: a name librbd or an ``rbd://`` URL cannot hold.
        :raises ImageNotFound: / :raises ImageExists: the snapshot exists.
        """
        pool = pool or self.driver.pool
        _check_name(pool, disk, name)
        self.driver.create_snap(disk, name, pool=pool)
        return self.get(disk, name, pool=pool)

    def list(self, disk: str, *, pool: str | None = None) -> list[SnapshotInfo]:
        """Return the snapshots of ``pool/disk``, oldest first, with timestamps.

        :raises ImageNotFound:
        """
        return self.driver.list_snapshots(disk, pool or self.driver.pool)

    def get(self, disk: str, name: str, *, pool: str | None = None) -> SnapshotInfo:
        """Return one snapshot.

        :raises SnapshotNotFound: / :raises ImageNotFound:
        """
        pool = pool or self.driver.pool
        for snap in self.list(disk, pool=pool):
            if snap.name == name:
                return snap
        raise exception.SnapshotNotFound(pool=pool, image=disk, snapshot=name)

    def rollback(self, disk: str, name: str, *, pool: str | None = None) -> None:
        """Roll ``pool/disk`` back to snapshot ``name``; the instance must be stopped.

        :raises SnapshotNotFound: / :raises ImageBusy: the disk is open elsewhere.
        """
        pool = pool or self.driver.pool
        self.get(disk, name, pool=pool)  # a clear SnapshotNotFound before touching data
        self.driver.rollback_to_snap(disk, name, pool=pool)
        LOG.info("rolled %s/%s back to %s", pool, disk, name)

    def delete(self, disk: str, name: str, *, flatten_children: bool = False,
               pool: str | None = None) -> builtins.list[str]:
        """Delete snapshot ``name`` of ``pool/disk``, unprotecting it if needed.

        Returns the clones that were flattened (``pool/image``), if asked to.

        :raises SnapshotHasClones: it has clones and ``flatten_children`` is
            false, or a clone sits in the RBD trash (it cannot be flattened);
            the message lists them and nothing was changed.
        :raises SnapshotNotFound: / :raises ImageNotFound:
        """
        pool = pool or self.driver.pool
        children = self.driver.snap_children(disk, name, pool)
        trashed = [f"{c['pool']}/{c['image']} (in the trash)" for c in children if c["trash"]]
        live = [f"{c['pool']}/{c['image']}" for c in children if not c["trash"]]
        if trashed or (live and not flatten_children):
            raise exception.SnapshotHasClones(pool=pool, image=disk, snapshot=name,
                                              children=", ".join(live + trashed))
        for child in children:
            self.driver.flatten(child["image"], child["pool"])
            LOG.info("flattened %s/%s before deleting %s/%s@%s", child["pool"], child["image"],
                     pool, disk, name)
        self.driver.remove_snap(disk, name, force=True, pool=pool)
        return live
