# SPDX-License-Identifier: Apache-2.0
"""Ceph's ``rbd export-diff`` stream, format v1: a writer and a strict reader.

The layout, from Ceph's ``doc/dev/rbd-diff.rst`` (integers little-endian)::

    "rbd diff v1\\n"                       banner
    'f' le32 length, name                 from-snapshot (absent: from the beginning)
    't' le32 length, name                 to-snapshot
    's' le64 size                         image size at the to-snapshot
    'w' le64 offset, le64 length, data    these bytes changed
    'z' le64 offset, le64 length          this range now reads as zeros
    'e'                                   end

Metadata records (``f``, ``t``, ``s``) come before every data record. Ceph's
``rbd import-diff`` applies such a stream onto an image that has the
from-snapshot, and then creates the to-snapshot; this module writes exactly
what ``rbd export-diff`` writes for the same extents, so either tool can
restore the other's files.

The reader refuses anything else: a wrong banner, an unknown or misplaced
tag, a duplicate metadata record, an extent past the image size, bytes after
the end record, or a stream that stops early. Every refusal is a
:class:`~rbd_driver.exception.BackupCorrupt` naming the file and the byte
offset. Both sides feed a :class:`Checksum` of the exact bytes of the stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import zlib
from collections.abc import Iterator
from typing import IO

from rbd_driver import exception
from rbd_driver.storage.datapath import DEFAULT_CHUNK_SIZE, SPARSE_BLOCK
from rbd_driver.storage.sources import file_data, pieces

__all__ = ["BANNER", "CHECKSUMS", "Checksum", "ContentChecksum", "DiffHeader", "DiffReader",
           "DiffWriter", "DiffWrite", "DiffZero", "file_checksum", "raw_content_checksum"]

BANNER = b"rbd diff v1\n"
CHECKSUMS = ("crc32", "sha256")
MAX_NAME = 4096  # rbd import-diff's limit too: a longer name is garbage
_FROM, _TO, _SIZE, _WRITE, _ZERO, _END = b"f", b"t", b"s", b"w", b"z", b"e"
_BLOCK_ZEROS = memoryview(bytes(SPARSE_BLOCK))


class Checksum:
    """A running checksum: ``crc32`` (zlib, fast) or ``sha256``.

    :raises ValueError: an unknown algorithm.
    """

    def __init__(self, algorithm: str) -> None:
        if algorithm not in CHECKSUMS:
            raise ValueError(f"unknown checksum {algorithm!r}; known: {', '.join(CHECKSUMS)}")
        self.algorithm = algorithm
        self._crc = 0
        self._sha = hashlib.sha256() if algorithm == "sha256" else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def hexdigest(self) -> str:
        """Return the digest so far, as lowercase hex (8 digits for crc32)."""
        return self._sha.hexdigest() if self._sha is not None else f"{self._crc:08x}"


class ContentChecksum:
    """The checksum of a raw image's *content*, whatever holds its zeros.

    It covers the image size, then each non-zero ``SPARSE_BLOCK``-aligned
    block as (offset, bytes), in order: a hole and written zeros give the
    same value, so it is computed from a snapshot while a backup streams,
    and from the backup file (skipping its holes) when verifying it.
    :meth:`feed` takes data at ``SPARSE_BLOCK``-aligned, increasing offsets.
    """

    def __init__(self, algorithm: str, size: int) -> None:
        self._sum = Checksum(algorithm)
        self._sum.update(size.to_bytes(8, "little"))

    def feed(self, offset: int, data: bytes) -> list[tuple[int, int]]:
        """Checksum ``data`` at ``offset``; return its non-zero runs as (start, end) in ``data``."""
        view, runs = memoryview(data), list[tuple[int, int]]()
        for lo in range(0, len(view), SPARSE_BLOCK):
            block = view[lo:lo + SPARSE_BLOCK]
            if data.startswith(_BLOCK_ZEROS[:len(block)], lo):  # memcmp, no copy
                continue
            self._sum.update((offset + lo).to_bytes(8, "little"))
            self._sum.update(block)
            if runs and runs[-1][1] == lo:
                runs[-1] = (runs[-1][0], lo + len(block))
            else:
                runs.append((lo, lo + len(block)))
        return runs

    def hexdigest(self) -> str:
        return self._sum.hexdigest()


@dataclasses.dataclass(frozen=True)
class DiffHeader:
    """The metadata of a stream: snapshots it goes from and to, and the final size."""

    size: int
    to_snap: str | None
    from_snap: str | None = None


@dataclasses.dataclass(frozen=True)
class DiffWrite:
    """Bytes to write at ``offset`` (a long ``w`` record comes in several pieces)."""

    offset: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class DiffZero:
    """A range that now reads as zeros."""

    offset: int
    length: int


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


class DiffWriter:
    """Write a v1 stream to a binary file, in order, checksumming every byte.

    Call :meth:`header` once, then :meth:`write` / :meth:`zero` in the order
    the records should appear, then :meth:`end`. ``bytes_written`` and
    ``checksum`` describe the stream so far.
    """

    def __init__(self, out: IO[bytes], checksum: str = "crc32") -> None:
        self._out = out
        self.checksum = Checksum(checksum)
        self.bytes_written = 0
        self._state = "new"

    def _emit(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:  # a raw file may write less than asked
            count = self._out.write(view)
            count = len(view) if count is None else count
            self.checksum.update(view[:count])
            self.bytes_written += count
            view = view[count:]

    def _expect(self, state: str, what: str) -> None:
        if self._state != state:
            raise ValueError(f"{what} after {self._state}")

    def header(self, size: int, to_snap: str | None, from_snap: str | None = None) -> None:
        """Write the banner and the metadata records."""
        self._expect("new", "header")
        parts = [BANNER]
        for tag, name in ((_FROM, from_snap), (_TO, to_snap)):
            if name is not None:
                raw = name.encode()
                if not raw or len(raw) > MAX_NAME:
                    raise ValueError(f"snapshot name {name!r} must be 1 to {MAX_NAME} bytes")
                parts += [tag, _u32(len(raw)), raw]
        parts += [_SIZE, _u64(size)]
        self._emit(b"".join(parts))
        self._state = "data"

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write a ``w`` record holding ``data`` at ``offset``."""
        self._expect("data", "data record")
        self._emit(_WRITE + _u64(offset) + _u64(len(data)))
        self._emit(data)

    def zero(self, offset: int, length: int) -> None:
        """Write a ``z`` record: ``length`` bytes at ``offset`` now read as zeros."""
        self._expect("data", "zero record")
        self._emit(_ZERO + _u64(offset) + _u64(length))

    def end(self) -> None:
        """Write the end record; nothing may follow."""
        self._expect("data", "end record")
        self._emit(_END)
        self._state = "end"


class DiffReader:
    """Read a v1 stream strictly; see the module docstring for what is refused.

    :param stream: the binary stream, at its start.
    :param path: the file's name, for error messages.
    :param checksum: algorithm of :attr:`checksum`, fed every byte read.
    :param max_piece: longest :class:`DiffWrite` yielded; longer ``w`` records
        are split, so memory stays bounded whatever the stream holds.
    """

    def __init__(self, stream: IO[bytes], path: str, checksum: str = "crc32",
                 max_piece: int = 4 << 20) -> None:
        self._in, self.path, self.max_piece = stream, path, max_piece
        #: The running checksum of every byte read so far.
        self.checksum = Checksum(checksum)
        self.position = 0
        self._pending: bytes | None = None
        self.header = self._read_header()

    def _corrupt(self, detail: str) -> exception.BackupCorrupt:
        return exception.BackupCorrupt(path=self.path, detail=f"{detail} (at byte {self.position})")

    def _read(self, count: int, what: str) -> bytes:
        parts, got = [], 0
        while got < count:
            part = self._in.read(count - got)
            if not part:
                raise self._corrupt(f"truncated: the stream ends inside {what}, "
                                    f"{count - got} more bytes expected")
            parts.append(part)
            got += len(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.checksum.update(data)
        self.position += count
        return data

    def _name(self, what: str) -> str:
        length = int.from_bytes(self._read(4, what), "little")
        if not 0 < length <= MAX_NAME:
            raise self._corrupt(f"{what} has an impossible length {length}")
        try:
            return self._read(length, what).decode()
        except UnicodeDecodeError:
            raise self._corrupt(f"{what} is not UTF-8") from None

    def _read_header(self) -> DiffHeader:
        banner = self._in.read(len(BANNER))
        if banner != BANNER:
            raise exception.BackupCorrupt(
                path=self.path, detail=f"not an rbd diff v1 stream (starts with {banner[:16]!r})")
        self.checksum.update(banner)
        self.position = len(BANNER)
        size: int | None = None
        snaps: dict[bytes, str] = {}
        while True:
            tag = self._read(1, "a record tag")
            if tag in (_FROM, _TO, _SIZE):
                if tag in snaps or (tag == _SIZE and size is not None):
                    raise self._corrupt(f"duplicate {tag.decode()!r} record")
                if tag == _SIZE:
                    size = int.from_bytes(self._read(8, "the size"), "little")
                else:
                    snaps[tag] = self._name("the from-snapshot" if tag == _FROM
                                            else "the to-snapshot")
                continue
            if size is None:
                raise self._corrupt("no size record before the data")
            self._pending = tag
            return DiffHeader(size=size, to_snap=snaps.get(_TO), from_snap=snaps.get(_FROM))

    def records(self) -> Iterator[DiffWrite | DiffZero]:
        """Yield the data records in stream order, up to the end record.

        :raises BackupCorrupt: anything out of place, or the stream stops early.
        """
        size = self.header.size
        while True:
            tag = self._pending if self._pending is not None else self._read(1, "a record tag")
            self._pending = None
            if tag == _END:
                if self._in.read(1):
                    raise self._corrupt("bytes follow the end record")
                return
            if tag not in (_WRITE, _ZERO):
                label = "metadata record after data" if tag in (_FROM, _TO, _SIZE) else "tag"
                raise self._corrupt(f"unexpected {label} {tag!r}")
            raw = self._read(16, f"a {tag.decode()!r} record")
            offset = int.from_bytes(raw[:8], "little")
            length = int.from_bytes(raw[8:], "little")
            if offset + length > size:
                raise self._corrupt(f"extent {offset}~{length} lies past the image size {size}")
            if tag == _ZERO:
                yield DiffZero(offset, length)
                continue
            done = 0
            while done < length:
                piece = min(self.max_piece, length - done)
                yield DiffWrite(offset + done, self._read(piece, "a 'w' record's data"))
                done += piece


def file_checksum(path: str, algorithm: str, cancel: threading.Event | None = None) -> str:
    """Return the checksum of every byte of the file ``path``."""
    digest = Checksum(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(DEFAULT_CHUNK_SIZE):
            if cancel is not None and cancel.is_set():
                raise exception.OperationCancelled(op="verify", target=path, done=0, total=0)
            digest.update(chunk)
    return digest.hexdigest()


def raw_content_checksum(path: str, algorithm: str) -> tuple[str, int]:
    """Return (content checksum, size) of the raw file ``path``, reading only its data extents."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        digest = ContentChecksum(algorithm, size)
        blocks: list[tuple[int, int]] = []
        for start, end in file_data(fd, size):
            start -= start % SPARSE_BLOCK
            end = min(size, -(-end // SPARSE_BLOCK) * SPARSE_BLOCK)
            if blocks and start <= blocks[-1][1]:
                blocks[-1] = (blocks[-1][0], max(end, blocks[-1][1]))
            else:
                blocks.append((start, end))
        for offset, length, is_data in pieces(blocks, size, DEFAULT_CHUNK_SIZE):
            if is_data:
                digest.feed(offset, os.pread(fd, length, offset))
        return digest.hexdigest(), size
    finally:
        os.close(fd)
