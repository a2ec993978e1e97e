# SPDX-License-Identifier: Apache-2.0
"""The one cluster connection of a driver, its handles, and error translation.

:class:`RadosClient` opens one librados connection lazily (bounded by
``connect_timeout``), shares it between threads, and keeps one ioctx per
pool. Image handles are opened by context managers that always close them,
and the client itself closes every ioctx and shuts the connection down.

:func:`translate_errors` is the only place where librados/librbd exceptions
become :mod:`rbd_driver.exception` errors. Each rados/rbd exception class is
listed by name in :data:`RBD_ERRORS` or :data:`RADOS_ERRORS`; a unit test
fails if either binding grows a class that is missing there.

The ``rados`` and ``rbd`` modules are injectable, so unit tests pass the
fakes from :mod:`rbd_driver.testing.fakes` and never import the real ones.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NoReturn

from rbd_driver import exception
from rbd_driver.conf import option_default

__all__ = [
    "RBD_ERRORS",
    "RADOS_ERRORS",
    "RadosClient",
    "translate_errors",
]

LOG = logging.getLogger(__name__)

#: What each ``rbd`` exception means to a caller, by class name. The kind,
#: together with what was being worked on (pool, image, snapshot), picks our
#: exception.
RBD_ERRORS: dict[str, str] = {
    "ImageNotFound": "not_found",
    "ObjectNotFound": "not_found",
    "ImageExists": "exists",
    "ObjectExists": "exists",
    "ImageBusy": "busy",
    "ImageHasSnapshots": "has_snapshots",
    "ReadOnlyImage": "read_only",
    "PermissionError": "permission",
    "InvalidArgument": "invalid",
    "ArgumentOutOfRange": "invalid",
    "NoSpace": "no_space",
    "DiskQuotaExceeded": "no_space",
    "Timeout": "timeout",
    "FunctionNotSupported": "not_supported",
    "OperationNotSupported": "not_supported",
    "IOError": "storage",
    "IncompleteWriteError": "storage",
    "ConnectionShutdown": "storage",
    "LogicError": "storage",
    "OperationCanceled": "storage",
    "OSError": "storage",
    "Error": "storage",
}

#: The same for each ``rados`` exception.
RADOS_ERRORS: dict[str, str] = {
    "ObjectNotFound": "not_found",
    "ObjectExists": "exists",
    "ObjectBusy": "busy",
    "PermissionError": "permission",
    "PermissionDeniedError": "permission",
    "InvalidArgumentError": "invalid",
    "NoSpace": "no_space",
    "TimedOut": "timeout",
    "InterruptedOrTimeoutError": "timeout",
    "NotConnected": "storage",
    "ConnectionShutdown": "storage",
    "IsConnected": "storage",
    "RadosStateError": "storage",
    "IoctxStateError": "storage",
    "ObjectStateError": "storage",
    "IOError": "storage",
    "NoData": "storage",
    "ExtendMismatch": "storage",
    "InProgress": "storage",
    "LogicError": "storage",
    "OSError": "storage",
    "Error": "storage",
}

# Kinds for the negative return codes of mon_command, which does not raise.
_ERRNO_KINDS = {
    errno.ENOENT: "not_found",
    errno.EEXIST: "exists",
    errno.EBUSY: "busy",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EINVAL: "invalid",
    errno.ERANGE: "invalid",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.ETIMEDOUT: "timeout",
    errno.EOPNOTSUPP: "not_supported",
}


# The librbd exception an errno from an aio completion stands for (librbd
# reports aio failures as a return code, not an exception).
_RBD_ERRNO_CLASSES = {
    errno.EPERM: "PermissionError",
    errno.EACCES: "PermissionError",
    errno.ENOENT: "ImageNotFound",
    errno.ENOSPC: "NoSpace",
    errno.EDQUOT: "DiskQuotaExceeded",
    errno.EROFS: "ReadOnlyImage",
    errno.EINVAL: "InvalidArgument",
    errno.ETIMEDOUT: "Timeout",
    errno.ESHUTDOWN: "ConnectionShutdown",  # also what a blocklisted client gets
}


def _target(pool: str | None, image: str | None, snapshot: str | None) -> str:
    if pool is None:
        return "the cluster"
    if image is None:
        return f"pool {pool}"
    return f"{pool}/{image}" + (f"@{snapshot}" if snapshot else "")


def _error_for(
    kind: str,
    op: str,
    detail: str,
    pool: str | None,
    image: str | None,
    snapshot: str | None,
    user: str | None = None,
) -> exception.RbdDriverError:
    """Build our exception for an error ``kind`` met while doing ``op`` (as ``user``)."""
    target = _target(pool, image, snapshot)
    where = {"pool": pool, "image": image, "snapshot": snapshot}
    if kind == "not_found":
        if snapshot is not None and image is not None:
            return exception.SnapshotNotFound(**where)
        if image is not None:
            return exception.ImageNotFound(**where)
        if pool is not None:
            return exception.PoolNotFound(pool=pool)
    elif image is not None and kind in ("exists", "busy", "has_snapshots", "read_only"):
        cls = {
            "exists": exception.ImageExists,
            "busy": exception.ImageBusy,
            "has_snapshots": exception.ImageHasSnapshots,
            "read_only": exception.ReadOnlyImage,
        }[kind]
        return cls(detail=detail, **where)
    simple: dict[str, type[exception.RbdDriverError]] = {
        "permission": exception.PermissionDenied,
        "invalid": exception.InvalidArgument,
        "no_space": exception.NoSpace,
        "timeout": exception.OperationTimeout,
        "not_supported": exception.NotSupported,
    }
    if kind == "permission":
        return exception.PermissionDenied(op=op, target=target, detail=detail,
                                          user=f"client.{user}" if user else "the connection's user")
    cls = simple.get(kind, exception.StorageError)
    return cls(op=op, target=target, detail=detail)


def _kind_of(err: BaseException, rados: ModuleType | None, rbd: ModuleType | None) -> str | None:
    """Return the kind of a rados/rbd exception, or None if it is not one."""
    for cls in type(err).__mro__:
        for module, table in ((rbd, RBD_ERRORS), (rados, RADOS_ERRORS)):
            if module is not None and getattr(module, cls.__name__, None) is cls:
                return table.get(cls.__name__, "storage")
    return None


@contextlib.contextmanager
def translate_errors(
    op: str,
    *,
    rados: ModuleType | None,
    rbd: ModuleType | None,
    pool: str | None = None,
    image: str | None = None,
    snapshot: str | None = None,
    user: str | None = None,
) -> Iterator[None]:
    """Turn rados/rbd exceptions raised inside the block into ours.

    The new exception names ``op`` and the pool/image/snapshot, and is
    chained to the original. Anything else passes through untouched.
    """
    try:
        yield
    except exception.RbdDriverError:
        raise
    except Exception as err:
        kind = _kind_of(err, rados, rbd)
        if kind is None:
            raise
        if kind == "storage":  # a generic class (rbd.OSError...): its errno may say more
            kind = _ERRNO_KINDS.get(abs(getattr(err, "errno", None) or 0), kind)
        raise _error_for(kind, op, str(err) or type(err).__name__, pool, image, snapshot,
                         user) from err


class RadosClient:
    """One librados connection, shared by threads, with one ioctx per pool.

    :param ceph_conf: path of ceph.conf (monitors, keyring location).
    :param user: cephx user without ``client.``; None means librados' default.
    :param keyring: keyring path overriding ceph.conf's, or None.
    :param connect_timeout: seconds for the initial connection.
    :param op_timeout: seconds for each mon/OSD operation (0: no limit).
    :param rados: the ``rados`` module (injected in tests).
    :param rbd: the ``rbd`` module (injected in tests).
    """

    def __init__(
        self,
        ceph_conf: str,
        user: str | None = None,
        keyring: str | None = None,
        connect_timeout: int = option_default("connect_timeout"),
        op_timeout: int = option_default("op_timeout"),
        rados: ModuleType | None = None,
        rbd: ModuleType | None = None,
    ) -> None:
        self.ceph_conf = ceph_conf
        self.user = user
        self.keyring = keyring
        self.connect_timeout = connect_timeout
        self.op_timeout = op_timeout
        self._rados = rados
        self._rbd = rbd
        self._lock = threading.RLock()
        self._cluster: Any = None
        self._ioctxs: dict[str, Any] = {}
        # Image handles open on each connection (by id), and connections that
        # close() retired while handles were open on them: the last handle to
        # close shuts its connection down (never under an open image).
        self._open_images: dict[int, int] = {}
        self._retired: dict[int, tuple[Any, dict[str, Any]]] = {}

    @classmethod
    def from_conf(cls, conf: Any, **modules: ModuleType | None) -> RadosClient:
        """Build a client from the ``[rbd]`` options of an oslo.config ``conf``."""
        group = conf.rbd
        return cls(
            ceph_conf=group.ceph_conf,
            user=group.user,
            keyring=group.keyring,
            connect_timeout=group.connect_timeout,
            op_timeout=group.op_timeout,
            **modules,
        )

    # -- modules -------------------------------------------------------------

    @property
    def rados(self) -> ModuleType:
        """The rados module in use (imported on first need)."""
        if self._rados is None:
            import rados

            self._rados = rados
        return self._rados

    @property
    def rbd(self) -> ModuleType:
        """The rbd module in use (imported on first need)."""
        if self._rbd is None:
            import rbd

            self._rbd = rbd
        return self._rbd

    def translate(
        self,
        op: str,
        pool: str | None = None,
        image: str | None = None,
        snapshot: str | None = None,
    ) -> contextlib.AbstractContextManager[None]:
        """:func:`translate_errors` bound to this client's modules."""
        return translate_errors(
            op, rados=self.rados, rbd=self.rbd, pool=pool, image=image, snapshot=snapshot,
            user=self.user,
        )

    # -- connection ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._cluster is not None

    def connect(self) -> Any:
        """Return the cluster handle, connecting on first use.

        :raises CephConfNotFound: ``ceph_conf`` is missing or unreadable.
        :raises ConfigError: ceph.conf is bad.
        :raises KeyringNotFound: no keyring for the user (``keyring`` or
            ceph.conf's search path).
        :raises KeyRejected: the monitors refused the key.
        :raises MonitorTimeout: no monitor answered within ``connect_timeout``.
        :raises ClusterConnectionError: any other connect failure. Nothing is
            left open.
        """
        with self._lock:
            if self._cluster is None:
                self._cluster = self._open_cluster()
            return self._cluster

    def _open_cluster(self) -> Any:
        if not os.path.isfile(self.ceph_conf) or not os.access(self.ceph_conf, os.R_OK):
            raise exception.CephConfNotFound(path=self.ceph_conf)
        user = self.user or "admin"
        if self.keyring and not os.access(self.keyring, os.R_OK):
            raise exception.KeyringNotFound(user=user, path=self.keyring, conf=self.ceph_conf)
        rados = self.rados
        try:
            client = rados.Rados(conffile=self.ceph_conf, rados_id=self.user)
        except rados.Error as err:
            raise exception.ConfigError(detail=f"cannot read {self.ceph_conf}: {err}") from err
        settings = {"client_mount_timeout": str(self.connect_timeout)}
        if self.op_timeout:
            settings["rados_mon_op_timeout"] = str(self.op_timeout)
            settings["rados_osd_op_timeout"] = str(self.op_timeout)
        if self.keyring:
            settings["keyring"] = self.keyring
        try:
            for key, value in settings.items():
                client.conf_set(key, value)
            # The timeout argument of connect() is ignored by the binding;
            # client_mount_timeout above is what bounds the wait.
            client.connect()
        except rados.Error as err:
            error = self._connect_error(client, err, user)
            with contextlib.suppress(Exception):
                client.shutdown()
            raise error from err
        LOG.debug("connected to the cluster of %s as %s", self.ceph_conf, user)
        return client

    def _conf_value(self, client: Any, option: str, default: str) -> str:
        with contextlib.suppress(Exception):
            value = client.conf_get(option)
            if value:
                return str(value)
        return default

    def _connect_error(self, client: Any, err: Exception,
                       user: str) -> exception.ClusterConnectionError:
        """Name the cause of a failed connect from the errno librados gave.

        librados says ENOENT when it found no keyring for the user, EIO when
        the keyring holds no usable key, EACCES or EPERM when the monitors
        refused the key, ETIMEDOUT when no monitor
        answered within ``client_mount_timeout``.
        """
        code = abs(getattr(err, "errno", None) or 0)
        rados = self.rados
        keyring = self.keyring or self._conf_value(client, "keyring", "the keyring paths")
        common: dict[str, Any] = {"user": user, "conf": self.ceph_conf,
                                  "timeout": self.connect_timeout,
                                  "detail": str(err) or type(err).__name__}
        if code == errno.ENOENT or isinstance(err, rados.ObjectNotFound):
            return exception.KeyringNotFound(path=keyring, **common)
        if code in (errno.EACCES, errno.EPERM) or isinstance(
                err, (rados.PermissionError, getattr(rados, "PermissionDeniedError", ()))):
            return exception.KeyRejected(path=keyring, **common)
        if code == errno.EIO and (self.keyring or os.path.isfile(keyring)):
            return exception.KeyringInvalid(path=keyring, **common)
        if code == errno.ETIMEDOUT or isinstance(err, rados.TimedOut):
            mon_host = self._conf_value(client, "mon_host", "(not set)")
            return exception.MonitorTimeout(mon_host=mon_host, **common)
        return exception.ClusterConnectionError(**common)

    def close(self) -> None:
        """Close every ioctx and shut the connection down. Safe to repeat.

        The next use connects again. If another thread still has an image
        open on this connection (see :meth:`open_image`), the connection is
        detached now and shut down when that image closes: shutting
        librados down under an open librbd image frees memory the image
        still uses.
        """
        with self._lock:
            ioctxs, self._ioctxs = self._ioctxs, {}
            cluster, self._cluster = self._cluster, None
            if cluster is not None and self._open_images.get(id(cluster)):
                self._retired[id(cluster)] = (cluster, ioctxs)
                LOG.warning("connection to the cluster of %s closed while %d image handles "
                            "are open on it; it is shut down when the last one closes",
                            self.ceph_conf, self._open_images[id(cluster)])
                return
        self._shutdown(cluster, ioctxs)

    @staticmethod
    def _shutdown(cluster: Any, ioctxs: dict[str, Any]) -> None:
        for ioctx in ioctxs.values():
            with contextlib.suppress(Exception):
                ioctx.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()

    def __enter__(self) -> RadosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handles -------------------------------------------------------------

    def get_fsid(self) -> str:
        """Return the cluster's fsid (lowercase UUID)."""
        cluster = self.connect()
        with self.translate("get fsid"):
            return str(cluster.get_fsid()).lower()

    def get_ioctx(self, pool: str) -> Any:
        """Return this client's ioctx for ``pool``, opening it once.

        The ioctx belongs to the client and is closed by :meth:`close`.

        :raises PoolNotFound: the pool does not exist (or is not visible).
        """
        with self._lock:
            ioctx = self._ioctxs.get(pool)
            if ioctx is None:
                cluster = self.connect()
                with self.translate("open pool", pool=pool):
                    ioctx = cluster.open_ioctx(pool)
                self._ioctxs[pool] = ioctx
            return ioctx

    @contextlib.contextmanager
    def ioctx(self, pool: str, op: str = "pool operation") -> Iterator[Any]:
        """Yield the ioctx of ``pool``; errors in the block name the pool."""
        ioctx = self.get_ioctx(pool)
        with self.translate(op, pool=pool):
            yield ioctx

    @contextlib.contextmanager
    def open_image(
        self,
        pool: str,
        name: str,
        snapshot: str | None = None,
        read_only: bool = False,
        op: str = "open image",
    ) -> Iterator[Any]:
        """Yield an open ``rbd.Image``, closed on exit even on errors.

        Errors inside the block name the pool, image and snapshot.

        :raises ImageNotFound: no such image.
        :raises SnapshotNotFound: no such snapshot.
        """
        with self._lock:
            ioctx = self.get_ioctx(pool)
            key = id(self._cluster)
            self._open_images[key] = self._open_images.get(key, 0) + 1
        try:
            with self.translate(op, pool=pool, image=name, snapshot=snapshot):
                image = self.rbd.Image(ioctx, name, snapshot=snapshot, read_only=read_only)
                try:
                    yield image
                finally:
                    image.close()
        finally:
            self._image_closed(key)

    def _image_closed(self, key: int) -> None:
        """Count an image handle of connection ``key`` closed; shut that
        connection down if :meth:`close` retired it and this was its last."""
        with self._lock:
            left = self._open_images[key] - 1
            if left:
                self._open_images[key] = left
                return
            del self._open_images[key]
            retired = self._retired.pop(key, None)
        if retired is not None:
            self._shutdown(*retired)

    def pool_init(self, pool: str) -> None:
        """Initialise ``pool`` for RBD (librbd's ``pool_init``; harmless when done).

        :raises PoolNotFound: / :raises PermissionDenied:
        """
        with self.ioctx(pool, op="rbd pool init") as ioctx:
            self.rbd.RBD().pool_init(ioctx, False)

    def parent_of(self, image: Any) -> tuple[str, str, str] | None:
        """Return (pool, image, snapshot) of an open image's parent, or None if it has none.

        The one place that reads librbd's "no parent" (``ImageNotFound`` from
        ``parent_info``) as an answer rather than an error.
        """
        try:
            parent = image.parent_info()
        except self.rbd.ImageNotFound:
            return None
        return (parent[0], parent[1], parent[2])

    def image_exists(self, pool: str, name: str) -> bool:
        """Return True if image ``pool/name`` exists.

        Stats the image's id object (format 2) or header (format 1) rather
        than opening the image: one small read instead of a full librbd open.

        :raises PoolNotFound: the pool does not exist.
        """
        ioctx = self.get_ioctx(pool)
        with self.translate("check image", pool=pool, image=name):
            for oid in (f"rbd_id.{name}", f"{name}.rbd"):
                try:
                    ioctx.stat(oid)
                    return True
                except self.rados.ObjectNotFound:
                    continue
        return False

    def raise_for_errno(self, op: str, err: int, detail: str, pool: str | None = None,
                        image: str | None = None, snapshot: str | None = None) -> NoReturn:
        """Raise our exception for a negative-return failure (``err`` positive), chained
        to the librbd exception class that errno stands for."""
        cls = getattr(self.rbd, _RBD_ERRNO_CLASSES.get(err, "IOError"), None) or self.rbd.OSError
        with self.translate(op, pool=pool, image=image, snapshot=snapshot):
            raise cls(f"{detail}: {os.strerror(err)}", errno=err)
        raise AssertionError("unreachable: translate raises ours")

    # -- monitor commands ------------------------------------------------------

    def mon_command(self, prefix: str, inbuf: bytes = b"", timeout: int | None = None,
                    **args: Any) -> Any:
        """Run a monitor command in-process and return its parsed JSON output.

        ``timeout`` (seconds) overrides ``op_timeout`` for this call.

        :raises RbdDriverError: a subclass matching the returned errno, with
            the monitor's own message.
        """
        cluster = self.connect()
        cmd = json.dumps({"prefix": prefix, "format": "json", **args})
        with self.translate(prefix, pool=args.get("pool")):
            ret, out, status = cluster.mon_command(
                cmd, inbuf, timeout=self.op_timeout if timeout is None else timeout)
        if ret < 0:
            kind = _ERRNO_KINDS.get(-ret, "storage")
            raise _error_for(kind, prefix, status or os.strerror(-ret), args.get("pool"), None,
                             None, self.user)
        return json.loads(out) if out and out.strip() else None
