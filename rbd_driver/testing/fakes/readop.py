# SPDX-License-Identifier: Apache-2.0
"""The fake ``rados`` read operations: ``ReadOp``, ``ReadOpCtx`` and ``OmapIterator``.

As in librados, ``Ioctx.get_omap_vals(op, ...)`` only adds a step to ``op``
and hands back an :class:`OmapIterator`; ``Ioctx.operate_read_op(op, oid)``
runs every step on one object and only then fills the iterators (empty ones
if the object does not exist). Uses the real bindings would crash on (a
ReadOp never created or already released, iterating before the op ran) raise
``RuntimeError`` here, so the mistake shows up in tests instead of being
caught as a ``rados.Error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rbd_driver.testing.fakes.model import RadosObject

__all__ = ["OSD_MAX_OMAP_ENTRIES_PER_REQUEST", "OmapIterator", "OpCtx", "ReadOp", "ReadOpCtx"]

# osd_max_omap_entries_per_request: the OSD returns at most this many pairs per step.
OSD_MAX_OMAP_ENTRIES_PER_REQUEST = 131072


def check_cython_arg(value: Any, name: str, expected: type, label: str, optional: bool = False) -> None:
    """Raise the TypeError Cython raises for a typed argument of the wrong type."""
    if (value is None and optional) or isinstance(value, expected):
        return
    raise TypeError(f"Argument '{name}' has incorrect type (expected {label}, got {type(value).__name__})")


def check_c_int(value: Any) -> None:
    """Raise what Cython raises converting ``value`` to a C ``int``."""
    if not isinstance(value, int):
        raise TypeError("an integer is required")
    if not -(1 << 31) <= value < (1 << 31):
        raise OverflowError("value too large to convert to int")


class OmapIterator:
    """Fake ``rados.OmapIterator``: yields ``(key: str, value: bytes)`` once its op ran."""

    def __init__(self, ioctx: Any) -> None:
        self.ioctx = ioctx
        self._items: list[tuple[str, bytes]] | None = None
        self._pos = 0

    def __iter__(self) -> OmapIterator:
        return self

    def __next__(self) -> tuple[str, bytes]:
        if self._items is None:
            raise RuntimeError(
                "OmapIterator used before Ioctx.operate_read_op ran its ReadOp (the real binding crashes)"
            )
        if self._pos >= len(self._items):
            raise StopIteration
        item = self._items[self._pos]
        self._pos += 1
        return item

    def _fill(self, items: list[tuple[str, bytes]]) -> None:
        self._items = items
        self._pos = 0


@dataclass
class _OmapGetVals:
    """One ``get_omap_vals`` step of a read op."""

    start_after: str
    filter_prefix: str
    max_return: int
    out: OmapIterator

    def run(self, obj: RadosObject | None) -> None:
        if obj is None:
            self.out._fill([])
            return
        # librados passes max_return on as uint64_t: a negative int means "no limit".
        limit = self.max_return if self.max_return >= 0 else OSD_MAX_OMAP_ENTRIES_PER_REQUEST
        limit = min(limit, OSD_MAX_OMAP_ENTRIES_PER_REQUEST)
        items = [
            (key, bytes(value))
            for key, value in sorted(obj.omap.items())
            if key > self.start_after and key.startswith(self.filter_prefix)
        ]
        self.out._fill(items[:limit])


class ReadOp:
    """Fake ``rados.ReadOp``: steps to run together on one object; needs :meth:`create` first."""

    def __init__(self) -> None:
        self._created = False
        self._steps: list[_OmapGetVals] = []

    def create(self) -> ReadOp:
        self._created = True
        self._steps = []
        return self

    def release(self) -> None:
        self._created = False
        self._steps = []

    def set_flags(self, flags: int = 0) -> None:
        """Set flags of the last step (accepted and ignored)."""
        check_c_int(flags)
        self._require_created()

    def _require_created(self) -> None:
        if not self._created:
            raise RuntimeError("ReadOp used before create() or after release() (the real binding crashes)")

    def _add(self, step: _OmapGetVals) -> None:
        self._require_created()
        self._steps.append(step)

    def _run(self, obj: RadosObject | None) -> None:
        """Run every step on ``obj`` (None: the object does not exist)."""
        self._require_created()
        for step in self._steps:
            step.run(obj)


class OpCtx:
    """Fake ``rados.OpCtx``: ``with`` creates the op and releases it on exit."""

    def create(self) -> Any:  # provided by ReadOp
        raise NotImplementedError

    def release(self) -> None:  # provided by ReadOp
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.create()

    def __exit__(self, type_: Any, msg: Any, traceback: Any) -> Literal[False]:
        self.release()
        return False


class ReadOpCtx(ReadOp, OpCtx):
    """Fake ``rados.ReadOpCtx``: read operation context manager."""


def omap_get_vals_step(
    start_after: str | None, filter_prefix: str | None, max_return: int, out: OmapIterator
) -> _OmapGetVals:
    """Return the step ``Ioctx.get_omap_vals`` adds (``None``/``""``: no bound, no filter)."""
    return _OmapGetVals(start_after or "", filter_prefix or "", max_return, out)
