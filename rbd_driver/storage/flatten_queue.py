# SPDX-License-Identifier: Apache-2.0
"""Flatten images in the background, a few at a time.

Used by the clone-depth policy (:mod:`rbd_driver.ops.golden` and
:meth:`rbd_driver.backends.rbd.Rbd.direct_fetch`): a clone deeper than the
soft limit is returned at once and flattened here later. Each driver has
one queue (:attr:`RBDDriver.flattener
<rbd_driver.storage.rbd_utils.RBDDriver.flattener>`), stopped when it closes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Protocol

from rbd_driver import exception
from rbd_driver.conf import option_default

__all__ = ["FlattenQueue"]

LOG = logging.getLogger(__name__)


class FlattenDriver(Protocol):
    """What :class:`FlattenQueue` uses of its driver (a protocol, so that this
    module does not import the :class:`~rbd_driver.storage.rbd_utils.RBDDriver`
    that owns it)."""

    pool: str

    def flatten(self, name: str, pool: str | None = None) -> None: ...

    def parent_info(self, name: str, pool: str | None = None) -> tuple[str, str, str] | None: ...


class FlattenQueue:
    """Flatten images in the background, at most ``concurrency`` at a time.

    Asking twice for the same image while its flatten is pending returns the
    same future. A failure is logged and kept in the future.
    """

    def __init__(self, driver: FlattenDriver,
                 concurrency: int = option_default("flatten_concurrency")) -> None:
        if concurrency < 1:
            raise exception.InvalidArgument(op="flatten queue", target=driver.pool,
                                            detail=f"concurrency must be >= 1, not {concurrency}")
        self.driver = driver
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="rbd-driver-flatten")
        self._futures: dict[tuple[str, str], concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()

    def submit(self, pool: str, image: str) -> concurrent.futures.Future[None]:
        """Queue a flatten of ``pool/image``; return its future."""
        key = (pool, image)
        with self._lock:
            future = self._futures.get(key)
            if future is not None and not future.done():
                return future
            future = self._pool.submit(self._flatten, pool, image)
            self._futures[key] = future
        def done(finished: concurrent.futures.Future[None]) -> None:
            self._done(key, finished)

        # Outside the lock: a future already done runs the callback right here.
        future.add_done_callback(done)
        return future

    def _flatten(self, pool: str, image: str) -> None:
        try:
            if self.driver.parent_info(image, pool) is not None:
                self.driver.flatten(image, pool)
                LOG.info("flattened %s/%s in the background", pool, image)
        except exception.ImageNotFound:
            LOG.info("%s/%s was removed before its background flatten", pool, image)

    def _done(self, key: tuple[str, str], future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            if self._futures.get(key) is future:
                del self._futures[key]
        if not future.cancelled() and future.exception() is not None:
            LOG.error("background flatten of %s/%s failed: %s", *key, future.exception())

    def pending(self) -> list[str]:
        """Return ``pool/image`` of the flattens queued or running."""
        with self._lock:
            return sorted(f"{p}/{i}" for p, i in self._futures)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the flattens queued so far; return True if all finished in time."""
        with self._lock:
            futures = list(self._futures.values())
        _, not_done = concurrent.futures.wait(futures, timeout=timeout)
        return not not_done

    def close(self, wait: bool = True, cancel_queued: bool | None = None) -> None:
        """Stop taking work; with ``wait``, finish what was queued.

        ``cancel_queued`` (default: ``not wait``) drops the flattens not yet
        started; with ``wait`` the running ones are still waited for.
        """
        self._pool.shutdown(wait=wait, cancel_futures=not wait if cancel_queued is None
                            else cancel_queued)
