# SPDX-License-Identifier: Apache-2.0
"""Kernelspace access: map and unmap RBD images through sysfs (krbd).

With ``[rbd] access = kernelspace`` a disk is mapped by the kernel's rbd
driver to ``/dev/rbdN`` and handed to the guest as a block device. Mapping
writes one line to ``/sys/bus/rbd/add_single_major`` (``add`` on kernels
without single-major support)::

    <mon1:port,mon2:port> name=<user>,key=client.<user>[,ro] <pool> <image> [<snap>]

and unmapping writes the device id to ``remove_single_major``. No command
runs. The cephx key goes into the process keyring with the ``add_key``
system call (key type ``ceph``, the decoded key as payload), the kernel
finds it there through ``key=client.<user>``, and it is invalidated as soon
as the write returns: the kernel keeps its own copy. Only if the kernel
keyring is unavailable is it passed as ``secret=`` inside that sysfs write;
it is never on a command line, in the environment, in a log or in an error.

A mapping is refused when an OSD serving the pool runs on this host (see
:func:`local_osds`): a kernel client writing to a local OSD can deadlock when
memory runs short, as both wait for the other to free pages (Ceph tracker
#3076). Userspace access (QEMU with librbd) is not affected.

The sysfs root, the write function, the kernel keyring and this host's
addresses and name are all injectable: this is how the module is unit-tested
with a fake sysfs, since the test machines have no rbd kernel module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any

from rbd_driver import exception
from rbd_driver.storage import cephx
from rbd_driver.storage.kernel_keyring import KernelKeyring, LinuxKeyring
from rbd_driver.storage.monitors import MonitorCache, mon_host_list, split_addr
from rbd_driver.storage.rados_client import RadosClient

__all__ = [
    "KernelKeyring",
    "KernelRbd",
    "LinuxKeyring",
    "Mapping",
    "local_addresses",
    "local_osds",
]

LOG = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Image and snapshot names go into a space-separated sysfs line.
_NO_SPACE = re.compile(r"\S+")


# -- the loopback guard -------------------------------------------------------------


def local_addresses() -> set[IPAddress]:
    """Return this host's IP addresses (from /proc/net, and its name's resolution)."""
    found: set[IPAddress] = set()
    with contextlib.suppress(OSError):
        # IPv4: each local address is followed by a "/32 host LOCAL" line.
        previous = None
        with open("/proc/net/fib_trie", encoding="ascii") as f:
            for line in f:
                if "/32 host LOCAL" in line and previous:
                    with contextlib.suppress(ValueError):
                        found.add(ipaddress.ip_address(previous))
                previous = line.strip().lstrip("|-+ ").strip()
    with contextlib.suppress(OSError):
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                hexaddr = line.split()[0]
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.IPv6Address(int(hexaddr, 16)))
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    return found


def _osd_ips(osd: dict[str, Any]) -> set[IPAddress]:
    ips: set[IPAddress] = set()
    for field in ("public_addrs", "cluster_addrs"):
        for entry in (osd.get(field) or {}).get("addrvec", []):
            with contextlib.suppress(ValueError, KeyError):
                ips.add(ipaddress.ip_address(split_addr(entry["addr"])[0]))
    for field in ("public_addr", "cluster_addr"):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ips.add(ipaddress.ip_address(split_addr(osd[field])[0]))
    return ips


def _short(hostname: str) -> str:
    return hostname.split(".", 1)[0].lower()


def local_osds(client: RadosClient, pool: str, addresses: Iterable[IPAddress],
               hostname: str) -> dict[int, str]:
    """Return the OSDs that serve ``pool`` and run on this host, with why each is local.

    Serving: in the up or acting set of one of the pool's PGs (``pg
    ls-by-pool``), or, when that cannot be asked, any OSD that is in; plus
    a local OSD that is down but in, since it will serve again when it
    returns. Local: one of its public or cluster addresses is a loopback
    address or in ``addresses``, or its host name (``osd metadata``) is
    ``hostname``.

    :raises PoolNotFound: the pool does not exist.
    """
    dump = client.mon_command("osd dump")
    if pool not in {p.get("pool_name") for p in dump.get("pools", [])}:
        raise exception.PoolNotFound(pool=pool)
    osds = {int(o["osd"]): o for o in dump.get("osds", [])}
    serving: set[int] = set()
    try:
        out = client.mon_command("pg ls-by-pool", poolstr=pool)
        stats = out.get("pg_stats", []) if isinstance(out, dict) else (out or [])
        serving = {int(o) for s in stats for o in [*s.get("up", []), *s.get("acting", [])]}
    except exception.RbdDriverError as err:
        LOG.warning("cannot list the PGs of pool %s (%s); every OSD counts as serving it",
                    pool, err)
    if not serving:
        serving = {i for i, o in osds.items() if o.get("in")}
    serving |= {i for i, o in osds.items() if o.get("in") and not o.get("up")}
    names: dict[int, str] = {}
    with contextlib.suppress(exception.RbdDriverError):
        for meta in client.mon_command("osd metadata") or []:
            if "id" in meta and meta.get("hostname"):
                names[int(meta["id"])] = str(meta["hostname"])
    mine = set(addresses)
    found: dict[int, str] = {}
    for osd_id in sorted(serving):
        ips = _osd_ips(osds.get(osd_id, {}))
        near = sorted(str(ip) for ip in ips if ip.is_loopback or ip in mine)
        if near:
            found[osd_id] = "at " + ", ".join(near)
        elif hostname and osd_id in names and _short(names[osd_id]) == _short(hostname):
            found[osd_id] = f"on host {names[osd_id]}"
    return found


# -- mapping ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One kernel mapping, from ``/sys/bus/rbd/devices/<id>``."""

    id: int
    pool: str
    image: str
    snapshot: str | None
    device: str


def _sysfs_write(path: str, data: str) -> None:
    """Write ``data`` to a sysfs file in one ``write`` (sysfs needs that)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _target(pool: str, image: str, snapshot: str | None) -> str:
    return f"{pool}/{image}" + (f"@{snapshot}" if snapshot else "")


class KernelRbd:
    """Maps and unmaps images with the kernel rbd driver, as ``client.<user>``.

    :param client: the connection used for monitor commands (the guard).
    :param monitors: the monitor list (cached) written into each mapping.
    :param user: cephx user without ``client.`` (None: ``admin``).
    :param keyring: keyring file with the user's key (None: ceph.conf's).
    :param sysfs_root: where sysfs is mounted (``/sys``).
    :param dev_root: where the ``rbdN`` device nodes appear (``/dev``).
    :param writer: writes a line to a sysfs file (injected in tests).
    :param kernel_keyring: where the key is put (default :class:`LinuxKeyring`).
    :param addresses: this host's addresses (default :func:`local_addresses`).
    :param hostname: this host's name (default ``socket.gethostname()``).
    :param allow_sysfs_secret: without a kernel keyring, pass the key as
        ``secret=`` in the sysfs write (False: refuse instead).
    :param key: the user's key, when the caller holds it already (a volume's
        connection_info); then no keyring file is read.
    """

    def __init__(self, client: RadosClient, monitors: MonitorCache, user: str | None = None,
                 keyring: str | None = None, *, sysfs_root: str = "/sys", dev_root: str = "/dev",
                 writer: Callable[[str, str], None] = _sysfs_write,
                 kernel_keyring: KernelKeyring | None = None,
                 addresses: Iterable[IPAddress] | None = None, hostname: str | None = None,
                 allow_sysfs_secret: bool = True, key: cephx.CephxKey | None = None) -> None:
        self.client = client
        self.monitors = monitors
        self.user = user or "admin"
        self.keyring = keyring
        self.bus = os.path.join(sysfs_root, "bus", "rbd")
        self.dev_root = dev_root
        self._write = writer
        self._kernel_keyring = kernel_keyring
        self._addresses = set(addresses) if addresses is not None else None
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.allow_sysfs_secret = allow_sysfs_secret
        self._given_key = key

    @classmethod
    def from_conf(cls, conf: Any, client: RadosClient, monitors: MonitorCache | None = None,
                  **kwargs: Any) -> KernelRbd:
        """Build from the ``[rbd]`` options (``user``, ``keyring``, ``monitor_cache_ttl``)."""
        group = conf.rbd
        monitors = monitors or MonitorCache(client, ttl=group.monitor_cache_ttl)
        return cls(client, monitors, group.user, group.keyring, **kwargs)

    # -- sysfs -----------------------------------------------------------------------

    def _bus_file(self, op: str, target: str, names: tuple[str, str]) -> str:
        if not os.path.isdir(self.bus):
            raise exception.KernelRbdUnavailable(op=op, target=target, path=self.bus)
        single = os.path.join(self.bus, names[0])
        return single if os.path.exists(single) else os.path.join(self.bus, names[1])

    def mapped(self) -> list[Mapping]:
        """Return every current kernel mapping (none if the module is not loaded)."""
        devices = os.path.join(self.bus, "devices")
        result = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(devices):
                if not entry.isdigit():
                    continue

                def read(name: str, entry: str = entry) -> str:
                    with open(os.path.join(devices, entry, name), encoding="utf-8") as f:
                        return f.read().strip()

                with contextlib.suppress(FileNotFoundError):  # unmapped meanwhile
                    snap = read("current_snap")
                    result.append(Mapping(int(entry), read("pool"), read("name"),
                                          None if snap in ("", "-") else snap,
                                          os.path.join(self.dev_root, f"rbd{entry}")))
        return sorted(result, key=lambda m: m.id)

    def find(self, pool: str, image: str, snapshot: str | None = None) -> Mapping | None:
        """Return the mapping of ``pool/image[@snapshot]``, or None."""
        for mapping in self.mapped():
            if (mapping.pool, mapping.image, mapping.snapshot) == (pool, image, snapshot):
                return mapping
        return None

    # -- guard -----------------------------------------------------------------------

    def check_not_loopback(self, pool: str, target: str | None = None) -> None:
        """Refuse kernelspace access to ``pool`` if one of its OSDs runs on this host.

        :raises LocalOsdRefused: naming the OSDs, the reason, and that
            userspace access avoids it.
        :raises PoolNotFound: the pool does not exist.
        """
        addresses = self._addresses if self._addresses is not None else local_addresses()
        found = local_osds(self.client, pool, addresses, self.hostname)
        if found:
            osds = ", ".join(f"osd.{i} ({why})" for i, why in sorted(found.items()))
            raise exception.LocalOsdRefused(target=target or pool, pool=pool, osds=osds,
                                            addresses=", ".join(sorted(found.values())))

    # -- map and unmap -----------------------------------------------------------------

    def _key(self) -> cephx.CephxKey:
        if self._given_key is not None:
            return self._given_key
        entity = f"client.{self.user}"
        if self.keyring:
            paths = [self.keyring]
        else:
            cluster = self.client.connect()
            with self.client.translate("read the keyring setting"):
                setting = cluster.conf_get("keyring") or ""
            paths = [p.strip() for p in setting.split(",") if p.strip()]
        for path in paths:
            if os.path.exists(path):
                return cephx.read_key(path, entity)
        raise exception.KeyringError(path=", ".join(paths) or "(none configured)",
                                     detail=f"no keyring file for {entity}; set [rbd] keyring")

    def _mon_list(self) -> tuple[str, list[str]]:
        monitors = self.monitors.get()
        hosts = mon_host_list(monitors, "v1")
        if hosts:
            return ",".join(hosts), []
        # Only msgr2 monitors: the kernel speaks it from 5.11 with ms_mode.
        return ",".join(mon_host_list(monitors, "v2")), ["ms_mode=prefer-crc"]

    def map(self, pool: str, image: str, snapshot: str | None = None,
            read_only: bool = False) -> str:
        """Map ``pool/image[@snapshot]`` and return its device path (``/dev/rbdN``).

        An image already mapped returns its existing device.

        :raises InvalidName: a name would not fit the sysfs line.
        :raises KernelRbdUnavailable: the rbd kernel module is not loaded.
        :raises LocalOsdRefused: an OSD of the pool runs on this host.
        :raises KeyringError: the user's key cannot be read.
        :raises KernelRbdError: the kernel refused the mapping.
        """
        cephx.validate_name("pool", pool)
        for kind, name in (("image", image), ("snapshot", snapshot)):
            if name is not None and not _NO_SPACE.fullmatch(name):
                raise exception.InvalidName(kind=kind, target=name,
                                            reason="kernel mapping cannot take blanks in it")
        target = _target(pool, image, snapshot)
        add = self._bus_file("map", target, ("add_single_major", "add"))
        self.check_not_loopback(pool, target)
        existing = self.find(pool, image, snapshot)
        if existing is not None:
            return existing.device
        mons, options = self._mon_list()
        options = [f"name={self.user}", *options] + (["ro"] if read_only else [])
        key = self._key()
        before = {m.id for m in self.mapped()}
        keyring = self._kernel_keyring or LinuxKeyring()
        key_id = None
        try:
            key_id = keyring.add(f"client.{self.user}", key.raw())
            options.append(f"key=client.{self.user}")
        except OSError as err:
            if not self.allow_sysfs_secret:
                raise exception.KernelRbdError(
                    op="map", target=target,
                    detail=f"the kernel keyring refused the key ({os.strerror(err.errno or 0)})"
                ) from err
            LOG.warning("kernel keyring unavailable (%s); passing the key of client.%s "
                        "inside the sysfs write", os.strerror(err.errno or 0), self.user)
            options.append(f"secret={key.reveal()}")
        try:
            self._write(add, " ".join([mons, ",".join(options), pool, image]
                                      + ([snapshot] if snapshot else [])))
        except OSError as err:
            raise exception.KernelRbdError(
                op="map", target=target,
                detail=f"{os.strerror(err.errno or 0)}; the kernel log (dmesg) says why") from err
        finally:
            if key_id is not None:
                with contextlib.suppress(OSError):
                    keyring.remove(key_id)
        new = [m for m in self.mapped() if m.id not in before
               and (m.pool, m.image, m.snapshot) == (pool, image, snapshot)]
        if not new:
            raise exception.KernelRbdError(op="map", target=target,
                                           detail="the kernel accepted it but no device appeared")
        LOG.info("mapped %s at %s", target, new[0].device)
        return new[0].device

    def unmap_mapping(self, mapping: Mapping, force: bool = False) -> None:
        """Unmap ``mapping`` (one of :meth:`mapped`), without listing the mappings again.

        :raises KernelRbdError: the device is busy, or the kernel refused.
        """
        remove = self._bus_file("unmap", mapping.device, ("remove_single_major", "remove"))
        try:
            self._write(remove, f"{mapping.id}" + (" force" if force else ""))
        except OSError as err:
            detail = os.strerror(err.errno or 0)
            if err.errno == errno.EBUSY:
                detail = "the device is in use (a guest or a mount holds it open)"
            raise exception.KernelRbdError(op="unmap", target=f"{mapping.device} "
                                           f"({_target(mapping.pool, mapping.image, mapping.snapshot)})",
                                           detail=detail) from err
        LOG.info("unmapped %s", mapping.device)

    def unmap(self, pool: str, image: str, snapshot: str | None = None,
              force: bool = False) -> bool:
        """Unmap ``pool/image[@snapshot]``; return False if it was not mapped.

        ``force`` unmaps even while the device is open (I/O then fails).

        :raises KernelRbdError: the device is busy, or the kernel refused.
        """
        mapping = self.find(pool, image, snapshot)
        if mapping is None:
            return False
        self.unmap_mapping(mapping, force)
        return True

    def unmap_device(self, device: str, force: bool = False) -> None:
        """Unmap the device ``/dev/rbdN``.

        :raises KernelRbdError: it is not a mapped rbd device, or is busy.
        """
        for mapping in self.mapped():
            if mapping.device == device or os.path.basename(device) == f"rbd{mapping.id}":
                self.unmap_mapping(mapping, force)
                return
        raise exception.KernelRbdError(op="unmap", target=device, detail="it is not mapped")
