"""The fake ``rados`` module's classes: :class:`Rados` (a cluster handle) and :class:`Ioctx`.

:class:`Rados` follows the real handle's life cycle (``configuring`` ->
``connected`` -> ``shutdown``, anything else raising ``RadosStateError``),
keeps its configuration like librados does (defaults, ``conf``, a ceph.conf
file) and answers pool and monitor calls from its :class:`FakeCluster`.
:class:`Ioctx` does I/O on a pool's raw RADOS objects and takes exclusive
``cls_lock`` locks on them. RBD images are not visible as RADOS objects here.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any, ClassVar, Literal

from rbd_driver.testing.fakes.cluster import FakeCluster, api
from rbd_driver.testing.fakes.errors import RadosErrors, check_bytes, check_str, rados_error
from rbd_driver.testing.fakes.model import FakePool, Locker, RadosObject

__all__ = ["Ioctx", "Rados"]

# What Rados.conf_get returns before anything is set (the real defaults);
# other options can be set and read back, unknown unset ones read as None.
_CONF_DEFAULTS: dict[str, str] = {
    "client_mount_timeout": "300",
    "rados_osd_op_timeout": "0",
    "rados_mon_op_timeout": "0",
    "rbd_default_features": "61",
    "rbd_default_order": "22",
    "mon_host": "",
    "keyring": (
        "/etc/ceph/$cluster.$name.keyring,/etc/ceph/$cluster.keyring,/etc/ceph/keyring,/etc/ceph/keyring.bin,"
    ),
    "fsid": "00000000-0000-0000-0000-000000000000",
}

# cls_lock flags of lock_exclusive.
LOCK_FLAG_MAY_RENEW = 0x1
LOCK_FLAG_MUST_RENEW = 0x2


def _option(option: str) -> str:
    """Normalize an option name as Ceph does (``mon host`` == ``mon-host`` == ``mon_host``)."""
    return option.strip().replace(" ", "_").replace("-", "_")


def _parse_conf(path: str) -> dict[str, dict[str, str]]:
    """Return section -> options of a ceph.conf; raises ValueError/OSError if unreadable."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    with open(path, encoding="utf-8") as conf_file:
        for raw in conf_file:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    raise ValueError(line)
                current = sections.setdefault(line[1:-1].strip(), {})
            elif "=" in line and current is not None:
                key, value = line.split("=", 1)
                current[_option(key)] = value.strip()
            else:
                raise ValueError(line)
    return sections


class Rados:
    """Fake ``rados.Rados``: a cluster handle (``make_modules`` binds it to a cluster)."""

    NO_CONF_FILE = -1
    DEFAULT_CONF_FILES = -2
    _cluster: ClassVar[FakeCluster | None] = None

    def __init__(
        self,
        rados_id: str | None = None,
        name: str | None = None,
        clustername: str | None = None,
        conf_defaults: dict[str, str] | None = None,
        conffile: str | int | None = None,
        conf: dict[str, str] | None = None,
        flags: int = 0,
        context: Any = None,
    ) -> None:
        if self._cluster is None:
            raise TypeError("use rbd_driver.testing.fakes.make_modules() to get a fake rados module")
        if rados_id is not None and not isinstance(rados_id, str):
            raise TypeError("rados_id must be a string or None")
        if rados_id and name:
            raise RadosErrors.Error("Rados(): can't supply both rados_id and name")
        self.rados_id = rados_id
        self.conffile = conffile
        self.state = "configuring"
        self._entity_name = f"client.{rados_id}" if rados_id else (name or "client.admin")
        self._conf = dict(_CONF_DEFAULTS)
        self._instance_id: int | None = None
        # The order librados applies them in: defaults, then the file, then conf.
        for key, value in (conf_defaults or {}).items():
            self.conf_set(key, value)
        if conffile not in (None, self.NO_CONF_FILE, self.DEFAULT_CONF_FILES, ""):
            self.conf_read_file(conffile)  # type: ignore[arg-type]
        for key, value in (conf or {}).items():
            self.conf_set(key, value)

    def __repr__(self) -> str:
        return f"<fake rados.Rados {self._entity_name} state={self.state}>"

    @property
    def _fake_cluster(self) -> FakeCluster:
        assert self._cluster is not None  # checked in __init__
        return self._cluster

    def require_state(self, *states: str) -> None:
        """Raise RadosStateError unless ``state`` is one of ``states``."""
        if self.state not in states:
            raise RadosErrors.RadosStateError(
                f"You cannot perform that operation on a Rados object in state {self.state}."
            )

    @api
    def conf_get(self, option: str) -> str | None:
        """Return the value of ``option``, or None when it is unknown; raises TypeError."""
        self.require_state("configuring", "connected")
        if not isinstance(option, str):
            raise TypeError(f"Argument 'option' has incorrect type (expected str, got {type(option).__name__})")
        return self._conf.get(_option(option))

    @api
    def conf_set(self, option: str, val: str) -> None:
        """Set ``option`` (any name is accepted); raises TypeError for non-str arguments."""
        self.require_state("configuring", "connected")
        for value, label in ((option, "option"), (val, "val")):
            if not isinstance(value, str):
                raise TypeError(f"Argument '{label}' has incorrect type (expected str, got {type(value).__name__})")
        self._conf[_option(option)] = val

    @api
    def conf_read_file(self, path: str | None = None) -> None:
        """Read ``[global]``, ``[client]`` and ``[<name>]`` of a ceph.conf.

        ``path=None`` (the default search path) is a no-op. Raises
        ObjectNotFound if the file does not exist, InvalidArgumentError if it
        cannot be parsed.
        """
        self.require_state("configuring", "connected")
        if path is None:
            return
        if not os.path.isfile(path):
            raise rados_error(errno.ENOENT, "error calling conf_read_file")
        try:
            sections = _parse_conf(path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise rados_error(errno.EINVAL, "error calling conf_read_file") from exc
        for section in ("global", "client", self._entity_name):
            self._conf.update(sections.get(section, {}))

    @api
    def connect(self, timeout: int = 0) -> None:
        """Connect to the fake cluster; raises RadosStateError unless configuring."""
        self.require_state("configuring")
        self._instance_id = next(self._fake_cluster._instance_ids)
        self._fake_cluster._connections[id(self)] = self
        self._fake_cluster.connect_count += 1
        self.state = "connected"

    @api
    def shutdown(self) -> None:
        """Disconnect; idempotent."""
        if self.state != "shutdown":
            self._fake_cluster._connections.pop(id(self), None)
            self.state = "shutdown"

    def __enter__(self) -> Rados:
        if self.state != "configuring":
            raise RadosErrors.RadosStateError(f"You cannot use 'with' on a Rados object in state {self.state}.")
        self.connect()
        return self

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> Literal[False]:
        self.shutdown()
        return False

    @api
    def get_fsid(self) -> str:
        """Return the cluster fsid; raises RadosStateError unless connected."""
        self.require_state("connected")
        return self._fake_cluster.fsid

    @api
    def get_instance_id(self) -> int:
        """Return this client's global id, as lock holders and watchers name it."""
        self.require_state("connected")
        assert self._instance_id is not None
        return self._instance_id

    @api
    def list_pools(self) -> list[str]:
        """Return the pool names."""
        self.require_state("connected")
        return list(self._fake_cluster.pools)

    @api
    def pool_exists(self, pool_name: str) -> bool:
        """Return whether ``pool_name`` exists; raises TypeError."""
        self.require_state("connected")
        check_str(pool_name, "pool_name")
        return pool_name in self._fake_cluster.pools

    @api
    def create_pool(self, pool_name: str, crush_rule: int | None = None, auid: int | None = None) -> None:
        """Create a pool; raises ObjectExists if it exists."""
        self.require_state("connected")
        check_str(pool_name, "pool_name")
        if pool_name in self._fake_cluster.pools:
            raise rados_error(errno.EEXIST, f"error creating pool '{pool_name}'")
        self._fake_cluster.add_pool(pool_name)

    @api
    def delete_pool(self, pool_name: str) -> None:
        """Delete a pool and its data; raises ObjectNotFound, or PermissionError if not allowed."""
        self.require_state("connected")
        check_str(pool_name, "pool_name")
        pool = self._fake_cluster.pools.get(pool_name)
        if pool is None:
            raise rados_error(errno.ENOENT, f"error deleting pool '{pool_name}'")
        if not self._fake_cluster.allow_pool_delete:
            raise rados_error(errno.EPERM, f"error deleting pool '{pool_name}'")
        pool.deleted = True
        for image in pool.images.values():
            image.removed = True
        del self._fake_cluster.pools[pool_name]

    @api
    def open_ioctx(self, ioctx_name: str) -> Ioctx:
        """Return an Ioctx on pool ``ioctx_name``; raises ObjectNotFound if it does not exist."""
        self.require_state("connected")
        check_str(ioctx_name, "ioctx_name")
        return Ioctx(self, ioctx_name)

    @api
    def get_cluster_stats(self) -> dict[str, int]:
        """Return ``{kb, kb_used, kb_avail, num_objects}``."""
        self.require_state("connected")
        cluster = self._fake_cluster
        used = cluster.used_bytes()
        return {
            "kb": cluster.total_bytes // 1024,
            "kb_used": (used + 1023) // 1024,
            "kb_avail": max(0, cluster.total_bytes - used) // 1024,
            "num_objects": sum(p.usage()[1] for p in cluster.pools.values()),
        }

    @api
    def mon_command(
        self, cmd: str, inbuf: bytes, timeout: int = 0, target: str | int | None = None
    ) -> tuple[int, bytes, str]:
        """Run a mon command given as JSON; returns ``(ret, outbuf, outs)``.

        Answers the prefixes of ``cluster.mon_commands``; anything else, or
        bad JSON, returns ``-EINVAL`` like the real monitor (it does not raise).
        """
        self.require_state("connected")
        if not isinstance(cmd, str):
            raise TypeError("cmd must be a string")
        check_bytes(inbuf, "inbuf")
        try:
            parsed = json.loads(cmd)
        except ValueError:
            return -errno.EINVAL, b"", "command not known: invalid JSON"
        if not isinstance(parsed, dict) or "prefix" not in parsed:
            return -errno.EINVAL, b"", "command not known: no prefix"
        handler = self._fake_cluster.mon_commands.get(str(parsed["prefix"]))
        if handler is None:
            return -errno.EINVAL, b"", f"no valid command found for prefix {parsed['prefix']!r}"
        return handler(parsed, inbuf)


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
        check_str(key, "key")
        pool = self._live_pool()
        obj = pool.objects.get(key)
        if obj is None:
            if not create:
                raise rados_error(errno.ENOENT, f"Ioctx.read({self.name}): failed to read {key}")
            obj = pool.objects[key] = RadosObject()
        return obj

    @api
    def read(self, key: str, length: int = 8192, offset: int = 0) -> bytes:
        """Return up to ``length`` bytes of object ``key``; raises ObjectNotFound."""
        obj = self._object(key)
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
        obj = self._object(key)
        return len(obj.data), time.localtime(obj.mtime)

    @api
    def remove_object(self, key: str) -> bool:
        """Delete ``key`` and its locks; returns True; raises ObjectNotFound."""
        check_str(key, "key")
        pool = self._live_pool()
        if pool.objects.pop(key, None) is None:
            raise rados_error(errno.ENOENT, f"Failed to remove '{key}'")
        for lock_key in [k for k in pool.locks if k[0] == key]:
            del pool.locks[lock_key]
        return True

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
