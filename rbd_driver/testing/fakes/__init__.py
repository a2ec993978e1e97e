# SPDX-License-Identifier: Apache-2.0
"""In-memory fakes of the Ceph ``rados`` and ``rbd`` Python bindings, for unit tests.

:func:`make_modules` returns a ``(rados, rbd)`` pair of module objects that
share one in-memory :class:`FakeCluster`. Their attribute names, signatures,
return values and exception classes follow the real pacific (16.2) bindings
for the calls this project makes, so code that receives the modules by
injection runs unchanged::

    rados, rbd = make_modules()
    cluster = rados._cluster            # the same object as rbd._cluster
    cluster.add_pool("vms")
    client = RadosClient(conf, rados=rados, rbd=rbd)

Tests can pre-populate and inspect the cluster (:meth:`FakeCluster.add_image`,
:meth:`FakeCluster.image`), make the next call of any API method fail
(:meth:`FakeCluster.fail_next`) and check that no connection, ioctx or image
handle leaked (:meth:`FakeCluster.assert_no_open_handles`). Images are also
visible as librbd's metadata objects (``rbd_id.<name>``, the omap of
``rbd_header.<id>``, ``<name>.rbd``) to ``Ioctx.read``/``stat`` and to
``ReadOpCtx`` + ``Ioctx.get_omap_vals`` + ``Ioctx.operate_read_op``, and an
image can be renamed without librbd, as cls calls: ``rbd_id`` objects made
by a ``WriteOpCtx`` (``new`` + ``write_full``) and removed with
``Ioctx.remove_object``, and the pool directory changed with
``Ioctx.execute("rbd_directory", "rbd", "dir_rename_image", ...)``.

The package is split by idea: ``errors`` (the exception classes),
``sparse_data`` (sparse copy-on-write image data), ``model`` (pools,
objects, images, snapshots), ``fake_cluster`` (the cluster, failure
injection, handle tracking), ``mon`` (monitor commands), ``rados``
(``Rados``), ``ioctx`` (``Ioctx``), ``readop`` (``ReadOp``,
``ReadOpCtx``, ``OmapIterator``), ``writeop`` (``WriteOp``,
``WriteOpCtx``), ``cls_rbd`` (the directory methods of ``execute``),
``metadata`` (librbd's metadata objects), ``features``, ``rbd`` (``RBD``), ``image``
(``Image``) and ``aio`` (``Completion``).
"""

from __future__ import annotations

import types

from rbd_driver.testing.fakes.aio import Completion
from rbd_driver.testing.fakes.crypto import CONSTANTS as CRYPTO_CONSTANTS
from rbd_driver.testing.fakes.errors import RADOS_EXCEPTIONS, RBD_EXCEPTIONS, RadosErrors, RbdErrors
from rbd_driver.testing.fakes.fake_cluster import FakeCluster
from rbd_driver.testing.fakes.features import CONSTANTS
from rbd_driver.testing.fakes.image import Image
from rbd_driver.testing.fakes.model import FakeImage, FakePool, FakeSnapshot
from rbd_driver.testing.fakes.rados import Ioctx, Rados
from rbd_driver.testing.fakes.rbd import RBD
from rbd_driver.testing.fakes.readop import OmapIterator, ReadOp, ReadOpCtx
from rbd_driver.testing.fakes.writeop import (
    LIBRADOS_CREATE_EXCLUSIVE,
    LIBRADOS_CREATE_IDEMPOTENT,
    WriteOp,
    WriteOpCtx,
)

__all__ = [
    "make_modules",
    "FakeCluster",
    "FakePool",
    "FakeImage",
    "FakeSnapshot",
    "RadosErrors",
    "RbdErrors",
    "Rados",
    "Ioctx",
    "ReadOp",
    "ReadOpCtx",
    "OmapIterator",
    "WriteOp",
    "WriteOpCtx",
    "RBD",
    "Image",
    "Completion",
]


def make_modules(fsid: str | None = None) -> tuple[types.ModuleType, types.ModuleType]:
    """Return fake ``(rados, rbd)`` modules sharing a new :class:`FakeCluster`.

    The cluster is ``rados._cluster`` (also ``rbd._cluster``); ``fsid`` is
    its fsid (random if None). Every call returns an independent cluster, but
    the exception classes are shared, so ``except rbd.ImageNotFound`` works
    whichever call's module raised it.
    """
    cluster = FakeCluster(fsid)
    # Rados() takes no cluster argument, so each cluster gets its own subclass.
    bound_rados = type("Rados", (Rados,),
                       {"_cluster": cluster, "__module__": __name__, "__doc__": Rados.__doc__})
    bound_rados.__qualname__ = "Rados"

    rados_mod = types.ModuleType("rados", "Fake rados module (rbd_driver.testing.fakes).")
    rados_mod.__dict__.update(RADOS_EXCEPTIONS)
    rados_mod.Rados = bound_rados  # type: ignore[attr-defined]
    rados_mod.Ioctx = Ioctx  # type: ignore[attr-defined]
    rados_mod.ReadOp = ReadOp  # type: ignore[attr-defined]
    rados_mod.ReadOpCtx = ReadOpCtx  # type: ignore[attr-defined]
    rados_mod.OmapIterator = OmapIterator  # type: ignore[attr-defined]
    rados_mod.LIBRADOS_OPERATION_NOFLAG = 0  # type: ignore[attr-defined]
    rados_mod.WriteOp = WriteOp  # type: ignore[attr-defined]
    rados_mod.WriteOpCtx = WriteOpCtx  # type: ignore[attr-defined]
    rados_mod.LIBRADOS_CREATE_EXCLUSIVE = LIBRADOS_CREATE_EXCLUSIVE  # type: ignore[attr-defined]
    rados_mod.LIBRADOS_CREATE_IDEMPOTENT = LIBRADOS_CREATE_IDEMPOTENT  # type: ignore[attr-defined]
    rados_mod._cluster = cluster  # type: ignore[attr-defined]

    rbd_mod = types.ModuleType("rbd", "Fake rbd module (rbd_driver.testing.fakes).")
    rbd_mod.__dict__.update(RBD_EXCEPTIONS)
    rbd_mod.__dict__.update(CONSTANTS)
    rbd_mod.__dict__.update(CRYPTO_CONSTANTS)
    rbd_mod.RBD = RBD  # type: ignore[attr-defined]
    rbd_mod.Image = Image  # type: ignore[attr-defined]
    rbd_mod.Completion = Completion  # type: ignore[attr-defined]
    rbd_mod._cluster = cluster  # type: ignore[attr-defined]
    return rados_mod, rbd_mod
