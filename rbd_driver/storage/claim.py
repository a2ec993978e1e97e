# SPDX-License-Identifier: Apache-2.0
"""Renames without opening: claims of spare clones, and their repair.

A spare clone is taken by renaming it with single cls_rbd calls on the pool
directory and the image's ``rbd_id`` object, never opening the image
(:meth:`DirectoryClaims.claim_rename`): a librbd rename opens the image and
costs about 30 ms, these four RADOS calls about 3 ms. An interrupted claim can
only leave an image listed in the pool directory without its ``rbd_id``
object, which :meth:`DirectoryClaims.restore_id_object` repairs; the removal
and clone paths of :class:`~rbd_driver.storage.rbd_utils.RBDDriver` call it,
and so does spare removal.

Mechanics only: which image to claim is decided by
:mod:`rbd_driver.storage.spares`. Every error is translated by the
connection's one translation point.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from typing import Any

from rbd_driver import exception
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["DIRECTORY", "DirectoryClaims", "decode_string", "encode_string"]

LOG = logging.getLogger(__name__)

# The pool directory of cls_rbd: image name <-> image id, for format 2 images.
DIRECTORY = "rbd_directory"


def encode_string(value: str) -> bytes:
    """Encode a Ceph string (u32 little-endian length, then UTF-8)."""
    raw = value.encode()
    return len(raw).to_bytes(4, "little") + raw


def decode_string(raw: bytes) -> str | None:
    """Decode a Ceph-encoded string (u32 little-endian length, then UTF-8)."""
    if len(raw) < 4:
        return None
    length = int.from_bytes(raw[:4], "little")
    if length == 0 or 4 + length > len(raw):
        return None
    try:
        return raw[4:4 + length].decode()
    except UnicodeDecodeError:
        return None



class DirectoryClaims:
    """Rename images of one cluster without opening them, over its one connection.

    :param client: the driver's connection.
    :param pool: the default pool.
    """

    def __init__(self, client: RadosClient, pool: str) -> None:
        self.client = client
        self.pool = pool

    def read_id(self, ioctx: Any, name: str) -> str | None:
        """Return the image id in ``rbd_id.<name>``, or None if there is no such object."""
        try:
            raw = ioctx.read(f"rbd_id.{name}", 4096)
        except self.client.rados.ObjectNotFound:
            return None
        return decode_string(raw)

    def listed_id(self, ioctx: Any, name: str) -> str | None:
        """Return the image id the pool directory lists under ``name``, or None."""
        try:
            _, out = ioctx.execute(DIRECTORY, "rbd", "dir_get_id", encode_string(name))
        except self.client.rados.ObjectNotFound:
            return None
        return decode_string(bytes(out))

    def create_id(self, ioctx: Any, name: str, image_id: str) -> None:
        """Create ``rbd_id.<name>`` holding ``image_id``; ObjectExists if it exists."""
        rados = self.client.rados
        with rados.WriteOpCtx() as op:
            op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
            op.write_full(encode_string(image_id))
            ioctx.operate_write_op(op, f"rbd_id.{name}")

    def dir_rename(self, ioctx: Any, src: str, dst: str, image_id: str) -> None:
        ioctx.execute(DIRECTORY, "rbd", "dir_rename_image",
                      encode_string(src) + encode_string(dst) + encode_string(image_id))

    def claim_rename(self, src: str, dst: str, pool: str | None = None) -> bool:
        """Rename image ``src`` to ``dst`` without opening it, in four small RADOS calls.

        Only for images nobody has open (spare clones): no watcher is told.
        The steps: read ``rbd_id.<src>``; remove it, which is the claim (of
        callers racing for ``src``, exactly one removes it); move the pool
        directory entry from ``src`` to ``dst`` (cls_rbd ``dir_rename_image``,
        which refuses if ``dst`` is listed); create ``rbd_id.<dst>``
        exclusively. Between the steps the image cannot be opened by any name
        and is never reachable by two, so an interrupted claim can only leave
        an image listed without an id object, which :meth:`restore_id_object`
        repairs (``clone``, ``remove_image`` and spare removal call it).

        :returns: True if renamed; False if ``src`` was gone or taken by
            another caller first (nothing was changed).
        :raises ImageExists: ``dst`` exists; ``src`` is left as it was.
        """
        pool = pool or self.pool
        rados = self.client.rados
        ioctx = self.client.get_ioctx(pool)
        with self.client.translate("claim image", pool=pool, image=src):
            image_id = self.read_id(ioctx, src)
            if image_id is None:
                return False
            try:
                ioctx.remove_object(f"rbd_id.{src}")
            except rados.ObjectNotFound:
                return False
        # Only this caller can move src now; every failure below puts it back.
        try:
            if not self._claim_directory(ioctx, pool, src, dst, image_id):
                return False  # src was removed from the directory meanwhile
        except BaseException:
            self._put_back(ioctx, pool, src, image_id)
            raise
        try:
            self._claim_id_object(ioctx, pool, dst, image_id)
        except BaseException:
            self._undo_directory(ioctx, pool, src, dst, image_id)
            raise
        return True

    def _claim_directory(self, ioctx: Any, pool: str, src: str, dst: str, image_id: str) -> bool:
        rados = self.client.rados
        with self.client.translate("rename in the pool directory", pool=pool, image=dst):
            try:
                self.dir_rename(ioctx, src, dst, image_id)
                return True
            except rados.Error as err:
                code = getattr(err, "errno", None)
                if code in (errno.ENOENT, errno.ESTALE):
                    return False
                if code == errno.EEXIST:
                    with contextlib.suppress(exception.RbdDriverError):
                        self.restore_id_object(dst, pool)
                    raise exception.ImageExists(pool=pool, image=dst,
                                                detail="it is listed in the pool directory") from err
                # The outcome is unknown (a timeout, say): look before undoing.
                if self.listed_id(ioctx, dst) == image_id:
                    return True
                raise

    def _claim_id_object(self, ioctx: Any, pool: str, dst: str, image_id: str) -> None:
        rados = self.client.rados
        with self.client.translate("create image id object", pool=pool, image=dst):
            try:
                self.create_id(ioctx, dst, image_id)
            except rados.Error as err:
                if self.read_id(ioctx, dst) == image_id:
                    return  # written after all, or by a repair meanwhile
                if isinstance(err, rados.ObjectExists):
                    raise exception.ImageExists(pool=pool, image=dst,
                                                detail="its id object exists") from err
                raise

    def _put_back(self, ioctx: Any, pool: str, src: str, image_id: str) -> None:
        """Recreate ``rbd_id.<src>`` if the directory still lists ``src`` as ``image_id``."""
        try:
            with self.client.translate("restore image id object", pool=pool, image=src):
                if self.listed_id(ioctx, src) == image_id:
                    self.create_id(ioctx, src, image_id)
        except Exception as err:  # the original error matters more; the state is repairable
            LOG.error("could not put back the id object of %s/%s after a failed claim "
                      "(restore_id_object repairs it): %s", pool, src, err)

    def _undo_directory(self, ioctx: Any, pool: str, src: str, dst: str, image_id: str) -> None:
        try:
            with self.client.translate("rename in the pool directory", pool=pool, image=src):
                self.dir_rename(ioctx, dst, src, image_id)
        except Exception as err:
            LOG.error("could not give %s/%s back its directory entry after a failed claim "
                      "as %s (restore_id_object repairs it): %s", pool, src, dst, err)
            return
        self._put_back(ioctx, pool, src, image_id)

    def restore_id_object(self, name: str, pool: str | None = None) -> bool:
        """Give an image listed in the pool directory without an id object its
        ``rbd_id.<name>`` back; return True if it did.

        That state (the image cannot be opened, ``rbd ls`` still shows it) is
        what an interrupted :meth:`claim_rename` leaves. A name whose header
        is gone too (a librbd removal that stopped half-way) is left to
        librbd's remove, which finishes it.
        """
        pool = pool or self.pool
        rados = self.client.rados
        ioctx = self.client.get_ioctx(pool)
        with self.client.translate("restore image id object", pool=pool, image=name):
            image_id = self.listed_id(ioctx, name)
            if image_id is None or self.read_id(ioctx, name) is not None:
                return False
            try:
                ioctx.stat(f"rbd_header.{image_id}")
            except rados.ObjectNotFound:
                return False
            try:
                self.create_id(ioctx, name, image_id)
            except rados.ObjectExists:
                return False
        LOG.warning("gave %s/%s (image id %s) back its id object, lost by an interrupted "
                    "rename", pool, name, image_id)
        return True
