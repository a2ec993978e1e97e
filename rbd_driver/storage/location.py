# SPDX-License-Identifier: Apache-2.0
"""Parse and format ``rbd://fsid/pool/image/snapshot`` image locations.

This is the URL form Glance records for an image stored in RBD and Nova
hands to its image backend for a copy-on-write clone. Each of the four parts
is percent-encoded, so any name Ceph can hold survives the round trip
:func:`format_location` -> :func:`parse_location`.

Locations come from image metadata that other tenants or services may have
written, so parsing is strict and every refusal says exactly what is wrong.
The backend turns :class:`InvalidLocation` into an ``ImageUnacceptable``
reason.

Decisions:

* Pool, image and snapshot names may not contain ``/`` or ``@``, not even
  percent-encoded. Ceph's tools and QEMU address an image as
  ``pool[/namespace]/image[@snapshot]`` and split on those characters, so
  such names cannot be created or addressed normally, and accepting ``%2F`` or
  ``%40`` would let a location smuggle a namespace or a snapshot into any
  spec string built from it. :class:`RbdLocation` enforces the same rules, so
  everything that can be formatted parses back.
* Names are otherwise taken verbatim: surrounding spaces, ``%``, ``:``,
  ``?``, ``#`` and non-ASCII characters are kept (encoded in the URL).
* The fsid must be a hyphenated UUID; it is normalised to lowercase.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from urllib.parse import quote, unquote

__all__ = [
    "MAX_LOCATION_LENGTH",
    "InvalidLocation",
    "RbdLocation",
    "format_location",
    "parse_location",
    "SnapshotIdentity",
]

#: Longest location URL accepted or produced, in characters. It bounds the
#: work done on untrusted input; real locations are well under 300.
MAX_LOCATION_LENGTH = 4096

_SCHEME = "rbd"
_PARTS = ("fsid", "pool", "image", "snapshot")
_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Cc: C0 controls (NUL included), DEL and C1 controls. Cs: lone surrogates,
# which only a caller-built str can hold and which cannot be encoded.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs"})


class InvalidLocation(ValueError):
    """A location URL, or one of its parts, is malformed.

    The message names the part at fault and what is wrong with it.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class RbdLocation:
    """A validated RBD snapshot location.

    Raises :class:`InvalidLocation` on construction when a part is blank
    (empty or whitespace only), holds a control character, ``/`` or ``@``
    (pool, image, snapshot), when the fsid is not a UUID, or when the
    resulting URL would exceed :data:`MAX_LOCATION_LENGTH`; raises
    :class:`TypeError` when a part is not a ``str``.
    """

    fsid: str
    pool: str
    image: str
    snapshot: str

    def __post_init__(self) -> None:
        for name in _PARTS:
            _check_part(name, getattr(self, name))
        fsid = self.fsid.lower()
        if not _UUID.fullmatch(fsid):
            raise InvalidLocation(f"fsid {self.fsid!r} is not a UUID")
        object.__setattr__(self, "fsid", fsid)
        if len(self.url) > MAX_LOCATION_LENGTH:
            raise InvalidLocation(
                f"location is longer than {MAX_LOCATION_LENGTH} characters")

    @property
    def url(self) -> str:
        """Return the ``rbd://`` URL, each part percent-encoded."""
        return f"{_SCHEME}://" + "/".join(
            quote(getattr(self, name), safe="") for name in _PARTS)


def _check_part(name: str, value: object) -> None:
    """Raise unless *value* is acceptable as the decoded part *name*."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidLocation(f"{name} is blank")
    for char in value:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidLocation(
                f"{name} {value!r} contains the control character {char!r}")
    if name != "fsid":
        for char in "/@":
            if char in value:
                raise InvalidLocation(
                    f"{name} {value!r} contains {char!r}, which Ceph does "
                    "not allow in pool, image or snapshot names")


def format_location(fsid: str, pool: str, image: str, snapshot: str) -> str:
    """Return the ``rbd://`` URL of a snapshot.

    Raises :class:`InvalidLocation` (or :class:`TypeError`) as
    :class:`RbdLocation` does.
    """
    return RbdLocation(fsid, pool, image, snapshot).url


def parse_location(url: str) -> RbdLocation:
    """Parse ``rbd://fsid/pool/image/snapshot`` into an :class:`RbdLocation`.

    The scheme is matched case-insensitively; each part is percent-decoded
    as UTF-8. Raises :class:`InvalidLocation` when the URL is too long, has
    another scheme, a query or fragment, not exactly four parts (a trailing
    ``/`` makes a blank fifth), a malformed percent-escape, bytes that are
    not UTF-8, or a part :class:`RbdLocation` refuses. Raises
    :class:`TypeError` when *url* is not a ``str``.
    """
    if not isinstance(url, str):
        raise TypeError(f"location must be a str, not {type(url).__name__}")
    # Cap what is echoed back: the URL is untrusted and may be huge.
    shown = repr(url if len(url) <= 200 else url[:200] + "...")
    if len(url) > MAX_LOCATION_LENGTH:
        raise InvalidLocation(
            f"location {shown} is longer than {MAX_LOCATION_LENGTH} "
            "characters")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != _SCHEME:
        raise InvalidLocation(f"location {shown} does not start with rbd://")
    if "?" in rest or "#" in rest:
        raise InvalidLocation(
            f"location {shown} has a query or fragment; a '?' or '#' in a "
            "name must be percent-encoded")
    pieces = rest.split("/")
    if len(pieces) != len(_PARTS):
        hint = " (trailing '/')" if len(pieces) == 5 and not pieces[-1] else ""
        raise InvalidLocation(
            f"location {shown} has {len(pieces)} parts{hint}, expected 4: "
            "rbd://fsid/pool/image/snapshot")
    decoded = []
    for name, piece in zip(_PARTS, pieces, strict=True):
        if _BAD_ESCAPE.search(piece):
            raise InvalidLocation(
                f"{name} {piece!r} of location {shown} has a malformed "
                "percent-escape")
        try:
            decoded.append(unquote(piece, errors="strict"))
        except UnicodeDecodeError:
            raise InvalidLocation(
                f"{name} {piece!r} of location {shown} is not UTF-8 once "
                "percent-decoded") from None
    try:
        return RbdLocation(*decoded)
    except InvalidLocation as exc:
        raise InvalidLocation(f"location {shown}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class SnapshotIdentity:
    """What identifies a snapshot for good: ids are never reused by a new
    image or snapshot of the same name, and a snapshot's data never changes.

    Read from the cluster by :meth:`RBDDriver.snapshot_identity
    <rbd_driver.storage.rbd_utils.RBDDriver.snapshot_identity>`.
    """

    pool: str
    image_id: str
    snap_id: int
    size: int
