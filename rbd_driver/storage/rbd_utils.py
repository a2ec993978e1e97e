# SPDX-License-Identifier: Apache-2.0
"""RBDDriver: every Ceph operation the image backends need, through librbd.

This is mechanics, not policy: it clones, copies, resizes, snapshots and
removes when told to, and reports facts (sizes, parents, headers, monitors,
pool usage). Which location is cloneable is decided in
:mod:`rbd_driver.backends.rbd_clone`.

All calls go through one :class:`~rbd_driver.storage.rados_client.RadosClient`
(one connection per driver), and every error is translated there. Nothing
here runs a command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.conf import option_default
from rbd_driver.storage import datapath
from rbd_driver.storage.claim import DIRECTORY, DirectoryClaims, decode_string
from rbd_driver.storage.location import RbdLocation, SnapshotIdentity
from rbd_driver.storage.monitors import MonitorAddress, MonitorCache
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.removal import CleanupReport, Removal

if TYPE_CHECKING:
    from rbd_driver.storage.flatten_queue import FlattenQueue
    from rbd_driver.storage.snapshot_removal import SnapshotRemovalQueue
    from rbd_driver.storage.spares import Spares

__all__ = ["CleanupReport", "RBDDriver", "SnapshotIdentity", "SnapshotInfo"]

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """One user snapshot of an image; ``timestamp`` is when it was taken (UTC)."""

    name: str
    id: int
    size: int
    protected: bool
    timestamp: datetime.datetime


# Directory entries read per request when listing by name prefix.
_DIRECTORY_PAGE = 512


# Newest cls_rbd_snap encoding whose leading fields this module decodes.
_SNAP_RECORD_VERSION = 8


def _decode_snapshot_record(value: bytes) -> tuple[int, str, int] | None:
    """Decode (id, name, size) from a cls_rbd_snap header record, or None.

    Layout: struct_v u8, compat u8, u32 length, id u64, name (u32 length +
    bytes), image_size u64, then fields not needed here. Ceph only appends
    fields, and ``compat`` is the oldest version that can decode a record;
    pacific writes 8. A record needing a newer decoder is not understood.
    """
    if len(value) < 6 or not 1 <= value[1] <= _SNAP_RECORD_VERSION:
        return None
    body_end = 6 + int.from_bytes(value[2:6], "little")
    if body_end > len(value) or body_end < 6 + 8 + 4:
        return None
    snap_id = int.from_bytes(value[6:14], "little")
    name_len = int.from_bytes(value[14:18], "little")
    if 18 + name_len + 8 > body_end:
        return None
    try:
        name = value[18:18 + name_len].decode()
    except UnicodeDecodeError:
        return None
    size = int.from_bytes(value[18 + name_len:26 + name_len], "little")
    return snap_id, name, size


class RBDDriver(Removal):
    """Ceph operations on one default pool, over one shared connection.

    :param client: the connection (owned: :meth:`close` closes it).
    :param pool: default pool for disks.
    :param destroy_retries: removal retries while a disk is busy.
    :param destroy_retry_interval: seconds between them.
    :param sleep: injectable ``time.sleep`` (tests).
    :param io_window: reads or writes a copy keeps in flight.
    :param cleanup_concurrency: removals a bulk cleanup keeps in flight.
    :param flatten_concurrency: background flattens at once (:attr:`flattener`).
    :param monitor_cache_ttl: seconds :attr:`monitors` reuses a ``mon dump``.
    """

    def __init__(
        self,
        client: RadosClient,
        pool: str,
        destroy_retries: int = option_default("destroy_retries"),
        destroy_retry_interval: float = option_default("destroy_retry_interval"),
        sleep: Callable[[float], None] = time.sleep,
        io_window: int = option_default("io_window"),
        cleanup_concurrency: int = option_default("cleanup_concurrency"),
        flatten_concurrency: int = option_default("flatten_concurrency"),
        monitor_cache_ttl: float = option_default("monitor_cache_ttl"),
    ) -> None:
        self.client = client
        self.pool = pool
        self.claims = DirectoryClaims(client, pool)
        self.destroy_retries = destroy_retries
        self.destroy_retry_interval = destroy_retry_interval
        self.cleanup_concurrency = cleanup_concurrency
        self._sleep = sleep
        self.io_window = io_window
        self._fsid: str | None = None
        self._spares: Spares | None = None
        self._spares_lock = threading.Lock()
        self.flatten_concurrency = flatten_concurrency
        self._flattener: FlattenQueue | None = None
        self._snapshot_remover: SnapshotRemovalQueue | None = None
        # The one monitor list of this connection: disk XML, volumes, krbd.
        #: The monitor list, from a ``mon dump`` cached for ``monitor_cache_ttl`` seconds.
        self.monitors = MonitorCache(client, ttl=monitor_cache_ttl)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, **modules: Any) -> RBDDriver:
        """Build a driver from the ``[rbd]`` options; ``modules`` inject rados/rbd."""
        return cls(
            RadosClient.from_conf(conf, **modules),
            pool=conf.rbd.pool,
            destroy_retries=conf.rbd.destroy_retries,
            destroy_retry_interval=conf.rbd.destroy_retry_interval,
            io_window=conf.rbd.io_window,
            cleanup_concurrency=conf.rbd.cleanup_concurrency,
            flatten_concurrency=conf.rbd.flatten_concurrency,
            monitor_cache_ttl=conf.rbd.monitor_cache_ttl,
        )

    def close(self) -> None:
        """Stop the spare-refill worker (queued refills are cancelled, a running
        clone is waited for) and the background flattens (queued ones are
        cancelled, running ones waited for) and the background snapshot
        removals (each queued one gets one last try), then close the
        connection (reopened on next use)."""
        try:
            if self._spares is not None:
                self._spares.close()
        finally:
            try:
                if self._flattener is not None:
                    self._flattener.close(wait=True, cancel_queued=True)
                    self._flattener = None
            finally:
                try:
                    if self._snapshot_remover is not None:
                        self._snapshot_remover.close(wait=True)
                        self._snapshot_remover = None
                finally:
                    self.client.close()

    def __enter__(self) -> RBDDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rbd(self) -> Any:
        return self.client.rbd

    def _rbd_api(self) -> Any:
        return self.client.rbd.RBD()

    @property
    def spares(self) -> Spares:
        """The spare clones of golden snapshots this driver knows of and refills."""
        with self._spares_lock:
            if self._spares is None:
                from rbd_driver.storage.spares import Spares

                self._spares = Spares(self)
            return self._spares

    @property
    def flattener(self) -> FlattenQueue:
        """The queue of background flattens of this driver (clone-depth policy)."""
        with self._spares_lock:
            if self._flattener is None:
                from rbd_driver.storage.flatten_queue import FlattenQueue

                self._flattener = FlattenQueue(self, self.flatten_concurrency)
            return self._flattener

    @property
    def snapshot_remover(self) -> SnapshotRemovalQueue:
        """The queue of background snapshot removals of this driver (instance
        snapshots): see :mod:`rbd_driver.storage.snapshot_removal`."""
        with self._spares_lock:
            if self._snapshot_remover is None:
                from rbd_driver.storage.snapshot_removal import SnapshotRemovalQueue

                self._snapshot_remover = SnapshotRemovalQueue(self)
            return self._snapshot_remover

    def wait_spares(self, timeout: float | None = None) -> bool:
        """Wait until no spare refill is queued or running; False on timeout."""
        return self._spares.wait(timeout) if self._spares is not None else True

    def remove_spares(self, pool: str | None = None,
                      parent: SnapshotIdentity | None = None) -> list[str]:
        """Remove the spare clones in ``pool`` (of snapshot ``parent`` only, if given)
        through librbd; return their names. See :meth:`Spares.remove
        <rbd_driver.storage.spares.Spares.remove>`.

        :raises CleanupFailed: a spare could be neither removed nor trashed.
        """
        return self.spares.remove(pool, parent)

    # -- facts ----------------------------------------------------------------

    def pool_id(self, pool: str | None = None) -> int:
        """Return the id of ``pool``; pool ids are never reused.

        :raises PoolNotFound: no such pool.
        """
        pool = pool or self.pool
        ioctx = self.client.get_ioctx(pool)
        with self.client.translate("get pool id", pool=pool):
            return int(ioctx.get_pool_id())

    @property
    def fsid(self) -> str:
        """This cluster's fsid, lowercase (asked once)."""
        if self._fsid is None:
            self._fsid = self.client.get_fsid()
        return self._fsid

    def exists(self, name: str, pool: str | None = None) -> bool:
        """Return True if image ``pool/name`` exists (a stat, not an open).

        :raises PoolNotFound: the pool does not exist.
        """
        return self.client.image_exists(pool or self.pool, name)

    def snapshot_identity(self, location: RbdLocation) -> SnapshotIdentity | None:
        """Return the immutable ids and size of a snapshot, from two small reads.

        Reads the image's id object and the snapshot records in its header,
        which needs the same read caps as opening the snapshot. Returns None
        when the metadata is not in the layout known here (format 1 images,
        a future encoding); callers then fall back to opening the snapshot.

        :raises ImageNotFound: / :raises SnapshotNotFound: / :raises PermissionDenied:
        """
        rados = self.client.rados
        pool, name, snap = location.pool, location.image, location.snapshot
        ioctx = self.client.get_ioctx(pool)
        with self.client.translate("read image id", pool=pool, image=name):
            try:
                raw_id = ioctx.read(f"rbd_id.{name}", 4096)
            except rados.ObjectNotFound:
                if self.exists(name, pool):
                    return None  # format 1: no id object
                raise self.rbd.ImageNotFound(f"no image {name}") from None
        image_id = decode_string(raw_id)
        if image_id is None:
            return None
        with self.client.translate("read snapshots", pool=pool, image=name, snapshot=snap):
            with rados.ReadOpCtx() as op:
                records, _ = ioctx.get_omap_vals(op, "", "snapshot_", 100000)
                ioctx.operate_read_op(op, f"rbd_header.{image_id}")
                pairs = list(records)
        for _key, value in pairs:
            record = _decode_snapshot_record(value)
            if record is None:
                return None
            snap_id, snap_name, size = record
            if snap_name == snap:
                return SnapshotIdentity(pool, image_id, snap_id, size)
        raise exception.SnapshotNotFound(pool=pool, image=name, snapshot=snap)
    def size(self, name: str, pool: str | None = None, snapshot: str | None = None) -> int:
        """Return the size in bytes of an image (or of its snapshot).

        :raises ImageNotFound: / :raises SnapshotNotFound: as appropriate.
        """
        with self.client.open_image(pool or self.pool, name, snapshot=snapshot,
                                    read_only=True, op="get size") as image:
            return int(image.size())

    def list_images(self, pool: str | None = None) -> list[str]:
        """Return the names of the images in ``pool``."""
        pool = pool or self.pool
        with self.client.ioctx(pool, op="list images") as ioctx:
            return list(self._rbd_api().list(ioctx))

    def list_images_named(self, prefix: str, pool: str | None = None) -> list[str]:
        """Return the names in ``pool`` that start with ``prefix``, sorted.

        Read from the pool directory's omap with a server-side key prefix
        (``name_<prefix>``), so the cost follows the matches, not the pool's
        size. Format 2 images only: format 1 images are not in that omap, and
        nothing has created them since Ceph Jewel.
        """
        pool = pool or self.pool
        rados = self.client.rados
        ioctx = self.client.get_ioctx(pool)
        key_prefix = "name_" + prefix
        names: list[str] = []
        after = ""
        with self.client.translate("list images", pool=pool):
            while True:
                with rados.ReadOpCtx() as op:
                    entries, _ = ioctx.get_omap_vals(op, after, key_prefix, _DIRECTORY_PAGE)
                    try:
                        ioctx.operate_read_op(op, DIRECTORY)
                    except rados.ObjectNotFound:
                        return []  # no image was ever made in this pool
                    keys = [key for key, _ in entries]
                names.extend(key[len("name_"):] for key in keys)
                if len(keys) < _DIRECTORY_PAGE:
                    return names
                after = keys[-1]

    def parent_info(self, name: str, pool: str | None = None,
                    snapshot: str | None = None) -> tuple[str, str, str] | None:
        """Return (pool, image, snapshot) of a clone's parent (as of ``snapshot``,
        if given), or None if it has none.

        :raises ImageNotFound: / :raises SnapshotNotFound: / :raises PermissionDenied:
        """
        with self.client.open_image(pool or self.pool, name, snapshot=snapshot,
                                    read_only=True, op="get parent") as image:
            return self.client.parent_of(image)

    def read_edges(self, location: RbdLocation, head: int, tail: int) -> tuple[bytes, bytes, int]:
        """Open a snapshot read-only; return its first ``head`` bytes, last ``tail`` bytes and size.

        :raises ImageNotFound: / :raises SnapshotNotFound: / :raises PermissionDenied:
        """
        with self.client.open_image(location.pool, location.image, snapshot=location.snapshot,
                                    read_only=True, op="read snapshot") as image:
            size = int(image.size())
            first = image.read(0, min(head, size)) if size else b""
            last = image.read(size - min(tail, size), min(tail, size)) if size else b""
            return first, last, size

    def list_snaps(self, name: str, pool: str | None = None) -> list[dict[str, Any]]:
        """Return the user snapshots of an image: dicts with name, size, protected, timestamp.

        ``timestamp`` is when the snapshot was taken, ISO 8601 in UTC, from
        :meth:`list_snapshots` (librbd's ``list_snaps`` carries no time).
        """
        return [
            {
                "name": snap.name,
                "size": snap.size,
                "protected": snap.protected,
                "timestamp": snap.timestamp.isoformat(timespec="seconds"),
            }
            for snap in self.list_snapshots(name, pool)
        ]

    def get_pool_info(self, pool: str | None = None) -> dict[str, int]:
        """Return the pool's ``total``, ``free`` (max_avail) and ``used`` bytes.

        From ``mon_command('df')``: ``used`` is the logical data stored, ``free``
        what can still be written after replication, ``total`` their sum.

        :raises PoolNotFound: the pool is not in the cluster's df.
        """
        pool = pool or self.pool
        df = self.client.mon_command("df")
        for entry in df.get("pools", []):
            if entry["name"] == pool:
                stats = entry["stats"]
                used = int(stats.get("stored", stats.get("bytes_used", 0)))
                free = int(stats["max_avail"])
                return {"total": used + free, "free": free, "used": used}
        raise exception.PoolNotFound(pool=pool)

    def get_monitors(self, fresh: bool = False) -> list[MonitorAddress]:
        """Return every monitor in the monmap, in rank order, from the driver's
        one :class:`~rbd_driver.storage.monitors.MonitorCache`.

        :param fresh: ask the cluster now rather than reuse a list younger
            than ``[rbd] monitor_cache_ttl`` (the answer refreshes the cache;
            if the cluster does not answer, the last list known is returned).
        :raises RbdDriverError: ``mon dump`` failed and no list is known.
        """
        return self.monitors.current() if fresh else self.monitors.get()

    # -- creating -------------------------------------------------------------

    def clone(self, location: RbdLocation, name: str, pool: str | None = None) -> None:
        """Clone snapshot ``location`` copy-on-write into ``pool/name``.

        :raises ImageExists: the target exists.
        :raises InvalidArgument: e.g. the parent snapshot is not protected
            (clone v1) or layering is off.
        """
        pool = pool or self.pool
        parent_ioctx = self.client.get_ioctx(location.pool)
        child_ioctx = self.client.get_ioctx(pool)
        try:
            with self.client.translate("clone", pool=pool, image=name):
                self._rbd_api().clone(parent_ioctx, location.image, location.snapshot,
                                      child_ioctx, name)
        except exception.ImageExists:
            # Listed but unopenable after an interrupted claim: make it whole.
            with contextlib.suppress(exception.RbdDriverError):
                self.claims.restore_id_object(name, pool)
            raise

    def create(self, name: str, size: int, pool: str | None = None) -> None:
        """Create an empty image of ``size`` bytes with the cluster's default features."""
        pool = pool or self.pool
        with self.client.ioctx(pool, op="create image") as ioctx, \
                self.client.translate("create image", pool=pool, image=name):
            self._rbd_api().create(ioctx, name, size)

    def import_file(self, path: str, name: str, pool: str | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: threading.Event | None = None) -> datapath.CopyStats:
        """Copy the local raw file ``path`` into a new image ``pool/name``.

        Parallel, sparse (holes and zero chunks are not written) and atomic
        (a temporary image renamed on success, removed on any failure); see
        :func:`rbd_driver.storage.datapath.import_to_image`.

        :raises FileNotFoundError: ``path`` does not exist.
        :raises ImageExists: ``pool/name`` exists.
        :raises OperationCancelled: ``cancel`` was set.
        """
        return datapath.import_to_image(self.client, path, pool or self.pool, name,
                                        window=self.io_window, progress=progress,
                                        cancel=cancel)

    def export_file(self, name: str, dest: str, pool: str | None = None,
                    snapshot: str | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: threading.Event | None = None) -> datapath.CopyStats:
        """Copy image ``pool/name`` (or its ``snapshot``) into a sparse local file ``dest``.

        Only allocated extents are read, in parallel; ``dest`` appears only
        when complete. See :func:`rbd_driver.storage.datapath.export_from_image`.
        """
        return datapath.export_from_image(self.client, pool or self.pool, name, dest,
                                          snapshot=snapshot, window=self.io_window,
                                          progress=progress, cancel=cancel)

    def rename(self, name: str, new_name: str, pool: str | None = None) -> None:
        """Rename image ``pool/name`` to ``new_name`` (snapshots and clones follow)."""
        pool = pool or self.pool
        with self.client.ioctx(pool, op="rename") as ioctx, \
                self.client.translate("rename", pool=pool, image=name):
            self._rbd_api().rename(ioctx, name, new_name)

    def resize(self, name: str, size: int, pool: str | None = None) -> None:
        """Set the image size to ``size`` bytes (callers refuse shrinking)."""
        with self.client.open_image(pool or self.pool, name, op="resize") as image:
            image.resize(size)

    def flatten(self, name: str, pool: str | None = None,
                progress: Callable[[int, int], Any] | None = None) -> None:
        """Copy the parent's data into the clone, detaching it from its parent.

        An image that has no parent is already flat: nothing to do (librbd
        would raise a bare EINVAL). ``progress(done, total)`` is librbd's
        ``on_progress``.
        """
        with self.client.open_image(pool or self.pool, name, op="flatten") as image:
            if self.client.parent_of(image) is None:
                return
            if progress is None:
                image.flatten()
            else:
                image.flatten(on_progress=progress)

    # -- snapshots ------------------------------------------------------------

    def create_snap(self, name: str, snap: str, protect: bool = False,
                    pool: str | None = None) -> None:
        """Create snapshot ``name@snap``, protected if asked."""
        with self.client.open_image(pool or self.pool, name, op="create snapshot") as image:
            image.create_snap(snap)
            if protect:
                image.protect_snap(snap)

    def remove_snap(self, name: str, snap: str, force: bool = False,
                    pool: str | None = None) -> None:
        """Remove snapshot ``name@snap``; a protected one only with ``force``.

        :raises SnapshotNotFound: no such snapshot.
        :raises ImageBusy: it is protected and ``force`` is false, or it has clones.
        """
        pool = pool or self.pool
        with self.client.open_image(pool, name, op="remove snapshot") as image, \
                self.client.translate("remove snapshot", pool=pool, image=name, snapshot=snap):
            protected = image.is_protected_snap(snap)
            if protected and not force:
                raise exception.ImageBusy(
                    pool=pool, image=name,
                    detail=f"snapshot {snap} is protected; pass force=True to unprotect it")
            self._refuse_if_cloned(image, pool, name, snap)
            if protected:
                image.unprotect_snap(snap)
            image.remove_snap(snap)

    def rollback_to_snap(self, name: str, snap: str, pool: str | None = None) -> None:
        """Roll image ``name`` back to snapshot ``snap``."""
        pool = pool or self.pool
        with self.client.open_image(pool, name, op="rollback") as image, \
                self.client.translate("rollback", pool=pool, image=name, snapshot=snap):
            image.rollback_to_snap(snap)

    def list_snapshots(self, name: str, pool: str | None = None) -> list[SnapshotInfo]:
        """Return the user snapshots of an image, oldest first, with their timestamps.

        Snapshots in librbd's trash, group or mirror namespaces are left out.

        :raises ImageNotFound: no such image.
        """
        pool = pool or self.pool
        found = []
        with self.client.open_image(pool, name, read_only=True, op="list snapshots") as image:
            for snap in image.list_snaps():
                if snap.get("namespace", 0) != 0:
                    continue
                with self.client.translate("read snapshot", pool=pool, image=name,
                                           snapshot=snap["name"]):
                    stamp = image.get_snap_timestamp(snap["id"])  # naive UTC
                    protected = bool(image.is_protected_snap(snap["name"]))
                found.append(SnapshotInfo(snap["name"], int(snap["id"]), int(snap["size"]),
                                          protected, stamp.replace(tzinfo=datetime.UTC)))
        return found

    def protect_snap(self, name: str, snap: str, pool: str | None = None) -> None:
        """Protect snapshot ``name@snap`` (needed to clone it under clone format 1).

        :raises SnapshotNotFound: / :raises ImageBusy: it is already protected.
        """
        pool = pool or self.pool
        with self.client.open_image(pool, name, op="protect snapshot") as image, \
                self.client.translate("protect snapshot", pool=pool, image=name, snapshot=snap):
            image.protect_snap(snap)

    def snap_children(self, name: str, snap: str, pool: str | None = None) -> list[dict[str, Any]]:
        """Return the clones of ``name@snap``: dicts with ``pool``, ``image`` and
        ``trash`` (True for a clone sitting in the RBD trash), sorted.

        :raises SnapshotNotFound: / :raises ImageNotFound:
        """
        pool = pool or self.pool
        with self.client.open_image(pool, name, read_only=True, op="list children") as image, \
                self.client.translate("list children", pool=pool, image=name, snapshot=snap):
            image.set_snap(snap)
            children = [{"pool": c["pool"], "image": c["image"], "trash": bool(c["trash"])}
                        for c in image.list_children2()]
        return sorted(children, key=lambda c: (c["pool"], c["image"]))
