# SPDX-License-Identifier: Apache-2.0
"""Cephx keys and keyring files, handled without ever showing a key.

A key is held in a :class:`CephxKey`, whose ``repr`` and ``str`` are masked,
so a key passed to a log call or an exception message shows as ``****``.
Only :meth:`CephxKey.reveal` and :meth:`CephxKey.raw` give the secret, for
the few places that must hand it on (a keyring file, ``auth import``, the
libvirt secret value, the kernel keyring).

Keyring files are written atomically (temporary file in the same directory,
mode 0600 from creation, fsync, rename) and nothing is left behind on a
failure.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import struct
import time

from rbd_driver import exception

__all__ = [
    "CephxKey",
    "generate_key",
    "keyring_text",
    "parse_keyring",
    "read_key",
    "validate_name",
    "write_keyring",
]

# CryptoKey as Ceph encodes it: type u16 (1 = AES), created (u32 sec, u32
# nsec), secret length u16, then the secret.
_KEY_HEADER = struct.Struct("<HIIH")
_AES = 1
_SECRET_LEN = 16

# Safe pool and user names: they are embedded in cap strings ("profile rbd
# pool=NAME"), where a space, comma or quote would let a name add caps.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a safe pool or user name.

    :raises InvalidName: it is empty, too long or holds other characters.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        reason = "empty" if not name else "it contains unsafe characters or is over 100 long"
        raise exception.InvalidName(kind=kind, target=name, reason=reason)
    return name


class CephxKey:
    """A cephx secret key (base64 text, as in keyrings) that never prints itself.

    :raises KeyringError: (from the constructor) the text is not a cephx key;
        the message does not repeat it.
    """

    __slots__ = ("_text",)

    def __init__(self, text: str, source: str = "<key>") -> None:
        text = text.strip()
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise exception.KeyringError(path=source, detail="the key is not valid base64") from err
        if len(raw) < _KEY_HEADER.size:
            raise exception.KeyringError(path=source, detail="the key is too short")
        _, _, _, length = _KEY_HEADER.unpack_from(raw)
        if length == 0 or len(raw) != _KEY_HEADER.size + length:
            raise exception.KeyringError(path=source, detail="the key has a bad length")
        self._text = text

    def reveal(self) -> str:
        """Return the key as base64 text (what a keyring holds)."""
        return self._text

    def raw(self) -> bytes:
        """Return the decoded key (what libvirt secrets and the kernel keyring hold)."""
        return base64.b64decode(self._text)

    def __repr__(self) -> str:
        return "CephxKey(****)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CephxKey) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a CephxKey is not picklable")


def generate_key(now: float | None = None) -> CephxKey:
    """Return a new random AES cephx key, as ``ceph-authtool --gen-key`` makes."""
    created = time.time() if now is None else now
    secs = int(created)
    raw = _KEY_HEADER.pack(_AES, secs, int((created - secs) * 1e9), _SECRET_LEN)
    raw += os.urandom(_SECRET_LEN)
    return CephxKey(base64.b64encode(raw).decode())


def parse_keyring(text: str, entity: str, source: str = "<keyring>") -> CephxKey:
    """Return the key of ``entity`` (``client.NAME``) from keyring text.

    :raises KeyringError: no such section, or it has no valid key.
    """
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        name, sep, value = line.partition("=")
        if section == entity and sep and name.strip() == "key":
            return CephxKey(value.strip(), source=source)
    raise exception.KeyringError(path=source, detail=f"no key for {entity}")


def read_key(path: str, entity: str) -> CephxKey:
    """Return the key of ``entity`` from the keyring file at ``path``.

    :raises KeyringError: the file is missing or unreadable, or holds no key
        for ``entity``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise exception.KeyringError(path=path, detail=os.strerror(err.errno or 0)) from err
    return parse_keyring(text, entity, source=path)


def keyring_text(entity: str, key: CephxKey, caps: dict[str, str] | None = None) -> str:
    """Return keyring file text for ``entity``; ``caps`` are added (for ``auth import``)."""
    lines = [f"[{entity}]", f"\tkey = {key.reveal()}"]
    for service, cap in sorted((caps or {}).items()):
        escaped = cap.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'\tcaps {service} = "{escaped}"')
    return "\n".join(lines) + "\n"


def check_keyring_path(path: str, hint: str = "") -> None:
    """Refuse early a keyring path whose directory is missing or not writable.

    Called before a user is created, so that a user is never made without
    the keyring asked for. ``hint`` names where the path came from.

    :raises KeyringError: naming the directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        where = f" ({hint})" if hint else ""
        raise exception.KeyringError(path=path, detail=(
            f"its directory {directory} does not exist or is not writable{where}"))


def write_keyring(path: str, entity: str, key: CephxKey,
                  owner: tuple[int, int] | None = None) -> None:
    """Atomically write a keyring holding only ``entity``'s key, mode 0600.

    The file is created 0600 (never readable by others, even for an
    instant), synced, then renamed over ``path``; ``owner`` is an optional
    ``(uid, gid)``. On any failure the temporary file is removed and
    ``path`` is left as it was.

    :raises KeyringError: the directory is missing or not writable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    data = keyring_text(entity, key).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        raise exception.KeyringError(path=path, detail=f"cannot create it: "
                                     f"{os.strerror(err.errno or 0)}") from err
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise exception.KeyringError(path=path, detail=f"cannot write it: "
                                     f"{os.strerror(err.errno or 0)}") from err
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
