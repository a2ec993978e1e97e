"""Streams between RBD snapshots and backup files, checksummed as they flow.

:func:`export_raw` writes a snapshot into a sparse raw file,
:func:`export_qcow2` into a QCOW2 file through qemu-img, and
:func:`export_diff` writes the extents changed between two snapshots as an
``rbd export-diff`` stream (:mod:`.diff_format`); :func:`apply_diff` writes
such a stream into an image.

Why not :func:`rbd_driver.storage.datapath.export_from_image`: that engine
writes each read where it belongs as soon as it completes, in any order,
which suits a sparse copy. A stream must be written in order, and a
checksum computed in one pass needs the data in order too; checksumming a
finished 2 GiB raw file costs a second pass that measured longer here than
the export itself. So these functions keep the same window of at most
``window`` asynchronous reads of at most ``chunk_size`` bytes (the same
bounded memory), the same progress, cancel and SIGTERM behaviour, and the
same temp-file-then-rename atomicity, but consume the reads in offset order.

A raw file's checksum is of its content (see
:class:`~rbd_driver.storage.diff_format.ContentChecksum`), computed here as
the data streams.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import dataclasses
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rbd_driver import exception
from rbd_driver.storage import convert
from rbd_driver.storage.datapath import DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW, SPARSE_BLOCK
from rbd_driver.storage.diff_format import (ContentChecksum, DiffReader, DiffWrite, DiffWriter,
                                            file_checksum)
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.sigterm import SigtermGuard
from rbd_driver.storage.sources import pieces

__all__ = ["StreamStats", "apply_diff", "atomic_file", "export_diff", "export_qcow2",
           "export_raw"]

Progress = Callable[[int, int], None]
_WRITEBACK = 32 << 20  # start writeback of a raw backup every this many bytes


@dataclasses.dataclass(frozen=True)
class StreamStats:
    """What an export wrote: ``data_bytes`` of data, ``zero_bytes`` read or
    recorded as zeros, a file of ``file_bytes`` with ``checksum`` (hex)."""

    image_size: int
    data_bytes: int
    zero_bytes: int
    file_bytes: int
    checksum: str
    algorithm: str
    seconds: float


class _Stream:
    """Accounting, progress and cancel for one stream; mirrors datapath's copies."""

    def __init__(self, op: str, target: str, window: int, chunk_size: int,
                 progress: Progress | None, cancel: threading.Event | None) -> None:
        if window <= 0 or chunk_size <= 0 or chunk_size % SPARSE_BLOCK:
            raise exception.InvalidArgument(op=op, target=target, detail=(
                f"window ({window}) must be positive and chunk_size ({chunk_size}) a "
                f"positive multiple of {SPARSE_BLOCK}"))
        self.op, self.target, self.window, self.chunk_size = op, target, window, chunk_size
        self.progress, self.cancel = progress, cancel
        self.total = self.done = self.data = self.zeros = 0
        self.zero_chunk = memoryview(bytes(chunk_size))
        self.started = time.monotonic()

    def cancelled(self) -> exception.OperationCancelled:
        return exception.OperationCancelled(op=self.op, target=self.target, done=self.done,
                                            total=self.total)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise self.cancelled()

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress is not None and nbytes:
            self.progress(self.done, self.total)


def _read_in_order(client: RadosClient, image: Any, items: Iterable[tuple[int, int, bool]],
                   stream: _Stream, consume: Callable[[int, int, bytes | None], None],
                   where: dict[str, Any]) -> None:
    """``consume(offset, length, data)`` each item in order; ``data`` is read with at
    most ``window`` aio reads in flight for items marked True, None for the others.

    On any error the reads in flight are waited for before it propagates, so
    the image is never closed under them.
    """
    pending: collections.deque[tuple[int, int, Any, list[Any]]] = collections.deque()
    source = iter(items)

    def fill() -> None:
        while len(pending) < stream.window:
            item = next(source, None)
            if item is None:
                return
            offset, length, read = item
            slot: list[Any] = []
            completion = None
            if read:
                with client.translate("read", **where):
                    completion = image.aio_read(
                        offset, length, lambda c, data, s=slot: s.append(
                            (c.get_return_value(), data)))
            pending.append((offset, length, completion, slot))

    try:
        fill()
        while pending:
            stream.check_cancel()
            offset, length, completion, slot = pending.popleft()
            data = None
            if completion is not None:
                completion.wait_for_complete_and_cb()
                ret, data = slot[0]
                if ret < 0 or data is None or len(data) != length:
                    err = -ret if ret < 0 else errno.EIO  # a short read
                    client.raise_for_errno("read", err, f"read of {offset}~{length} failed",
                                           **where)
            fill()
            consume(offset, length, data)
    finally:
        held: BaseException | None = None
        for _, _, completion, _ in pending:
            if completion is not None:
                try:
                    completion.wait_for_complete_and_cb()
                except BaseException as err:  # noqa: BLE001 - re-raised below
                    held = held or err
        if held is not None and not isinstance(held, Exception):
            raise held


@contextlib.contextmanager
def atomic_file(dest: str, sync: bool = True) -> Iterator[tuple[int, str]]:
    """Yield (fd, path) of a new ``dest.part-<hex>`` (mode 0600); when the block ends
    fsync it (if ``sync``), rename it over ``dest`` and fsync the directory (if
    ``sync``); on any failure remove it."""
    temp = f"{dest}.part-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        yield fd, temp
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(temp, dest)
        if sync:
            _fsync_dir(dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse a directory fsync
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _allocated(image: Any, size: int, stream: _Stream, from_snapshot: str | None,
               ) -> list[tuple[int, int, bool]]:
    """Return the (offset, length, exists) extents librbd reports, in order."""
    found: list[tuple[int, int, bool]] = []

    def collect(offset: int, length: int, exists: bool) -> None:
        stream.check_cancel()  # what the callback raises, diff_iterate raises
        if length:
            found.append((offset, length, bool(exists)))

    if size:
        image.diff_iterate(0, size, from_snapshot, collect, include_parent=True)
    return sorted(found)


class _RawSink:
    """Checksum and write the chunks of a raw export on one worker thread, in order.

    zlib, hashlib and pwrite release the GIL, so this overlaps with the
    reads; at most ``depth`` chunks wait here. Written ranges are handed to
    the kernel's writeback every ``_WRITEBACK`` bytes (``POSIX_FADV_DONTNEED``
    starts it and keeps the backup out of the page cache), so the final
    fsync has little left to do.
    """

    def __init__(self, fd: int, digest: ContentChecksum, depth: int = 2,
                 writeback: bool = True) -> None:
        self.fd, self.digest, self.depth, self.writeback = fd, digest, depth, writeback
        self.data = self.zeros = self._flushed = 0
        self._worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="rbd-driver-backup")
        self._queued: collections.deque[concurrent.futures.Future[None]] = collections.deque()

    def put(self, offset: int, data: bytes) -> None:
        while len(self._queued) >= self.depth:
            self._queued.popleft().result()
        self._queued.append(self._worker.submit(self._write, offset, data))

    def _write(self, offset: int, data: bytes) -> None:
        written = 0
        for lo, hi in self.digest.feed(offset, data):
            _pwrite_all(self.fd, memoryview(data)[lo:hi], offset + lo)
            written += hi - lo
        self.data += written
        self.zeros += len(data) - written
        end = offset + len(data)
        if self.writeback and end - self._flushed >= _WRITEBACK and \
                hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, self._flushed, end - self._flushed,
                             os.POSIX_FADV_DONTNEED)
            self._flushed = end

    def __enter__(self) -> _RawSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            while self._queued:
                future = self._queued.popleft()
                if exc is None:
                    future.result()
        finally:
            self._worker.shutdown(wait=True, cancel_futures=True)


def export_raw(client: RadosClient, pool: str, name: str, snapshot: str, dest: str, *,
               checksum: str = "crc32", window: int = DEFAULT_WINDOW,
               chunk_size: int = DEFAULT_CHUNK_SIZE, progress: Progress | None = None,
               cancel: threading.Event | None = None, sync: bool = True) -> StreamStats:
    """Write ``pool/name@snapshot`` into a sparse raw file ``dest``; return its :class:`StreamStats`.

    Only allocated extents (rounded out to ``SPARSE_BLOCK``) are read, and only
    non-zero blocks written. ``progress(done, total)`` counts image bytes.
    ``sync`` makes the file durable before it appears (see :func:`atomic_file`).

    :raises ImageNotFound: / :raises SnapshotNotFound:
    :raises OperationCancelled: ``cancel`` was set, or SIGTERM (main thread).
    :raises OSError: writing ``dest`` (nothing is left behind).
    """
    where = {"pool": pool, "image": name, "snapshot": snapshot}
    stream = _Stream("backup", f"{pool}/{name}@{snapshot}", window, chunk_size, progress, cancel)
    with SigtermGuard(stream.cancelled) as guard, \
            client.open_image(pool, name, snapshot=snapshot, read_only=True,
                              op="export") as image, atomic_file(dest, sync) as (fd, _):
        stream.total = size = int(image.size())
        os.ftruncate(fd, size)
        digest = ContentChecksum(checksum, size)
        blocks: list[tuple[int, int]] = []
        for offset, length, _ in _allocated(image, size, stream, None):
            start = offset - offset % SPARSE_BLOCK
            end = min(size, -(-(offset + length) // SPARSE_BLOCK) * SPARSE_BLOCK)
            if blocks and start <= blocks[-1][1]:
                blocks[-1] = (blocks[-1][0], max(end, blocks[-1][1]))
            else:
                blocks.append((start, end))

        sink = _RawSink(fd, digest, writeback=sync)

        def consume(offset: int, length: int, data: bytes | None) -> None:
            if data is not None:
                sink.put(offset, data)
            stream.data, stream.zeros = sink.data, sink.zeros
            stream.advance(length)

        with sink:
            _read_in_order(client, image, pieces(blocks, size, chunk_size), stream, consume,
                           where)
        stream.data, stream.zeros = sink.data, sink.zeros
        guard.disarm()
    return StreamStats(size, stream.data, stream.zeros, size, digest.hexdigest(), checksum,
                       time.monotonic() - stream.started)


def export_diff(client: RadosClient, pool: str, name: str, snapshot: str,
                from_snapshot: str | None, dest: str, *, checksum: str = "crc32",
                window: int = DEFAULT_WINDOW, chunk_size: int = DEFAULT_CHUNK_SIZE,
                progress: Progress | None = None, cancel: threading.Event | None = None,
                sync: bool = True) -> StreamStats:
    """Write what changed from ``from_snapshot`` to ``snapshot`` as an export-diff stream.

    Records follow ``diff_iterate``'s extents in order, as ``rbd export-diff``
    writes them: a changed extent whose data is all zeros becomes a ``z``
    record. ``progress(done, total)`` counts the changed bytes.

    :raises ImageNotFound: / :raises SnapshotNotFound: either snapshot is missing.
    :raises OperationCancelled: / :raises OSError: as for :func:`export_raw`.
    """
    where = {"pool": pool, "image": name, "snapshot": snapshot}
    stream = _Stream("incremental backup", f"{pool}/{name}@{snapshot}", window, chunk_size,
                     progress, cancel)
    with SigtermGuard(stream.cancelled) as guard, \
            client.open_image(pool, name, snapshot=snapshot, read_only=True,
                              op="export diff") as image, atomic_file(dest, sync) as (fd, _):
        size = int(image.size())
        with client.translate("diff", pool=pool, image=name, snapshot=from_snapshot):
            extents = _allocated(image, size, stream, from_snapshot)
        stream.total = sum(length for _, length, _ in extents)
        items = ((off + lo, min(chunk_size, length - lo), exists)
                 for off, length, exists in extents for lo in range(0, length, chunk_size))
        with os.fdopen(os.dup(fd), "wb", buffering=1 << 20) as out:
            writer = DiffWriter(out, checksum)
            writer.header(size, snapshot, from_snapshot)

            def consume(offset: int, length: int, data: bytes | None) -> None:
                if data is None or data.startswith(stream.zero_chunk[:length]):
                    writer.zero(offset, length)
                    stream.zeros += length
                else:
                    writer.write(offset, data)
                    stream.data += length
                stream.advance(length)

            _read_in_order(client, image, items, stream, consume, where)
            writer.end()
        guard.disarm()
    if not stream.total and progress is not None:
        progress(0, 0)
    return StreamStats(size, stream.data, stream.zeros, writer.bytes_written,
                       writer.checksum.hexdigest(), checksum, time.monotonic() - stream.started)


def export_qcow2(client: RadosClient, pool: str, name: str, snapshot: str, dest: str, *,
                 checksum: str = "crc32", timeout: int = 3600,
                 sync: bool = True) -> tuple[int, str]:
    """qemu-img ``pool/name@snapshot`` into a QCOW2 file ``dest``; return (its size, checksum).

    qemu-img is given the ceph.conf and keyring paths, never a key.

    :raises ImageConversionFailed: qemu-img failed (nothing is left behind).
    """
    spec = convert.rbd_spec(pool, f"{name}@{snapshot}", client.user, client.ceph_conf,
                            client.keyring)
    with atomic_file(dest, sync) as (fd, temp):
        convert._qemu_img("convert", "-f", "raw", "-O", "qcow2", "-m", "16", spec, temp,
                          timeout=timeout)
        return os.fstat(fd).st_size, file_checksum(temp, checksum)


def apply_diff(client: RadosClient, pool: str, name: str, reader: DiffReader, *,
               window: int = DEFAULT_WINDOW, progress: Progress | None = None,
               total: int = 0, cancel: threading.Event | None = None) -> int:
    """Apply the records of ``reader`` to image ``pool/name``; return the bytes written.

    The image is resized to the stream's size first, as ``rbd import-diff``
    does. Writes go out with at most ``window`` in flight; a record that
    overlaps one in flight waits for it, so the stream's order is kept.
    ``progress(done, total)`` counts bytes of the stream read, of ``total``.

    :raises BackupCorrupt: the stream is malformed or truncated (the image
        is then partly written: apply to a temporary image).
    :raises OperationCancelled: ``cancel`` was set.
    """
    where = {"pool": pool, "image": name}
    stream = _Stream("restore", f"{pool}/{name}", window, DEFAULT_CHUNK_SIZE, progress, cancel)
    stream.total = total
    inflight: collections.deque[tuple[int, int, Any, list[int]]] = collections.deque()
    written = 0

    def drain(until: int, overlap: tuple[int, int] | None = None) -> None:
        while inflight and (len(inflight) > until or (overlap and any(
                s < overlap[1] and overlap[0] < e for s, e, _, _ in inflight))):
            start, end, completion, slot = inflight.popleft()
            completion.wait_for_complete_and_cb()
            if slot[0] < 0:
                client.raise_for_errno("write", -slot[0], f"write of {start}~{end - start} "
                                       "failed", **where)

    with client.open_image(pool, name, op="restore") as image:
        try:
            with client.translate("resize", **where):
                if int(image.size()) != reader.header.size:
                    image.resize(reader.header.size)
            for record in reader.records():
                stream.check_cancel()
                if isinstance(record, DiffWrite):
                    span = (record.offset, record.offset + len(record.data))
                    drain(stream.window - 1, span)
                    slot: list[int] = []
                    with client.translate("write", **where):
                        completion = image.aio_write(
                            record.data, record.offset,
                            lambda c, s=slot: s.append(c.get_return_value()))
                    inflight.append((span[0], span[1], completion, slot))
                    written += len(record.data)
                else:
                    drain(0)
                    with client.translate("write zeroes", **where):
                        image.write_zeroes(record.offset, record.length)
                stream.advance(reader.position - stream.done)
            stream.advance(reader.position - stream.done)  # the end record
            drain(0)
            with client.translate("flush", **where):
                image.flush()
        finally:
            for _, _, completion, _ in inflight:
                with contextlib.suppress(Exception):
                    completion.wait_for_complete_and_cb()
    return written
