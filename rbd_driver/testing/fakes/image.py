# SPDX-License-Identifier: Apache-2.0
"""The fake ``rbd.Image``: an open handle on one image, at its head or at a snapshot.

A handle reads and writes the image's :mod:`~rbd_driver.testing.fakes.sparse_data`
views and manages its snapshots and clone relationship, raising what librbd
raises: ReadOnlyImage for changes through a read-only or snapshot handle,
InvalidArgument after close or past the end, ImageNotFound once the image
(or the snapshot it is set to) was removed underneath it. Handles opened
writable hold a watch, as librbd's do, which keeps the image from being
removed or trashed until they are closed.
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Literal

from rbd_driver.testing.fakes import crypto, sparse_data
from rbd_driver.testing.fakes.aio import Completion, Outcome, submit
from rbd_driver.testing.fakes.errors import RbdErrors, check_bytes, check_str, check_uint, rbd_error
from rbd_driver.testing.fakes.fake_cluster import api
from rbd_driver.testing.fakes.features import RBD_FEATURE_DEEP_FLATTEN, RBD_FEATURE_LAYERING
from rbd_driver.testing.fakes.model import SNAP_NAMESPACE_TRASH, FakeImage, FakeSnapshot
from rbd_driver.testing.fakes.rados import Ioctx
from rbd_driver.testing.fakes.rbd import rbd_pool
from rbd_driver.testing.fakes.sparse_data import Chunk, View

__all__ = ["Image"]


class Image:
    """Fake ``rbd.Image``; ``snapshot=`` or :meth:`set_snap` open it read-only at a snapshot."""

    @api
    def __init__(
        self,
        ioctx: Ioctx,
        name: str | None = None,
        snapshot: str | None = None,
        read_only: bool = False,
        image_id: str | None = None,
    ) -> None:
        check_str(name, "name", optional=True)
        check_str(snapshot, "snapshot", optional=True)
        check_str(image_id, "image_id", optional=True)
        if name is not None and image_id is not None:
            raise RbdErrors.InvalidArgument("only need to specify image name or image id")
        if name is None and image_id is None:
            raise RbdErrors.InvalidArgument("image name or image id was not specified")
        pool = rbd_pool(ioctx)
        # By name, librbd finds the image through its rbd_id object, not the directory.
        image = pool.resolve_name(name) if name is not None else pool.images.get(image_id or "")
        what = f"error opening image {name or image_id} at snapshot {snapshot}"
        if image is None:
            raise rbd_error(errno.ENOENT, what)
        snap_id = None
        if snapshot is not None:
            snap = image.snap_by_name(snapshot)
            if snap is None:
                raise rbd_error(errno.ENOENT, what)
            snap_id = snap.id
        self._cluster = ioctx._cluster
        self._rados = ioctx._rados
        self._image = image
        self._snap_id: int | None = snap_id
        self._read_only = bool(read_only)
        self._cookie = next(self._cluster._cookies)
        self._pending: dict[int, Completion] = {}
        self.name = image.name
        self._closed = False
        self._crypto: crypto.Crypto | None = None  # loaded by encryption_format/_load
        image.handles[self._cookie] = self
        self._cluster._images[id(self)] = self

    def __repr__(self) -> str:
        return f"rbd.Image(ioctx, {self.name!r})"

    def _describe(self) -> str:
        """``pool/image[@snap][ (read-only)]``, as open_handles() lists it."""
        snap = self._image.snaps.get(self._snap_id) if self._snap_id is not None else None
        where = f"@{snap.name}" if snap else ""
        mode = " (read-only)" if self._read_only else ""
        return f"{self._image.pool.name}/{self._image.name}{where}{mode}"

    # -- state checks ---------------------------------------------------------

    def require_not_closed(self) -> None:
        """Raise InvalidArgument if the image is closed."""
        if self._closed:
            raise RbdErrors.InvalidArgument("image is closed")

    def _live(self) -> FakeImage:
        self.require_not_closed()
        if self._rados.state != "connected":
            raise rbd_error(errno.ESHUTDOWN, f"connection is {self._rados.state}")
        if self._image.removed:
            raise rbd_error(errno.ENOENT, f"image {self.name} was removed")
        return self._image

    def _view(self) -> View:
        image = self._live()
        if self._snap_id is None:
            return image.head
        snap = image.snaps.get(self._snap_id)
        if snap is None:
            raise rbd_error(errno.ENOENT, f"snapshot of image {self.name} was removed")
        return snap.view

    def _writable_head(self, what: str) -> View:
        """Return the head for a data change; raises ReadOnlyImage at a snapshot or read-only."""
        image = self._live()
        if self._read_only or self._snap_id is not None:
            raise rbd_error(errno.EROFS, f"error {what} image {self.name}")
        return image.head

    def _meta_writable(self, what: str) -> FakeImage:
        """Return the image for a snapshot change, which librbd allows while at a snapshot."""
        image = self._live()
        if self._read_only:
            raise rbd_error(errno.EROFS, f"error {what} of image {self.name}")
        return image

    def _snap(self, name: str, what: str) -> FakeSnapshot:
        check_str(name, "name")
        snap = self._live().snap_by_name(name)
        if snap is None:
            raise rbd_error(errno.ENOENT, f"error {what} snapshot {name} of image {self.name}")
        return snap

    @staticmethod
    def _clip(size: int, offset: int, length: int, what: str) -> int:
        """Return ``length`` clipped to the image; raises InvalidArgument past the end."""
        if length == 0:
            return 0
        if offset >= size:
            raise rbd_error(errno.EINVAL, f"error {what} at {offset}~{length}: beyond the image end ({size})")
        return min(length, size - offset)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Wait for pending aio, then release the image; idempotent."""
        # Not under the lock: a pending aio needs it to finish.
        for completion in list(self._pending.values()):
            completion._done.wait()
        with self._cluster._lock:
            self._cluster.on_call("Image.close")
            if not self._closed:
                self._closed = True
                self._image.handles.pop(self._cookie, None)
                self._cluster._images.pop(id(self), None)

    def __enter__(self) -> Image:
        return self

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> Literal[False]:
        self.close()
        return False

    # -- information ------------------------------------------------------------

    @api
    def size(self) -> int:
        """Return the size in bytes (of the snapshot, if one is set), as the
        encryption layer shows it once loaded (the header left out)."""
        return self._view().size - self._header

    @property
    def _header(self) -> int:
        return self._crypto.header if self._crypto is not None else 0

    # -- encryption (librbd's LUKS layer, see fakes/crypto.py) ------------------

    @api
    def encryption_format(self, format: int, passphrase: str | bytes,
                          cipher_alg: int = crypto.RBD_ENCRYPTION_ALGORITHM_AES256) -> None:
        """Write a LUKS header and load the encryption on this handle;
        EOPNOTSUPP on a clone, EINVAL if already loaded or too small."""
        view = self._writable_head("formatting")
        if self._crypto is not None:
            raise rbd_error(errno.EEXIST, f"error formatting image {self.name}")
        header, loaded = crypto.format_header(format, passphrase, view.size,
                                              view.parent is not None, self.name)
        sparse_data.discard_view(view, 0, loaded.header)
        sparse_data.write_view(view, 0, header)
        self._crypto = loaded

    @api
    def encryption_load(self, format: int, passphrase: str | bytes) -> None:
        """Load the encryption of the image (or its parent's, for a clone) on this handle;
        EPERM for a wrong passphrase, EINVAL for another format or no header."""
        view = self._view()
        if self._crypto is not None:
            raise rbd_error(errno.EEXIST, f"error loading encryption on image {self.name}")
        head = bytes(sparse_data.read_view(view, 0, min(view.size, 4096)))
        self._crypto = crypto.load_header(format, passphrase, head, self.name)

    @api
    def stat(self) -> dict[str, Any]:
        """Return ``{size, obj_size, num_objs, order, block_name_prefix, parent_pool, parent_name}``."""
        view = self._view()
        image = self._image
        return {
            "size": view.size,
            "obj_size": image.obj_size,
            "num_objs": -(-view.size // image.obj_size),
            "order": image.order,
            "block_name_prefix": image.block_name_prefix,
            "parent_pool": -1,  # deprecated fields, always these values since luminous
            "parent_name": "",
        }

    @api
    def block_name_prefix(self) -> str:
        """Return the prefix of the image's RADOS object names."""
        return self._live().block_name_prefix

    @api
    def features(self) -> int:
        """Return the feature bits."""
        return self._live().features

    @api
    def id(self) -> str:
        """Return the image id; raises InvalidArgument for format 1 images."""
        image = self._live()
        if image.old_format:
            raise rbd_error(errno.EINVAL, f"error getting id for image {self.name}")
        return image.id

    @api
    def get_name(self) -> str:
        """Return the image name."""
        return self._live().name

    @api
    def parent_info(self) -> tuple[str, str, str]:
        """Return ``(pool, image, snapshot)`` of the parent; raises ImageNotFound if none."""
        link = self._view().parent
        if link is None:
            raise rbd_error(errno.ENOENT, f"error getting parent info for image {self.name}")
        return (link.image.pool.name, link.image.name, link.image.snaps[link.snap_id].name)

    @api
    def overlap(self) -> int:
        """Return how many bytes of the parent the image (at its snapshot) sees;
        raises ImageNotFound if it has no parent."""
        link = self._view().parent
        if link is None:
            raise rbd_error(errno.ENOENT, f"error getting overlap for image {self.name}")
        return int(link.overlap)

    @api
    def watchers_list(self) -> Iterator[dict[str, Any]]:
        """Yield ``{"addr", "id", "cookie"}`` of each handle watching the image."""
        ids = [(h._rados._instance_id, h._cookie) for h in self._live().watchers()]
        # Every fake client sits on the same documentation address (RFC 5737).
        return iter([{"addr": f"192.0.2.1:0/{i}", "id": i, "cookie": cookie} for i, cookie in ids])

    # -- image metadata (``rbd image-meta``; a clone starts with its parent's) -----

    @api
    def metadata_get(self, key: str) -> str:
        """Return the value of metadata ``key``; raises KeyError if there is none."""
        check_str(key, "key")
        try:
            return self._live().metadata[key]
        except KeyError:
            raise KeyError(f"no metadata {key} for image {self.name}") from None

    @api
    def metadata_set(self, key: str, value: str) -> None:
        """Set metadata ``key`` to ``value``; raises ReadOnlyImage on a read-only handle."""
        check_str(key, "key")
        check_str(value, "value")
        self._meta_writable("setting metadata of").metadata[key] = value

    @api
    def metadata_remove(self, key: str) -> None:
        """Remove metadata ``key``; raises KeyError if there is none."""
        check_str(key, "key")
        image = self._meta_writable("removing metadata of")
        if key not in image.metadata:
            raise KeyError(f"no metadata {key} for image {self.name}")
        del image.metadata[key]

    @api
    def metadata_list(self) -> Iterator[tuple[str, str]]:
        """Yield ``(key, value)`` pairs in key order."""
        return iter(sorted(self._live().metadata.items()))

    # -- data -------------------------------------------------------------------

    @api
    def read(self, offset: int, length: int, fadvise_flags: int = 0) -> bytes:
        """Return the bytes at ``offset``, clipped at the end; raises InvalidArgument past it."""
        check_uint(offset, "offset")
        check_uint(length, "length")
        view, hdr = self._view(), self._header
        length = self._clip(view.size - hdr, offset, length, f"reading {self.name}")
        raw = sparse_data.read_view(view, offset + hdr, length)
        return self._crypto.decrypt(raw, offset) if self._crypto is not None else bytes(raw)

    @api
    def write(self, data: bytes, offset: int, fadvise_flags: int = 0) -> int:
        """Write ``data`` at ``offset``; returns its length.

        Raises ReadOnlyImage (read-only or at a snapshot), InvalidArgument
        (offset past the end), IncompleteWriteError (write crossing the end;
        the part inside is written), TypeError (data not bytes).
        """
        check_bytes(data, "data")
        check_uint(offset, "offset")
        view, hdr = self._writable_head("writing to"), self._header
        length = self._clip(view.size - hdr, offset, len(data), f"writing to {self.name}")
        sparse_data.write_view(view, offset + hdr, self._encrypt(memoryview(data)[:length]))
        if length != len(data):
            raise RbdErrors.IncompleteWriteError(f"Wrote only {length} out of {len(data)} bytes")
        return length

    @api
    def discard(self, offset: int, length: int) -> None:
        """Deallocate a range (it reads as zeros); raises ReadOnlyImage, InvalidArgument."""
        check_uint(offset, "offset")
        check_uint(length, "length")
        view, hdr = self._writable_head("discarding from"), self._header
        length = self._clip(view.size - hdr, offset, length, f"discarding from {self.name}")
        sparse_data.discard_view(view, offset + hdr, length)

    @api
    def write_zeroes(self, offset: int, length: int, zero_flags: int = 0) -> None:
        """Make a range read as zeros, whatever the discard granularity; raises
        ReadOnlyImage, InvalidArgument."""
        check_uint(offset, "offset")
        check_uint(length, "length")
        view, hdr = self._writable_head("writing zeroes to"), self._header
        length = self._clip(view.size - hdr, offset, length, f"writing zeroes to {self.name}")
        sparse_data.discard_view(view, offset + hdr, length)

    def _encrypt(self, data: memoryview) -> bytes | memoryview:
        return self._crypto.encrypt(data) if self._crypto is not None else data

    @api
    def flush(self) -> None:
        """No-op (there is no cache); raises InvalidArgument if closed."""
        self._live()

    @api
    def resize(self, size: int, allow_shrink: bool = True) -> None:
        """Change the size; raises ReadOnlyImage, InvalidArgument (shrink not allowed)."""
        check_uint(size, "size")
        view = self._writable_head("resizing")
        if size < view.size and not allow_shrink:
            raise rbd_error(errno.EINVAL, "error allow_shrink is False but old_size > new_size")
        sparse_data.resize_view(view, size)

    def aio_write(
        self, data: bytes, offset: int, oncomplete: Callable[[Completion], Any] | None, fadvise_flags: int = 0
    ) -> Completion:
        """Write asynchronously; calls ``oncomplete(completion)``; returns the Completion.

        Errors (ReadOnlyImage, past the end...) arrive as a negative
        ``get_return_value()``; a write crossing the end is clipped.
        """
        check_bytes(data, "data")
        check_uint(offset, "offset")

        def op() -> Outcome:
            view, hdr = self._writable_head("writing to"), self._header
            length = self._clip(view.size - hdr, offset, len(data), f"writing to {self.name}")
            sparse_data.write_view(view, offset + hdr, self._encrypt(memoryview(data)[:length]))
            return 0, ()

        return submit(self, "Image.aio_write", oncomplete, op, ())

    def aio_read(
        self,
        offset: int,
        length: int,
        oncomplete: Callable[[Completion, bytes | None], Any] | None,
        fadvise_flags: int = 0,
    ) -> Completion:
        """Read asynchronously; calls ``oncomplete(completion, data)`` (data None on error)."""
        check_uint(offset, "offset")
        check_uint(length, "length")

        def op() -> Outcome:
            view, hdr = self._view(), self._header
            count = self._clip(view.size - hdr, offset, length, f"reading {self.name}")
            raw = sparse_data.read_view(view, offset + hdr, count)
            data = self._crypto.decrypt(raw, offset) if self._crypto is not None else bytes(raw)
            return len(data), (data,)

        return submit(self, "Image.aio_read", oncomplete, op, (None,))

    # -- snapshots -----------------------------------------------------------

    @api
    def create_snap(self, name: str, flags: int = 0) -> None:
        """Snapshot the head; raises ImageExists, ReadOnlyImage."""
        check_str(name, "name")
        image = self._meta_writable("creating snapshot")
        if image.snap_by_name(name) is not None:
            raise rbd_error(errno.EEXIST, f"error creating snapshot {name} from {self.name}")
        image.create_snap(name)

    @api
    def remove_snap(self, name: str) -> None:
        """Delete a snapshot; raises ImageNotFound, ImageBusy (protected, or has
        children under clone format 1).

        Under clone format 2 a snapshot that clones still read from is not
        deleted but moved to the trash namespace, as librbd does.
        """
        snap = self._snap(name, "removing")
        image = self._meta_writable("removing snapshot")
        if snap.protected:
            raise rbd_error(errno.EBUSY, f"error removing snapshot {name} from {self.name}: protected")
        if self._cluster.children(image, [snap.id]):
            if self._cluster.clone_format != 2:
                raise rbd_error(errno.EBUSY, f"error removing snapshot {name} from {self.name}: has children")
            snap.original_name, snap.name = snap.name, str(uuid.uuid4())
            snap.namespace = SNAP_NAMESPACE_TRASH
            return
        del image.snaps[snap.id]

    @api
    def list_snaps(self) -> Iterator[dict[str, Any]]:
        """Yield ``{"id", "size", "name", "namespace"}`` per snapshot, oldest first;
        a snapshot in the trash namespace also has ``"trash": {"original_name"}``."""
        found = []
        for s in self._live().snaps.values():
            entry: dict[str, Any] = {"id": s.id, "size": s.size, "name": s.name, "namespace": s.namespace}
            if s.namespace == SNAP_NAMESPACE_TRASH:
                entry["trash"] = {"original_name": s.original_name}
            found.append(entry)
        return iter(found)

    @api
    def get_snap_timestamp(self, snap_id: int) -> datetime:
        """Return when snapshot ``snap_id`` was taken (naive UTC); raises ImageNotFound."""
        snap = self._live().snaps.get(snap_id)
        if snap is None:
            raise rbd_error(errno.ENOENT, "error getting snapshot timestamp for image: ")
        return snap.timestamp

    @api
    def protect_snap(self, name: str) -> None:
        """Protect a snapshot; raises ImageNotFound, ImageBusy (already), FunctionNotSupported."""
        snap = self._snap(name, "protecting")
        image = self._meta_writable("protecting snapshot")
        if not image.features & RBD_FEATURE_LAYERING:
            raise rbd_error(errno.ENOSYS, f"error protecting snapshot {name}: image must support layering")
        if snap.protected:
            raise rbd_error(errno.EBUSY, f"error protecting snapshot {name}: already protected")
        snap.protected = True

    @api
    def unprotect_snap(self, name: str) -> None:
        """Unprotect a snapshot; raises ImageNotFound, InvalidArgument (not protected),
        ImageBusy (it has children)."""
        snap = self._snap(name, "unprotecting")
        image = self._meta_writable("unprotecting snapshot")
        if not snap.protected:
            raise rbd_error(errno.EINVAL, f"error unprotecting snapshot {name}: not protected")
        if self._cluster.children(image, [snap.id]):
            raise rbd_error(errno.EBUSY, f"error unprotecting snapshot {name}: it has children")
        snap.protected = False

    @api
    def is_protected_snap(self, name: str) -> bool:
        """Return whether a snapshot is protected; raises ImageNotFound."""
        return self._snap(name, "checking").protected

    @api
    def rollback_to_snap(self, name: str) -> None:
        """Revert the head to a snapshot; raises ImageNotFound, ReadOnlyImage."""
        snap = self._snap(name, "rolling back to")
        self._writable_head("rolling back")
        snap.view.freeze()
        self._image.head = snap.view.copy()

    @api
    def set_snap(self, name: str | None) -> None:
        """Read from snapshot ``name`` (None: the head, writable again); raises ImageNotFound."""
        if name is None:
            self._live()
            self._snap_id = None
        else:
            self._snap_id = self._snap(name, "setting").id

    # -- layering ----------------------------------------------------------------

    @api
    def flatten(self, on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Copy the parent's data into the clone and detach it.

        With the deep-flatten feature the clone's snapshots are detached
        too. Raises InvalidArgument (no parent), ReadOnlyImage.
        """
        head = self._writable_head("flattening")
        if head.parent is None:
            raise rbd_error(errno.EINVAL, f"error flattening {self.name}: image has no parent")
        cache: dict[tuple[Any, ...], Chunk] = {}
        if self._image.features & RBD_FEATURE_DEEP_FLATTEN:
            for snap in self._image.snaps.values():
                sparse_data.materialize(snap.view, cache)
        sparse_data.materialize(head, cache)
        self._cluster.prune_trashed_snaps()
        if on_progress is not None:
            on_progress(1, 1)

    def _children_info(self) -> list[dict[str, Any]]:
        image = self._live()
        snap_ids = [self._snap_id] if self._snap_id is not None else list(image.snaps)
        return [
            {"pool": c.pool.name, "pool_namespace": "", "image": c.name, "id": c.id,
             "trash": c.trash is not None}
            for c in self._cluster.children(image, snap_ids)
        ]

    @api
    def list_children(self) -> list[tuple[str, str]]:
        """Return ``(pool, image)`` of the clones of the current snapshot (of all, at the head)."""
        return [(c["pool"], c["image"]) for c in self._children_info() if not c["trash"]]

    @api
    def list_children2(self) -> Iterator[dict[str, Any]]:
        """Yield ``{"pool", "pool_namespace", "image", "id", "trash"}`` per clone."""
        return iter(self._children_info())

    @api
    def list_descendants(self) -> Iterator[dict[str, Any]]:
        """Yield ``{"pool", "pool_namespace", "image", "id", "trash"}`` per clone of
        any snapshot of the image, and per clone of those clones, recursively."""
        return iter([
            {"pool": c.pool.name, "pool_namespace": "", "image": c.name, "id": c.id,
             "trash": c.trash is not None}
            for c in self._cluster.descendants(self._live())
        ])

    def diff_iterate(
        self,
        offset: int,
        length: int,
        from_snapshot: str | None,
        iterate_cb: Callable[[int, int, bool], Any],
        include_parent: bool = True,
        whole_object: bool = False,
    ) -> None:
        """Call ``iterate_cb(offset, length, exists)`` for each changed extent, per object.

        From ``from_snapshot`` (None: the beginning, i.e. every allocated
        extent, with the parent's if ``include_parent``) to the current
        snapshot or head. ``exists`` False means the extent now reads as
        zeros. Raises ImageNotFound (no such snapshot), InvalidArgument
        (``from_snapshot`` newer than the current snapshot, or offset past
        the end); exceptions of ``iterate_cb`` propagate.
        """
        check_uint(offset, "offset")
        check_uint(length, "length")
        with self._cluster._lock:
            self._cluster.on_call("Image.diff_iterate")
            view = self._view()
            length = self._clip(view.size, offset, length, f"diffing {self.name}")
            old_view = None
            if from_snapshot is not None:
                snap = self._snap(from_snapshot, "diffing from")
                if self._snap_id is not None and snap.id > self._snap_id:
                    raise rbd_error(errno.EINVAL, f"error generating diff from snapshot {from_snapshot}")
                old_view = snap.view
            end = offset + length
            extents = sparse_data.diff_extents(view, old_view, offset, end, bool(include_parent),
                                               whole_object)
        # The callback runs without the lock, so it may issue (and wait for) aio.
        for start, end, exists in extents:
            iterate_cb(start, end - start, exists)
