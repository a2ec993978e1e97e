# SPDX-License-Identifier: Apache-2.0
"""One line for an error, in the command's words rather than the library's.

The library speaks to Python callers (``force=True``), copies through
temporary files (``disk.raw.part-1a2b3c4d``) and passes on qemu-img's and
the OS's own words. The command line translates: flags for keywords, the
user's paths for temporary ones, and the cause behind qemu-img's "Operation
not permitted" (the cephx caps).
"""

from __future__ import annotations

import re

__all__ = ["CommandError", "one_line"]


class CommandError(Exception):
    """A refusal of the command itself (exit 1, this message on one line)."""


# Library keyword -> the flag the command takes for it.
_FLAGS = (
    (re.compile(r"\bpass force=True\b"), "pass --force"),
    (re.compile(r"\bforce=True\b"), "--force"),
    (re.compile(r"\bflatten_images=True\b"), "--flatten-images"),
    (re.compile(r"\ballow_snapshots=True\b"), "--allow-snapshots"),
)
# A temporary image or file of a copy: NAME.restoring-, .importing-, .part-XXXXXXXX.
_TEMP = re.compile(r"(\S+?)(?:\.(?:restoring|importing|part)-[0-9a-f]{6,})+")
_RBD_POOL = re.compile(r"\brbd:([^/:\s]+)/")
_QEMU_DENIED = re.compile(r"qemu-img.*(Operation not permitted|Permission denied)", re.S)


def one_line(err: BaseException, user: str | None = None) -> str:
    """The first line of ``err``'s message, translated for the command line."""
    if isinstance(err, OSError) and err.strerror and str(err).startswith("[Errno"):
        where = err.filename
        text = f"{where}: {err.strerror}" if where else err.strerror
    else:
        text = str(err).strip()
        text = text.splitlines()[0] if text else type(err).__name__
    for pattern, flag in _FLAGS:
        text = pattern.sub(flag, text)
    denied = _QEMU_DENIED.search(str(err))
    if denied:
        # qemu-img names a temporary image in a long rbd: spec; say what it means.
        who = f"client.{user}" if user else "the cephx user"
        pool = _RBD_POOL.search(str(err))
        where = f"pool {pool.group(1)}" if pool else "the target pool"
        text = (f"{who} lacks cephx caps to create images in {where} (qemu-img: "
                f"{denied.group(1)}); next: write to a pool it may write to, or compare "
                f"'ceph auth get {who}' with the provisioning guide's caps")
    return _TEMP.sub(r"\1", text)
