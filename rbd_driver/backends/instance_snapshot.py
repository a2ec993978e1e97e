# SPDX-License-Identifier: Apache-2.0
"""Instance snapshots to golden images inside the cluster: :meth:`Rbd.direct_snapshot
<rbd_driver.backends.rbd.Rbd.direct_snapshot>`.

The disk becomes a new golden image ``<image pool>/<image_id>@snap``, with no
data leaving Ceph, in these steps:

1. snapshot the disk as ``rbd-driver.snapshotting.<snapshot_name>``
   (:data:`TEMP_SNAPSHOT_PREFIX`: a temporary snapshot, the consistent point
   the copy reads from);
2. build the new image under a temporary name ``<image_id>.snapshotting-<hex>``:

   * *shared* (the default when the disk is a clone of a golden snapshot in
     the image pool, seen whole, and shallow enough): clone that golden
     snapshot and copy in only what the disk holds itself
     (:func:`~rbd_driver.storage.snapshot_copy.copy_changes`);
   * *flattened* (otherwise, or with ``[rbd] snapshot_flatten``): clone the
     disk snapshot (protected for it) and flatten the clone, a full copy;

3. snapshot the new image as ``snap`` and protect it;
4. rename it to ``image_id`` (the commit point) and return
   ``rbd://fsid/pool/image_id/snap``, usable at once;
5. the disk snapshot is removed in the background by the driver's
   :attr:`~rbd_driver.storage.rbd_utils.RBDDriver.snapshot_remover`, retried
   and logged (see :mod:`rbd_driver.storage.snapshot_removal`), so the caller
   does not wait for its monitor commit. If the process dies first, cleanup
   of the instance removes it (:func:`remove_temporary_snapshots`).

Creating or removing a snapshot costs a monitor commit (a snapshot id is
allocated or released in the OSD map), the dearest steps here; the two
creates are what the caller cannot avoid waiting for.

The image pool is the ``parent_pool`` argument, else the pool of the disk's
own parent, else ``[rbd] snapshot_pool``. Any failure, ^C or SIGTERM before
the rename removes the temporary image and the disk snapshot, so nothing is
left; a SIGTERM is then re-raised with its previous handler. The librbd
mechanics are in :mod:`rbd_driver.storage.snapshot_copy`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from rbd_driver import exception
from rbd_driver.backends import clone_depth
from rbd_driver.storage import snapshot_copy, snapshot_removal
from rbd_driver.storage.location import InvalidLocation, RbdLocation, parse_location
from rbd_driver.storage.rbd_utils import CleanupReport, RBDDriver
from rbd_driver.storage.sigterm import SigtermGuard


class Rbd(Protocol):
    """What this module uses of an :class:`rbd_driver.backends.rbd.Rbd` disk (a
    protocol, so that this module does not import the backend that calls it)."""

    conf: Any
    driver: RBDDriver
    pool: str
    rbd_name: str

    def parent_info(self) -> tuple[str, str, str] | None: ...

__all__ = ["GOLDEN_SNAPSHOT", "TEMP_SNAPSHOT_PREFIX", "cleanup_direct_snapshot",
           "direct_snapshot", "remove_leftovers", "remove_temporary_snapshots",
           "wait_for_removals"]

LOG = logging.getLogger(__name__)

#: The protected snapshot of the new image, as the image service names it.
GOLDEN_SNAPSHOT = "snap"

#: The name of a disk's temporary snapshot is this + the caller's snapshot name.
TEMP_SNAPSHOT_PREFIX = "rbd-driver.snapshotting."


def _check_name(kind: str, name: object, image_id: str) -> str:
    if not isinstance(name, str) or not name.strip() or "/" in name or "@" in name \
            or name != name.strip():
        raise exception.InvalidArgument(
            op="direct_snapshot", target=f"image {image_id}",
            detail=f"{kind} {name!r} must be a non-blank name without '/', '@' or "
                   "surrounding spaces")
    return name


def _image_pool(disk: Rbd, parent_pool: str | None, image_id: str) -> str:
    if parent_pool:
        return parent_pool
    parent = disk.parent_info()
    if parent is not None:
        return parent[0]
    if disk.conf.rbd.snapshot_pool:
        return str(disk.conf.rbd.snapshot_pool)
    raise exception.ImageUnacceptable(
        image_id=image_id,
        reason=f"no pool for the snapshot of {disk.pool}/{disk.rbd_name}: it has no parent, "
               "no parent_pool was given and [rbd] snapshot_pool is unset")


def _shared_golden(disk: Rbd, snapshot_name: str,
                   pool: str) -> tuple[RbdLocation, snapshot_copy.ParentAt] | None:
    """Return the golden snapshot the new image may share with the disk snapshot's
    parent facts, or None to flatten.

    Shared only when exact and bounded: the disk's parent at the snapshot is in
    ``pool``, the disk sees all of it (overlap = the parent's size, so nothing
    was shrunk away), and the new clone stays within ``clone_depth_soft_limit``.
    The golden's size comes with its identity (no open of its own).
    """
    group = disk.conf.rbd
    if group.snapshot_flatten:
        return None
    driver = disk.driver
    parent = snapshot_copy.parent_at(driver.client, disk.pool, disk.rbd_name, snapshot_name)
    if parent is None or parent.pool != pool:
        return None
    golden = RbdLocation(driver.fsid, parent.pool, parent.image, parent.snapshot)
    identity = driver.snapshot_identity(golden)
    golden_size = identity.size if identity is not None else driver.size(
        parent.image, parent.pool, snapshot=parent.snapshot)
    if parent.overlap != golden_size:
        return None
    depth = clone_depth.snapshot_depth(driver, golden, identity,
                                       recheck_over=group.clone_depth_soft_limit - 1)
    if depth + 1 > group.clone_depth_soft_limit:
        return None
    return golden, parent


def direct_snapshot(disk: Rbd, snapshot_name: str, image_format: str, image_id: str,
                    parent_pool: str | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: threading.Event | None = None) -> str:
    """Make ``disk`` a new golden image ``image_id``; return its ``rbd://`` location.

    See the module for the steps and which pool is used.

    :raises ImageUnacceptable: ``image_format`` is not raw, or there is no image
        pool; nothing was made (the caller falls back to ``snapshot_extract``).
    :raises ImageExists: ``image_id`` exists in the image pool, or the disk
        already has the temporary snapshot for ``snapshot_name``.
    :raises PermissionDenied: the cephx user may not write to the image pool.
    :raises OperationCancelled: ``cancel`` was set, or a SIGTERM came.
    """
    if image_format != "raw":
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason=f"image_format is {image_format!r}; only 'raw' can be made inside the "
                   "cluster (use snapshot_extract and upload it instead)")
    _check_name("image id", image_id, image_id)
    _check_name("snapshot name", snapshot_name, image_id)
    driver = disk.driver
    pool = _image_pool(disk, parent_pool, image_id)
    if driver.exists(image_id, pool):
        raise exception.ImageExists(pool=pool, image=image_id, detail="refusing to overwrite")
    temp = f"{image_id}.snapshotting-{uuid.uuid4().hex[:8]}"
    disk_snap = TEMP_SNAPSHOT_PREFIX + snapshot_name
    target = f"{pool}/{image_id}"
    state = {"snap": False, "temp": False}
    seen = [0, 0]  # the last progress (done, total), for the message of a SIGTERM

    def relay(done: int, total: int) -> None:
        seen[:] = [done, total]
        if progress is not None:
            progress(done, total)

    def cancelled() -> exception.OperationCancelled:
        return exception.OperationCancelled(op="direct_snapshot", target=target, done=seen[0],
                                            total=seen[1])

    with SigtermGuard(cancelled) as guard:
        try:
            state["snap"] = True  # before the call: an interrupt just after it must clean up
            try:
                driver.create_snap(disk.rbd_name, disk_snap)
            except exception.RbdDriverError:
                state["snap"] = False  # e.g. the name is taken: not ours to remove
                raise
            shared = _shared_golden(disk, disk_snap, pool)
            golden = shared[0] if shared is not None else None
            if golden is None:  # clone format 1 needs it to clone the disk snapshot
                driver.protect_snap(disk.rbd_name, disk_snap)
            state["temp"] = True
            try:
                if golden is not None:
                    driver.clone(golden, temp, pool)
                else:
                    driver.clone(RbdLocation(driver.fsid, disk.pool, disk.rbd_name,
                                             disk_snap), temp, pool)
            except exception.PermissionDenied as err:
                state["temp"] = False
                raise _no_caps(disk, pool, image_id, err) from err
            except exception.RbdDriverError:
                state["temp"] = False
                raise
            if shared is not None:
                parent = shared[1]  # the clone is as big as the golden, the overlap
                if parent.size != parent.overlap:
                    driver.resize(temp, parent.size, pool)
                snapshot_copy.copy_changes(driver.client, disk.pool, disk.rbd_name,
                                           disk_snap, pool, temp, window=driver.io_window,
                                           progress=relay, cancel=cancel)
            else:
                snapshot_copy.flatten_image(driver.client, pool, temp, progress=relay,
                                            cancel=cancel)
            driver.create_snap(temp, GOLDEN_SNAPSHOT, protect=True, pool=pool)
            guard.disarm()  # the commit point: a SIGTERM now waits for the end
            driver.rename(temp, image_id, pool)
        except BaseException as err:
            _undo(disk, pool, temp, disk_snap, state, err)
            raise
        _remove_later(disk, disk_snap)
    location = RbdLocation(driver.fsid, pool, image_id, GOLDEN_SNAPSHOT)
    LOG.info("snapshot of %s/%s is golden image %s (%s)", disk.pool, disk.rbd_name,
             location.url, "sharing " + golden.url if golden is not None else "flattened")
    return location.url


def _remove_later(disk: Rbd, disk_snap: str) -> None:
    """Queue the removal of the disk's temporary snapshot; remove it here if the
    queue is closed (the driver is closing). Never raises: the image is made."""
    driver = disk.driver
    try:
        driver.snapshot_remover.submit(disk.pool, disk.rbd_name, disk_snap)
        return
    except RuntimeError:
        pass
    try:
        driver.remove_snap(disk.rbd_name, disk_snap, force=True)
    except exception.SnapshotNotFound:
        pass
    except exception.RbdDriverError as err:
        LOG.error("could not remove snapshot %s/%s@%s (cleanup of the instance removes "
                  "it): %s", disk.pool, disk.rbd_name, disk_snap, err)


def wait_for_removals(driver: RBDDriver, disks: Iterable[str]) -> None:
    """Wait for this process's background removals of temporary snapshots of
    ``disks`` in the driver's pool: each holds its disk open, and a disk held
    open is not removed. At most the driver's busy-retry time (retries x
    interval), and at least
    :data:`~rbd_driver.storage.snapshot_removal.REMOVAL_WAIT_FLOOR`; then a warning."""
    names = sorted(set(disks))
    limit = max(snapshot_removal.REMOVAL_WAIT_FLOOR,
                driver.destroy_retry_interval * (driver.destroy_retries + 1))
    if not snapshot_removal.wait_for_images(driver.pool, names, timeout=limit):
        LOG.warning("background snapshot removals of %s still running after %.0f s",
                    ", ".join(names), limit)


def remove_leftovers(driver: RBDDriver, reports: Iterable[CleanupReport]) -> None:
    """Remove the temporary snapshots of the disks that cleanup left in place as
    busy (a removed disk lost its snapshots with it); a snapshot that could not
    be removed is added to its report's ``failed`` as ``disk@snapshot``."""
    for report in reports:
        for name in list(report.busy):
            report.failed.update(remove_temporary_snapshots(driver, driver.pool, name))


def remove_temporary_snapshots(driver: RBDDriver, pool: str, name: str) -> dict[str, str]:
    """Remove the temporary snapshots that :func:`direct_snapshot` left on disk
    ``pool/name`` (its process died before their background removal).

    Returns ``name@snapshot`` -> why, for those that could not be removed; a
    missing disk has none.
    """
    failed: dict[str, str] = {}
    try:
        snaps = [s.name for s in driver.list_snapshots(name, pool)
                 if s.name.startswith(TEMP_SNAPSHOT_PREFIX)]
    except exception.ImageNotFound:
        return failed
    except exception.RbdDriverError as err:
        return {name: f"could not list its snapshots: {err}"}
    for snap in snaps:
        try:
            driver.remove_snap(name, snap, force=True, pool=pool)
            LOG.info("removed temporary snapshot %s/%s@%s left by an instance snapshot",
                     pool, name, snap)
        except (exception.ImageNotFound, exception.SnapshotNotFound):
            pass
        except exception.RbdDriverError as err:
            failed[f"{name}@{snap}"] = str(err)
    return failed


def _no_caps(disk: Rbd, pool: str, image_id: str,
             err: exception.PermissionDenied) -> exception.PermissionDenied:
    user = disk.conf.rbd.user or "admin"
    return exception.PermissionDenied(
        op=f"creating instance snapshot image {image_id}", target=f"pool {pool}",
        user=f"client.{user}",
        detail=f"writing to image pool {pool} needs 'profile rbd' on it for client.{user} "
               "(rbd-driver provision from-conf --allow-snapshots grants it); "
               f"librbd said: {err}")


def _undo(disk: Rbd, pool: str, temp: str, disk_snap: str, state: dict[str, bool],
          cause: BaseException) -> None:
    """Remove the temporary image, then the disk snapshot; note what could not be."""
    driver = disk.driver
    if state["temp"]:
        try:
            report = driver.remove_image(temp, pool)
            if not report.ok:
                cause.add_note(f"{pool}/{temp} was left behind: {report.failed}")
        except Exception as err:  # noqa: BLE001 - `cause` is what propagates
            cause.add_note(f"{pool}/{temp} could not be removed: {err}")
    if state["snap"]:
        try:
            driver.remove_snap(disk.rbd_name, disk_snap, force=True)
        except exception.SnapshotNotFound:
            pass
        except Exception as err:  # noqa: BLE001
            LOG.error("could not remove snapshot %s/%s@%s: %s", disk.pool, disk.rbd_name,
                      disk_snap, err)
            cause.add_note(f"snapshot {disk.pool}/{disk.rbd_name}@{disk_snap} could not "
                           f"be removed: {err}")


def cleanup_direct_snapshot(disk: Rbd, location: str, also_destroy_volume: bool = False,
                            ignore_errors: bool = False) -> None:
    """Remove what :func:`direct_snapshot` made at ``location``, as a caller wants.

    Without ``also_destroy_volume``: unprotect and remove the snapshot the
    location names (the image stays, say to be uploaded another way). With it:
    remove the image with all its snapshots. A missing snapshot or image
    counts as removed. With ``ignore_errors`` a failure is logged, not raised.

    :raises InvalidArgument: the location is malformed or in another cluster.
    :raises SnapshotHasClones: a disk was cloned from it meanwhile.
    :raises CleanupFailed: the image could be neither removed nor trashed.
    """
    driver = disk.driver
    try:
        try:
            loc = parse_location(location)
        except InvalidLocation as err:
            raise exception.InvalidArgument(op="cleanup_direct_snapshot", target=repr(location),
                                            detail=str(err)) from None
        if loc.fsid != driver.fsid:
            raise exception.InvalidArgument(
                op="cleanup_direct_snapshot", target=location,
                detail=f"it is in cluster {loc.fsid}, not in this cluster {driver.fsid}")
        if also_destroy_volume:
            report = driver.remove_image(loc.image, loc.pool)
            if not report.ok:
                raise exception.CleanupFailed(pool=loc.pool, image=loc.image,
                                              detail=report.failed.get(loc.image, report.failed))
            return
        try:
            driver.remove_snap(loc.image, loc.snapshot, force=True, pool=loc.pool)
        except (exception.ImageNotFound, exception.SnapshotNotFound):
            pass
    except exception.RbdDriverError as err:
        if not ignore_errors:
            raise
        LOG.warning("cleanup of direct snapshot %s failed (ignored): %s", location, err)
