# SPDX-License-Identifier: Apache-2.0
"""Live migration of a test guest between two private libvirt daemons on one machine.

Two :class:`~rbd_driver.testing.hypervisor.Hypervisor` daemons, each with its
own ``host_uuid``, stand for two compute hosts. :func:`migrate` moves a running
guest from one to the other with libvirt's own live migration
(``virDomainMigrate3``, driven by the client holding both connections, as
Nova's non-peer-to-peer mode does). libvirt accepts this within one machine
because the daemons report different host UUIDs (it refuses a migration to
a daemon with its own host UUID). The migration stream is QEMU's, over TCP on
127.0.0.1 only: the destination listens on loopback (``migration_address``
in its qemu.conf and ``VIR_MIGRATE_PARAM_LISTEN_ADDRESS``) and the source
is given ``tcp://127.0.0.1:<port>``.

The destination's domain XML is the source's migratable XML with the disks
replaced by the ones the destination made (``Rbd.libvirt_info()`` on the
destination: today's monitor addresses) and the paths that belong to one
daemon's directory (kernel, initramfs, serial console) moved to the
destination's. Each new ``<disk>`` keeps the old one's PCI ``<address>`` and
``<alias>``: the guest's hardware must not change under it.

:class:`CounterWatch` follows the ``RG count <i>`` lines of a guest running
the ``count`` step (:mod:`rbd_driver.testing.guest`) on both consoles, and
gives the longest time no new value appeared: the pause the guest saw, as
measured from outside.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rbd_driver.testing.guest import GuestImage
from rbd_driver.testing.hypervisor import Guest, Hypervisor, _libvirt, _processes_mentioning

__all__ = ["CounterWatch", "Migration", "destination_xml", "migrate", "qemu_pid", "tcp_peers"]

_COUNT = re.compile(r"^RG count (\d+)\s*$", re.MULTILINE)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_pid(hypervisor: Hypervisor, name: str) -> int | None:
    """Return the PID of the QEMU running guest ``name`` under ``hypervisor``, or None.

    Found by its command line: ``guest=<name>`` and the daemon's directory
    (the kernel and console paths), so two daemons' guests of the same name
    are told apart.
    """
    assert hypervisor.directory is not None
    for pid in _processes_mentioning(hypervisor.directory):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and f"guest={name}".encode() in b" ".join(argv):
            return pid
    return None


def _hex_addr(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # /proc/net/tcp6: four little-endian 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        address = socket.inet_ntop(socket.AF_INET6, words)
    return address, int(port, 16)


def tcp_peers(pid: int) -> set[tuple[str, int]]:
    """Return the remote (address, port) of every connected TCP socket of process ``pid``.

    Read from ``/proc``: the socket inodes among its open files, looked up in
    ``/proc/<pid>/net/tcp`` and ``tcp6``. Listening sockets have no peer and
    are left out. An exited process has none.
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    peers = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[9] in inodes and fields[3] != "0A":  # 0A: LISTEN
                peers.add(_hex_addr(fields[2]))
    return peers


def _disk_target(disk: ET.Element) -> str:
    target = disk.find("target")
    if target is None or not target.get("dev"):
        raise ValueError("a <disk> without <target dev=...>")
    return str(target.get("dev"))


def destination_xml(guest: Guest, destination: Hypervisor, image: GuestImage,
                    disks: Sequence[str]) -> tuple[str, str]:
    """Return the domain XML for ``destination`` and the console path it names.

    :param disks: ``<disk>`` XML made on the destination; each replaces the
        source's disk with the same target device.
    """
    libvirt = _libvirt()
    assert destination.directory is not None
    domain = ET.fromstring(guest.domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    installed = destination.install(image)
    os_el = domain.find("os")
    assert os_el is not None
    for tag, path in (("kernel", installed.kernel), ("initrd", installed.initramfs)):
        el = os_el.find(tag)
        if el is not None:
            el.text = path
    # A name of its own: a guest migrated back must not overwrite its old console.
    console = os.path.join(destination.directory, "guests",
                           f"{guest.name}-{uuid.uuid4().hex[:8]}.console")
    devices = domain.find("devices")
    assert devices is not None
    for el in devices.findall("./serial/source") + devices.findall("./console/source"):
        if el.get("path"):
            el.set("path", console)
    old = {_disk_target(d): d for d in devices.findall("disk")}
    for text in disks:
        new = ET.fromstring(text)
        target = _disk_target(new)
        if target not in old:
            raise ValueError(f"the guest has no disk {target} to replace")
        for tag in ("address", "alias"):
            kept = old[target].find(tag)
            if kept is not None and new.find(tag) is None:
                new.append(kept)
        index = list(devices).index(old[target])
        devices.remove(old[target])
        devices.insert(index, new)
    return ET.tostring(domain, encoding="unicode"), console


@dataclass
class Migration:
    """A finished live migration: the guest on the destination and libvirt's figures."""

    guest: Guest
    wall_s: float
    downtime_ms: int | None
    total_ms: int | None
    stats: dict[str, Any] = field(default_factory=dict)
    uri: str = ""


def migrate(guest: Guest, destination: Hypervisor, dest_xml: str, console: str,
            *, flags: int | None = None) -> Migration:
    """Live-migrate ``guest`` to ``destination`` over 127.0.0.1; return the result.

    :param flags: libvirt migration flags (default ``VIR_MIGRATE_LIVE``).
    :raises libvirt.libvirtError: libvirt refused or the migration failed
        (the guest then still runs on the source).
    """
    libvirt = _libvirt()
    uri = f"tcp://127.0.0.1:{_free_port()}"
    params = {
        libvirt.VIR_MIGRATE_PARAM_URI: uri,
        libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
    }
    started = time.monotonic()
    moved = guest.domain.migrate3(destination.conn, params,
                                  libvirt.VIR_MIGRATE_LIVE if flags is None else flags)
    wall = time.monotonic() - started
    stats: dict[str, Any] = {}
    try:
        stats = dict(moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    except libvirt.libvirtError:
        pass
    downtime = stats.get("downtime")
    total = stats.get("time_elapsed")
    return Migration(Guest(moved, console), wall,
                     int(downtime) if downtime is not None else None,
                     int(total) if total is not None else None, stats, uri)


class CounterWatch:
    """Follow a counting guest's values on its consoles (source, then destination).

    Call :meth:`start` before the migration and :meth:`stop` after; then
    :attr:`arrivals` holds every new value seen (in order) and :meth:`longest_gap`
    the longest time, in seconds, between two successive new values.
    """

    def __init__(self, *consoles: str, interval: float = 0.005) -> None:
        self.consoles = list(consoles)
        self.interval = interval
        #: ``(time.monotonic(), value)`` of each new value, in order.
        self.arrivals: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add_console(self, path: str) -> None:
        """Watch the console file ``path`` too (the destination's, once it exists)."""
        self.consoles.append(path)

    def _latest(self) -> int:
        best = 0
        for path in list(self.consoles):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            found = _COUNT.findall(text.replace("\r", ""))
            if found:
                best = max(best, int(found[-1]))
        return best

    def _run(self) -> None:
        last = self._latest()
        while not self._stop.is_set():
            now = self._latest()
            if now > last:
                self.arrivals.append((time.monotonic(), now))
                last = now
            time.sleep(self.interval)

    def start(self) -> CounterWatch:
        """Start watching in a background thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (waits up to 10 s for the thread)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def longest_gap(self) -> float:
        """Seconds of the longest stretch without a new value (0 with fewer than two)."""
        times = [t for t, _ in self.arrivals]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
