# SPDX-License-Identifier: Apache-2.0
"""Turn a SIGTERM into a clean, cancelled copy instead of a half-written one.

Only the main thread can set signal handlers, so the guard does nothing in
other threads; their callers cancel through an event instead.

The guard is opt-in: a library must not take over a process's signals
(inside a service, oslo.service owns them), so it does nothing until
:func:`enable` is called. The ``rbd-driver`` command enables it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SigtermGuard", "Terminated", "enable", "enabled"]

_state = {"enabled": False}


def enable(on: bool = True) -> None:
    """Let copies turn a SIGTERM into a clean cancel (off by default)."""
    _state["enabled"] = on


def enabled() -> bool:
    """Whether :class:`SigtermGuard` installs its handler."""
    return _state["enabled"]


class Terminated(BaseException):
    """Raised by the temporary SIGTERM handler; not an Exception, so that
    ``except Exception`` in a progress callback does not swallow it."""


class SigtermGuard:
    """In the main thread, turn a SIGTERM into :class:`Terminated`, and that into
    the exception ``on_terminated()`` returns (raised from it) when the block ends.

    After :meth:`disarm` (the commit point, the rename) a SIGTERM only waits.
    On exit the previous handler is restored and a SIGTERM received is raised
    again, so its disposition acts after the cleanup (by default the process
    ends). Elsewhere, or unless :func:`enable` was called, it does nothing.
    """

    def __init__(self, on_terminated: Callable[[], BaseException]) -> None:
        self._on_terminated, self.received, self.armed = on_terminated, False, False
        self._previous: Any = None

    def __enter__(self) -> SigtermGuard:
        previous = signal.getsignal(signal.SIGTERM)
        if _state["enabled"] and threading.current_thread() is threading.main_thread() and \
                previous not in (signal.SIG_IGN, None):
            signal.signal(signal.SIGTERM, self._handle)
            self._previous, self.armed = previous, True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self.armed:  # only once: a second SIGTERM must not break the cleanup
            self.armed = False
            raise Terminated()

    def disarm(self) -> None:
        """Past the commit point: a SIGTERM from now on only waits for the block's end."""
        self.armed = False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        try:
            self.armed = False
        finally:
            if self._previous is not None:
                signal.signal(signal.SIGTERM, self._previous)
                if self.received:
                    signal.raise_signal(signal.SIGTERM)
        if isinstance(exc, Terminated):
            raise self._on_terminated() from exc
