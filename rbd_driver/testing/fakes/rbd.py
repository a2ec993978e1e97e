# SPDX-License-Identifier: Apache-2.0
"""The fake ``rbd.RBD``: pool-level image management (create, clone, remove, rename, trash).

Each method checks what librbd checks, in the same order where the order is
visible, and raises the same ``rbd`` exception: ImageExists for a taken
name, ImageBusy while a handle watches the image, ImageHasSnapshots before
snapshots are purged, and so on. :func:`rbd_pool` is also how
:class:`~rbd_driver.testing.fakes.image.Image` resolves its ioctx.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from rbd_driver.testing.fakes.errors import RbdErrors, check_str, check_uint, rbd_error
from rbd_driver.testing.fakes.fake_cluster import api
from rbd_driver.testing.fakes.features import (
    IMPLICIT_FEATURES,
    RBD_FEATURE_LAYERING,
    RBD_FEATURES_ALL,
    parse_features,
    validate_features,
    validate_order,
)
from rbd_driver.testing.fakes.model import FakeImage, FakePool, Trash
from rbd_driver.testing.fakes.rados import Ioctx

__all__ = ["RBD", "rbd_pool"]


def rbd_pool(ioctx: Any) -> FakePool:
    """Return the pool of ``ioctx`` for an rbd call, with the rbd errors for a dead one."""
    if not isinstance(ioctx, Ioctx):
        raise TypeError("ioctx must be rados.Ioctx object")
    ioctx.require_ioctx_open()
    if ioctx._rados.state != "connected":
        raise rbd_error(errno.ESHUTDOWN, f"connection is {ioctx._rados.state}")
    if ioctx._pool.deleted:
        raise rbd_error(errno.ENOENT, f"pool {ioctx.name} was deleted")
    return ioctx._pool


def _remove_image(ioctx: Ioctx, image: FakeImage) -> None:
    """Delete an image's record; raises ImageHasSnapshots or ImageBusy.

    A clone's parent snapshot in the trash namespace goes with its last clone.
    """
    if image.snaps:
        raise rbd_error(errno.ENOTEMPTY, "error removing image: image has snapshots")
    if image.watchers():
        raise rbd_error(errno.EBUSY, "error removing image: image has watchers")
    image.removed = True
    del image.pool.images[image.id]
    ioctx._cluster.prune_trashed_snaps()


def _trash_entry(image: FakeImage) -> dict[str, Any]:
    assert image.trash is not None
    return {
        "id": image.id,
        "name": image.name,
        "source": "USER",
        # librbd keeps whole seconds and returns naive local datetimes.
        "deletion_time": datetime.fromtimestamp(int(image.trash.deleted_at)),
        "deferment_end_time": datetime.fromtimestamp(int(image.trash.deferment_end)),
    }


def _trashed(ioctx: Ioctx, image_id: str, what: str) -> FakeImage:
    check_str(image_id, "image_id")
    image = rbd_pool(ioctx).images.get(image_id)
    if image is None or image.trash is None:
        raise rbd_error(errno.ENOENT, f"error {what} image {image_id} from trash")
    return image


class RBD:
    """Fake ``rbd.RBD``: pool-level image management."""

    @api
    def create(
        self,
        ioctx: Ioctx,
        name: str,
        size: int,
        order: int | None = None,
        old_format: bool = False,
        features: int | None = None,
    ) -> None:
        """Create an image; features default to the ``rbd_default_features`` conf (61).

        Raises ImageExists, InvalidArgument, FunctionNotSupported (unknown
        features), ArgumentOutOfRange (order outside 12..25), TypeError.
        """
        check_str(name, "name")
        check_uint(size, "size")
        pool = rbd_pool(ioctx)
        conf = ioctx._rados._conf
        if old_format:
            if features:
                raise RbdErrors.InvalidArgument(
                    "format 1 images do not support feature masks, non-default striping, nor data pool"
                )
            features = 0
        else:
            if features is None:
                features = parse_features(conf.get("rbd_default_features"))
            validate_features(features)
        order = order or int(conf.get("rbd_default_order") or 22)
        validate_order(order)
        # librbd creates rbd_id.<name> exclusively first, then the directory entry.
        if pool.id_object_exists(name) or pool.image_by_name(name) is not None:
            raise rbd_error(errno.EEXIST, "error creating image")
        ioctx._cluster.new_image(pool, name, size, order, features, bool(old_format))

    @api
    def clone(
        self,
        p_ioctx: Ioctx,
        p_name: str,
        p_snapname: str,
        c_ioctx: Ioctx,
        c_name: str,
        features: int | None = None,
        order: int | None = None,
    ) -> None:
        """Clone ``p_name@p_snapname`` into ``c_name``; features default to the parent's.

        Raises ImageNotFound (parent or snapshot missing), InvalidArgument
        (parent is format 1, or the snapshot is not protected while
        ``cluster.clone_format`` is 1), FunctionNotSupported (no layering),
        ImageExists, ArgumentOutOfRange.
        """
        for value, label in ((p_name, "parent_name"), (p_snapname, "parent_snapname"),
                             (c_name, "clone_name")):
            check_str(value, label)
        c_pool = rbd_pool(c_ioctx)
        p_pool = rbd_pool(p_ioctx)
        cluster = p_ioctx._cluster
        if features is not None and features & ~RBD_FEATURES_ALL:
            raise rbd_error(errno.ENOSYS, "librbd does not support requested features")
        parent = p_pool.image_by_name(p_name)
        snap = parent.snap_by_name(p_snapname) if parent is not None else None
        if parent is None or snap is None:
            raise rbd_error(errno.ENOENT, f"error opening parent {p_name}@{p_snapname}")
        if parent.old_format:
            raise rbd_error(errno.EINVAL, "parent image must be in new format")
        if not parent.features & RBD_FEATURE_LAYERING:
            raise rbd_error(errno.ENOSYS, "parent image must support layering")
        if features is None:
            features = parent.features & ~IMPLICIT_FEATURES
        if cluster.clone_format == 1 and not snap.protected:
            raise rbd_error(errno.EINVAL, "parent snapshot must be protected")
        if not features & RBD_FEATURE_LAYERING:
            raise rbd_error(errno.ENOSYS, "cloning image must support layering")
        if c_pool.id_object_exists(c_name) or c_pool.image_by_name(c_name) is not None:
            raise rbd_error(errno.EEXIST, f"rbd image {c_name} already exists")
        validate_features(features)
        order = order or parent.order
        validate_order(order)
        child = cluster.new_image(c_pool, c_name, snap.size, order, features, False)
        child.clone_of(parent, snap)

    @api
    def list(self, ioctx: Ioctx) -> list[str]:
        """Return the image names of the pool (not those in the trash)."""
        return rbd_pool(ioctx).image_names()

    @api
    def remove(self, ioctx: Ioctx, name: str, on_progress: Callable[[int, int], Any] | None = None) -> None:
        """Delete an image; raises ImageNotFound, ImageHasSnapshots, ImageBusy (open watchers)."""
        check_str(name, "name")
        image = rbd_pool(ioctx).image_by_name(name)
        if image is None:
            raise rbd_error(errno.ENOENT, f"error removing image {name}")
        ioctx._cluster.pause_point("RBD.remove")
        if image.removed:
            raise rbd_error(errno.ENOENT, f"error removing image {name}")
        _remove_image(ioctx, image)  # by the id resolved above, even if renamed meanwhile
        if on_progress is not None:
            on_progress(1, 1)

    @api
    def rename(self, ioctx: Ioctx, src: str, dest: str) -> None:
        """Rename an image; raises ImageNotFound, ImageExists."""
        check_str(src, "src")
        check_str(dest, "dest")
        pool = rbd_pool(ioctx)
        image = pool.image_by_name(src)
        if image is None:
            raise rbd_error(errno.ENOENT, f"error renaming image {src}")
        if pool.id_object_exists(dest) or pool.image_by_name(dest) is not None:
            raise rbd_error(errno.EEXIST, f"error renaming image {src} to {dest}")
        image.name = dest

    @api
    def trash_move(self, ioctx: Ioctx, name: str, delay: int = 0) -> None:
        """Move an image to the trash; raises ImageNotFound, OperationNotSupported (format 1).

        Like librbd's, it does not look at watchers: an open image moves too.
        """
        check_str(name, "name")
        image = rbd_pool(ioctx).image_by_name(name)
        if image is None:
            raise rbd_error(errno.ENOENT, f"error moving image {name} to trash")
        if image.old_format:
            raise rbd_error(errno.EOPNOTSUPP, "cannot move v1 image to trash")
        now = time.time()
        image.trash = Trash(deleted_at=now, deferment_end=now + delay)

    @api
    def trash_list(self, ioctx: Ioctx) -> Iterator[dict[str, Any]]:
        """Yield ``{"id", "name", "source", "deletion_time", "deferment_end_time"}`` per entry."""
        pool = rbd_pool(ioctx)
        return iter([_trash_entry(i) for i in pool.images.values() if i.trash is not None])

    @api
    def trash_remove(
        self,
        ioctx: Ioctx,
        image_id: str,
        force: bool = False,
        on_progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        """Delete a trashed image; raises ImageNotFound, PermissionError (deferment not over),
        ImageHasSnapshots, ImageBusy."""
        image = _trashed(ioctx, image_id, "deleting")
        assert image.trash is not None
        if not force and time.time() < image.trash.deferment_end:
            raise rbd_error(errno.EPERM, "error deleting image from trash: deferment time has not expired")
        _remove_image(ioctx, image)
        if on_progress is not None:
            on_progress(1, 1)

    @api
    def trash_restore(self, ioctx: Ioctx, image_id: str, name: str) -> None:
        """Restore a trashed image as ``name`` ("" keeps its name); raises ImageNotFound, ImageExists."""
        check_str(name, "name")
        image = _trashed(ioctx, image_id, "restoring")
        name = name or image.name
        if image.pool.image_by_name(name) is not None:
            raise rbd_error(errno.EEXIST, "error restoring image from trash")
        image.name = name
        image.trash = None

    @api
    def pool_init(self, ioctx: Ioctx, force: bool = False) -> None:
        """Initialize the pool for RBD (enables the ``rbd`` application)."""
        rbd_pool(ioctx).applications.add("rbd")
