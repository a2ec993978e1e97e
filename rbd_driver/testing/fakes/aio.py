# SPDX-License-Identifier: Apache-2.0
"""Asynchronous image I/O: the fake ``rbd.Completion`` and how an ``aio_*`` call runs.

Like librbd, an aio call never raises for a failed operation: the error
arrives as a negative ``get_return_value()`` in the callback, and what the
callback raises is re-raised by ``wait_for_complete_and_cb()``. The cluster's
``aio_mode`` picks when the operation runs: ``"sync"`` before the ``aio_*``
call returns (deterministic tests), ``"thread"`` on a thread of its own (to
exercise code that waits for completions).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rbd_driver.testing.fakes.image import Image

__all__ = ["Completion", "submit"]

# What an aio operation returns: the return value, and the callback's extra arguments.
Outcome = tuple[int, tuple[Any, ...]]


class Completion:
    """Fake ``rbd.Completion``: the result of an ``Image.aio_*`` call."""

    def __init__(self, image: Image, oncomplete: Callable[..., Any] | None) -> None:
        self.image = image
        self.oncomplete = oncomplete
        self._return_value = 0
        self._complete = False
        self._done = threading.Event()
        self._exc: BaseException | None = None

    def is_complete(self) -> bool:
        """Return whether the operation completed (its callback may still run)."""
        return self._complete

    def get_return_value(self) -> int:
        """Return the operation's result: bytes read, 0, or a negative errno."""
        return self._return_value

    def wait_for_complete_and_cb(self) -> None:
        """Wait for the operation and its callback; re-raise what the callback raised."""
        self._done.wait()
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc

    def _finish(self, return_value: int, cb_args: tuple[Any, ...]) -> None:
        self._return_value = return_value
        self._complete = True
        try:
            if self.oncomplete is not None:
                self.oncomplete(self, *cb_args)
        except BaseException as exc:  # kept for wait_for_complete_and_cb, like the real one
            self._exc = exc
        finally:
            self.image._pending.pop(id(self), None)
            self._done.set()


def submit(
    image: Image,
    name: str,
    oncomplete: Callable[..., Any] | None,
    op: Callable[[], Outcome],
    error_args: tuple[Any, ...],
) -> Completion:
    """Run ``op`` as aio call ``name`` of ``image``; return its Completion.

    An exception of ``op`` (or one injected with ``fail_next``) becomes
    ``-errno``, and the callback gets ``error_args`` instead of ``op``'s.
    A closed image raises at once, as the real binding does.
    """
    cluster = image._cluster
    with cluster._lock:
        injected = cluster.on_call(name, raise_failure=False)
        image._live()
        completion = Completion(image, oncomplete)
        image._pending[id(completion)] = completion

    def run() -> None:
        with cluster._lock:
            try:
                if injected is not None:
                    raise injected
                result, args = op()
            except BaseException as exc:
                result, args = -(getattr(exc, "errno", None) or errno.EIO), error_args
        # Outside the lock: a callback that waits for another thread's call must not deadlock.
        completion._finish(result, args)

    if cluster.aio_mode == "thread":
        threading.Thread(target=run, name=f"fake-rbd-{name}", daemon=True).start()
    else:
        run()
    return completion
