# SPDX-License-Identifier: Apache-2.0
"""Remove snapshots in the background, retried, every failure logged and kept.

Used by instance snapshots (:mod:`rbd_driver.backends.instance_snapshot`):
the disk's temporary snapshot is removed here after ``direct_snapshot`` has
returned, so the caller does not wait for the monitor commit that removing
a snapshot costs (a snapshot id is released through the monitors). Each
driver has one queue (:attr:`RBDDriver.snapshot_remover
<rbd_driver.storage.rbd_utils.RBDDriver.snapshot_remover>`), stopped when it
closes.

A removal is tried up to ``1 + destroy_retries`` times, ``destroy_retry_interval``
seconds apart (the driver's removal retries). A missing image or snapshot
counts as removed. A failure is logged (a warning while it will be retried,
an error at the last try) and kept in :meth:`SnapshotRemovalQueue.failed`
until the same snapshot is queued again; :meth:`SnapshotRemovalQueue.pending`
lists what is queued or running. A snapshot whose removal never ran (the
process died first) stays on its disk under a name that says it is
temporary; cleanup of the instance removes it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Protocol

from rbd_driver import exception

__all__ = ["REMOVAL_WAIT_FLOOR", "SnapshotRemovalQueue", "wait_for_images"]

LOG = logging.getLogger(__name__)

#: Removals at once. Two in flight share one monitor commit when they meet.
WORKERS = 2


class RemovalDriver(Protocol):
    """What :class:`SnapshotRemovalQueue` uses of its driver (a protocol, so that
    this module does not import the driver that owns it)."""

    destroy_retries: int
    destroy_retry_interval: float

    def remove_snap(self, name: str, snap: str, force: bool = False,
                    pool: str | None = None) -> None: ...


class SnapshotRemovalQueue:
    """Remove snapshots ``pool/image@snap`` in the background, retrying failures.

    Queueing a snapshot whose removal is pending returns the same future.
    The future of a removal that failed for good raises its last error.
    """

    def __init__(self, driver: RemovalDriver, workers: int = WORKERS) -> None:
        self.driver = driver
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="rbd-driver-snap-removal")
        self._futures: dict[tuple[str, str, str], concurrent.futures.Future[None]] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        _queues.add(self)

    def submit(self, pool: str, image: str, snap: str) -> concurrent.futures.Future[None]:
        """Queue the removal of ``pool/image@snap`` (unprotected first); return its future.

        :raises RuntimeError: the queue is closed.
        """
        key = (pool, image, snap)
        with self._lock:
            future = self._futures.get(key)
            if future is not None and not future.done():
                return future
            future = self._pool.submit(self._remove, *key)
            self._futures[key] = future
            self._failed.pop(_spec(*key), None)

        def done(finished: concurrent.futures.Future[None]) -> None:
            with self._lock:
                if self._futures.get(key) is finished:
                    del self._futures[key]

        future.add_done_callback(done)  # outside the lock: a done future calls back here
        return future

    def _remove(self, pool: str, image: str, snap: str) -> None:
        spec = _spec(pool, image, snap)
        tries = 1 + max(0, self.driver.destroy_retries)
        for attempt in range(1, tries + 1):
            try:
                self.driver.remove_snap(image, snap, force=True, pool=pool)
            except (exception.ImageNotFound, exception.SnapshotNotFound):
                LOG.info("snapshot %s was already gone", spec)
                return
            except Exception as err:
                last = attempt == tries or self._stop.is_set()
                if last:
                    LOG.error("background removal of snapshot %s failed after %d tries; "
                              "it is left on the disk (cleanup of the instance removes it): %s",
                              spec, attempt, err)
                    with self._lock:
                        self._failed[spec] = f"{type(err).__name__}: {err}"
                    raise
                LOG.warning("background removal of snapshot %s failed (try %d of %d), "
                            "retrying in %.1f s: %s", spec, attempt, tries,
                            self.driver.destroy_retry_interval, err)
                self._stop.wait(self.driver.destroy_retry_interval)  # close() cuts it short
            else:
                LOG.info("removed snapshot %s in the background", spec)
                return

    def pending(self) -> list[str]:
        """Return ``pool/image@snap`` of the removals queued or running."""
        with self._lock:
            return sorted(_spec(*key) for key in self._futures)

    def failed(self) -> dict[str, str]:
        """Return ``pool/image@snap`` -> the last error, for removals that gave up."""
        with self._lock:
            return dict(self._failed)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the removals queued so far; return True if all finished in time."""
        with self._lock:
            futures = list(self._futures.values())
        _, not_done = concurrent.futures.wait(futures, timeout=timeout)
        return not not_done

    def close(self, wait: bool = True) -> None:
        """Stop taking work. Retries stop: what is queued gets one more try, and
        with ``wait`` this returns after it; what still fails stays logged."""
        self._stop.set()
        self._pool.shutdown(wait=wait)


#: Seconds a removal of a disk waits at least for a background snapshot removal
#: holding that disk open (at most the busy retries' time when that is longer).
REMOVAL_WAIT_FLOOR = 30.0

#: Every queue of this process, for :func:`wait_for_images`.
_queues: weakref.WeakSet[SnapshotRemovalQueue] = weakref.WeakSet()


def wait_for_images(pool: str, images: Iterable[str], timeout: float | None = None) -> bool:
    """Wait for the removals, queued or running in any queue of this process, of
    snapshots of ``pool/<image>``; return True if all finished in time.

    A removal holds its disk open (a watch), so cleanup of an instance waits
    for them before it removes the disks, or it would find them in use.
    """
    wanted = set(images)
    futures = []
    for queue in list(_queues):
        with queue._lock:
            futures += [f for (p, i, _), f in queue._futures.items() if p == pool and i in wanted]
    _, not_done = concurrent.futures.wait(futures, timeout=timeout)
    return not not_done


def _spec(pool: str, image: str, snap: str) -> str:
    return f"{pool}/{image}@{snap}"
