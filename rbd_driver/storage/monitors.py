# SPDX-License-Identifier: Apache-2.0
"""The cluster's monitors, from ``mon dump`` through ``mon_command``, cached.

:func:`parse_mon_dump` turns the monmap JSON into
:class:`MonitorAddress` records (bare hosts:
IPv6 without brackets, as libvirt's ``<host name=...>`` wants).
:func:`host_port` formats one address for ``host:port`` lists, where an IPv6
host must be in brackets (``[2001:db8::1]:6789``), as ceph.conf's
``mon host`` and the kernel's ``/sys/bus/rbd/add`` expect.

:class:`MonitorCache` asks the cluster at most once per ``ttl`` seconds. If a
refresh fails while an older list is known, that list is returned (the
monitors of a cluster rarely change, and a stale list still reaches the
quorum) and the refresh is tried again on the next call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from rbd_driver import exception
from rbd_driver.conf import option_default
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["MonitorAddress", "MonitorCache", "host_port", "mon_host_list", "parse_mon_dump",
           "split_addr"]

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MonitorAddress:
    """One monitor and its messenger v1/v2 addresses as (host, port)."""

    name: str
    v1: tuple[str, int] | None
    v2: tuple[str, int] | None

    @property
    def preferred(self) -> tuple[str, int]:
        """The address a plain ``host:port`` list should carry.

        librados reads a bare ``host:port`` as messenger v1 unless the port is
        3300, so v1 is the safe choice; v2 only when there is no v1.
        """
        addr = self.v1 or self.v2
        assert addr is not None
        return addr


def split_addr(addr: str) -> tuple[str, int]:
    """``'[::1]:6789/0'`` or ``'10.0.0.1:3300'`` -> (bare host, port)."""
    addr = addr.split("/", 1)[0]
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def host_port(addr: tuple[str, int]) -> str:
    """Return ``host:port``, with an IPv6 host in brackets: ``[2001:db8::1]:6789``."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_mon_dump(dump: Any) -> list[MonitorAddress]:
    """Return the monitors of a ``mon dump`` JSON answer, in rank order.

    Each gets its messenger v1 and v2 addresses from ``public_addrs``; an old
    monmap with only ``addr`` gives a v1 address.

    :raises StorageError: the answer is not a monmap.
    """
    if not isinstance(dump, dict) or not isinstance(dump.get("mons"), list):
        raise exception.StorageError(op="mon dump", target="the cluster",
                                     detail="the answer holds no monitor list")
    monitors = []
    for mon in sorted(dump["mons"], key=lambda m: m.get("rank", 0)):
        v1 = v2 = None
        for entry in mon.get("public_addrs", {}).get("addrvec", []):
            if entry.get("type") == "v1":
                v1 = split_addr(entry["addr"])
            elif entry.get("type") == "v2":
                v2 = split_addr(entry["addr"])
        if v1 is None and v2 is None and mon.get("addr"):
            v1 = split_addr(mon["addr"])
        if v1 is not None or v2 is not None:
            monitors.append(MonitorAddress(mon.get("name", ""), v1, v2))
    return monitors


def mon_host_list(monitors: list[MonitorAddress], kind: str = "v1") -> list[str]:
    """Return ``host:port`` strings of one messenger version (``v1`` or ``v2``).

    Monitors without an address of that version are left out.
    """
    if kind not in ("v1", "v2"):
        raise ValueError(f"kind must be v1 or v2, not {kind!r}")
    return [host_port(addr) for mon in monitors
            if (addr := mon.v1 if kind == "v1" else mon.v2) is not None]


class MonitorCache:
    """The monitor list of one cluster, asked again after ``ttl`` seconds.

    :param client: the connection whose ``mon_command`` asks ``mon dump``.
    :param ttl: seconds a list is reused; 0 asks every time.
    :param clock: injectable monotonic clock (tests).
    """

    def __init__(self, client: RadosClient, ttl: float = option_default("monitor_cache_ttl"),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._monitors: list[MonitorAddress] | None = None
        self._fetched_at = 0.0

    def get(self) -> list[MonitorAddress]:
        """Return the monitors, asking the cluster when the list is older than ``ttl``.

        :raises RbdDriverError: the first ``mon dump`` failed (later failures
            fall back to the last list, with a warning).
        """
        with self._lock:
            fresh = self._monitors is not None and self._clock() - self._fetched_at < self.ttl
            if fresh:
                assert self._monitors is not None
                return list(self._monitors)
            return self._fetch()

    def refresh(self) -> list[MonitorAddress]:
        """Ask the cluster now and return the new list.

        :raises RbdDriverError: ``mon dump`` failed (the old list is kept).
        """
        with self._lock:
            return self._fetch(fallback=False)

    def current(self) -> list[MonitorAddress]:
        """Ask the cluster now (the list goes into the cache for every reader);
        if that fails while an older list is known, return that one, with a
        warning.

        :raises RbdDriverError: ``mon dump`` failed and no list is known.
        """
        with self._lock:
            return self._fetch(fallback=True)

    def invalidate(self) -> None:
        """Forget the list; the next :meth:`get` asks the cluster."""
        with self._lock:
            self._monitors = None

    def _fetch(self, fallback: bool = True) -> list[MonitorAddress]:
        try:
            monitors = parse_mon_dump(self.client.mon_command("mon dump"))
            if not monitors:
                raise exception.StorageError(op="mon dump", target="the cluster",
                                             detail="the monmap lists no monitor")
        except exception.RbdDriverError as err:
            if not fallback or self._monitors is None:
                raise
            LOG.warning("could not refresh the monitor list, using the last one: %s", err)
            return list(self._monitors)
        self._monitors, self._fetched_at = monitors, self._clock()
        return list(monitors)
