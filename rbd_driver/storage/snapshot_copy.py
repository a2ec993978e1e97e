# SPDX-License-Identifier: Apache-2.0
"""Mechanics of an instance snapshot made inside the cluster.

Two ways to turn a disk snapshot into a standalone golden image, both
through librbd in this process, no local file:

* :func:`flatten_image`: a clone of the disk snapshot is flattened (librbd
  copies every object of the parent chain into it). librbd's flatten blocks
  in C, so it runs on a worker thread while the calling thread relays its
  progress and stays interruptible: a cancel event, ^C or SIGTERM make the
  progress callback answer ``-ECANCELED``, which librbd honours between
  objects, and the image keeps its parent.
* :func:`copy_changes`: only the extents a clone holds itself (not those it
  reads from its parent) are copied into another image at the same offsets,
  with at most ``window`` reads and ``window`` writes in flight. Used when the
  new image is a clone of the same golden snapshot as the disk.

:func:`parent_at` reports a snapshot's parent and overlap, which decide
whether the second way is exact. Policy is in
:mod:`rbd_driver.backends.instance_snapshot`.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["ParentAt", "copy_changes", "flatten_image", "parent_at"]

LOG = logging.getLogger(__name__)

_POLL_SECONDS = 0.2
ProgressCallback = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class ParentAt:
    """The parent of an image at one snapshot, and how much of it the image sees."""

    pool: str
    image: str
    snapshot: str
    overlap: int
    size: int  # of the image itself at that snapshot


def parent_at(client: RadosClient, pool: str, name: str, snapshot: str) -> ParentAt | None:
    """Return the parent of ``pool/name@snapshot`` with its overlap, or None if it has none.

    :raises ImageNotFound: / :raises SnapshotNotFound:
    """
    with client.open_image(pool, name, snapshot=snapshot, read_only=True,
                           op="get parent") as image:
        parent = client.parent_of(image)
        if parent is None:
            return None
        return ParentAt(parent[0], parent[1], parent[2], int(image.overlap()),
                        int(image.size()))


def flatten_image(client: RadosClient, pool: str, name: str, *,
                  progress: ProgressCallback | None = None,
                  cancel: threading.Event | None = None) -> None:
    """Flatten ``pool/name`` (nothing to do without a parent), reporting bytes done.

    ``progress(done, total)`` is called on this thread; ``total`` is the image
    size. On ``cancel``, or an exception on this thread (KeyboardInterrupt, a
    SIGTERM turned into one), librbd is told to stop and is waited for; the
    image then still has its parent.

    :raises OperationCancelled: ``cancel`` was set.
    :raises RbdDriverError: the flatten failed (translated librbd error).
    """
    target = f"{pool}/{name}"
    stop = threading.Event()
    events: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
    failure: list[BaseException] = []
    with client.open_image(pool, name, op="flatten") as image:
        if client.parent_of(image) is None:
            return
        size = int(image.size())

        def on_progress(done: int, total: int) -> int:  # on a librbd thread
            events.put((int(done), int(total)))
            halted = stop.is_set() or (cancel is not None and cancel.is_set())
            return -errno.ECANCELED if halted else 0  # librbd wants an int back

        def run() -> None:
            try:
                image.flatten(on_progress=on_progress)
            except BaseException as err:  # noqa: BLE001 - handed to the calling thread
                failure.append(err)
            finally:
                events.put(None)

        worker = threading.Thread(target=run, name="rbd-driver-flatten", daemon=True)
        worker.start()
        objects_done = 0
        try:
            while True:
                try:
                    item = events.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is None:
                    break
                done, total = item
                objects_done = max(objects_done, done)
                if progress is not None and total:
                    progress(min(size, size * done // total), size)
        except BaseException:
            stop.set()
            _join(worker)
            raise
        worker.join()
    if failure:
        if cancel is not None and cancel.is_set():
            raise exception.OperationCancelled(op="flatten", target=target,
                                               done=objects_done, total=size) from failure[0]
        with client.translate("flatten", pool=pool, image=name):
            raise failure[0]
    if progress is not None:
        progress(size, size)


def _join(worker: threading.Thread) -> None:
    """Wait for ``worker``; an interrupt meanwhile is raised after it has ended."""
    held: BaseException | None = None
    while worker.is_alive():
        try:
            worker.join(_POLL_SECONDS)
        except BaseException as err:  # noqa: BLE001 - re-raised below
            held = held or err
    if held is not None:
        raise held


def _own_extents(image: Any, size: int, chunk_size: int, cancel: threading.Event | None,
                 target: str) -> list[tuple[int, int]]:
    """Return ``(offset, length)`` pieces, at most ``chunk_size`` long, of what the
    open snapshot holds itself (its parent's data left out), merged and sorted."""
    found: list[tuple[int, int]] = []

    def collect(offset: int, length: int, exists: bool) -> int:
        if cancel is not None and cancel.is_set():
            raise exception.OperationCancelled(op="copy changes", target=target, done=0,
                                               total=0)
        # exists=False too: the disk now reads zeros there, which must hide the parent.
        if length:
            found.append((offset, offset + length))
        return 0

    if size:
        image.diff_iterate(0, size, None, collect, include_parent=False, whole_object=True)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return [(pos, min(chunk_size, end - pos)) for start, end in merged
            for pos in range(start, end, chunk_size)]


class _Pipe:
    """Reads from one image feeding writes to another, each at most ``window`` in flight.

    Completions only queue (they run on librbd threads); everything else runs
    on the calling thread.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.results: queue.SimpleQueue[tuple[str, int, int, int, bytes | None]] = \
            queue.SimpleQueue()
        self.reads = self.writes = 0

    def callback(self, kind: str, offset: int, length: int) -> Callable[..., None]:
        put = self.results.put
        return lambda completion, data=None: put(
            (kind, offset, length, completion.get_return_value(), data))

    def next(self) -> tuple[str, int, int, int, bytes | None]:
        while True:
            try:
                item = self.results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item[0] == "read":
                self.reads -= 1
            else:
                self.writes -= 1
            return item

    def drain(self) -> None:
        """Wait for everything in flight, ignoring results; an interrupt is re-raised after."""
        held: BaseException | None = None
        while self.reads or self.writes:
            try:
                self.next()
            except BaseException as err:  # noqa: BLE001 - re-raised below
                held = held or err
        if held is not None:
            raise held


def copy_changes(client: RadosClient, src_pool: str, src_name: str, src_snapshot: str,
                 dst_pool: str, dst_name: str, *, window: int = 16,
                 chunk_size: int = 4 << 20, progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None) -> int:
    """Copy what ``src_pool/src_name@src_snapshot`` holds itself into ``dst_pool/dst_name``.

    The extents come from ``diff_iterate`` without the parent, whole objects;
    each is read from the snapshot (as a guest would see it) and written at
    the same offset, zeros included (they hide the parent's data). The
    destination is flushed. Returns the bytes copied. ``progress(done, total)``
    counts them, on this thread.

    :raises OperationCancelled: ``cancel`` was set.
    :raises RbdDriverError: a read or write failed.
    """
    target = f"{dst_pool}/{dst_name}"
    with client.open_image(src_pool, src_name, snapshot=src_snapshot, read_only=True,
                           op="read changes") as src, \
            client.open_image(dst_pool, dst_name, op="write changes") as dst:
        with client.translate("list changes", pool=src_pool, image=src_name,
                              snapshot=src_snapshot):
            pieces = _own_extents(src, int(src.size()), chunk_size, cancel, target)
        total = sum(length for _, length in pieces)
        done = 0
        pipe = _Pipe(window)
        todo = iter(pieces)
        exhausted = False
        try:
            while not exhausted or pipe.reads or pipe.writes:
                if cancel is not None and cancel.is_set():
                    raise exception.OperationCancelled(op="copy changes", target=target,
                                                       done=done, total=total)
                while not exhausted and pipe.reads + pipe.writes < pipe.window:
                    piece = next(todo, None)
                    if piece is None:
                        exhausted = True
                        break
                    offset, length = piece
                    with client.translate("read", pool=src_pool, image=src_name,
                                          snapshot=src_snapshot):
                        src.aio_read(offset, length, pipe.callback("read", offset, length))
                    pipe.reads += 1
                if not pipe.reads and not pipe.writes:
                    continue
                kind, offset, length, ret, data = pipe.next()
                if kind == "read":
                    if ret < 0 or data is None or len(data) != length:
                        client.raise_for_errno("read", -ret if ret < 0 else errno.EIO,
                                               f"read of {offset}~{length} failed",
                                               pool=src_pool, image=src_name,
                                               snapshot=src_snapshot)
                    with client.translate("write", pool=dst_pool, image=dst_name):
                        dst.aio_write(data, offset, pipe.callback("write", offset, length))
                    pipe.writes += 1
                else:
                    if ret < 0:
                        client.raise_for_errno("write", -ret, f"write of {offset}~{length} failed",
                                               pool=dst_pool, image=dst_name)
                    done += length
                    if progress is not None:
                        progress(done, total)
            with client.translate("flush", pool=dst_pool, image=dst_name):
                dst.flush()
        finally:
            pipe.drain()
    if progress is not None and total == 0:
        progress(0, 0)
    LOG.debug("copied %d bytes changed in %s/%s@%s into %s", total, src_pool, src_name,
              src_snapshot, target)
    return total
