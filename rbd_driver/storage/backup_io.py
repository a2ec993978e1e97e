# SPDX-License-Identifier: Apache-2.0
"""Streams between RBD snapshots and backup files, checksummed as they flow.

:func:`export_raw` writes a snapshot into a sparse raw file,
:func:`export_qcow2` into a QCOW2 file through qemu-img, and
:func:`export_diff` writes the extents changed between two snapshots as an
``rbd export-diff`` stream (:mod:`.diff_format`); :func:`apply_diff` writes
such a stream into an image.

They run on the data path's engine
(:class:`rbd_driver.storage.datapath.CopyEngine`): the same window of at
most ``window`` asynchronous requests of at most ``chunk_size`` bytes (the
same bounded memory), the same progress, cancel and SIGTERM behaviour. A
stream must be written in order, and a checksum computed in one pass needs
the data in order too (checksumming a finished 2 GiB raw file costs a second
pass that measured longer here than the export itself), so exports take the
reads in offset order (:meth:`~rbd_driver.storage.datapath.CopyEngine.run_in_order`).
Files are built with the same temp-file-then-rename atomicity.

A raw file's checksum is of its content (see
:class:`~rbd_driver.storage.diff_format.ContentChecksum`), computed here as
the data streams.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from rbd_driver.storage import convert
from rbd_driver.storage.datapath import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WINDOW,
    SPARSE_BLOCK,
    CopyEngine,
    Result,
    aio_error,
    diff_extents,
    merged,
    read_failed,
    submit_reads,
)
from rbd_driver.storage.diff_format import (
    ContentChecksum,
    DiffReader,
    DiffWrite,
    DiffWriter,
    DiffZero,
    file_checksum,
)
from rbd_driver.storage.localfile import atomic_file
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.sources import pieces

__all__ = ["StreamStats", "apply_diff", "export_diff", "export_qcow2", "export_raw"]

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


def _engine(op: str, target: str, window: int, chunk_size: int, progress: Progress | None,
            cancel: threading.Event | None) -> CopyEngine:
    """The data path's engine, with chunks whole ``SPARSE_BLOCK`` blocks."""
    return CopyEngine(op, target, chunk_size, window, progress, cancel, align=SPARSE_BLOCK)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


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
    ``sync`` makes the file durable before it appears (see
    :func:`~rbd_driver.storage.localfile.atomic_file`).

    :raises ImageNotFound: / :raises SnapshotNotFound:
    :raises OperationCancelled: ``cancel`` was set, or SIGTERM (main thread).
    :raises OSError: writing ``dest`` (nothing is left behind).
    """
    copy = _engine("backup", f"{pool}/{name}@{snapshot}", window, chunk_size, progress, cancel)
    with copy.sigterm_guard() as guard, \
            client.open_image(pool, name, snapshot=snapshot, read_only=True,
                              op="export") as image, atomic_file(dest, sync) as (fd, _):
        copy.total = size = int(image.size())
        os.ftruncate(fd, size)
        digest = ContentChecksum(checksum, size)
        blocks = merged(diff_extents(image, size, copy), size, SPARSE_BLOCK)
        sink = _RawSink(fd, digest, writeback=sync)

        def deliver(offset: int, length: int, result: Result | None) -> None:
            if result is None:
                copy.add(length, "holes")
                return
            data = _data(client, result, pool, name, snapshot)
            sink.put(offset, data)
            copy.add(length, "data")

        with sink:
            copy.run_in_order(pieces(blocks, size, chunk_size),
                              submit_reads(client, image, copy, pool, name, snapshot), deliver)
        guard.disarm()
    stats = copy.stats()
    return StreamStats(size, sink.data, sink.zeros, size, digest.hexdigest(), checksum,
                       stats.seconds)


def _data(client: RadosClient, result: Result, pool: str, name: str, snapshot: str) -> bytes:
    """The data of a read's ``result``.

    :raises RbdDriverError: the read failed or came back short.
    """
    if read_failed(result):
        aio_error(client, "read", result, pool, name, snapshot)
    assert result[3] is not None
    return result[3]


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
    copy = _engine("incremental backup", f"{pool}/{name}@{snapshot}", window, chunk_size,
                   progress, cancel)
    zero_chunk = memoryview(bytes(chunk_size))
    with copy.sigterm_guard() as guard, \
            client.open_image(pool, name, snapshot=snapshot, read_only=True,
                              op="export diff") as image, atomic_file(dest, sync) as (fd, _):
        size = int(image.size())
        with client.translate("diff", pool=pool, image=name, snapshot=from_snapshot):
            extents = diff_extents(image, size, copy, from_snapshot)
        copy.total = sum(length for _, length, _ in extents)
        items = ((off + lo, min(chunk_size, length - lo), exists)
                 for off, length, exists in extents for lo in range(0, length, chunk_size))
        with os.fdopen(os.dup(fd), "wb", buffering=1 << 20) as out:
            writer = DiffWriter(out, checksum)
            writer.header(size, snapshot, from_snapshot)

            def deliver(offset: int, length: int, result: Result | None) -> None:
                data = None if result is None else _data(client, result, pool, name, snapshot)
                if data is None or data.startswith(zero_chunk[:length]):
                    writer.zero(offset, length)
                    copy.add(length, "zeros")
                else:
                    writer.write(offset, data)
                    copy.add(length, "data")

            copy.run_in_order(items, submit_reads(client, image, copy, pool, name, snapshot),
                              deliver)
            writer.end()
        guard.disarm()
    stats = copy.stats()
    return StreamStats(size, copy.data, copy.zeros, writer.bytes_written,
                       writer.checksum.hexdigest(), checksum, stats.seconds)


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
    copy = CopyEngine("restore", f"{pool}/{name}", DEFAULT_CHUNK_SIZE, window, progress, cancel)
    copy.total = total
    written = 0

    with client.open_image(pool, name, op="restore") as image:

        def records() -> Iterator[tuple[int, int, DiffWrite | DiffZero]]:
            for record in reader.records():
                length = len(record.data) if isinstance(record, DiffWrite) else record.length
                yield record.offset, length, record
                copy.add(reader.position - copy.done, "data")  # once it is submitted
            copy.add(reader.position - copy.done, "data")  # the end record

        def submit(offset: int, length: int, record: DiffWrite | DiffZero) -> bool:
            nonlocal written
            if isinstance(record, DiffZero):
                with client.translate("write zeroes", **where):
                    image.write_zeroes(offset, length)
                return False
            with client.translate("write", **where):
                image.aio_write(record.data, offset, copy.callback(offset, length))
            written += length
            return True

        def handle(result: Result) -> None:
            if result[2] < 0:
                aio_error(client, "write", result, pool, name)

        with client.translate("resize", **where):
            if int(image.size()) != reader.header.size:
                image.resize(reader.header.size)
        copy.run(records(), submit, handle)
        with client.translate("flush", **where):
            image.flush()
    return written
