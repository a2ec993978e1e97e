# SPDX-License-Identifier: Apache-2.0
"""The fake ``rados`` module's cluster handle, :class:`Rados` (:class:`Ioctx` is in :mod:`.ioctx`).

:class:`Rados` follows the real handle's life cycle (``configuring`` ->
``connected`` -> ``shutdown``, anything else raising ``RadosStateError``),
keeps its configuration like librados does (defaults, ``conf``, a ceph.conf
file) and answers pool and monitor calls from its :class:`FakeCluster`.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, ClassVar, Literal

from rbd_driver.testing.fakes.errors import RadosErrors, check_bytes, check_str, rados_error
from rbd_driver.testing.fakes.fake_cluster import FakeCluster, api
from rbd_driver.testing.fakes.ioctx import LOCK_FLAG_MAY_RENEW, LOCK_FLAG_MUST_RENEW, Ioctx

__all__ = ["Ioctx", "LOCK_FLAG_MAY_RENEW", "LOCK_FLAG_MUST_RENEW", "Rados"]

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
            raise TypeError("Argument 'option' has incorrect type "
                            f"(expected str, got {type(option).__name__})")
        return self._conf.get(_option(option))

    @api
    def conf_set(self, option: str, val: str) -> None:
        """Set ``option`` (any name is accepted); raises TypeError for non-str arguments."""
        self.require_state("configuring", "connected")
        for value, label in ((option, "option"), (val, "val")):
            if not isinstance(value, str):
                raise TypeError(f"Argument '{label}' has incorrect type "
                                f"(expected str, got {type(value).__name__})")
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
            raise RadosErrors.RadosStateError(
                f"You cannot use 'with' on a Rados object in state {self.state}.")
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
