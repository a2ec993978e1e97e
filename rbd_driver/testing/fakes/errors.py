# SPDX-License-Identifier: Apache-2.0
"""What the fakes raise: the exception classes of the real ``rados`` and ``rbd`` modules.

:class:`RadosErrors` and :class:`RbdErrors` hold real exception classes with
the real names, constructors, message prefixes and inheritance (pacific,
16.2), never MagicMocks, so ``except rbd.ImageNotFound`` in the code under
test behaves as it would against librbd. :func:`rados_error` and
:func:`rbd_error` pick the class librados/librbd raise for an errno, and the
``check_*`` helpers raise the TypeErrors the Cython bindings raise for
arguments of the wrong type.
"""

from __future__ import annotations

import errno
from typing import Any, cast

__all__ = [
    "RadosErrors",
    "RbdErrors",
    "RADOS_EXCEPTIONS",
    "RBD_EXCEPTIONS",
    "rados_error",
    "rbd_error",
    "instantiate",
    "check_str",
    "check_uint",
    "check_bytes",
]


def _error_init(self: Any, message: str, errno: int | None = None) -> None:
    """``(message, errno=None)`` constructor shared by the OSError-style errors."""
    self._raw_message = message
    prefix = type(self)._prefix
    Exception.__init__(self, f"{prefix} ({message})" if prefix else message)
    self.errno = errno


def _error_str(self: Any) -> str:
    msg = Exception.__str__(self)
    return msg if self.errno is None else f"[errno {self.errno}] {msg}"


def _error_reduce(self: Any) -> tuple[Any, ...]:
    # args holds the prefixed message; pickling must rebuild from the raw one.
    return (type(self), (self._raw_message, self.errno))


class RadosErrors:
    """The exception classes of the fake ``rados`` module."""

    class Error(Exception):
        """Base class of every rados error."""

        _prefix = ""
        _raw_message: str
        errno: int | None
        __init__ = _error_init
        __str__ = _error_str
        __reduce__ = _error_reduce

    class OSError(Error):
        """Errors carrying an errno from librados."""

    class PermissionError(OSError):
        _prefix = "RADOS permission error"

    class PermissionDeniedError(OSError):
        _prefix = "RADOS permission denied"

    class ObjectNotFound(OSError):
        _prefix = "RADOS object not found"

    class NoData(OSError):
        _prefix = "RADOS no data"

    class ObjectExists(OSError):
        _prefix = "RADOS object exists"

    class ObjectBusy(OSError):
        _prefix = "RADOS object busy"

    class IOError(OSError):
        _prefix = "RADOS I/O error"

    class NoSpace(OSError):
        _prefix = "RADOS no space"

    class NotConnected(OSError):
        _prefix = "RADOS not connected"

    class ConnectionShutdown(OSError):
        _prefix = "RADOS connection was shutdown"

    class TimedOut(OSError):
        _prefix = "RADOS timed out"

    class InterruptedOrTimeoutError(OSError):
        _prefix = "RADOS interrupted or timeout"

    class InProgress(Error):
        _prefix = "RADOS in progress error"

    class IsConnected(Error):
        _prefix = "RADOS is connected error"

    class InvalidArgumentError(Error):
        _prefix = "RADOS invalid argument"

    class LogicError(Error):
        _prefix = "RADOS logic error"

    class RadosStateError(Error):
        _prefix = "RADOS rados state"

    class IoctxStateError(Error):
        _prefix = "RADOS Ioctx state error"

    class ObjectStateError(Error):
        _prefix = "RADOS object state error"

    class ExtendMismatch(Error):
        """A compare-extent mismatch; takes ``(message, errno, offset)``."""

        _prefix = "object content does not match"

        def __init__(self, message: str, errno: int | None, offset: int) -> None:
            _error_init(self, message, errno)
            self.offset = offset

        def __reduce__(self) -> tuple[Any, ...]:
            return (type(self), (self._raw_message, self.errno, self.offset))


class RbdErrors:
    """The exception classes of the fake ``rbd`` module.

    As in the real module, ``Error`` is a plain ``Exception``; only
    ``OSError`` and its subclasses take ``(message, errno=None)``.
    """

    class Error(Exception):
        """Base class of every rbd error."""

    class OSError(Error):
        """Errors carrying an errno from librbd."""

        _prefix = ""
        _raw_message: str
        errno: int | None
        __init__ = _error_init
        __str__ = _error_str
        __reduce__ = _error_reduce

    class PermissionError(OSError):
        _prefix = "RBD permission error"

    class ImageNotFound(OSError):
        _prefix = "RBD image not found"

    class ObjectNotFound(OSError):
        _prefix = "RBD object not found"

    class ImageExists(OSError):
        _prefix = "RBD image already exists"

    class ObjectExists(OSError):
        _prefix = "RBD object already exists"

    class IOError(OSError):
        _prefix = "RBD I/O error"

    class NoSpace(OSError):
        _prefix = "RBD insufficient space available"

    class IncompleteWriteError(OSError):
        _prefix = "RBD incomplete write"

    class InvalidArgument(OSError):
        _prefix = "RBD invalid argument"

    class LogicError(OSError):
        _prefix = "RBD logic error"

    class ReadOnlyImage(OSError):
        _prefix = "RBD read-only image"

    class ImageBusy(OSError):
        _prefix = "RBD image is busy"

    class ImageHasSnapshots(OSError):
        _prefix = "RBD image has snapshots"

    class FunctionNotSupported(OSError):
        _prefix = "RBD function not supported"

    class ArgumentOutOfRange(OSError):
        _prefix = "RBD arguments out of range"

    class ConnectionShutdown(OSError):
        _prefix = "RBD connection was shutdown"

    class Timeout(OSError):
        _prefix = "RBD operation timeout"

    class DiskQuotaExceeded(OSError):
        _prefix = "RBD disk quota exceeded"

    class OperationNotSupported(OSError):
        _prefix = "RBD operation not supported"

    class OperationCanceled(OSError):
        _prefix = "RBD operation canceled"


def _exception_classes(namespace: type) -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(namespace).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }


# What make_modules() puts into each fake module's namespace.
RADOS_EXCEPTIONS = _exception_classes(RadosErrors)
RBD_EXCEPTIONS = _exception_classes(RbdErrors)

# errno -> class, as the real bindings' make_ex() maps them.
_RADOS_ERRNO: dict[int, type[RadosErrors.Error]] = {
    errno.EPERM: RadosErrors.PermissionError,
    errno.ENOENT: RadosErrors.ObjectNotFound,
    errno.EIO: RadosErrors.IOError,
    errno.ENOSPC: RadosErrors.NoSpace,
    errno.EEXIST: RadosErrors.ObjectExists,
    errno.EBUSY: RadosErrors.ObjectBusy,
    errno.ENODATA: RadosErrors.NoData,
    errno.EINTR: RadosErrors.InterruptedOrTimeoutError,
    errno.ETIMEDOUT: RadosErrors.TimedOut,
    errno.EACCES: RadosErrors.PermissionDeniedError,
    errno.EINPROGRESS: RadosErrors.InProgress,
    errno.EISCONN: RadosErrors.IsConnected,
    errno.EINVAL: RadosErrors.InvalidArgumentError,
    errno.ENOTCONN: RadosErrors.NotConnected,
    errno.ESHUTDOWN: RadosErrors.ConnectionShutdown,
}
_RBD_ERRNO: dict[int, type[RbdErrors.OSError]] = {
    errno.EPERM: RbdErrors.PermissionError,
    errno.ENOENT: RbdErrors.ImageNotFound,
    errno.EIO: RbdErrors.IOError,
    errno.ENOSPC: RbdErrors.NoSpace,
    errno.EEXIST: RbdErrors.ImageExists,
    errno.EINVAL: RbdErrors.InvalidArgument,
    errno.EROFS: RbdErrors.ReadOnlyImage,
    errno.EBUSY: RbdErrors.ImageBusy,
    errno.ENOTEMPTY: RbdErrors.ImageHasSnapshots,
    errno.ENOSYS: RbdErrors.FunctionNotSupported,
    errno.EDOM: RbdErrors.ArgumentOutOfRange,
    errno.ESHUTDOWN: RbdErrors.ConnectionShutdown,
    errno.ETIMEDOUT: RbdErrors.Timeout,
    errno.EDQUOT: RbdErrors.DiskQuotaExceeded,
    errno.EOPNOTSUPP: RbdErrors.OperationNotSupported,
    errno.ECANCELED: RbdErrors.OperationCanceled,
}
_ERRNO_OF: dict[type[BaseException], int] = {
    **{cls: num for num, cls in _RADOS_ERRNO.items()},
    **{cls: num for num, cls in _RBD_ERRNO.items()},
}


def rados_error(err: int, message: str) -> RadosErrors.Error:
    """Return the rados exception librados' ``-err`` becomes."""
    exc: RadosErrors.Error = _RADOS_ERRNO.get(err, RadosErrors.OSError)(message, errno=err)
    return exc


def rbd_error(err: int, message: str) -> RbdErrors.OSError:
    """Return the rbd exception librbd's ``-err`` becomes."""
    exc: RbdErrors.OSError = _RBD_ERRNO.get(err, RbdErrors.OSError)(message, errno=err)
    return exc


def instantiate(exc: BaseException | type[BaseException], method: str) -> BaseException:
    """Return ``exc`` itself, or an instance of the class ``exc`` with a fitting errno.

    Code under test often branches on ``err.errno``, so an injected class
    gets the errno the real binding would have raised it with.
    """
    if isinstance(exc, BaseException):
        return exc
    message = f"injected failure in {method}"
    if issubclass(exc, RadosErrors.ExtendMismatch):
        return exc(message, errno.EILSEQ, 0)
    if issubclass(exc, (RadosErrors.Error, RbdErrors.OSError)):
        instance: BaseException = cast(Any, exc)(message, errno=_ERRNO_OF.get(exc))
        return instance
    return exc(message)


def check_str(value: Any, name: str, optional: bool = False) -> None:
    """Raise the TypeError the bindings raise for a non-str argument."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")


def check_uint(value: Any, name: str) -> None:
    """Raise what Cython raises converting ``value`` to ``uint64_t``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    if value < 0:
        raise OverflowError(f"can't convert negative value to uint64_t ({name})")


def check_bytes(value: Any, name: str) -> None:
    """Raise the TypeError the bindings raise for data that is not ``bytes``."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be a byte string")
