# SPDX-License-Identifier: Apache-2.0
"""Live migration of a running guest between two hypervisor processes.

Two private libvirt daemons (:mod:`rbd_driver.testing.hypervisor`) with
different host UUIDs stand for two compute hosts; libvirt's live migration
moves the guest between them over 127.0.0.1 (:mod:`rbd_driver.testing.migration`).
Each host has its own library instance (its own ``Backend``, its own cephx
connection); the destination's disk XML is made by ``libvirt_info()`` on the
destination. The guest writes an increasing counter to its disk, one
O_DIRECT+fsync write per value to a sector of its own, and prints each value
once written. The oracles are outside the library: the guests' consoles,
``rbd lock ls``/``rbd status``/``rbd export``/``rbd ls`` as admin, and the
QEMU processes found in ``/proc``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.libvirt import secret as libvirt_secret
from rbd_driver.storage.cephx import read_key
from rbd_driver.storage.location import format_location
from rbd_driver.testing.extra_mon import extra_monitor
from rbd_driver.testing.local_cluster import ClusterState, make_conf
from rbd_driver.testing.migration import CounterWatch, destination_xml, migrate, qemu_pid, tcp_peers

pytestmark = pytest.mark.functional

SECTOR = 512
SIZE = 64 << 20
FIRST = 2048  # the counter's value i goes to sector FIRST + i
RECORD = os.environ.get("RBD_DRIVER_MIGRATION_RECORD")  # append the figures to this file


def _conf(ceph_cluster: ClusterState, secret_uuid: str) -> Any:
    conf = make_conf(ceph_cluster)
    conf.set_override("secret_uuid", secret_uuid, group="rbd")
    conf.set_override("destroy_retry_interval", 0.5, group="rbd")
    conf.set_override("destroy_retries", 2, group="rbd")
    return conf


@pytest.fixture
def hosts(ceph_cluster, hypervisor, destination) -> Iterator[dict[str, Any]]:
    """The two hosts: each a hypervisor scope and its own library Backend.

    Both define the test user's ceph secret under one UUID, as a deployment
    does (Nova's ``[libvirt] rbd_secret_uuid`` is the same on every host).
    """
    key = read_key(ceph_cluster.user_keyring, f"client.{ceph_cluster.user}")
    secret_uuid = hypervisor.define_ceph_secret(ceph_cluster.user, key)
    libvirt_secret.define_ceph_secret(ceph_cluster.user, key, secret_uuid=secret_uuid,
                                      conn=destination.conn)
    destination.secret_users.append(ceph_cluster.user)
    with imagebackend.Backend(_conf(ceph_cluster, secret_uuid)) as src, \
            imagebackend.Backend(_conf(ceph_cluster, secret_uuid)) as dst:
        yield {"source": hypervisor, "destination": destination, "src": src, "dst": dst}


@pytest.fixture
def disk(hosts, ceph_admin) -> Iterator[tuple[str, Rbd]]:
    """An instance disk cloned from a golden image; removed after the test."""
    driver = hosts["src"].driver("rbd")
    golden = f"golden-{uuid.uuid4().hex[:8]}"
    driver.create(golden, SIZE, pool="images")
    driver.create_snap(golden, "snap", protect=True, pool="images")
    inst = str(uuid.uuid4())
    made = hosts["src"].by_name(inst, "disk", image_type="rbd")
    assert isinstance(made, Rbd)
    made.direct_fetch("golden", {"disk_format": "raw"},
                      [{"url": format_location(driver.fsid, "images", golden, "snap"),
                        "metadata": {}}])
    yield inst, made
    hosts["source"].destroy_guests()
    hosts["destination"].destroy_guests()
    report = Rbd.cleanup_instance(hosts["src"].conf, inst, driver=driver)
    assert report.ok, report
    assert driver.remove_image(golden, pool="images").removed == [golden]


def _counts(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"^RG count (\d+)\s*$", text.replace("\r", ""),
                                       re.MULTILINE)]


def _lock(ceph_admin, spec: str) -> list[dict[str, Any]]:
    return list(ceph_admin("rbd", "lock", "ls", spec) or [])


def _watchers(ceph_admin, spec: str) -> list[str]:
    return [w["address"] for w in ceph_admin("rbd", "status", spec)["watchers"]]


def _mon_v1(ceph_admin) -> list[str]:
    """Every monitor's messenger-v1 ``host:port``, from ``ceph mon dump`` as admin."""
    found = []
    for mon in ceph_admin("ceph", "mon", "dump")["mons"]:
        for addr in mon["public_addrs"]["addrvec"]:
            if addr["type"] == "v1":
                found.append(addr["addr"])
    return sorted(found)


def _xml_hosts(disk_xml: str) -> list[str]:
    return sorted(f"{h.get('name')}:{h.get('port')}"
                  for h in ET.fromstring(disk_xml).findall("./source/host"))


class PeerWatch:
    """Every TCP peer of the source's QEMU while it runs (read from /proc every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peers: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peers |= tcp_peers(self.pid)
            time.sleep(0.02)

    def stop(self) -> set[tuple[str, int]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peers


def _wait_lock_moved(ceph_admin, spec: str, before: dict[str, Any],
                     timeout: float = 120) -> dict[str, Any]:
    """Wait until one client other than ``before`` holds the lock and is the only watcher."""
    deadline = time.monotonic() + timeout
    while True:
        locks, watchers = _lock(ceph_admin, spec), _watchers(ceph_admin, spec)
        if (len(locks) == 1 and locks[0]["address"] != before["address"]
                and watchers == [locks[0]["address"]]):
            return locks[0]
        assert time.monotonic() < deadline, (
            f"the lock did not move to one new client: was {before}, now {locks}, "
            f"watchers {watchers}")
        time.sleep(0.5)


def _wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().split(b") ")[-1][:1] == b"Z":
                return
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.1)


def test_running_guest_migrates_live_keeping_every_write_and_the_lock_moves(
        hosts, disk, guest_image, ceph_cluster, ceph_admin, tmp_path) -> None:
    inst, disk = disk
    source, dest = hosts["source"], hosts["destination"]
    spec = f"vms/{disk.rbd_name}"
    src_disk_xml = disk.libvirt_info()
    assert _xml_hosts(src_disk_xml) == _mon_v1(ceph_admin)
    hosts["dst"].driver("rbd").get_monitors()  # the destination host was up before too
    vm = source.boot(guest_image, [src_disk_xml], [f"count:vda:{FIRST}:1000000"])
    vm.wait_for(r"^count 20$", timeout=180)
    src_pid = qemu_pid(source.hypervisor, vm.name)
    assert src_pid is not None
    before = _lock(ceph_admin, spec)
    assert len(before) == 1, before  # the source's QEMU holds the exclusive lock

    # The monitor addresses change before the migration: a second monitor.
    with extra_monitor(ceph_cluster) as new_mon:
        # The destination host makes the disk XML itself, with today's monitors.
        dst_disk_xml = hosts["dst"].by_name(inst, "disk", image_type="rbd").libvirt_info()
        mons = _mon_v1(ceph_admin)
        assert new_mon["v1"] in mons and len(mons) == 2
        assert _xml_hosts(dst_disk_xml) == mons
        xml, console = destination_xml(vm, dest.hypervisor, guest_image, [dst_disk_xml])
        watch = CounterWatch(vm.console_path, console).start()
        peers = PeerWatch(src_pid)
        try:
            moved = migrate(vm, dest.hypervisor, xml, console)
            # The migration stream went to the destination on loopback, and
            # the source's QEMU talked to nothing but loopback.
            seen = peers.stop()
            port = int(moved.uri.rsplit(":", 1)[1])
            assert ("127.0.0.1", port) in seen, (moved.uri, seen)
            assert {host for host, _ in seen} <= {"127.0.0.1", "::1"}, seen
            dest.guests.append(moved.guest)
            # The exclusive lock moves to the destination's librbd client (on
            # its first write) and the source's QEMU is gone.
            owner = _wait_lock_moved(ceph_admin, spec, before[0])
            dst_pid = qemu_pid(dest.hypervisor, vm.name)
            assert dst_pid is not None and dst_pid != src_pid
            _wait_gone(src_pid)
            # The guest runs on the destination: its counter goes on there.
            last_on_source = max(_counts(vm.console()))
            moved.guest.wait_for(rf"^count {last_on_source + 30}$", timeout=180)
        finally:
            watch.stop()
            peers.stop()
        assert _lock(ceph_admin, spec) == [owner]

        # The source host's cleanup while the guest runs there: busy, nothing removed.
        report = Rbd.cleanup_instance(hosts["src"].conf, inst,
                                      driver=hosts["src"].driver("rbd"))
        assert list(report.busy) == [disk.rbd_name] and not report.removed and not report.trashed
        assert owner["address"] in report.busy[disk.rbd_name]
        assert disk.rbd_name in (ceph_admin("rbd", "ls", "vms") or [])
        still = max(_counts(moved.guest.console()))
        # (Before the fix in storage/removal.py, librbd's remove took the lock
        # from the guest for a moment, and a guest write then failed: EROFS.)
        moved.guest.wait_for(rf"^count {still + 5}$", timeout=120)

        # Stop the destination's QEMU (by PID): the lock owner and watcher go with it.
        assert _lock(ceph_admin, spec) == [owner]
        assert _watchers(ceph_admin, spec) == [owner["address"]]
        assert qemu_pid(dest.hypervisor, vm.name) == dst_pid
        os.kill(dst_pid, signal.SIGTERM)
        _wait_gone(dst_pid)
        assert _lock(ceph_admin, spec) == [] and _watchers(ceph_admin, spec) == []

        # Every value the guest printed (acknowledged) on either host is on the disk.
        # (One console after the other: a line may be cut by the switch-over.)
        printed = _counts(vm.console() + moved.guest.console())
        assert printed == list(range(1, printed[-1] + 1)), printed
        target = tmp_path / "disk.raw"
        subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress", spec,
                        str(target)], check=True, capture_output=True, timeout=120)
        with open(target, "rb") as f:
            data = f.read()
        missing = [i for i in printed
                   if data[(FIRST + i) * SECTOR:(FIRST + i) * SECTOR + 9] != b"C%08d" % i]
        assert missing == [], f"{len(missing)} acknowledged values not on the disk: {missing[:10]}"

        figures = (f"migration: downtime {moved.downtime_ms} ms (libvirt), total "
                   f"{moved.total_ms} ms (libvirt), wall {moved.wall_s:.2f} s, longest gap "
                   f"between counter values {watch.longest_gap() * 1000:.0f} ms, "
                   f"values {printed[-1]} (last on source {last_on_source}), mons {mons}")
        print(figures)
        if RECORD:
            with open(RECORD, "a", encoding="utf-8") as f:
                f.write(figures + "\n")
