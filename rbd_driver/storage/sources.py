# SPDX-License-Identifier: Apache-2.0
"""Where the data of an import comes from: a file's data extents or a stream.

A file is read at offsets, and its holes are found with SEEK_DATA/SEEK_HOLE
and never read. A stream (a pipe) is read in order, exactly ``size`` bytes;
one with a ``data_extents()`` method gives only the bytes of those extents.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from typing import NoReturn, Protocol

from rbd_driver import exception

__all__ = ["ImportSource", "Source", "Stream", "file_data", "pieces"]


class Stream(Protocol):
    """What an import reads a stream with: ``read(n)``, in order (a pipe, any
    ``IO[bytes]``). It may also have ``data_extents()`` (see the module docstring)."""

    def read(self, n: int, /) -> bytes | None: ...


ImportSource = str | os.PathLike[str] | Stream


def pieces(extents: Iterable[tuple[int, int]], size: int,
            chunk: int) -> Iterator[tuple[int, int, bool]]:
    """Yield ``(offset, length, is_data)`` covering ``[0, size)``: the gaps are holes, and
    data is split at multiples of ``chunk`` so that no request straddles two objects."""
    pos = 0
    for start, end in extents:
        if start > pos:
            yield pos, start - pos, False
        pos = max(start, pos)
        while pos < end:
            stop = min(end, (pos // chunk + 1) * chunk)
            yield pos, stop - pos, True
            pos = stop
    if pos < size:
        yield pos, size - pos, False


def file_data(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield the ``(start, end)`` data extents of a file, from SEEK_DATA/SEEK_HOLE
    (Linux); where the filesystem lacks them, the whole file is data."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole after pos
                return
            if pos == 0 and err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield 0, size
                return
            raise
        if start >= size:
            return
        pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, pos


class Source:
    """A file (pread at offsets, holes skipped) or a stream (read in order, exactly ``size`` bytes)."""

    def __init__(self, source: ImportSource, size: int | None, target: str) -> None:
        self._target, self._fd = target, -1
        self._stream: Stream | None = None
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            self._fd = os.open(self.name, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.file_size = os.lseek(self._fd, 0, os.SEEK_END)  # st_size is 0 for devices
                self.size = self.file_size if size is None else size
                if self.size < self.file_size:
                    self._invalid(f"size {size} is smaller than {self.name} "
                                  f"({self.file_size} bytes)")
            except BaseException:
                self.close()
                raise
        elif size is None:
            self._invalid("size is required for a stream")
        else:
            self.name, self._stream, self.size = repr(source), source, size

    def _invalid(self, detail: str) -> NoReturn:
        raise exception.InvalidArgument(op="import", target=self._target, detail=detail)

    def pieces(self, chunk: int) -> Iterator[tuple[int, int, bool]]:
        # A stream may know its data extents (``data_extents()``: sorted (start, end));
        # then it yields only their bytes, in order, and the gaps are holes.
        if self._fd >= 0:
            extents: Iterable[tuple[int, int]] = file_data(self._fd, self.file_size)
        elif self._stream is not None and hasattr(self._stream, "data_extents"):
            extents = self._stream.data_extents()
        else:
            extents = [(0, self.size)]
        return pieces(extents, self.size, chunk)

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes at ``offset`` (the next ones, for a stream).
        :raises InvalidArgument: the source ended early (it shrank, or a short stream)."""
        parts: list[bytes] = []
        got = 0
        while got < length:
            if self._stream is None:
                part = os.pread(self._fd, length - got, offset + got)
            else:
                part = self._stream.read(length - got) or b""  # a raw stream may return less
            if not part:
                self._invalid(f"{self.name} ended at {offset + got} of {self.size} bytes")
            parts.append(part)
            got += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
