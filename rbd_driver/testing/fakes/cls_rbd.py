# SPDX-License-Identifier: Apache-2.0
"""The cls_rbd object-class methods the code calls through ``Ioctx.execute``.

Only the pool directory methods are modelled: ``dir_get_id`` and
``dir_rename_image`` on the ``rbd_directory`` object, with the checks and
errnos of pacific's ``cls_rbd.cc``. The directory of a pool is the names of
its format-2 images that are not in the trash (``FakeImage.name``), so it
always agrees with ``RBD.list``. As on an OSD, a method that fails changes
nothing, and a method or class that does not exist fails with EOPNOTSUPP.
"""

from __future__ import annotations

import errno

from rbd_driver.testing.fakes.errors import rados_error
from rbd_driver.testing.fakes.model import FakeImage, FakePool, encode_string

__all__ = ["RBD_DIRECTORY", "call"]

RBD_DIRECTORY = "rbd_directory"


class ClsError(Exception):
    """A negative return of a class method (``err`` is the positive errno)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.err = err


def _strings(data: bytes, count: int) -> list[str]:
    """Decode ``count`` Ceph strings; EINVAL (a ``buffer::error``) if malformed."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise ClsError(errno.EINVAL)
        length = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
        if pos + length > len(data):
            raise ClsError(errno.EINVAL)
        try:
            out.append(data[pos : pos + length].decode())
        except UnicodeDecodeError as err:
            raise ClsError(errno.EINVAL) from err
        pos += length
    return out


def _listed(pool: FakePool, name: str) -> FakeImage | None:
    image = pool.image_by_name(name)
    return image if image is not None and not image.old_format else None


def _listed_id(pool: FakePool, image_id: str) -> FakeImage | None:
    image = pool.images.get(image_id)
    return image if image is not None and image.trash is None and not image.old_format else None


def _is_valid_id(image_id: str) -> bool:
    return bool(image_id) and image_id.isascii() and image_id.isalnum()


def dir_get_id(pool: FakePool, data: bytes) -> bytes:
    """Return the id listed under a name; ENOENT if the name is not listed."""
    (name,) = _strings(data, 1)
    image = _listed(pool, name)
    if image is None:
        raise ClsError(errno.ENOENT)
    return encode_string(image.id)


def dir_rename_image(pool: FakePool, data: bytes) -> bytes:
    """Move a directory entry from ``src`` to ``dst``; the id objects are untouched.

    ENOENT: ``src`` (or the id) is not listed; ESTALE: they are listed but
    not with each other; EINVAL: ``dst`` empty or the id not alphanumeric;
    EEXIST: ``dst`` is listed.
    """
    src, dst, image_id = _strings(data, 3)
    image = _listed(pool, src)
    if image is None:
        raise ClsError(errno.ENOENT)
    by_id = _listed_id(pool, image_id)
    if by_id is None:
        raise ClsError(errno.ENOENT)
    if by_id is not image:
        raise ClsError(errno.ESTALE)
    if not dst or not _is_valid_id(image_id):
        raise ClsError(errno.EINVAL)
    if _listed(pool, dst) is not None:
        raise ClsError(errno.EEXIST)
    image.dir_rename(dst)
    pool.settle_id_objects()
    return b""


_DIRECTORY_METHODS = {"dir_get_id": dir_get_id, "dir_rename_image": dir_rename_image}
# Other cls_rbd methods exist on a real OSD; calling them here is a test bug.
_KNOWN_RBD_METHODS = {"get_id", "set_id", "dir_add_image", "dir_remove_image", "dir_list",
                      "dir_get_name", "get_parent", "parent_get", "get_size", "get_features"}


def call(pool: FakePool, key: str, cls: str, method: str, data: bytes, what: str) -> bytes:
    """Run ``cls.method`` on object ``key`` of ``pool``; return its output or raise the rados error."""
    try:
        if cls != "rbd" or (method not in _DIRECTORY_METHODS and method not in _KNOWN_RBD_METHODS):
            raise ClsError(errno.EOPNOTSUPP)
        handler = _DIRECTORY_METHODS.get(method)
        if handler is None:
            raise NotImplementedError(f"the fake cls_rbd does not model {method}")
        if key != RBD_DIRECTORY:
            raise ClsError(errno.ENOENT)  # the directory keys are not in that object
        return handler(pool, data)
    except ClsError as err:
        raise rados_error(err.err, what) from None
