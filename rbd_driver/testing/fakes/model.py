# SPDX-License-Identifier: Apache-2.0
"""The stored state of a fake cluster: pools, their RADOS objects and locks, images, snapshots.

These records are what outlives every handle: a :class:`FakeImage` exists
whether or not an ``rbd.Image`` is open on it. Tests reach them through
:class:`~rbd_driver.testing.fakes.fake_cluster.FakeCluster` to pre-populate data
and to assert on what the code under test left behind. The rules of the real
API (which call may do what) live in the fake ``rados``/``rbd`` classes, not
here.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rbd_driver.testing.fakes.sparse_data import ParentLink, View, read_view, write_view

if TYPE_CHECKING:
    from rbd_driver.testing.fakes.image import Image

__all__ = [
    "SNAP_NAMESPACE_TRASH",
    "SNAP_NAMESPACE_USER",
    "FakeImage",
    "FakePool",
    "FakeSnapshot",
    "Locker",
    "RadosObject",
    "Trash",
    "decode_id",
    "encode_string",
]

ID_PREFIX = "rbd_id."


def encode_string(value: str) -> bytes:
    """Ceph's ``encode(std::string)``: u32 little-endian length, then the UTF-8 bytes.

    The content of an ``rbd_id`` object is the image id encoded so.
    """
    raw = value.encode()
    return len(raw).to_bytes(4, "little") + raw


def decode_id(data: bytes) -> str | None:
    """The image id an ``rbd_id`` object holds, or None if it holds none."""
    if len(data) < 4:
        return None
    length = int.from_bytes(data[:4], "little")
    if length == 0 or 4 + length > len(data):
        return None
    try:
        return data[4 : 4 + length].decode()
    except UnicodeDecodeError:
        return None


def utcnow() -> datetime:
    """Naive UTC now, as the real bindings return timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


# librbd's snapshot namespaces (rbd.RBD_SNAP_NAMESPACE_TYPE_*).
SNAP_NAMESPACE_USER = 0
SNAP_NAMESPACE_TRASH = 2


@dataclass
class FakeSnapshot:
    """A snapshot of a :class:`FakeImage`; ``view`` shares its chunks with the head.

    A snapshot removed while clone format 2 children still read from it moves
    to the trash namespace, as librbd does: ``namespace`` becomes
    ``SNAP_NAMESPACE_TRASH`` (2), ``name`` a fresh UUID (so the old name is
    free and no longer finds it) and ``original_name`` the name it had. It
    goes for good when its last clone is removed or flattened.
    """

    id: int
    name: str
    view: View
    protected: bool = False
    timestamp: datetime = field(default_factory=utcnow)
    namespace: int = SNAP_NAMESPACE_USER
    original_name: str | None = None

    @property
    def size(self) -> int:
        return self.view.size


@dataclass
class Trash:
    """Why and until when an image sits in the trash."""

    deleted_at: float
    deferment_end: float  # trash_remove without force fails before this


class FakeImage:
    """The stored state of one RBD image (independent of any open handle).

    ``snaps`` maps snapshot id to :class:`FakeSnapshot` (oldest first),
    ``trash`` is set while the image is in the trash, ``removed`` once it is
    deleted (handles still open on it then fail with ImageNotFound).
    ``created`` (``time.time()``), ``snap_seq`` (the newest snapshot id ever
    taken) and ``id_mtime`` (last write of the ``rbd_id`` object: creation,
    rename, trash restore) feed the librbd metadata objects of
    ``rbd_driver.testing.fakes.metadata``.

    ``name`` is the image's entry in the pool directory (``rbd_directory``)
    and ``id_object`` the name whose ``rbd_id.<name>`` object holds this
    image's id. librbd keeps them equal, so setting ``name`` sets both;
    they differ only between the single cls_rbd calls of a rename done by
    hand (:meth:`dir_rename`, an ``rbd_id`` object removed), and
    :meth:`FakePool.settle_id_objects` makes them equal again as soon as
    the id object under the new name exists.
    """

    _name: str
    id_mtime: float
    id_object: str | None

    def __init__(
        self, pool: FakePool, image_id: str, name: str, size: int, order: int, features: int, old_format: bool
    ) -> None:
        self.pool = pool
        self.id = image_id
        self.created = time.time()
        self.name = name  # sets id_mtime
        self.order = order
        self.features = features
        self.old_format = old_format
        self.head = View({}, size, 1 << order)
        self.snaps: dict[int, FakeSnapshot] = {}
        self.snap_seq = 0
        self.trash: Trash | None = None
        self.removed = False
        self.handles: dict[int, Image] = {}  # open Image objects, by watch cookie
        self.metadata: dict[str, str] = {}  # image-meta (rbd image-meta set)

    def __repr__(self) -> str:
        return f"<FakeImage {self.pool.name}/{self.name} id={self.id} size={self.size}>"

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        # librbd rewrites rbd_id.<name> whenever the name changes (rename, trash restore).
        self._name = value
        self.id_object = value
        self.id_mtime = time.time()

    def dir_rename(self, value: str) -> None:
        """Change the directory entry only (cls_rbd ``dir_rename_image``): the
        ``rbd_id`` object stays under the old name."""
        self._name = value

    @property
    def size(self) -> int:
        """Size of the head in bytes."""
        return self.head.size

    @property
    def obj_size(self) -> int:
        return 1 << self.order

    @property
    def block_name_prefix(self) -> str:
        """Prefix of the names of the image's data objects (format 1 and 2 differ)."""
        if self.old_format:
            return f"rb.0.{self.pool.id:x}.{int(self.id, 16) & 0xFFFFFFFF:08x}"
        return f"rbd_data.{self.id}"

    @property
    def parent(self) -> tuple[str, str, str] | None:
        """``(pool, image, snapshot)`` the head is cloned from, or None."""
        link = self.head.parent
        if link is None:
            return None
        return (link.image.pool.name, link.image.name, link.image.snaps[link.snap_id].name)

    @property
    def object_count(self) -> int:
        """Number of RADOS objects the head holds (copied-up ones included)."""
        return len(self.head.chunks)

    @property
    def stored_bytes(self) -> int:
        """Bytes of memory holding the head's data."""
        return sum(len(chunk.data) for chunk in self.head.chunks.values())

    def snap_by_name(self, name: str) -> FakeSnapshot | None:
        return next((s for s in self.snaps.values() if s.name == name), None)

    def trashed_snaps(self) -> list[FakeSnapshot]:
        """Snapshots in the trash namespace (removed while clones still held them)."""
        return [s for s in self.snaps.values() if s.namespace == SNAP_NAMESPACE_TRASH]

    def watchers(self) -> list[Image]:
        """Open handles that hold a watch (librbd takes none for read-only opens)."""
        return [h for h in self.handles.values() if not h._read_only]

    def read(self, offset: int = 0, length: int | None = None, snapshot: str | None = None) -> bytes:
        """Return head (or ``snapshot``) bytes, clipped to the size; for test assertions."""
        if snapshot is None:
            view = self.head
        else:
            snap = self.snap_by_name(snapshot)
            if snap is None:
                raise KeyError(f"no snapshot {snapshot} of {self.pool.name}/{self.name}")
            view = snap.view
        if length is None:
            length = view.size - offset
        length = max(0, min(length, view.size - offset))
        return bytes(read_view(view, offset, length))

    def write(self, data: bytes, offset: int = 0) -> None:
        """Write into the head, bypassing handles; for pre-populating tests."""
        if offset + len(data) > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset} exceeds size {self.size}")
        write_view(self.head, offset, data)

    def create_snap(self, name: str, protect: bool = False) -> FakeSnapshot:
        """Snapshot the head (optionally protected); returns the snapshot."""
        if self.snap_by_name(name) is not None:
            raise ValueError(f"snapshot {name} exists")
        self.head.freeze()
        snap = FakeSnapshot(self.pool.next_snap_id(), name, self.head.copy(), protected=protect)
        self.snaps[snap.id] = snap
        self.snap_seq = snap.id
        return snap

    def clone_of(self, parent: FakeImage, snap: FakeSnapshot) -> None:
        """Make this (new, empty) image read through to ``parent@snap``."""
        self.head.parent = ParentLink(parent, snap.id, snap.size)
        self.metadata = dict(parent.metadata)  # librbd's clone copies the parent's metadata


@dataclass
class RadosObject:
    """A RADOS object of a pool: its data, mtime and omap (key -> value)."""

    data: bytearray = field(default_factory=bytearray)
    mtime: float = field(default_factory=time.time)
    omap: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Locker:
    """The holder of an exclusive ``cls_lock`` lock on a RADOS object."""

    entity: str  # "client.<instance id>"
    cookie: str
    description: str
    expiration: float | None  # time.time() after which the lock is gone; None: never

    def expired(self) -> bool:
        return self.expiration is not None and self.expiration <= time.time()


class FakePool:
    """One pool: raw RADOS objects and their locks, and RBD images (by id)."""

    def __init__(self, pool_id: int, name: str) -> None:
        self.id = pool_id
        self.name = name
        self.images: dict[str, FakeImage] = {}
        self.objects: dict[str, RadosObject] = {}
        self.locks: dict[tuple[str, str], Locker] = {}  # (object key, lock name) -> holder
        self.applications: set[str] = set()
        self.deleted = False
        self._snap_seq = itertools.count(4)  # librbd snapshot ids are per pool

    def __repr__(self) -> str:
        return f"<FakePool {self.name} id={self.id}>"

    def next_snap_id(self) -> int:
        return next(self._snap_seq)

    def image_by_name(self, name: str) -> FakeImage | None:
        """Return the image listed under ``name`` (trashed images are not listed)."""
        return next((i for i in self.images.values() if i.name == name and i.trash is None), None)

    def image_names(self) -> list[str]:
        return sorted(i.name for i in self.images.values() if i.trash is None)

    def image_by_id_object(self, name: str) -> FakeImage | None:
        """Return the image whose rendered ``rbd_id.<name>`` object holds its id, if any."""
        return next(
            (
                i
                for i in self.images.values()
                if i.id_object == name and i.trash is None and not i.old_format
            ),
            None,
        )

    def id_object_exists(self, name: str) -> bool:
        """Whether object ``rbd_id.<name>`` exists (rendered from an image, or a raw one)."""
        return self.image_by_id_object(name) is not None or f"{ID_PREFIX}{name}" in self.objects

    def resolve_name(self, name: str) -> FakeImage | None:
        """Return the image that opening ``name`` finds, as librbd does: through the
        ``rbd_id.<name>`` object (format 2) or the ``<name>.rbd`` header (format 1).

        Usually ``image_by_name``; they differ only when an ``rbd_id`` object and
        the directory disagree (a rename done by hand, interrupted).
        """
        image = self.image_by_id_object(name)
        if image is not None:
            return image
        raw = self.objects.get(f"{ID_PREFIX}{name}")
        if raw is not None:
            image = self.images.get(decode_id(bytes(raw.data)) or "")
            return image if image is not None and image.trash is None else None
        image = self.image_by_name(name)
        return image if image is not None and image.old_format else None

    def settle_id_objects(self) -> None:
        """Fold a raw ``rbd_id.<name>`` object into the image listed as ``name`` when
        it holds that image's id.

        Only the representation changes: the same objects exist with the same
        bytes, but an image whose id object sits under its directory name is
        again an ordinary image that every other fake call handles.
        """
        for image in list(self.images.values()):
            if image.trash is not None or image.old_format or image.id_object == image.name:
                continue
            raw = self.objects.get(f"{ID_PREFIX}{image.name}")
            if raw is None or decode_id(bytes(raw.data)) != image.id:
                continue
            if image.id_object is not None:  # the old one stays, as a plain object
                self.objects[f"{ID_PREFIX}{image.id_object}"] = RadosObject(
                    bytearray(encode_string(image.id)), image.id_mtime)
            del self.objects[f"{ID_PREFIX}{image.name}"]
            image.id_object = image.name
            image.id_mtime = raw.mtime

    def lock_holder(self, key: str, name: str) -> Locker | None:
        """Return who holds lock ``name`` on ``key``, forgetting it if it expired."""
        locker = self.locks.get((key, name))
        if locker is not None and locker.expired():
            del self.locks[(key, name)]
            locker = None
        return locker

    def usage(self) -> tuple[int, int]:
        """Return ``(bytes stored, object count)``, counting image heads only, as ``df`` does."""
        objects = len(self.objects) + sum(i.object_count for i in self.images.values())
        used = sum(len(o.data) for o in self.objects.values()) + sum(
            i.stored_bytes for i in self.images.values()
        )
        return used, objects
