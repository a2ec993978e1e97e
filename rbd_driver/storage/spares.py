# SPDX-License-Identifier: Apache-2.0
"""Spares: ready-made clones of golden snapshots, taken by a rename at launch.

A librbd clone costs tens of milliseconds, most of it client CPU. A spare is
an ordinary clone of a golden snapshot made ahead of time, in the background,
in the instance pool; a launch *claims* one by renaming it to the disk's name
with four small RADOS calls (:meth:`DirectoryClaims.claim_rename
<rbd_driver.storage.claim.DirectoryClaims.claim_rename>`). Nobody ever opens a
spare, so no watcher needs telling.

Names prove parentage. A spare of snapshot ``snap_id`` of image ``image_id``
in pool ``pool_id`` is called ``rbd-driver-spare.<pool_id>.<image_id>.<snap_id>.<8 hex>``.
Pool, image and snapshot ids are never reused, so a name can only ever
belong to a clone of that very snapshot, whichever process made it.

Names also prove completeness. A spare is cloned under a
``rbd-driver-spare-making.`` name and renamed to its spare name only once
librbd's clone returned: a librbd clone takes its name in the pool
directory long before it is finished, and a half-made clone taken by
another host would be destroyed under the disk by the error path of the
clone that was making it.

Counts are the pool's. Every host sharing an instance pool sees the same
spares: the spares of one snapshot are found by their name prefix in the
pool directory (one omap read, whatever the pool's size), before a claim
finds none in memory and before each clone of a refill. So ``clone_spares``
is the number of spares per golden snapshot in the pool, whichever hosts made
them; hosts refilling at the same moment can overshoot it by at most one
spare each.

A golden image being deleted holds every host's refills of its snapshot:
:meth:`Spares.hold_everywhere` writes a small RADOS object
(``rbd_driver_spares_hold.<image id>.<snap id>``, holding a deadline) in the
golden's pool, which every refill reads before each clone.

This module is mechanics: it keeps the spares it knows of in memory, per
(instance pool, snapshot), claims them, refills them on one background
thread, and removes them. How many to keep, and when to claim, is decided
in :mod:`rbd_driver.backends.rbd_clone`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from rbd_driver import exception
from rbd_driver.storage.claim import DirectoryClaims
from rbd_driver.storage.location import RbdLocation, SnapshotIdentity
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["HOLD_SECONDS", "MAKING_PREFIX", "REMOVING_PREFIX", "SPARE_PREFIX", "Spares",
           "is_spare_name", "spare_prefix"]

LOG = logging.getLogger(__name__)

SPARE_PREFIX = "rbd-driver-spare."
# A spare is made under this name and renamed when complete.
MAKING_PREFIX = "rbd-driver-spare-making."
# A spare being removed is first claimed under this name, so that a launch
# can never take a spare that is being removed.
REMOVING_PREFIX = "rbd-driver-spare-removing."
_NAME = re.compile(
    r"^rbd-driver-spare(?:-making|-removing)?\.(\d+)\.([0-9A-Za-z]+)\.(\d+)\.[0-9a-f]{8}$")

#: Seconds refills of a snapshot stay suspended after its spares were removed
#: (long enough for the golden image to be deleted), or after a refill failed.
HOLD_SECONDS = 60.0
# Consecutive name collisions after which a refill gives up (they never happen).
_MAX_COLLISIONS = 3
# The RADOS object, in the golden's pool, that holds every host's refills.
_HOLD_OBJECT = "rbd_driver_spares_hold.{image_id}.{snap_id}"


def spare_prefix(parent_pool_id: int, identity: SnapshotIdentity) -> str:
    """Return the name prefix of the spares of one snapshot (ends with a dot)."""
    return f"{SPARE_PREFIX}{parent_pool_id}.{identity.image_id}.{identity.snap_id}."


def is_spare_name(name: str) -> bool:
    """True for the name of a spare, or of one being made or removed (or left so by a crash)."""
    return _NAME.match(name) is not None


class SparesDriver(Protocol):
    """What :class:`Spares` uses of its :class:`~rbd_driver.storage.rbd_utils.RBDDriver`
    (a protocol, so that this module does not import the driver that owns it)."""

    client: RadosClient
    pool: str
    claims: DirectoryClaims

    def clone(self, location: RbdLocation, name: str, pool: str | None = None) -> None: ...

    def list_images_named(self, prefix: str, pool: str | None = None) -> list[str]: ...

    def pool_id(self, pool: str | None = None) -> int: ...

    def snapshot_identity(self, location: RbdLocation) -> SnapshotIdentity | None: ...

    def watchers(self, name: str, pool: str | None = None) -> list[str]: ...

    def remove_image(self, name: str, pool: str | None = None) -> Any: ...


@dataclasses.dataclass(frozen=True)
class _Job:
    key: tuple[str, str]  # (instance pool, spare prefix)
    location: RbdLocation
    identity: SnapshotIdentity
    target: int


class Spares:
    """The spares of one :class:`~rbd_driver.storage.rbd_utils.RBDDriver`.

    Refills run on one worker thread, at most one job per snapshot queued or
    running, over the driver's connection. :meth:`close` stops the worker;
    a later :meth:`refill` starts a new one.
    """

    def __init__(self, driver: SparesDriver) -> None:
        self.driver = driver
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._free: dict[tuple[str, str], list[str]] = {}
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._hold: dict[tuple[str, str], float] = {}  # key -> monotonic time refills resume
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False

    def key(self, identity: SnapshotIdentity, pool: str | None = None) -> tuple[str, str]:
        """Return the key of the spares of ``identity`` kept in ``pool``."""
        pool = pool or self.driver.pool
        return pool, spare_prefix(self.driver.pool_id(identity.pool), identity)

    def known(self, identity: SnapshotIdentity, pool: str | None = None) -> list[str]:
        """Return the names of the spares of ``identity`` this process knows of."""
        key = self.key(identity, pool)
        with self._lock:
            return sorted(self._free.get(key, []))

    # -- claiming ------------------------------------------------------------

    def _look(self, key: tuple[str, str]) -> int:
        """Learn the spares of ``key`` in its pool, every host's; return how many.

        One omap read of the pool directory by name prefix: a spare name
        (never a making- or removing- one) is complete and free.
        """
        pool, prefix = key
        names = self.driver.list_images_named(prefix, pool)
        with self._lock:
            self._free[key] = names
        return len(names)

    def claim(self, identity: SnapshotIdentity, name: str, pool: str | None = None) -> str | None:
        """Rename a spare of ``identity`` in ``pool`` to ``name``; return the spare's old name.

        Returns None when no spare is left in the pool (the caller clones).
        When none is known here, the pool is looked at once, so spares made
        by other hosts are taken too. A spare taken meanwhile by another host
        is forgotten and the next one tried.

        :raises ImageExists: ``name`` exists (the spare stays a spare).
        """
        pool = pool or self.driver.pool
        key = self.key(identity, pool)
        looked = False
        while True:
            with self._lock:
                free = self._free.get(key)
                spare = free.pop(random.randrange(len(free))) if free else None
            if spare is None:
                if looked:
                    return None
                looked = True
                self._look(key)
                continue
            # A random one: hosts sharing the pool rarely reach for the same spare.
            if self.driver.claims.claim_rename(spare, name, pool):
                return spare
            LOG.debug("spare %s/%s was taken by another host; trying the next", pool, spare)

    # -- refilling -------------------------------------------------------------

    def refill(self, location: RbdLocation, identity: SnapshotIdentity, target: int,
               pool: str | None = None) -> bool:
        """Make sure a background job tops the spares of ``identity`` up to ``target``.

        Returns True if a job was queued; False if one is already queued or
        running (it re-counts after each clone), ``target`` is 0, refills of
        this snapshot are on hold, or the worker is stopping.
        """
        if target <= 0:
            return False
        key = self.key(identity, pool)
        with self._lock:
            if self._closing or key in self._jobs or self._held(key):
                return False
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="rbd-driver-spares")
            job = _Job(key, location, identity, target)
            self._jobs[key] = job
            self._executor.submit(self._run, job)
        return True

    def _held(self, key: tuple[str, str]) -> bool:
        until = self._hold.get(key)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._hold[key]
        return False

    def _done(self, key: tuple[str, str]) -> None:
        """Forget the job of ``key`` (the lock is held)."""
        self._jobs.pop(key, None)
        if not self._jobs:
            self._idle.notify_all()

    def _run(self, job: _Job) -> None:
        pool, prefix = job.key
        finished = False
        try:
            collisions = 0
            while True:
                # The pool's count, every host's spares; and every host's hold.
                enough = (self._look(job.key) >= job.target
                          or self._held_everywhere(job.location.pool, job.identity))
                with self._lock:
                    if self._closing or self._held(job.key) or enough:
                        # Under the lock, so a refill asked for from now on queues a new job.
                        self._done(job.key)
                        finished = True
                        return
                name = f"{prefix}{uuid.uuid4().hex[:8]}"
                try:
                    self._make(job.location, name, pool)
                except exception.ImageExists:
                    collisions += 1
                    if collisions < _MAX_COLLISIONS:
                        continue
                    raise
                collisions = 0
                if not self._still_wanted(job):
                    # Its golden is being deleted (or is gone): a spare made
                    # from a clone started before the hold must not outlive it.
                    self._discard(name, pool)
                    return  # held, or the golden is gone or replaced: never clone again
                with self._lock:
                    self._free.setdefault(job.key, []).append(name)
                LOG.debug("made spare clone %s/%s of %s", pool, name, job.location.url)
        except Exception as err:  # a background thread: report and pause this snapshot
            LOG.warning("could not make spare clones of %s in pool %s (retrying after %d s): %s",
                        job.location.url, pool, HOLD_SECONDS, err)
            with self._lock:
                self._hold[job.key] = time.monotonic() + HOLD_SECONDS
        finally:
            if not finished:
                with self._lock:
                    self._done(job.key)

    def _still_wanted(self, job: _Job) -> bool:
        """False once a hold stands or the snapshot is gone (or is another one now)."""
        if self._held_everywhere(job.location.pool, job.identity):
            return False
        try:
            found = self.driver.snapshot_identity(job.location)
        except (exception.ImageNotFound, exception.SnapshotNotFound):
            return False
        return found is None or found == job.identity  # None: a layout not read here

    def _discard(self, name: str, pool: str) -> None:
        report = self.driver.remove_image(name, pool)
        if not report.ok:
            LOG.error("could not remove %s/%s, a spare made while its golden was being "
                      "deleted: %s", pool, name, report.left_behind(name))
        else:
            LOG.info("removed %s/%s, a spare made while its golden was being deleted",
                     pool, name)

    def _make(self, location: RbdLocation, name: str, pool: str) -> None:
        """Clone ``location`` under a making- name, then rename it to spare ``name``."""
        making = MAKING_PREFIX + name[len(SPARE_PREFIX):]
        self.driver.clone(location, making, pool)
        try:
            if not self.driver.claims.claim_rename(making, name, pool):
                raise exception.ImageNotFound(pool=pool, image=making)
        except BaseException:
            report = self.driver.remove_image(making, pool)
            if not report.ok:
                LOG.error("could not remove %s/%s, a spare clone not made: %s", pool, making,
                          report.left_behind(making))
            raise

    # -- holding every host's refills --------------------------------------------

    def _held_everywhere(self, golden_pool: str, identity: SnapshotIdentity) -> bool:
        """True while a hold on the refills of ``identity`` stands in ``golden_pool``."""
        ioctx = self.driver.client.get_ioctx(golden_pool)
        oid = _HOLD_OBJECT.format(image_id=identity.image_id, snap_id=identity.snap_id)
        with self.driver.client.translate("read spare hold", pool=golden_pool):
            try:
                raw = ioctx.read(oid, 64)
            except self.driver.client.rados.ObjectNotFound:
                return False
        try:
            return time.time() < float(raw.decode())
        except ValueError:
            return True  # unreadable: err on the side of making no clone

    @contextlib.contextmanager
    def hold_everywhere(self, identity: SnapshotIdentity,
                        seconds: float = HOLD_SECONDS) -> Iterator[None]:
        """Hold every host's refills of ``identity`` while the block runs.

        Writes the hold object in the golden's pool (with a deadline
        ``seconds`` away, so a crash here cannot hold refills for good) and
        removes it afterwards. A refill that already started finishes the
        clone it is making, then stops. Needs write access to the golden's pool.
        """
        ioctx = self.driver.client.get_ioctx(identity.pool)
        oid = _HOLD_OBJECT.format(image_id=identity.image_id, snap_id=identity.snap_id)
        with self.driver.client.translate("write spare hold", pool=identity.pool):
            ioctx.write_full(oid, f"{time.time() + seconds:.3f}".encode())
        try:
            yield
        finally:
            try:
                with self.driver.client.translate("remove spare hold", pool=identity.pool):
                    ioctx.remove_object(oid)
            except exception.RbdDriverError as err:  # it expires by itself
                LOG.warning("could not remove %s/%s: %s", identity.pool, oid, err)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no refill is queued or running; return False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._jobs, timeout)

    # -- removing ----------------------------------------------------------------

    def remove(self, pool: str | None = None, parent: SnapshotIdentity | None = None) -> list[str]:
        """Remove the spares in ``pool`` (those of snapshot ``parent`` only, if given)
        through librbd; return the names removed.

        Each spare is first claimed under a ``rbd-driver-spare-removing.`` name,
        so a launch can never take one being removed. Images left under a
        making- or removing- name (by a crash) are removed too; one that
        another host is making right now has that host as a watcher, and is
        left for it to finish (the caller looks again: see
        :meth:`GoldenImages.delete <rbd_driver.ops.golden.GoldenImages.delete>`).
        This process's refills of ``parent`` (of every snapshot, without it)
        are put on hold for :data:`HOLD_SECONDS`; :meth:`hold_everywhere`
        holds every host's.

        :raises ImageInUse: a spare is open by a client (left in place).
        :raises CleanupFailed: a spare could be neither removed nor trashed.
        """
        pool = pool or self.driver.pool
        prefix = spare_prefix(self.driver.pool_id(parent.pool), parent) if parent else None
        names = self.driver.list_images_named(SPARE_PREFIX.rstrip("."), pool)
        with self._lock:
            until = time.monotonic() + HOLD_SECONDS
            keys = {k for k in (*self._free, *self._jobs)
                    if k[0] == pool and (prefix is None or k[1] == prefix)}
            if prefix is not None:
                keys.add((pool, prefix))
            for key in keys:
                self._hold[key] = until
                self._free.pop(key, None)
        ids = prefix[len(SPARE_PREFIX):] if prefix is not None else ""
        removed = []
        for name in names:
            if not is_spare_name(name):
                continue
            doomed = name
            if name.startswith(SPARE_PREFIX):
                if not name.startswith(SPARE_PREFIX + ids):
                    continue
                doomed = REMOVING_PREFIX + name[len(SPARE_PREFIX):]
                # A spare whose claim was interrupted has no id object: give it back one.
                self.driver.claims.restore_id_object(name, pool)
                if not self.driver.claims.claim_rename(name, doomed, pool):
                    continue  # taken by a launch meanwhile
            elif not name.split(".", 1)[1].startswith(ids):
                continue
            elif name.startswith(MAKING_PREFIX):
                # Its maker may be cloning it (then it watches it) or publishing
                # it by a claim-rename: claim it too, so exactly one of us moves it.
                self.driver.claims.restore_id_object(name, pool)
                try:
                    watchers = self.driver.watchers(name, pool)
                except exception.ImageNotFound:
                    continue  # published or removed meanwhile
                if watchers:
                    LOG.info("spare %s/%s is being made by %s; left to finish", pool, name,
                             ", ".join(watchers))
                    continue
                doomed = REMOVING_PREFIX + name[len(MAKING_PREFIX):]
                if not self.driver.claims.claim_rename(name, doomed, pool):
                    continue  # published by its maker: a spare now, the next look takes it
            report = self.driver.remove_image(doomed, pool)
            if doomed in report.busy:
                raise exception.ImageInUse(pool=pool, image=doomed, watchers=report.busy[doomed])
            if report.failed:
                raise exception.CleanupFailed(pool=pool, image=doomed, detail=report.failed[doomed])
            removed.append(name)
        if removed:
            LOG.info("removed %d spare clones from pool %s", len(removed), pool)
        return removed

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker: cancel queued refills and wait for the running clone."""
        with self._lock:
            self._closing = True
            executor, self._executor = self._executor, None
        try:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        finally:
            with self._lock:
                self._jobs.clear()
                self._closing = False
                self._idle.notify_all()
