# SPDX-License-Identifier: Apache-2.0
"""Text for people: human sizes, aligned tables, key/value lines, the progress bar.

``--json`` never comes here: it prints the handler's result as it is. The
text forms follow the Ceph tools operators know: sizes in binary units as
``rbd ls -l`` and ``ceph df`` print them (``64 MiB``, ``1.2 GiB``), tables
with an upper-case header, one ``key: value`` line per field.

The progress bar stays hand-written rather than ``tqdm``: it is the only
progress output of the command, needs nothing but bytes done and total, and
``tqdm`` would become a dependency of every compute host that installs the
library for a feature that only this command line uses.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["SIZE_KEYS", "fields", "human_size", "progress_bar", "set_progress", "table"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# Keys of the results whose values are byte counts.
SIZE_KEYS = frozenset({"size", "bytes", "data_bytes", "file_size", "provisioned", "used",
                       "stored", "max_avail", "total", "free"})


def human_size(value: int | float | None) -> str:
    """Return a byte count in binary units, as Ceph's tools print it (``rbd ls -l``).

    Ceph's own rule (``byte_u_t``), so that a size reads the same here and in
    ``rbd``: the largest unit under which the value is at least 1; an exact
    multiple of it without fraction (``64 MiB``, ``1024 B`` is ``1 KiB``);
    otherwise two, one or no decimals, the most that keep ``number unit``
    within seven characters (``1.5 GiB``, ``12 MiB``), so one byte short of
    1 MiB reads ``1024 KiB``.
    """
    if value is None:
        return "-"
    value = int(value)
    whole, index = abs(value), 0
    while whole >= 1024 and index < len(_UNITS) - 1:
        whole //= 1024
        index += 1
    unit = 1 << (10 * index)
    if index == 0 or value % unit == 0:
        return f"{value // unit} {_UNITS[index]}"
    for precision in (2, 1, 0):
        text = f"{value / unit:.{precision}f} {_UNITS[index]}"
        if len(text) <= 7:
            break
    return text


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
          right: Iterable[int] = ()) -> list[str]:
    """Return an aligned table: the header, then one line per row.

    Columns are two spaces apart; the columns numbered in ``right`` (sizes,
    counts) are aligned right, the others left. No line ends in spaces.
    """
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = set(right)
    lines = []
    for row in cells:
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return lines


def _scalar(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in SIZE_KEYS and isinstance(value, (int, float)):
        return human_size(value)
    if key == "seconds":
        return f"{value} s"
    if key == "ms":
        return f"{value} ms"
    return str(value)


def fields(doc: Mapping[str, Any], indent: str = "") -> list[str]:
    """Return ``key: value`` lines of a result, values aligned.

    Byte counts (:data:`SIZE_KEYS`) read as human sizes, a list of plain
    values as one comma-separated value, and a nested mapping or a list of
    mappings as indented lines under its key: never a JSON dict in the text.
    """
    width = max((len(key) for key in doc), default=0) + 2
    lines: list[str] = []
    for key, value in doc.items():
        label = f"{key.replace('_', ' ')}:"
        if isinstance(value, Mapping) and value:
            lines.append(f"{indent}{label}")
            lines += fields(value, indent + "  ")
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
            lines.append(f"{indent}{label}")
            for item in value:
                sub = fields(item, indent + "    ") if isinstance(item, Mapping) else [
                    f"{indent}    {item}"]
                lines.append(f"{indent}  - {sub[0].lstrip()}")
                lines += sub[1:]
        elif isinstance(value, (list, tuple, Mapping)):
            text = ", ".join(str(v) for v in value) or "-"
            lines.append(f"{indent}{label:<{width}}{text}")
        else:
            lines.append(f"{indent}{label:<{width}}{_scalar(key, value)}")
    return lines


# Off with ``--no-progress``, whatever a handler asks.
_progress = {"enabled": True}


def set_progress(enabled: bool) -> None:
    """Allow (the default) or forbid every progress bar of this process."""
    _progress["enabled"] = enabled


def progress_bar(enabled: bool, stream: TextIO | None = None,
                 unit: str | None = None) -> Callable[[int, int], None] | None:
    """A progress bar on stderr when it is a terminal, else nothing (``None``).

    It counts bytes, or with ``unit`` (``"disks"``) things, as ``3 of 10 disks``.
    """
    out = stream or sys.stderr
    if not enabled or not _progress["enabled"] or not out.isatty():
        return None
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        left = (total - done) / rate if rate and done < total else 0.0
        bar = "#" * int(share * 30)
        if unit:
            out.write(f"\r[{bar:<30}] {share:6.1%} {done} of {total} {unit} "
                      f"{int(left) // 60:02d}:{int(left) % 60:02d} left ")
        else:
            out.write(f"\r[{bar:<30}] {share:6.1%} {human_size(done):>9} of "
                      f"{human_size(total)} {human_size(rate):>9}/s "
                      f"{int(left) // 60:02d}:{int(left) % 60:02d} left ")
        if done >= total:
            out.write("\n")
        out.flush()

    return show
