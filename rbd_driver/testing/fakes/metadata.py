# SPDX-License-Identifier: Apache-2.0
"""The librbd metadata objects of a pool, seen as RADOS objects, byte for byte as pacific writes them.

librbd keeps an image's metadata in RADOS objects that clients may read
directly; :func:`metadata_object` renders the ones of a :class:`FakeImage`
from its current state, so they always agree with what the fake ``rbd``
module reports:

``rbd_id.<name>`` (format 2, not while in the trash)
    data: the image id as a Ceph string (u32 little-endian length, then the
    bytes); mtime: when the name was last bound (create, rename, restore).
    ``<name>`` is the image's ``id_object``, its directory name except in
    the middle of a rename done with single cls_rbd calls.
``rbd_header.<id>`` (format 2, kept while in the trash)
    no data; omap as cls_rbd's ``create`` and ``snapshot_add`` leave it:
    ``size``, ``order``, ``features``, ``object_prefix``, ``snap_seq``,
    ``{create,access,modify}_timestamp`` and one ``snapshot_%016x`` record
    (``cls_rbd_snap``) per snapshot.
``<name>.rbd`` (format 1)
    data: ``rbd_obj_header_ondisk`` followed by the snapshots, newest first,
    then their NUL-terminated names.
``rbd_directory`` (once the pool has had a format 2 image)
    omap: ``name_<name>`` -> id and ``id_<id>`` -> name (Ceph strings) of
    every format 2 image not in the trash, as cls_rbd's ``dir_add_image``
    writes them.

Snapshot records use the encoding cls_rbd picks from the cluster's
``require_osd_release`` (``FakeCluster.require_osd_release``): nautilus and
later (any pacific cluster) write ``struct_v`` 8 / ``compat`` 8, without the
unused features field and the legacy parent; older releases write compat 1
with both. The first three fields (id, name, image_size) are the same in both.
"""

from __future__ import annotations

import struct
from datetime import UTC

from rbd_driver.testing.fakes.model import FakeImage, FakePool, FakeSnapshot, RadosObject, encode_string

__all__ = [
    "RBD_HEADER_PREFIX",
    "RBD_ID_PREFIX",
    "RBD_SUFFIX",
    "encode_snapshot",
    "metadata_object",
    "snapshot_key",
]

RBD_DIRECTORY = "rbd_directory"
RBD_ID_PREFIX = "rbd_id."
RBD_HEADER_PREFIX = "rbd_header."
RBD_SUFFIX = ".rbd"
SNAPSHOT_KEY_PREFIX = "snapshot_"

CEPH_NOSNAP = (1 << 64) - 2
RBD_PROTECTION_STATUS_UNPROTECTED = 0
RBD_PROTECTION_STATUS_PROTECTED = 2
SNAPSHOT_NAMESPACE_TYPE_USER = 0
RELEASES = ("luminous", "mimic", "nautilus", "octopus", "pacific", "quincy", "reef", "squid")

# rbd_types.h (format 1)
RBD_HEADER_TEXT = b"<<< Rados Block Device Image >>>\n"
RBD_HEADER_SIGNATURE = b"RBD"
RBD_HEADER_VERSION = b"001.005"


def _u8(value: int) -> bytes:
    return struct.pack("<B", value)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _i64(value: int) -> bytes:
    return struct.pack("<q", value)


def _utime(seconds: float) -> bytes:
    """``utime_t``: u32 seconds, u32 nanoseconds."""
    whole = int(seconds)
    return _u32(whole) + _u32(int(round((seconds - whole) * 1e9)) % 1_000_000_000)


def _optional_u64(value: int | None) -> bytes:
    """``std::optional<uint64_t>``: a u8 presence flag, then the value if present."""
    return _u8(0) if value is None else _u8(1) + _u64(value)


def _versioned(version: int, compat: int, body: bytes) -> bytes:
    """``ENCODE_START(version, compat)`` ... ``ENCODE_FINISH``: u8 v, u8 compat, u32 length, body."""
    return _u8(version) + _u8(compat) + _u32(len(body)) + body


def snapshot_key(snap_id: int) -> str:
    """The header omap key of a snapshot (cls_rbd's ``key_from_snap_id``)."""
    return f"{SNAPSHOT_KEY_PREFIX}{snap_id:016x}"


def nautilus_or_later(release: str) -> bool:
    """Whether cls_rbd encodes with ``CEPH_FEATURE_SERVER_NAUTILUS`` under ``require_osd_release``."""
    if release not in RELEASES:
        raise ValueError(f"unknown require_osd_release {release!r}; expected one of {RELEASES}")
    return RELEASES.index(release) >= RELEASES.index("nautilus")


def encode_snapshot(snap: FakeSnapshot, child_count: int = 0, nautilus: bool = True) -> bytes:
    """``cls_rbd_snap::encode`` (struct_v 8) of ``snap``, as pacific's cls_rbd stores it.

    ``nautilus`` False gives the layout written while ``require_osd_release``
    is below nautilus: compat 1, plus the unused image features (u64 0) and
    the snapshot's parent (``cls_rbd_parent`` v1) after ``image_size``.
    """
    link = snap.view.parent
    body = _u64(snap.id) + encode_string(snap.name) + _u64(snap.size)
    parent_overlap = None
    if nautilus:
        parent_overlap = link.overlap if link is not None else None
    else:
        body += _u64(0)  # image features: unused, kept for the ABI
        if link is None:
            parent = _i64(-1) + encode_string("") + _u64(CEPH_NOSNAP) + _u64(0)
        else:
            parent = (_i64(link.image.pool.id) + encode_string(link.image.id) + _u64(link.snap_id)
                      + _u64(link.overlap))
        body += _versioned(1, 1, parent)
    status = RBD_PROTECTION_STATUS_PROTECTED if snap.protected else RBD_PROTECTION_STATUS_UNPROTECTED
    body += _u8(status) + _u64(0)  # protection status, flags
    body += _versioned(1, 1, _u32(SNAPSHOT_NAMESPACE_TYPE_USER))  # user snapshot namespace
    body += _utime(snap.timestamp.replace(tzinfo=UTC).timestamp())
    body += _u32(child_count) + _optional_u64(parent_overlap)
    return _versioned(8, 8 if nautilus else 1, body)


def _header_omap(image: FakeImage, child_counts: dict[int, int], nautilus: bool) -> dict[str, bytes]:
    created = _utime(image.created)
    omap = {
        "access_timestamp": created,
        "create_timestamp": created,
        "features": _u64(image.features),
        "modify_timestamp": created,
        "object_prefix": encode_string(image.block_name_prefix),
        "order": _u8(image.order),
        "size": _u64(image.size),
        "snap_seq": _u64(image.snap_seq),
    }
    for snap in image.snaps.values():
        omap[snapshot_key(snap.id)] = encode_snapshot(snap, child_counts.get(snap.id, 0), nautilus)
    return dict(sorted(omap.items()))


def _format1_header(image: FakeImage) -> bytes:
    """``rbd_obj_header_ondisk`` with its snapshots (newest first) and their names."""
    snaps = list(reversed(image.snaps.values()))
    names = b"".join(s.name.encode() + b"\0" for s in snaps)
    header = (
        RBD_HEADER_TEXT.ljust(40, b"\0")
        + image.block_name_prefix.encode().ljust(24, b"\0")
        + RBD_HEADER_SIGNATURE.ljust(4, b"\0")
        + RBD_HEADER_VERSION.ljust(8, b"\0")
        + bytes([image.order, 0, 0, 0])  # order, crypt_type, comp_type, unused
        + _u64(image.size)
        + _u64(image.snap_seq)
        + _u32(len(snaps))
        + _u32(0)  # reserved
        + _u64(len(names))
    )
    return header + b"".join(_u64(s.id) + _u64(s.size) for s in snaps) + names


def _mtime(image: FakeImage) -> float:
    stamps = [s.timestamp.replace(tzinfo=UTC).timestamp() for s in image.snaps.values()]
    return max([image.created, *stamps])


def metadata_object(
    pool: FakePool, key: str, *, release: str = "pacific", child_counts: dict[int, int] | None = None
) -> RadosObject | None:
    """Return librbd's metadata object ``key`` of ``pool`` (a fresh copy), or None if there is none.

    ``release`` is the cluster's ``require_osd_release``; ``child_counts``
    maps snapshot id to the clone v2 children attached to it.
    """
    if key == RBD_DIRECTORY:
        return _directory(pool)
    if key.startswith(RBD_ID_PREFIX):
        image = pool.image_by_id_object(key[len(RBD_ID_PREFIX) :])
        if image is None:
            return None
        return RadosObject(bytearray(encode_string(image.id)), image.id_mtime)
    if key.startswith(RBD_HEADER_PREFIX):
        image = pool.images.get(key[len(RBD_HEADER_PREFIX) :])
        if image is None or image.old_format:
            return None
        omap = _header_omap(image, child_counts or {}, nautilus_or_later(release))
        return RadosObject(bytearray(), _mtime(image), omap)
    if key.endswith(RBD_SUFFIX):
        image = pool.image_by_name(key[: -len(RBD_SUFFIX)])
        if image is None or not image.old_format:
            return None
        return RadosObject(bytearray(_format1_header(image)), _mtime(image))
    return None


def _directory(pool: FakePool) -> RadosObject | None:
    images = [i for i in pool.images.values() if not i.old_format]
    if not images:
        return None
    omap: dict[str, bytes] = {}
    for image in images:
        if image.trash is None and not image.removed:
            omap[f"name_{image.name}"] = encode_string(image.id)
            omap[f"id_{image.id}"] = encode_string(image.name)
    return RadosObject(bytearray(), max(i.created for i in images), dict(sorted(omap.items())))
