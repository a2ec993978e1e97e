# SPDX-License-Identifier: Apache-2.0
"""The fake ``rados`` write operations: ``WriteOp`` and ``WriteOpCtx``.

As in librados, the steps added to a :class:`WriteOp` (``new``,
``write_full``, ``remove``) do nothing by themselves;
``Ioctx.operate_write_op(op, oid)`` runs them on one object, all or nothing:
if a step fails (``new`` with ``LIBRADOS_CREATE_EXCLUSIVE`` on an object
that exists, ``remove`` of one that does not) none of them took effect. An
op used before ``create()`` or after ``release()`` raises ``RuntimeError``
(the real binding would crash).
"""

from __future__ import annotations

from dataclasses import dataclass

from rbd_driver.testing.fakes.errors import check_bytes
from rbd_driver.testing.fakes.readop import OpCtx, check_c_int

__all__ = ["LIBRADOS_CREATE_EXCLUSIVE", "LIBRADOS_CREATE_IDEMPOTENT", "WriteOp", "WriteOpCtx", "WriteStep"]

LIBRADOS_CREATE_EXCLUSIVE = 1
LIBRADOS_CREATE_IDEMPOTENT = 0


@dataclass(frozen=True)
class WriteStep:
    """One step of a write op: ``kind`` is ``new``, ``write_full`` or ``remove``."""

    kind: str
    exclusive: bool = False
    data: bytes = b""


class WriteOp:
    """Fake ``rados.WriteOp``: steps to run together on one object; needs :meth:`create` first."""

    def __init__(self) -> None:
        self._created = False
        self._steps: list[WriteStep] = []

    def create(self) -> WriteOp:
        self._created = True
        self._steps = []
        return self

    def release(self) -> None:
        self._created = False
        self._steps = []

    def _add(self, step: WriteStep) -> None:
        if not self._created:
            raise RuntimeError("WriteOp used before create() or after release() (the real binding crashes)")
        self._steps.append(step)

    def new(self, exclusive: int | None = None) -> None:
        """Create the object; with ``LIBRADOS_CREATE_EXCLUSIVE``, fail if it exists."""
        if exclusive is None:
            raise TypeError("an integer is required")  # what the binding's cast of None raises
        check_c_int(exclusive)
        self._add(WriteStep("new", exclusive=bool(exclusive)))

    def write_full(self, to_write: bytes) -> None:
        """Replace the object's content (creating it)."""
        check_bytes(to_write, "to_write")
        self._add(WriteStep("write_full", data=bytes(to_write)))

    def remove(self) -> None:
        """Remove the object; fails with ObjectNotFound if it does not exist."""
        self._add(WriteStep("remove"))

    def set_flags(self, flags: int = 0) -> None:
        """Set flags of the last step (accepted and ignored)."""
        check_c_int(flags)
        if not self._created:
            raise RuntimeError("WriteOp used before create() or after release() (the real binding crashes)")

    @property
    def steps(self) -> list[WriteStep]:
        """What :meth:`Ioctx.operate_write_op` runs."""
        if not self._created:
            raise RuntimeError("WriteOp used before create() or after release() (the real binding crashes)")
        return list(self._steps)


class WriteOpCtx(WriteOp, OpCtx):
    """Fake ``rados.WriteOpCtx``: write operation context manager."""
