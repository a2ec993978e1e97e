# SPDX-License-Identifier: Apache-2.0
"""Sparse, copy-on-write image data: the bytes behind a fake RBD image.

An image's content at one point in time (its head or a snapshot) is a
:class:`View`: a map from object index to :class:`Chunk`, one chunk per
RADOS object (``2**order`` bytes) that was ever written, so a 10 GiB image
that was barely written costs almost no memory. A snapshot shares its
chunks with the head; a shared chunk is *frozen* and copied before it is
modified. A clone's view links to its parent snapshot: unwritten objects read
through to the parent, and the first write to one copies the parent's object
up first, like librbd.

Each chunk carries a :class:`Version`, a lineage of what was written since
the chunk it was copied from, which is what lets :func:`diff_extents` report
changes between a snapshot and a later view without comparing bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rbd_driver.testing.fakes.model import FakeImage

__all__ = [
    "Chunk",
    "Extents",
    "ParentLink",
    "View",
    "allocated",
    "diff_extents",
    "discard_view",
    "materialize",
    "read_view",
    "resize_view",
    "write_view",
]


class Extents:
    """A set of byte ranges: sorted, non-overlapping, non-adjacent ``[start, end)``."""

    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)``, merging with touching ranges."""
        if start >= end:
            return
        out: list[tuple[int, int]] = []
        placed = False
        for a, b in self._ranges:
            if b < start:
                out.append((a, b))
            elif end < a:
                if not placed:
                    out.append((start, end))
                    placed = True
                out.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        if not placed:
            out.append((start, end))
        self._ranges = out

    def remove(self, start: int, end: int) -> None:
        """Remove ``[start, end)``."""
        out: list[tuple[int, int]] = []
        for a, b in self._ranges:
            if b <= start or a >= end:
                out.append((a, b))
                continue
            if a < start:
                out.append((a, start))
            if b > end:
                out.append((end, b))
        self._ranges = out

    def clip(self, start: int, end: int) -> list[tuple[int, int]]:
        """Return the ranges inside ``[start, end)``."""
        return [(max(a, start), min(b, end)) for a, b in self._ranges if a < end and b > start]

    def update(self, other: Extents) -> None:
        for a, b in other:
            self.add(a, b)

    def copy(self) -> Extents:
        new = Extents()
        new._ranges = list(self._ranges)
        return new

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(list(self._ranges))

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __repr__(self) -> str:
        return f"Extents({self._ranges!r})"


class Version:
    """Lineage of a chunk: what changed (``dirty``) since the chunk it was copied from."""

    __slots__ = ("base", "dirty")

    def __init__(self, base: Version | None) -> None:
        self.base = base
        self.dirty = Extents()


# Common ancestor of every chunk a clone copied up from its parent, so a diff
# can tell what the clone wrote on top of the parent's data.
_COPYUP_ROOT = Version(None)


class Chunk:
    """One RADOS object of an image: its bytes and which ranges were written."""

    __slots__ = ("data", "extents", "version", "frozen")

    def __init__(self, data: bytearray, extents: Extents, version: Version) -> None:
        self.data = data  # grows only as far as the last written byte, to stay sparse
        self.extents = extents  # allocated ranges, relative to the object start
        self.version = version
        self.frozen = False  # shared with a snapshot: copy before writing


@dataclass(frozen=True)
class ParentLink:
    """The parent snapshot of a clone (or of a snapshot of one)."""

    image: FakeImage
    snap_id: int
    overlap: int

    @property
    def view(self) -> View:
        return self.image.snaps[self.snap_id].view


class View:
    """The content of an image at one point in time (its head or a snapshot)."""

    __slots__ = ("chunks", "size", "obj_size", "parent")

    def __init__(
        self, chunks: dict[int, Chunk], size: int, obj_size: int, parent: ParentLink | None = None
    ) -> None:
        self.chunks = chunks
        self.size = size
        self.obj_size = obj_size
        self.parent = parent

    def copy(self) -> View:
        return View(dict(self.chunks), self.size, self.obj_size, self.parent)

    def freeze(self) -> None:
        """Mark every chunk shared, before another view starts sharing them."""
        for chunk in self.chunks.values():
            chunk.frozen = True

    def parent_covers(self, offset: int) -> bool:
        return self.parent is not None and offset < self.parent.overlap


def _objects(view: View, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(index, start, stop)`` of each object piece of ``[offset, end)``."""
    pos = offset
    while pos < end:
        idx = pos // view.obj_size
        stop = min((idx + 1) * view.obj_size, end)
        yield idx, pos, stop
        pos = stop


def read_view(view: View, offset: int, length: int) -> bytearray:
    """Return ``length`` bytes at ``offset``; unwritten ranges of clones come from the parent."""
    out = bytearray(length)
    for idx, start, stop in _objects(view, offset, offset + length):
        chunk = view.chunks.get(idx)
        base = idx * view.obj_size
        if chunk is not None:
            piece = chunk.data[start - base : stop - base]
            out[start - offset : start - offset + len(piece)] = piece
        elif view.parent is not None and start < view.parent.overlap:
            pstop = min(stop, view.parent.overlap)
            out[start - offset : pstop - offset] = read_view(view.parent.view, start, pstop - start)
    return out


def allocated(view: View, offset: int, end: int, include_parent: bool) -> list[tuple[int, int]]:
    """Return the allocated ``(start, end)`` ranges of ``[offset, end)``, split per object."""
    osz = view.obj_size
    indices = {idx for idx in view.chunks if idx * osz < end and (idx + 1) * osz > offset}
    link = view.parent
    if include_parent and link is not None and offset < link.overlap:
        first = offset // osz
        last = (min(end, link.overlap) - 1) // osz
        for s, e in allocated(link.view, offset, min(end, link.overlap), True):
            indices.update(range(max(first, s // osz), min(last, (e - 1) // osz) + 1))
    result: list[tuple[int, int]] = []
    for idx in sorted(indices):
        base = idx * osz
        lo, hi = max(offset, base), min(end, base + osz)
        chunk = view.chunks.get(idx)
        if chunk is not None:
            result.extend((base + a, base + b) for a, b in chunk.extents.clip(lo - base, hi - base))
        elif include_parent and view.parent_covers(lo):
            assert link is not None
            result.extend(allocated(link.view, lo, min(hi, link.overlap), True))
    return result


def _copyup(view: View, idx: int) -> Chunk:
    """Return a new chunk holding the parent's data of object ``idx`` (librbd copyup)."""
    link = view.parent
    assert link is not None
    base = idx * view.obj_size
    stop = min(base + view.obj_size, link.overlap)
    ranges = allocated(link.view, base, stop, True)
    data = bytearray()
    if ranges:
        data = read_view(link.view, base, ranges[-1][1] - base)
    extents = Extents((a - base, b - base) for a, b in ranges)
    return Chunk(data, extents, Version(_COPYUP_ROOT))


def _writable_chunk(view: View, idx: int) -> Chunk:
    """Return chunk ``idx`` of ``view`` ready to be modified (copy-on-write, copyup)."""
    chunk = view.chunks.get(idx)
    if chunk is None:
        if view.parent_covers(idx * view.obj_size):
            chunk = _copyup(view, idx)
        else:
            chunk = Chunk(bytearray(), Extents(), Version(None))
    elif chunk.frozen:
        chunk = Chunk(bytearray(chunk.data), chunk.extents.copy(), Version(chunk.version))
    view.chunks[idx] = chunk
    return chunk


def write_view(view: View, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` at ``offset`` (already clipped to the view size)."""
    mv = memoryview(data)
    for idx, start, stop in _objects(view, offset, offset + len(mv)):
        chunk = _writable_chunk(view, idx)
        lo, hi = start - idx * view.obj_size, stop - idx * view.obj_size
        if len(chunk.data) < hi:
            chunk.data.extend(bytes(hi - len(chunk.data)))
        chunk.data[lo:hi] = mv[start - offset : stop - offset]
        chunk.extents.add(lo, hi)
        chunk.version.dirty.add(lo, hi)


def discard_view(view: View, offset: int, length: int) -> None:
    """Deallocate ``[offset, offset + length)``; it then reads as zeros."""
    for idx, start, stop in _objects(view, offset, offset + length):
        base = idx * view.obj_size
        if idx not in view.chunks and not view.parent_covers(base):
            continue
        # Under a parent the chunk must stay, empty, or the parent would show through.
        chunk = _writable_chunk(view, idx)
        lo, hi = start - base, stop - base
        if lo < len(chunk.data):
            end = min(hi, len(chunk.data))
            chunk.data[lo:end] = bytes(end - lo)
        chunk.extents.remove(lo, hi)
        chunk.version.dirty.add(lo, hi)
        if not chunk.extents and not view.parent_covers(base):
            del view.chunks[idx]


def resize_view(view: View, size: int) -> None:
    """Grow or shrink ``view``; shrinking drops data and the parent overlap beyond ``size``."""
    if size < view.size:
        osz = view.obj_size
        first_gone = -(-size // osz)  # objects from this index on lie wholly past the end
        for idx in [i for i in view.chunks if i >= first_gone]:
            del view.chunks[idx]
        if view.parent is not None and view.parent.overlap > size:
            link = view.parent
            view.parent = ParentLink(link.image, link.snap_id, size)
        if size // osz in view.chunks and size % osz:
            discard_view(view, size, min(view.size, first_gone * osz) - size)
            tail = view.chunks.get(size // osz)
            if tail is not None:
                del tail.data[size % osz :]
    view.size = size


def materialize(view: View, cache: dict[tuple[Any, ...], Chunk]) -> None:
    """Copy every parent object a clone view still reads through into it, then detach it.

    ``cache`` lets the head and the snapshots of one clone share the copies
    instead of each holding its own.
    """
    link = view.parent
    if link is None:
        return
    osz = view.obj_size
    for start, end in allocated(link.view, 0, link.overlap, True):
        for idx in range(start // osz, (end - 1) // osz + 1):
            if idx in view.chunks:
                continue
            key = (link.image.id, link.snap_id, idx, min((idx + 1) * osz, link.overlap))
            chunk = cache.get(key)
            if chunk is None:
                chunk = cache[key] = _copyup(view, idx)
            else:
                chunk.frozen = True
            view.chunks[idx] = chunk
    view.parent = None


def _dirty_between(descendant: Version, ancestor: Version) -> Extents | None:
    """Return the ranges written between ``ancestor`` and ``descendant``, or None if unrelated."""
    changed = Extents()
    version: Version | None = descendant
    while version is not None:
        if version is ancestor:
            return changed
        changed.update(version.dirty)
        version = version.base
    return None


def _changed_since(old: Chunk | None, new: Chunk, old_reads_parent: bool) -> Extents | None:
    """Return the ranges of ``new`` that differ from ``old``, or None if unknown."""
    if old is None:  # a copied-up chunk differs from the parent data by what was written since
        changed = _dirty_between(new.version, _COPYUP_ROOT)
        return changed if old_reads_parent else None
    changed = _dirty_between(new.version, old.version)
    if changed is None:  # after a rollback the head is an ancestor of the snapshot
        changed = _dirty_between(old.version, new.version)
    return changed


def _split(start: int, end: int, allocated: Extents) -> Iterator[tuple[int, int, bool]]:
    """Split ``[start, end)`` into ``(start, end, exists)`` pieces by ``allocated``."""
    pos = start
    for a, b in allocated.clip(start, end):
        if a > pos:
            yield pos, a, False
        yield a, b, True
        pos = b
    if pos < end:
        yield pos, end, False


def _changed(old_view: View, view: View, lo: int, hi: int) -> list[tuple[int, int, bool]]:
    """Return the ``(start, end, exists)`` extents of ``[lo, hi)`` changed since ``old_view``."""
    osz = view.obj_size
    indices = sorted({i for i in (*old_view.chunks, *view.chunks) if i * osz < hi and (i + 1) * osz > lo})
    extents: list[tuple[int, int, bool]] = []
    for idx in indices:
        old, new = old_view.chunks.get(idx), view.chunks.get(idx)
        if old is new:  # still shared: untouched since the snapshot
            continue
        base = idx * osz
        pieces: list[tuple[int, int, bool]]
        if new is None:
            assert old is not None
            now_parent = view.parent_covers(base)
            pieces = [(a, b, now_parent) for a, b in old.extents]
        else:
            changed = _changed_since(old, new, old_view.parent_covers(base))
            if changed is None:
                changed = new.extents.copy()
                if old is not None:
                    changed.update(old.extents)
            pieces = [p for a, b in changed for p in _split(a, b, new.extents)]
        for a, b, exists in pieces:
            a, b = max(a + base, lo), min(b + base, hi)
            if a < b:
                extents.append((a, b, exists))
    return extents


def diff_extents(
    view: View, old_view: View | None, lo: int, hi: int, include_parent: bool, whole_object: bool
) -> list[tuple[int, int, bool]]:
    """Return the ``(start, end, exists)`` extents of ``[lo, hi)`` that ``diff_iterate`` reports.

    With ``old_view`` None that is every allocated extent (the parent's too
    if ``include_parent``); otherwise what changed since ``old_view``.
    ``whole_object`` widens each extent to its object, like librbd.
    """
    if old_view is None:
        extents = [(a, b, True) for a, b in allocated(view, lo, hi, include_parent)]
    else:
        extents = _changed(old_view, view, lo, hi)
    if not whole_object:
        return extents
    osz = view.obj_size
    per_object: dict[int, bool] = {}
    for a, _b, exists in extents:
        per_object[a // osz] = per_object.get(a // osz, False) or exists
    return [(max(i * osz, lo), min((i + 1) * osz, hi), exists) for i, exists in sorted(per_object.items())]
