# SPDX-License-Identifier: Apache-2.0
"""The kernel keyring, where krbd finds the cephx key of a mapping.

:class:`LinuxKeyring` adds a key to the calling process's keyring with the
``add_key`` system call and invalidates it with ``keyctl``, through
libkeyutils when it is installed and the raw system calls otherwise. The
payload goes from memory to the kernel: no ``keyctl`` command runs, so it is
never on a command line. :class:`KernelKeyring` is the interface
:class:`rbd_driver.storage.krbd.KernelRbd` uses, so tests can pass a fake.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from typing import Any, Protocol

__all__ = ["KernelKeyring", "LinuxKeyring"]


class KernelKeyring(Protocol):
    """Where the key is put for the kernel to find (``key=<description>``)."""

    def add(self, description: str, payload: bytes) -> int:
        """Add a key; return its serial. :raises OSError: the kernel refused."""

    def remove(self, key_id: int) -> None:
        """Invalidate the key ``key_id``. :raises OSError: the kernel refused."""


# add_key and keyctl system call numbers, for when libkeyutils is missing.
_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219), "ppc64le": (269, 271),
             "s390x": (278, 280)}
_KEY_SPEC_PROCESS_KEYRING = -2
_KEYCTL_UNLINK = 9
_KEYCTL_INVALIDATE = 21


class LinuxKeyring:
    """The calling process's kernel keyring, through libkeyutils or raw system calls.

    :param key_type: ``ceph`` for krbd; tests use ``user``, which needs no
        Ceph kernel module.
    """

    def __init__(self, key_type: str = "ceph") -> None:
        self.key_type = key_type
        name = ctypes.util.find_library("keyutils")
        self._keyutils = ctypes.CDLL(name, use_errno=True) if name else None
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _syscall(self, index: int, *args: Any) -> int:
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None:
            raise OSError(errno.ENOSYS, "no libkeyutils and unknown system call numbers")
        self._libc.syscall.restype = ctypes.c_long
        return int(self._libc.syscall(ctypes.c_long(numbers[index]), *args))

    def add(self, description: str, payload: bytes) -> int:
        args = (ctypes.c_char_p(self.key_type.encode()), ctypes.c_char_p(description.encode()),
                ctypes.c_char_p(payload), ctypes.c_size_t(len(payload)),
                ctypes.c_int32(_KEY_SPEC_PROCESS_KEYRING))
        if self._keyutils is not None:
            self._keyutils.add_key.restype = ctypes.c_int32
            serial = int(self._keyutils.add_key(*args))
        else:
            serial = self._syscall(0, *args)
        if serial < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return serial

    def remove(self, key_id: int) -> None:
        for op, extra in ((_KEYCTL_INVALIDATE, ()), (_KEYCTL_UNLINK, (_KEY_SPEC_PROCESS_KEYRING,))):
            args = [ctypes.c_long(op), ctypes.c_long(key_id), *(ctypes.c_long(x) for x in extra)]
            if self._keyutils is not None:
                self._keyutils.keyctl.restype = ctypes.c_long
                ret = int(self._keyutils.keyctl(*args))
            else:
                ret = self._syscall(1, *args)
            if ret >= 0:
                return
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
