# SPDX-License-Identifier: Apache-2.0
"""The removal engine of :class:`~rbd_driver.storage.rbd_utils.RBDDriver`.

Removing a disk safely is most of what cleanup does: an image a client has
open (a running guest, here or on another host) is never removed or moved to
the trash; snapshots go first, and a snapshot with clones is never removed
from under them; busy images are retried, and the RBD trash is the last
resort for an image nobody has open that still cannot be removed. Every
outcome lands in a :class:`CleanupReport`. Bulk cleanup runs removals
``cleanup_concurrency`` at once on the driver's one connection
(:meth:`Removal.map_bounded`).

:class:`Removal` is a mixin of ``RBDDriver``: it uses the driver's
connection, pool, claims and retry settings, declared below.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rbd_driver import exception
from rbd_driver.storage import snapshot_removal
from rbd_driver.storage.claim import DirectoryClaims
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["CleanupReport", "Removal"]

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclasses.dataclass
class CleanupReport:
    """What a removal did, disk by disk.

    ``removed``: gone. ``trashed``: in the RBD trash, with why it could not be
    removed (nobody had it open). ``busy``: left in place because a client has
    it open, with who (each watcher's ``client.ID at ADDRESS``, or the krbd
    device of this host that is still held).
    ``failed``: left in place for any other reason, with why.
    """

    removed: list[str] = dataclasses.field(default_factory=list)
    trashed: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    busy: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was left behind (trashed disks are accounted for)."""
        return not self.failed and not self.busy

    def left_behind(self, name: str) -> str | None:
        """Return why ``name`` is still in place (busy or failed), or None."""
        return self.busy.get(name) or self.failed.get(name)

    def merge(self, other: CleanupReport) -> None:
        self.removed.extend(other.removed)
        self.trashed.update(other.trashed)
        self.failed.update(other.failed)
        self.busy.update(other.busy)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Removal:
    """Remove images, their snapshots and trash entries; report each outcome.

    The driver it is mixed into provides what is declared here.
    """

    client: RadosClient
    pool: str
    claims: DirectoryClaims
    destroy_retries: int
    destroy_retry_interval: float
    cleanup_concurrency: int
    _sleep: Callable[[float], None]

    def _rbd_api(self) -> Any:
        raise NotImplementedError

    def list_images(self, pool: str | None = None) -> list[str]:
        raise NotImplementedError

    def move_to_trash(self, name: str, pool: str | None = None) -> None:
        """Move image ``pool/name`` to the RBD trash (possible even while it has clones).

        Refused while a client has it open: librbd would move a running
        guest's disk away from under it.

        :raises ImageNotFound: / :raises ImageInUse: it has watchers.
        """
        pool = pool or self.pool
        self._refuse_if_watched(pool, name)
        with self.client.ioctx(pool, op="move to trash") as ioctx, \
                self.client.translate("move to trash", pool=pool, image=name):
            self._rbd_api().trash_move(ioctx, name, 0)

    def watchers(self, name: str, pool: str | None = None) -> list[str]:
        """Return who has image ``pool/name`` open: ``client.ID at ADDRESS`` per watcher.

        A read-only open takes no watch of its own, so the caller is never listed.

        :raises ImageNotFound: no such image.
        """
        pool = pool or self.pool
        with self.client.open_image(pool, name, read_only=True, op="list watchers") as image:
            return self._watchers_of(image, pool, name)

    def _watchers_of(self, image: Any, pool: str, name: str) -> list[str]:
        with self.client.translate("list watchers", pool=pool, image=name):
            return [f"client.{w['id']} at {w['addr']}" for w in image.watchers_list()]

    def _refuse_if_watched(self, pool: str, name: str) -> None:
        """Raise ImageInUse naming the watchers of ``pool/name``, if it has any."""
        watchers = self.watchers(name, pool)
        if watchers:
            raise exception.ImageInUse(pool=pool, image=name, watchers=", ".join(watchers))

    # -- removal --------------------------------------------------------------

    def _children(self, image: Any, snap: str) -> list[str]:
        """Return ``pool/image`` of every clone of ``snap`` of an open image."""
        image.set_snap(snap)
        try:
            return [f"{c_pool}/{c_image}" for c_pool, c_image in image.list_children()]
        finally:
            image.set_snap(None)

    def _refuse_if_cloned(self, image: Any, pool: str, name: str, snap: str) -> None:
        """Raise SnapshotHasClones naming the clones of ``snap``, if it has any.

        Checked before every snapshot removal: with clone format 2, librbd
        would otherwise "remove" such a snapshot by moving it to the trash
        namespace, and the image could then never be removed.
        """
        children = self._children(image, snap)
        if children:
            raise exception.SnapshotHasClones(pool=pool, image=name, snapshot=snap,
                                              children=", ".join(sorted(children)))

    def _purge_snapshots(self, pool: str, name: str) -> None:
        with self.client.open_image(pool, name, op="purge snapshots") as image:
            # Opened writable: this handle's own watch is listed too, so the
            # watchers were checked before (see _remove_once).
            for snap in list(image.list_snaps()):
                if snap.get("namespace", 0) != 0:
                    # A snapshot already in the trash namespace (clone v2):
                    # clones still hold it, and it goes when they do.
                    held = [f"{d['pool']}/{d['image']}" for d in image.list_descendants()]
                    raise exception.SnapshotHasClones(
                        pool=pool, image=name, snapshot=snap["name"],
                        children=", ".join(sorted(held)) or "unknown clones")
                with self.client.translate("purge snapshot", pool=pool, image=name,
                                           snapshot=snap["name"]):
                    self._refuse_if_cloned(image, pool, name, snap["name"])
                    if image.is_protected_snap(snap["name"]):
                        image.unprotect_snap(snap["name"])
                    image.remove_snap(snap["name"])

    def _remove_once(self, pool: str, name: str) -> None:
        """Remove ``pool/name`` unless a client has it open; snapshots go first.

        The watchers are listed first, through a read-only open (which takes
        neither a watch nor the exclusive lock), and a watched disk is left
        alone: librbd's remove of an image in use is not harmless. It asks
        the lock owner (a running guest's QEMU) for the exclusive lock, takes
        it, only then sees the watchers and gives up with EBUSY; a write the
        guest makes meanwhile fails with EROFS, an I/O error inside the guest
        (tests/functional/test_cleanup_busy.py: 1 to 3 failed writes in 40 removals).
        The same open tells whether there are snapshots to purge.

        :raises ImageInUse: it has watchers; nothing was changed.
        :raises ImageBusy: librbd says busy, and nobody has it open.
        """
        with self.client.open_image(pool, name, read_only=True, op="check image") as image:
            watchers = self._watchers_of(image, pool, name)
            if watchers:
                raise exception.ImageInUse(pool=pool, image=name, watchers=", ".join(watchers))
            with self.client.translate("list snapshots", pool=pool, image=name):
                has_snapshots = any(True for _ in image.list_snaps())
        if has_snapshots:
            self._purge_snapshots(pool, name)
        try:
            self._rbd_remove(pool, name)
        except exception.ImageBusy:
            self._refuse_if_watched(pool, name)  # opened since we looked
            raise

    def _rbd_remove(self, pool: str, name: str) -> None:
        with self.client.ioctx(pool, op="remove image") as ioctx, \
                self.client.translate("remove image", pool=pool, image=name):
            self._rbd_api().remove(ioctx, name)

    def remove_image(self, name: str, pool: str | None = None) -> CleanupReport:
        """Remove an image with its snapshots, retrying while busy, trash as last resort.

        An image that a client has open (a watcher: a running guest, here or
        on another host) is neither removed nor trashed, and not waited for:
        it is in ``report.busy`` with its watchers. The trash is only for an
        image nobody has open that still cannot be removed (a snapshot with
        clones, say); ``report.trashed`` says why. A missing image counts as
        removed; anything else left behind is in ``report.failed``.
        """
        pool = pool or self.pool
        report = CleanupReport()
        # This process's own background snapshot removal holds the disk open
        # for a moment: wait for it (bounded as the busy retries are) rather
        # than report our own handle as a client using the disk.
        snapshot_removal.wait_for_images(pool, [name], timeout=max(
            snapshot_removal.REMOVAL_WAIT_FLOOR,
            self.destroy_retry_interval * (self.destroy_retries + 1)))
        last: Exception | None = None
        for attempt in range(self.destroy_retries + 1):
            try:
                self._remove_once(pool, name)
                report.removed.append(name)
                return report
            except exception.ImageInUse as err:
                return self._report_busy(report, pool, name, err)
            except (exception.ImageNotFound, exception.SnapshotNotFound) as err:
                if isinstance(err, exception.SnapshotNotFound):
                    last = err  # a snapshot vanished under us: try again
                    continue
                if self._listed_without_id_object(pool, name):
                    return self._remove_listed(pool, name, report)
                report.removed.append(name)
                return report
            except exception.SnapshotHasClones as err:
                last = err  # waiting will not make clones go away
                break
            except (exception.ImageBusy, exception.ImageHasSnapshots) as err:
                last = err
                LOG.info("%s/%s busy (attempt %d of %d): %s", pool, name, attempt + 1,
                         self.destroy_retries + 1, err)
                if attempt < self.destroy_retries:
                    self._sleep(self.destroy_retry_interval)
            except exception.RbdDriverError as err:
                last = err
                break
        reason = str(last) if last else "unknown"
        try:
            self.move_to_trash(name, pool)
        except exception.ImageInUse as err:  # opened while we retried
            return self._report_busy(report, pool, name, err)
        except exception.ImageNotFound:
            # Removed by another client meanwhile (librbd then fails ours with
            # ESTALE): gone is what was asked.
            LOG.info("%s/%s was removed by another client while we tried: %s", pool, name,
                     reason)
            report.removed.append(name)
        except exception.RbdDriverError as err:
            report.failed[name] = f"{reason}; moving it to the trash failed too: {err}"
            LOG.error("could not remove %s/%s: %s", pool, name, report.failed[name])
        else:
            report.trashed[name] = reason
            LOG.warning("moved %s/%s to the RBD trash after failing to remove it: %s",
                        pool, name, reason)
        return report

    @staticmethod
    def _report_busy(report: CleanupReport, pool: str, name: str,
                     err: exception.ImageInUse) -> CleanupReport:
        report.busy[name] = err.kwargs["watchers"]
        LOG.warning("left %s/%s in place: %s", pool, name, err)
        return report

    def _listed_without_id_object(self, pool: str, name: str) -> bool:
        """True if the pool directory lists ``name`` although it cannot be opened."""
        try:
            ioctx = self.client.get_ioctx(pool)
            with self.client.translate("look up image", pool=pool, image=name):
                return self.claims.listed_id(ioctx, name) is not None
        except exception.RbdDriverError:
            return False

    def _remove_listed(self, pool: str, name: str, report: CleanupReport) -> CleanupReport:
        """Remove an image the directory lists but that cannot be opened.

        With its header still there (an interrupted claim), it gets its id
        object back and is removed as usual, so librbd detaches it from its
        parent. Otherwise (a removal or creation that stopped half-way),
        librbd's remove finds it through the directory and finishes the job.
        """
        restored = False
        with contextlib.suppress(exception.RbdDriverError):
            restored = self.claims.restore_id_object(name, pool)
        if restored:
            report.merge(self.remove_image(name, pool))
            return report
        try:
            self._rbd_remove(pool, name)
        except exception.ImageNotFound:
            pass
        except exception.RbdDriverError as err:
            report.failed[name] = str(err)
            LOG.error("could not remove %s/%s: %s", pool, name, err)
            return report
        report.removed.append(name)
        return report

    def purge_trash(self, pool: str | None = None, names: Callable[[str], bool] | None = None,
                    wait: float = 0.0, poll: float = 1.0) -> CleanupReport:
        """Remove images from the RBD trash of ``pool`` (those ``names`` selects).

        An entry still busy (a stale watcher not yet expired) is retried for
        up to ``wait`` seconds, then reported in ``failed`` with the reason.
        """
        pool = pool or self.pool
        report = CleanupReport()
        deadline = time.monotonic() + wait
        with self.client.ioctx(pool, op="list trash") as ioctx:
            pending = {e["id"]: e["name"] for e in self._rbd_api().trash_list(ioctx)
                       if names is None or names(e["name"])}
        while pending:
            for image_id, name in list(pending.items()):
                try:
                    with self.client.ioctx(pool, op="purge trash") as ioctx, \
                            self.client.translate("purge from trash", pool=pool, image=name):
                        self._rbd_api().trash_remove(ioctx, image_id, True)
                except exception.ImageNotFound:
                    pass  # purged by someone else meanwhile
                except exception.RbdDriverError as err:
                    report.failed[name] = str(err)
                    continue
                report.failed.pop(name, None)
                report.removed.append(name)
                del pending[image_id]
            if not pending or time.monotonic() >= deadline:
                break
            self._sleep(poll)
        return report

    def cleanup_volumes(self, filter_fn: Callable[[str], bool],
                        pool: str | None = None) -> CleanupReport:
        """Remove every image of ``pool`` for which ``filter_fn(name)`` is true."""
        pool = pool or self.pool
        return self.remove_images([n for n in self.list_images(pool) if filter_fn(n)], pool)

    def remove_images(self, names: list[str], pool: str | None = None) -> CleanupReport:
        """Remove each of ``names`` from ``pool`` as :meth:`remove_image` does; one report.

        Up to ``cleanup_concurrency`` removals are in flight at once, on this
        driver's one connection.
        """
        pool = pool or self.pool
        report = CleanupReport()
        for one in self.map_bounded(lambda name: self.remove_image(name, pool), names):
            report.merge(one)
        return report

    def map_bounded(self, call: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        """Return ``[call(item) for item in items]``, with up to
        ``cleanup_concurrency`` calls running at once: the bulk-cleanup engine.

        Calls share this driver's connection (librados and librbd are
        thread-safe). An exception from a call is raised here, once every
        started call has finished.
        """
        workers = min(self.cleanup_concurrency, len(items))
        if workers <= 1:
            return [call(item) for item in items]
        with concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="rbd-driver-cleanup") as executor:
            return list(executor.map(call, items))
