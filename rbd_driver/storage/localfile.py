# SPDX-License-Identifier: Apache-2.0
"""Local files that appear whole or not at all.

:func:`atomic_file` is the one "write to a temporary file beside the
destination, rename it over the destination when complete, remove it on any
failure" of the package: exports, backups, manifests, qemu-img conversions
and the ``flat`` backend's copies all write through it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator

__all__ = ["atomic_file", "fsync_dir", "temp_name"]


def temp_name(dest: str) -> str:
    """The temporary name a file for ``dest`` is built under: ``dest.part-<hex>``."""
    return f"{dest}.part-{secrets.token_hex(4)}"


def fsync_dir(path: str) -> None:
    """fsync the directory of ``path``, so that a rename into it is durable."""
    with contextlib.suppress(OSError):  # some filesystems refuse a directory fsync
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_file(dest: str, sync: bool = True,
                before_rename: Callable[[], None] | None = None) -> Iterator[tuple[int, str]]:
    """Yield (fd, path) of a new ``dest.part-<hex>`` (mode 0600: disks hold private data).

    When the block ends the file is fsynced (if ``sync``) and closed,
    ``before_rename`` is called (the last moment to stop a cancellation
    guard, say), the file is renamed over ``dest`` and the directory fsynced
    (if ``sync``). On any failure, ^C included, the file is removed and
    ``dest`` is left as it was. Another process's file of the same name is
    never touched (``O_EXCL``). A program such as qemu-img may write to the
    path while the block runs: the fd then only holds the file open.
    """
    temp = temp_name(dest)
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        yield fd, temp
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        if before_rename is not None:
            before_rename()
        os.rename(temp, dest)
        if sync:
            fsync_dir(dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
