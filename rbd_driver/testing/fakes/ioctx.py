# SPDX-License-Identifier: Apache-2.0
"""The fake ``rados.Ioctx``: I/O on the RADOS objects of one pool.

Raw objects are what ``write``/``write_full`` create and ``lock_exclusive``
takes ``cls_lock`` locks on. Reads (``read``, ``stat``, ``operate_read_op``)
also see librbd's metadata objects of the pool's images (``rbd_id.<name>``,
``rbd_header.<id>``, ``<name>.rbd``; see :mod:`.metadata`), rendered from the
images' current state; such an object wins over a raw object of the same
name. They are read-only views, with one exception: ``rbd_id`` objects can
be created by a write op (``operate_write_op``) and removed
(``remove_object``, a ``remove`` step), which together with the cls_rbd
directory methods of ``execute`` (:mod:`.cls_rbd`) is how an image is
renamed without librbd. Other writes and locks on those names only touch
the raw object store. Image data objects (``rbd_data.*``) are not visible,
and ``get_cluster_stats`` counts neither.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Any, Literal

from rbd_driver.testing.fakes import cls_rbd
from rbd_driver.testing.fakes.errors import RadosErrors, check_bytes, check_str, rados_error
from rbd_driver.testing.fakes.fake_cluster import api
from rbd_driver.testing.fakes.metadata import RBD_HEADER_PREFIX, RBD_ID_PREFIX, metadata_object
from rbd_driver.testing.fakes.model import FakePool, Locker, RadosObject
from rbd_driver.testing.fakes.readop import (
    OmapIterator,
    ReadOp,
    check_c_int,
    check_cython_arg,
    omap_get_vals_step,
)
from rbd_driver.testing.fakes.writeop import WriteOp

if TYPE_CHECKING:
    from rbd_driver.testing.fakes.rados import Rados

__all__ = ["Ioctx", "LOCK_FLAG_MAY_RENEW", "LOCK_FLAG_MUST_RENEW"]

# cls_lock flags of lock_exclusive.
LOCK_FLAG_MAY_RENEW = 0x1
LOCK_FLAG_MUST_RENEW = 0x2


class Ioctx:
    """Fake ``rados.Ioctx``: I/O on the raw objects of one pool.

    ``state`` is ``"open"`` or ``"closed"``; calls after close raise
    IoctxStateError.
    """

    def __init__(self, rados: Rados, name: str) -> None:
        pool = rados._fake_cluster.pools.get(name)
        if pool is None:
            raise rados_error(errno.ENOENT, f"error opening pool '{name}'")
        self._cluster = rados._fake_cluster
        self._rados = rados
        self._pool = pool
        self.name = name
        self.state = "open"
        self._cluster._ioctxs[id(self)] = self

    def __repr__(self) -> str:
        return f"<fake rados.Ioctx pool={self.name} state={self.state}>"

    def require_ioctx_open(self) -> None:
        """Raise IoctxStateError if closed."""
        if self.state != "open":
            raise RadosErrors.IoctxStateError(f"The pool is {self.state}")

    def _live_pool(self) -> FakePool:
        """Return the pool, checking the ioctx, its connection and the pool still exist."""
        self.require_ioctx_open()
        if self._rados.state != "connected":
            raise rados_error(errno.ESHUTDOWN, f"Ioctx({self.name}): connection is {self._rados.state}")
        if self._pool.deleted:
            raise rados_error(errno.ENOENT, f"pool '{self.name}' was deleted")
        return self._pool

    @api
    def close(self) -> None:
        """Close the ioctx; idempotent."""
        if self.state == "open":
            self.state = "closed"
            self._cluster._ioctxs.pop(id(self), None)

    def __enter__(self) -> Ioctx:
        return self

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> Literal[False]:
        self.close()
        return False

    @api
    def get_pool_name(self) -> str:
        """Return the pool name."""
        self.require_ioctx_open()
        return self.name

    def _object(self, key: str, create: bool = False) -> RadosObject:
        """Return raw object ``key`` (created if asked); raises ObjectNotFound."""
        check_str(key, "key")
        pool = self._live_pool()
        obj = pool.objects.get(key)
        if obj is None:
            if not create:
                raise rados_error(errno.ENOENT, f"Ioctx.read({self.name}): failed to read {key}")
            obj = pool.objects[key] = RadosObject()
        return obj

    def _find(self, key: str) -> RadosObject | None:
        """Return what a read of ``key`` sees: librbd metadata, else the raw object, else None."""
        pool = self._live_pool()
        cluster = self._cluster
        counts: dict[int, int] = {}
        image = pool.images.get(key[len(RBD_HEADER_PREFIX) :]) if key.startswith(RBD_HEADER_PREFIX) else None
        if image is not None and cluster.clone_format == 2:
            # cls_rbd counts clone v2 children in the parent snapshot's record
            counts = {snap_id: len(cluster.children(image, [snap_id])) for snap_id in image.snaps}
        meta = metadata_object(pool, key, release=cluster.require_osd_release, child_counts=counts)
        return meta if meta is not None else pool.objects.get(key)

    def _readable(self, key: str, what: str) -> RadosObject:
        check_str(key, "key")
        obj = self._find(key)
        if obj is None:
            raise rados_error(errno.ENOENT, f"{what} {key}")
        return obj

    @api
    def read(self, key: str, length: int = 8192, offset: int = 0) -> bytes:
        """Return up to ``length`` bytes of object ``key``; raises ObjectNotFound."""
        obj = self._readable(key, f"Ioctx.read({self.name}): failed to read")
        return bytes(obj.data[offset : offset + length])

    @api
    def write(self, key: str, data: bytes, offset: int = 0) -> int:
        """Write ``data`` at ``offset`` of ``key`` (creating it); returns 0."""
        check_bytes(data, "data")
        obj = self._object(key, create=True)
        if len(obj.data) < offset:
            obj.data.extend(bytes(offset - len(obj.data)))
        obj.data[offset : offset + len(data)] = data
        obj.mtime = time.time()
        return 0

    @api
    def write_full(self, key: str, data: bytes) -> int:
        """Replace the content of ``key`` with ``data``; returns 0."""
        check_bytes(data, "data")
        obj = self._object(key, create=True)
        obj.data = bytearray(data)
        obj.mtime = time.time()
        return 0

    @api
    def stat(self, key: str) -> tuple[int, time.struct_time]:
        """Return ``(size, mtime)`` of ``key``; raises ObjectNotFound."""
        obj = self._readable(key, "Failed to stat")
        return len(obj.data), time.localtime(obj.mtime)

    @api
    def remove_object(self, key: str) -> bool:
        """Delete ``key`` and its locks (an image's ``rbd_id`` object too); returns
        True; raises ObjectNotFound."""
        check_str(key, "key")
        pool = self._live_pool()
        if not self._remove(pool, key):
            raise rados_error(errno.ENOENT, f"Failed to remove '{key}'")
        return True

    @staticmethod
    def _remove(pool: FakePool, key: str) -> bool:
        """Delete ``key``; return False if it did not exist."""
        found = pool.objects.pop(key, None) is not None
        if key.startswith(RBD_ID_PREFIX):
            image = pool.image_by_id_object(key[len(RBD_ID_PREFIX) :])
            if image is not None:
                image.id_object = None
                found = True
        for lock_key in [k for k in pool.locks if k[0] == key]:
            del pool.locks[lock_key]
        pool.settle_id_objects()
        return found

    @api
    def get_pool_id(self) -> int:
        """Return the pool id."""
        self.require_ioctx_open()
        return self._pool.id

    # -- write operations and object classes ---------------------------------

    def create_write_op(self) -> WriteOp:
        """Return a created WriteOp; release it with :meth:`release_write_op`."""
        return WriteOp().create()

    def release_write_op(self, write_op: WriteOp) -> None:
        write_op.release()

    @api
    def operate_write_op(self, write_op: WriteOp, oid: str, mtime: int = 0, flags: int = 0) -> None:
        """Run the steps of ``write_op`` on object ``oid``, all or nothing.

        Raises ObjectExists (``new`` exclusive on an existing object) or
        ObjectNotFound (``remove`` of a missing one); then nothing changed.
        """
        check_cython_arg(write_op, "write_op", WriteOp, "rados.WriteOp")
        if oid is None:
            raise TypeError("oid must be a string")
        check_cython_arg(oid, "oid", str, "str")
        check_c_int(flags)
        pool = self._live_pool()
        what = f"Ioctx.operate_write_op({self.name}): failed to operate write op for oid {oid}"
        exists = self._find(oid) is not None
        remove_first, data = False, None
        for step in write_op.steps:
            if step.kind == "new":
                if exists and step.exclusive:
                    raise rados_error(errno.EEXIST, what)
                if not exists:
                    data, exists = bytearray(), True
            elif step.kind == "write_full":
                data, exists = bytearray(step.data), True
            elif step.kind == "remove":
                if not exists:
                    raise rados_error(errno.ENOENT, what)
                remove_first, data, exists = True, None, False
        if remove_first:
            self._remove(pool, oid)
        if data is not None:
            pool.objects[oid] = RadosObject(data, float(mtime) if mtime else time.time())
        pool.settle_id_objects()

    @api
    def execute(self, key: str, cls: str, method: str, data: bytes, length: int = 8192) -> tuple[int, bytes]:
        """Run object-class method ``cls.method`` on ``key``; returns ``(length, output)``.

        Only the cls_rbd directory methods are modelled (:mod:`.cls_rbd`); a
        failing method raises the rados error of its errno and changes nothing.
        """
        for value, label in ((key, "key"), (cls, "cls"), (method, "method")):
            check_str(value, label)
        check_bytes(data, "data")
        check_c_int(length)
        pool = self._live_pool()
        out = cls_rbd.call(pool, key, cls, method, data,
                           f"Ioctx.exec({self.name}): failed to exec {cls}:{method} on {key}")
        out = out[:length]
        return len(out), out

    # -- compound read operations -------------------------------------------

    def create_read_op(self) -> ReadOp:
        """Return a created ReadOp; release it with :meth:`release_read_op`."""
        return ReadOp().create()

    def release_read_op(self, read_op: ReadOp) -> None:
        read_op.release()

    @api
    def get_omap_vals(
        self, read_op: ReadOp, start_after: str, filter_prefix: str, max_return: int
    ) -> tuple[OmapIterator, int]:
        """Add an omap read to ``read_op``; returns ``(iterator, 0)``.

        The iterator yields ``(key, value)`` pairs sorted by key, with keys
        after ``start_after`` that start with ``filter_prefix`` (``""`` or
        None: no bound, no filter), at most ``max_return`` of them (and at most
        what the OSD returns per request), once :meth:`operate_read_op` ran.
        """
        check_cython_arg(read_op, "read_op", ReadOp, "rados.ReadOp")
        check_cython_arg(start_after, "start_after", str, "str", optional=True)
        check_cython_arg(filter_prefix, "filter_prefix", str, "str", optional=True)
        check_c_int(max_return)
        it = OmapIterator(self)
        read_op._add(omap_get_vals_step(start_after, filter_prefix, max_return, it))
        return it, 0  # the real binding returns 0 too

    @api
    def operate_read_op(self, read_op: ReadOp, oid: str, flag: int = 0) -> None:
        """Run ``read_op`` on object ``oid``, filling its iterators; raises ObjectNotFound."""
        check_cython_arg(read_op, "read_op", ReadOp, "rados.ReadOp")
        if oid is None:
            raise TypeError("oid must be a string")
        check_cython_arg(oid, "oid", str, "str")
        check_c_int(flag)
        obj = self._find(oid)
        read_op._run(obj)
        if obj is None:
            raise rados_error(errno.ENOENT, f"Failed to operate read op for oid {oid}")

    # -- cls_lock ---------------------------------------------------------------

    def _entity(self) -> str:
        return f"client.{self._rados._instance_id}"

    @api
    def lock_exclusive(
        self, key: str, name: str, cookie: str, desc: str = "", duration: int | None = None, flags: int = 0
    ) -> None:
        """Take an exclusive lock (creating the object, as cls_lock does).

        Raises ObjectBusy if another client or cookie holds it, ObjectExists
        if we do (unless ``flags`` asks to renew), ObjectNotFound if
        LOCK_FLAG_MUST_RENEW is set and we do not hold it.
        """
        for value, label in ((key, "key"), (name, "name"), (cookie, "cookie"), (desc, "desc")):
            check_str(value, label)
        pool = self._live_pool()
        holder = pool.lock_holder(key, name)
        expiration = time.time() + duration if duration else None
        what = f"Ioctx.lock_exclusive({self.name}): failed to lock {key}"
        if holder is not None:
            if (holder.entity, holder.cookie) != (self._entity(), cookie):
                raise rados_error(errno.EBUSY, what)
            if not flags & (LOCK_FLAG_MAY_RENEW | LOCK_FLAG_MUST_RENEW):
                raise rados_error(errno.EEXIST, what)
            holder.expiration = expiration
            return
        if flags & LOCK_FLAG_MUST_RENEW:
            raise rados_error(errno.ENOENT, what)
        self._object(key, create=True)
        pool.locks[(key, name)] = Locker(self._entity(), cookie, desc, expiration)

    @api
    def unlock(self, key: str, name: str, cookie: str) -> None:
        """Release our lock; raises ObjectNotFound if we do not hold it."""
        for value, label in ((key, "key"), (name, "name"), (cookie, "cookie")):
            check_str(value, label)
        pool = self._live_pool()
        holder = pool.lock_holder(key, name)
        if holder is None or (holder.entity, holder.cookie) != (self._entity(), cookie):
            raise rados_error(errno.ENOENT, f"Ioctx.rados_unlock({self.name}): failed to unlock {key}")
        del pool.locks[(key, name)]
