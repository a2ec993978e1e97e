# SPDX-License-Identifier: Apache-2.0
"""librbd's LUKS encryption layer, faked: ``Image.encryption_format`` / ``encryption_load``.

What the fake keeps from pacific's librbd (checked against it by the
functional tests): formatting writes a header at the start of the image
(``LUKS\\xba\\xbe``..., 16 MiB for LUKS2, 2 MiB for LUKS1) and loads the
encryption on that handle; a loaded handle sees the image shifted past the
header (its ``size()`` is smaller by it), reads and writes plaintext while
the image holds something else; ``resize`` on a loaded handle still sets the
raw size; a clone holds its parent's header and opens with its parent's
passphrase; formatting a clone fails with EOPNOTSUPP; a wrong passphrase is
EPERM, a wrong format or no header EINVAL; never-written sectors read as
zeros through the layer.

The "cipher" is a keyed XOR per 4 KiB sector (an all-zero raw sector reads
as zeros, as an unallocated one does in librbd). The header stores a hash of
the passphrase, never the passphrase: a test that finds the passphrase in
the image's raw bytes has found a real leak.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json

from rbd_driver.testing.fakes.errors import rbd_error

__all__ = ["FORMATS", "HEADER_SIZES", "Crypto", "format_header", "load_header"]

RBD_ENCRYPTION_FORMAT_LUKS1 = 0
RBD_ENCRYPTION_FORMAT_LUKS2 = 1
RBD_ENCRYPTION_ALGORITHM_AES128 = 0
RBD_ENCRYPTION_ALGORITHM_AES256 = 1
CONSTANTS = {
    "RBD_ENCRYPTION_FORMAT_LUKS1": RBD_ENCRYPTION_FORMAT_LUKS1,
    "RBD_ENCRYPTION_FORMAT_LUKS2": RBD_ENCRYPTION_FORMAT_LUKS2,
    "RBD_ENCRYPTION_ALGORITHM_AES128": RBD_ENCRYPTION_ALGORITHM_AES128,
    "RBD_ENCRYPTION_ALGORITHM_AES256": RBD_ENCRYPTION_ALGORITHM_AES256,
}
FORMATS = {RBD_ENCRYPTION_FORMAT_LUKS1: "luks1", RBD_ENCRYPTION_FORMAT_LUKS2: "luks2"}
HEADER_SIZES = {"luks1": 2 << 20, "luks2": 16 << 20}
MAGIC = b"LUKS\xba\xbe"
SECTOR = 4096


def _passphrase(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise TypeError("passphrase must be a string or bytes")


def _digest(passphrase: bytes, salt: bytes) -> str:
    return hashlib.sha256(salt + passphrase).hexdigest()


@dataclasses.dataclass(frozen=True)
class Crypto:
    """The encryption loaded on one handle: its header size and keystream byte."""

    fmt: str
    header: int
    key: int = dataclasses.field(repr=False)

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        table = bytes((b ^ self.key) for b in range(256))
        return bytes(data).translate(table)

    def decrypt(self, raw: bytes | bytearray, offset: int) -> bytes:
        """Plaintext of ``raw`` read at plaintext ``offset``; all-zero raw sectors are zeros."""
        out = bytearray(self.encrypt(raw))
        zero = bytes(SECTOR)
        pos = 0
        while pos < len(raw):
            end = min(len(raw), (offset + pos) // SECTOR * SECTOR + SECTOR - offset)
            if raw[pos:end] == zero[:end - pos]:
                out[pos:end] = zero[:end - pos]
            pos = end
        return bytes(out)


def format_header(fmt: int, passphrase: object, size: int, is_clone: bool,
                  name: str) -> tuple[bytes, Crypto]:
    """Return (header bytes, loaded crypto) for ``encryption_format``."""
    key = _passphrase(passphrase)
    what = f"error formatting image {name.encode()!r} with format {FORMATS.get(fmt, fmt)}"
    if fmt not in FORMATS:
        raise rbd_error(errno.EINVAL, what)
    if is_clone:
        raise rbd_error(errno.EOPNOTSUPP, what)
    name_ = FORMATS[fmt]
    header = HEADER_SIZES[name_]
    if size <= header:
        raise rbd_error(errno.EINVAL, what)
    salt = hashlib.sha256(name.encode() + key[:0]).digest()[:8]
    body = json.dumps({"format": name_, "salt": salt.hex(), "digest": _digest(key, salt)})
    keystream = hashlib.sha256(b"fake-luks" + key).digest()[0] | 1
    return MAGIC + body.encode() + b"\0", Crypto(name_, header, keystream)


def load_header(fmt: int, passphrase: object, raw_head: bytes, name: str) -> Crypto:
    """Return the crypto of an image whose raw bytes start with ``raw_head``."""
    key = _passphrase(passphrase)
    what = f"error loading encryption on image {name.encode()!r} with format {FORMATS.get(fmt, fmt)}"
    if fmt not in FORMATS or not raw_head.startswith(MAGIC):
        raise rbd_error(errno.EINVAL, what)
    body = json.loads(raw_head[len(MAGIC):].split(b"\0", 1)[0])
    if body["format"] != FORMATS[fmt]:
        raise rbd_error(errno.EINVAL, what)
    if body["digest"] != _digest(key, bytes.fromhex(body["salt"])):
        raise rbd_error(errno.EPERM, what)
    keystream = hashlib.sha256(b"fake-luks" + key).digest()[0] | 1
    return Crypto(body["format"], HEADER_SIZES[body["format"]], keystream)
