# SPDX-License-Identifier: Apache-2.0
"""The copy engine: parallel, sparse, bounded-memory, atomic import and export.

:func:`import_to_image` copies a local raw file (or a pipe) into a new RBD
image; :func:`export_from_image` copies an image (or a snapshot of it) into
a local sparse file. Both keep at most ``window`` asynchronous librbd
requests of at most ``chunk_size`` bytes in flight, so the data buffers this
engine holds never exceed ``window * chunk_size`` bytes (by default 16 x 2 MiB
= 32 MiB for an import, 16 x 4 MiB = 64 MiB for an export). librbd copies each in-flight write once more
(``rbd_disable_zero_copy_writes``), so an import may use twice that.

Neither leaves a partial result under the final name: data goes to a
temporary image or file, renamed only when complete and flushed, and removed
on any failure, cancellation, KeyboardInterrupt or SIGTERM.

aio callbacks run on librbd threads, so they only queue the result; every
decision, progress call and file write happens on the calling thread.

The loop itself is :class:`CopyEngine`, the storage package's one copy
engine: :mod:`.backup_io` runs its backup streams (in offset order) and
diff restores (writes) on it too.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from rbd_driver import exception
from rbd_driver.conf import option_default
from rbd_driver.storage.localfile import atomic_file
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.sigterm import SigtermGuard
from rbd_driver.storage.sources import ImportSource, Source, pieces

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_WINDOW", "IMPORT_CHUNK_SIZE", "SPARSE_BLOCK", "CopyStats",
           "CopyEngine", "ImportSource", "ProgressCallback", "export_from_image", "import_to_image"]

LOG = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4 << 20  # one default RBD object: a zero chunk is an object never created
# Imports go faster in half objects: in a sweep on bluestore (benchmarks page)
# 2 MiB x 16 imported in 1.24 s where 4 MiB x 16 took 1.41 s, and beat
# qemu-img convert -W -m 16 (1.32 s). Zero chunks are still never written.
IMPORT_CHUNK_SIZE = 2 << 20
DEFAULT_WINDOW: int = option_default("io_window")
SPARSE_BLOCK = 64 << 10  # export writes only the non-zero blocks of this size
_POLL_SECONDS = 0.2  # how often a wait for completions looks at the cancel event

ProgressCallback = Callable[[int, int], None]
#: ``submit(offset, length, what)`` of :class:`CopyEngine`: whether it issued a request.
Submit = Callable[[int, int, Any], bool]

# The rbd exception librbd raises for an errno, for errors that arrive in a completion.
@dataclasses.dataclass(frozen=True)
class CopyStats:
    """What a copy did: ``total_bytes = data_bytes + zero_bytes (read, all zeros) +
    hole_bytes (never read)``; ``throughput_mib_s`` is ``total_bytes`` per second."""

    total_bytes: int
    data_bytes: int
    zero_bytes: int
    hole_bytes: int
    seconds: float
    throughput_mib_s: float


# (offset, length, return value, data read or None), as an aio callback queues it.
Result = tuple[int, int, int, bytes | None]


class CopyEngine:
    """The one copy loop of the storage package: byte accounting, progress, cancel,
    SIGTERM, and at most ``window`` aio requests in flight.

    :meth:`run` hands results over as they complete (a sparse copy, or
    writes, where a request overlapping one in flight waits for it);
    :meth:`run_in_order` hands them over in the order of their pieces (a
    stream, a checksum). Both ``submit(offset, length, what)`` requests that
    complete through :meth:`callback` and say whether they issued one.
    Everything but the callbacks runs on the calling thread.
    """

    def __init__(self, op: str, target: str, chunk_size: int, window: int,
                 progress: ProgressCallback | None, cancel: threading.Event | None,
                 align: int = 1) -> None:
        if chunk_size <= 0 or window <= 0 or chunk_size % align:
            multiple = f"a multiple of {align} and " if align > 1 else ""
            raise exception.InvalidArgument(op=op, target=target, detail=(
                f"chunk_size ({chunk_size}) must be {multiple}positive, and window "
                f"({window}) positive"))
        self.op, self.target, self.chunk_size, self.window = op, target, chunk_size, window
        self.progress, self.cancel = progress, cancel
        self.total = self.data = self.zeros = self.holes = self.in_flight = 0
        self.started = time.monotonic()
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._spans: dict[int, int] = {}  # offset -> end of each request in flight

    @property
    def done(self) -> int:
        return self.data + self.zeros + self.holes

    def add(self, nbytes: int, kind: str) -> None:
        """Account ``nbytes`` as ``data``, ``zeros`` or ``holes`` and report progress."""
        if nbytes > 0:
            setattr(self, kind, getattr(self, kind) + nbytes)
            if self.progress is not None:
                self.progress(self.done, self.total)

    def cancelled(self) -> exception.OperationCancelled:
        """Return the error of this copy cancelled now (how far it got included)."""
        return exception.OperationCancelled(op=self.op, target=self.target, done=self.done,
                                            total=self.total)

    def check_cancel(self) -> None:
        """:raises OperationCancelled: the cancel event is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise self.cancelled()

    def sigterm_guard(self) -> SigtermGuard:
        """A SIGTERM in the main thread becomes :meth:`cancelled` until ``disarm()``."""
        return SigtermGuard(self.cancelled)

    def stats(self) -> CopyStats:
        """Return the final stats; an empty copy reports its only progress, (0, 0), here."""
        assert self.done == self.total, (self.done, self.total)
        if self.total == 0 and self.progress is not None:
            self.progress(0, 0)
        seconds = time.monotonic() - self.started
        rate = self.total / (1 << 20) / seconds if seconds > 0 else 0.0
        return CopyStats(self.total, self.data, self.zeros, self.holes, seconds, rate)

    def callback(self, offset: int, length: int) -> Callable[..., None]:
        """Return an ``aio_write``/``aio_read`` callback; it runs on a librbd thread, so it only queues."""
        put = self._results.put
        return lambda completion, data=None: put(
            (offset, length, completion.get_return_value(), data))

    def run(self, pieces: Iterable[tuple[int, int, Any]], submit: Submit,
            handle: Callable[[Result], None]) -> None:
        """Account the holes (``what`` false), ``submit`` the other pieces, ``handle``
        each result as it comes. A piece waits for a free slot and for any request
        in flight that it overlaps. On any error the requests in flight are
        waited for before it propagates.
        """
        try:
            for offset, length, what in pieces:
                self.check_cancel()
                if not what:
                    self.add(length, "holes")
                    continue
                self._wait(self.window - 1, handle, offset, offset + length)
                self._submit(submit, offset, length, what)
            self._wait(0, handle)
        finally:
            self._abandon()

    def run_in_order(self, pieces: Iterable[tuple[int, int, Any]], submit: Submit,
                     deliver: Callable[[int, int, Result | None], None]) -> None:
        """``submit`` the pieces whose ``what`` is true, ``deliver(offset, length, result)``
        every piece in order: ``result`` is None for a hole (``what`` false).

        At most ``window`` pieces wait between their submit and their
        delivery; the next are submitted before one is delivered, so
        requests stay in flight while it is consumed.
        """
        queued: collections.deque[tuple[int, int, Any]] = collections.deque()
        arrived: dict[int, Result] = {}
        source = iter(pieces)

        def fill() -> None:
            while len(queued) < self.window:
                piece = next(source, None)
                if piece is None:
                    return
                offset, length, what = piece
                if what:
                    self._submit(submit, offset, length, what)
                queued.append(piece)

        try:
            fill()
            while queued:
                self.check_cancel()
                offset, length, what = queued.popleft()
                result: Result | None = None
                if what:
                    while offset not in arrived:
                        got = self._take()
                        arrived[got[0]] = got
                    result = arrived.pop(offset)
                fill()
                deliver(offset, length, result)
        finally:
            self._abandon()

    def _submit(self, submit: Submit, offset: int, length: int, what: Any) -> None:
        if submit(offset, length, what):
            self.in_flight += 1
            self._spans[offset] = offset + length

    def _take(self, block: bool = True) -> Result:
        """Return the next result; wait for one (checking the cancel event) if ``block``.

        :raises queue.Empty: none is queued and not ``block``.
        """
        while True:
            try:
                result = (self._results.get(timeout=_POLL_SECONDS) if block
                          else self._results.get_nowait())
            except queue.Empty:
                if not block:
                    raise
                self.check_cancel()
                continue
            self.in_flight -= 1
            self._spans.pop(result[0], None)
            return result

    def _wait(self, until: int, handle: Callable[[Result], None], start: int = 0,
              end: int = 0) -> None:
        """Handle results until at most ``until`` requests are in flight, none of them
        overlapping ``start``-``end``, and none is queued."""
        while True:
            try:
                result = self._take(block=False)
            except queue.Empty:
                if self.in_flight <= until and not (end > start and any(
                        s < end and start < e for s, e in self._spans.items())):
                    return
                result = self._take()
            handle(result)

    def _abandon(self) -> None:
        """Wait for the requests in flight, ignoring results, before the image closes.

        Interrupts meanwhile are re-raised at the end: closing an image under
        live requests would be worse."""
        held: BaseException | None = None
        while self.in_flight:
            try:
                self._results.get()
                self.in_flight -= 1
            except BaseException as err:  # noqa: BLE001 - re-raised below
                held = held or err
        self._spans.clear()
        if held is not None:
            raise held


def aio_error(client: RadosClient, op: str, result: Result, pool: str, image: str,
              snapshot: str | None = None) -> NoReturn:
    """Raise our exception for a failed completion (a short read is an I/O error)."""
    offset, length, ret, _ = result
    err = -ret if ret < 0 else errno.EIO
    client.raise_for_errno(op, err, f"{op} of {offset}~{length} failed", pool=pool,
                           image=image, snapshot=snapshot)


def read_failed(result: Result) -> bool:
    """Whether an ``aio_read`` result is an error or a short read."""
    _, length, ret, data = result
    return ret < 0 or data is None or len(data) != length


def _remove_temp_image(client: RadosClient, pool: str, temp: str, cause: BaseException) -> None:
    """Remove the temporary image; a failure is logged and noted on ``cause``, never hidden."""
    try:
        with client.translate("remove temporary image", pool=pool, image=temp):
            client.rbd.RBD().remove(client.get_ioctx(pool), temp)
    except exception.ImageNotFound:
        pass
    except Exception as err:  # noqa: BLE001 - `cause` is what propagates
        LOG.error("could not remove temporary image %s/%s: %s", pool, temp, err)
        cause.add_note(f"the temporary image {pool}/{temp} could not be removed: {err}")


def import_to_image(client: RadosClient, source: ImportSource, pool: str, name: str, *,
                    size: int | None = None, chunk_size: int = IMPORT_CHUNK_SIZE,
                    window: int = DEFAULT_WINDOW, progress: ProgressCallback | None = None,
                    cancel: threading.Event | None = None,
                    features: int | None = None,
                    prepare: Callable[[Any], None] | None = None) -> CopyStats:
    """Copy a raw file or stream into a new image ``pool/name``; return the :class:`CopyStats`.

    ``source`` is a path (holes found with SEEK_DATA/SEEK_HOLE are never
    read) or a readable binary stream (read in order, no seeking). ``size``
    is the image size: required for a stream, the file's size by default.
    All-zero chunks are not written. ``progress(done, total)`` is called on
    this thread as bytes are accounted (holes and zeros too), up to
    ``(total, total)``. The image is created with ``features`` (None: the
    cluster's defaults) as ``name.importing-<hex>`` and renamed to ``name``
    once written and flushed; on any failure or interrupt it is removed.
    From the main thread a SIGTERM is held until that cleanup is done, then
    re-raised with the previous handler back; other threads leave signals
    alone (Python delivers them to the main thread only): use ``cancel``.
    ``prepare(image)`` runs on the open temporary image before any write (the
    encryption layer formats it there, see :mod:`rbd_driver.storage.encryption`).

    :raises ImageExists: ``pool/name`` exists (checked first, and at the rename).
    :raises OperationCancelled: ``cancel`` was set, or a SIGTERM came and the
        previous handler returned.
    :raises InvalidArgument: bad tuning; a stream without ``size``; ``size``
        below the file's; the source ended before ``size`` bytes.
    :raises OSError: reading the source (e.g. FileNotFoundError).
    :raises RbdDriverError: any librbd error (NoSpace, StorageError...).
    """
    copy = CopyEngine("import", f"{pool}/{name}", chunk_size, window, progress, cancel)
    if client.image_exists(pool, name):
        raise exception.ImageExists(pool=pool, image=name, detail="refusing to overwrite")
    src = Source(source, size, copy.target)
    try:
        copy.total = src.size
        with copy.sigterm_guard() as guard:
            return _import(client, src, pool, name, copy, guard, features, prepare)
    finally:
        src.close()


def _import(client: RadosClient, src: Source, pool: str, name: str, copy: CopyEngine,
            guard: SigtermGuard, features: int | None,
            prepare: Callable[[Any], None] | None = None) -> CopyStats:
    """Create the temporary image, fill, flush and rename it; remove it on any failure."""
    temp = f"{name}.importing-{secrets.token_hex(4)}"
    ioctx = client.get_ioctx(pool)
    zeros = memoryview(bytes(copy.chunk_size))
    created = False
    try:
        created = True  # before the call: an interrupt just after it returns must clean up
        try:
            with client.translate("create image", pool=pool, image=temp):
                client.rbd.RBD().create(ioctx, temp, src.size, features=features)
        except exception.RbdDriverError:
            created = False
            raise
        with client.open_image(pool, temp, op="import") as image:
            if prepare is not None:
                prepare(image)

            def submit(offset: int, length: int, _: Any) -> bool:
                data = src.read(offset, length)
                if data.startswith(zeros[:length]):  # memcmp, no copy
                    copy.add(length, "zeros")
                    return False
                with client.translate("write", pool=pool, image=temp):
                    image.aio_write(data, offset, copy.callback(offset, length))
                return True

            def handle(result: Result) -> None:
                if result[2] < 0:
                    aio_error(client, "write", result, pool, temp)
                copy.add(result[1], "data")

            copy.run(src.pieces(copy.chunk_size), submit, handle)
            with client.translate("flush", pool=pool, image=temp):
                image.flush()
        guard.disarm()  # the commit point: a SIGTERM now waits for the end
        with client.translate("rename", pool=pool, image=name):
            client.rbd.RBD().rename(ioctx, temp, name)
        return copy.stats()
    except BaseException as err:
        if created:
            _remove_temp_image(client, pool, temp, err)
        raise


def export_from_image(client: RadosClient, pool: str, name: str,
                      dest_path: str | os.PathLike[str], *, snapshot: str | None = None,
                      window: int = DEFAULT_WINDOW, chunk_size: int = DEFAULT_CHUNK_SIZE,
                      progress: ProgressCallback | None = None,
                      cancel: threading.Event | None = None,
                      on_open: Callable[[Any], None] | None = None) -> CopyStats:
    """Copy image ``pool/name`` (at ``snapshot``) into a sparse local file; return the :class:`CopyStats`.

    The image is opened read-only. Only the extents librbd reports allocated
    (the parent's too, for a clone) are read, and only their non-zero
    ``SPARSE_BLOCK`` blocks written. The file is built as
    ``dest_path.part-<hex>`` (mode 0600: disks hold private data), fsynced
    and renamed over ``dest_path``; on any failure it is removed and
    ``dest_path`` is left as it was. Window, progress, cancel and SIGTERM
    as for :func:`import_to_image`. ``on_open(image)`` runs on the open image
    first (the encryption layer loads the key there); the whole image is then
    read, not only the extents librbd reports.

    :raises ImageNotFound: / :raises SnapshotNotFound: no such image or snapshot.
    :raises OperationCancelled: ``cancel`` was set, or SIGTERM (as for the import).
    :raises InvalidArgument: bad tuning.
    :raises OSError: creating or writing the local file.
    :raises RbdDriverError: any other librbd error.
    """
    target = f"{pool}/{name}" + (f"@{snapshot}" if snapshot else "")
    copy = CopyEngine("export", target, chunk_size, window, progress, cancel)
    with copy.sigterm_guard() as guard:
        return _export(client, pool, name, snapshot, os.fspath(dest_path), copy, guard, on_open)


def _export(client: RadosClient, pool: str, name: str, snapshot: str | None, dest: str,
            copy: CopyEngine, guard: SigtermGuard,
            on_open: Callable[[Any], None] | None = None) -> CopyStats:
    """Read the allocated extents into a temporary file and rename it; remove it on any failure."""
    zeros = memoryview(bytes(max(copy.chunk_size, SPARSE_BLOCK)))
    with client.open_image(pool, name, snapshot=snapshot, read_only=True,
                           op="export") as image:
        if on_open is not None:
            on_open(image)
        copy.total = size = int(image.size())
        # Through the encryption layer the whole image is read: librbd's
        # extents are those of the ciphertext, shifted by the header.
        extents = (merged(diff_extents(image, size, copy), size) if on_open is None
                   else [(0, size)] if size else [])
        with atomic_file(dest, before_rename=guard.disarm) as (fd, _):
            os.ftruncate(fd, size)  # what is never written reads as zeros, and takes no space

            def handle(result: Result) -> None:
                offset, length, _, data = result
                if read_failed(result):
                    aio_error(client, "read", result, pool, name, snapshot)
                assert data is not None
                written = _write_nonzero(fd, data, offset, zeros)
                copy.add(written, "data")
                copy.add(length - written, "zeros")

            copy.run(pieces(extents, size, copy.chunk_size),
                     submit_reads(client, image, copy, pool, name, snapshot), handle)
    return copy.stats()


def submit_reads(client: RadosClient, image: Any, copy: CopyEngine, pool: str, name: str,
                 snapshot: str | None) -> Submit:
    """The ``submit`` of a :class:`CopyEngine` that reads ``image``."""

    def submit(offset: int, length: int, _: Any) -> bool:
        with client.translate("read", pool=pool, image=name, snapshot=snapshot):
            image.aio_read(offset, length, copy.callback(offset, length))
        return True

    return submit


def diff_extents(image: Any, size: int, copy: CopyEngine, from_snapshot: str | None = None,
                 ) -> list[tuple[int, int, bool]]:
    """Return the sorted ``(offset, length, exists)`` extents ``diff_iterate`` reports
    (the parent's too, for a clone) since ``from_snapshot`` (None: all allocated)."""
    found: list[tuple[int, int, bool]] = []

    def collect(offset: int, length: int, exists: bool) -> None:
        copy.check_cancel()  # what the callback raises, diff_iterate raises
        if length:
            found.append((offset, length, bool(exists)))

    if size:
        image.diff_iterate(0, size, from_snapshot, collect, include_parent=True)
    return sorted(found)


def merged(extents: Iterable[tuple[int, int, bool]], size: int,
           align: int = 1) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` of the existing sorted ``extents``, rounded out to
    ``align`` (within ``size``), merged where they touch or overlap."""
    out: list[tuple[int, int]] = []
    for offset, length, exists in extents:
        if not exists:
            continue
        start = offset - offset % align
        end = min(size, -(-(offset + length) // align) * align)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _write_nonzero(fd: int, data: bytes, offset: int, zeros: memoryview) -> int:
    """pwrite the runs of non-zero ``SPARSE_BLOCK`` blocks of ``data``; return the bytes written."""
    view, written, run = memoryview(data), 0, -1
    for lo in range(0, len(data) + SPARSE_BLOCK, SPARSE_BLOCK):
        hi = min(lo + SPARSE_BLOCK, len(data))
        if lo < len(data) and not data.startswith(zeros[:hi - lo], lo):
            run = lo if run < 0 else run
            continue
        end, pos = min(lo, len(data)), run
        while 0 <= pos < end:  # pwrite may write less than asked
            pos += os.pwrite(fd, view[pos:end], offset + pos)
        written += end - run if run >= 0 else 0
        run = -1
        if lo >= len(data):
            break
    return written
