# SPDX-License-Identifier: Apache-2.0
"""The guest's IO path, judged from outside the library: limits, space, flushed data.

- a flavor's ``quota:disk_read_iops_sec`` holds the busybox guest's O_DIRECT
  reads (timed inside the guest) near the limit;
- a librbd limit in image metadata holds a second librbd client (``rbd
  bench`` as admin), and a per-GiB limit follows the disk when it grows;
- what the guest discards (``blkdiscard``), or overwrites with zeroes, is given
  back to the pool (``rbd du`` as admin);
- every write the guest flushed is in the image after QEMU is SIGKILLed
  (``rbd export`` as admin), under both cache modes.

Limits are kept low (50-60 IOPS) so that this shared, slow machine always
reaches them: the test measures the limit, not the machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.testing.hypervisor import Guest, HypervisorScope
from rbd_driver.testing.local_cluster import ClusterState
from tests.functional.test_cli import cli  # noqa: F401  (fixture)
from tests.functional.test_guests import _clone, _instance, golden, guest_backend, instances  # noqa: F401  (fixtures)

pytestmark = pytest.mark.functional

MIB = 1 << 20
GIB = 1 << 30
TOLERANCE = 0.15


def _within(measured: float, limit: float, tolerance: float = TOLERANCE) -> bool:
    return abs(measured - limit) <= tolerance * limit


def bench_read_iops(ceph_cluster: ClusterState, spec: str, ops: int) -> float:
    """Read ``ops`` random 4 KiB blocks of ``spec`` with ``rbd bench`` as admin (a
    librbd client of its own); return its steady rate in IOPS.

    The rate is taken between its first and last per-second lines: librbd's
    token bucket starts full (one second of the limit), which a plain
    ops/elapsed would count as speed.
    """
    proc = subprocess.run(
        ["rbd", "-c", ceph_cluster.conf_path, "bench", "--io-type", "read", "--io-size", "4096",
         "--io-threads", "4", "--io-pattern", "rand", "--io-total", str(ops * 4096), spec],
        capture_output=True, text=True, timeout=300, check=True)
    rows = [(int(m[1]), int(m[2])) for m in
            re.finditer(r"^\s*(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+", proc.stdout, re.MULTILINE)]
    assert len(rows) >= 3, proc.stdout
    (sec0, ops0), (sec1, ops1) = rows[0], rows[-1]
    return (ops1 - ops0) / (sec1 - sec0)


def image_meta(ceph_admin: Any, spec: str) -> dict[str, str]:
    return dict(ceph_admin("rbd", "image-meta", "list", spec) or {})


def used_bytes(ceph_admin: Any, spec: str) -> int:
    return int(ceph_admin("rbd", "du", spec)["images"][0]["used_size"])


# -- limits -------------------------------------------------------------------------


def test_flavor_read_iops_limit_holds_the_guest(guest_backend, golden, instances,
                                                 hypervisor: HypervisorScope,
                                                 guest_image) -> None:
    limit, ops = 50, 250
    disk = _clone(guest_backend, golden, _instance(instances))
    xml = disk.libvirt_info({"dev": "vda"}, "none",
                            {"quota:disk_read_iops_sec": str(limit), "hw:cpu_policy": "shared"})
    vm = hypervisor.boot(guest_image, [xml], [f"iops:vda:{ops}"])
    seen = vm.wait_for(r"^iops vda ops=(\d+) centiseconds=(\d+)$", timeout=240)
    rate = int(seen[1]) / (int(seen[2]) / 100)
    print(f"guest O_DIRECT 4 KiB reads under read_iops_sec={limit}: {rate:.1f} IOPS")
    assert _within(rate, limit), f"{rate:.1f} IOPS measured in the guest, limit {limit}"


def test_librbd_limit_holds_a_second_client(guest_backend, golden, instances, ceph_cluster,
                                            ceph_admin) -> None:
    limit = 50
    disk = _clone(guest_backend, golden, _instance(instances))
    disk.set_qos(read_iops=limit)
    spec = f"vms/{disk.rbd_name}"
    assert image_meta(ceph_admin, spec) == {"conf_rbd_qos_read_iops_limit": str(limit)}
    rate = bench_read_iops(ceph_cluster, spec, ops=7 * limit)
    print(f"rbd bench (admin) under conf_rbd_qos_read_iops_limit={limit}: {rate:.1f} IOPS")
    assert _within(rate, limit), f"{rate:.1f} IOPS measured by rbd bench, limit {limit}"


def test_a_running_guest_takes_a_librbd_limit_set_while_it_runs(
        guest_backend, golden, instances, hypervisor, guest_image) -> None:
    limit = 50
    inst = _instance(instances)
    disk = _clone(guest_backend, golden, inst)
    gate = _gate(guest_backend, inst, "gate", "vdb")
    vm = hypervisor.boot(guest_image, [disk.libvirt_info({"dev": "vda"})],
                         ["iops:vda:400", "wait:vdb", "iops:vda:250"])
    before = vm.wait_for(r"^iops vda ops=400 centiseconds=(\d+)$", timeout=240)
    disk.set_qos(read_iops=limit)
    vm.attach(gate)
    after = vm.wait_for(r"^iops vda ops=250 centiseconds=(\d+)$", timeout=240)
    rates = 400 / (int(before[1]) / 100), 250 / (int(after[1]) / 100)
    print(f"guest reads before / after set_qos(read_iops={limit}): "
          f"{rates[0]:.1f} / {rates[1]:.1f} IOPS")
    assert rates[0] > 2 * limit, rates  # unlimited at first: the limit is what holds it
    assert _within(rates[1], limit), rates


def test_per_gib_limit_follows_the_disk_when_it_grows(guest_backend, golden, instances,
                                                      ceph_cluster, ceph_admin) -> None:
    disk = _clone(guest_backend, golden, _instance(instances))
    disk.resize_image(GIB)
    assert disk.set_qos(iops_per_gib=20)["iops"] == 20
    disk.resize_image(3 * GIB)
    spec = f"vms/{disk.rbd_name}"
    meta = image_meta(ceph_admin, spec)
    assert (meta["conf_rbd_qos_iops_limit"], meta["rbd_driver.qos_iops_per_gib"]) == ("60", "20")
    rate = bench_read_iops(ceph_cluster, spec, ops=7 * 60)
    print(f"rbd bench (admin) on a 3 GiB disk with 20 IOPS/GiB: {rate:.1f} IOPS")
    assert _within(rate, 60), f"{rate:.1f} IOPS measured by rbd bench, limit 60 (3 GiB x 20)"


def test_qos_cli_keeps_the_limits_in_image_metadata(cli, guest_backend, golden,
                                                    instances, ceph_admin) -> None:
    disk = _clone(guest_backend, golden, _instance(instances))
    disk.resize_image(2 * GIB)
    inst, spec = disk.rbd_name.split("_")[0], f"vms/{disk.rbd_name}"
    doc = cli("qos", "set", inst, "--read-iops", "500", "--bps-per-gib", str(MIB))
    assert doc["limits"]["read_iops"] == 500 and doc["limits"]["bps"] == 2 * MIB
    assert image_meta(ceph_admin, spec) == {
        "conf_rbd_qos_read_iops_limit": "500", "conf_rbd_qos_bps_limit": str(2 * MIB),
        "rbd_driver.qos_bps_per_gib": str(MIB)}
    text = cli("qos", "show", inst, as_json=False)
    assert "read_iops:" in text and "2 MiB/s" in text
    assert cli("qos", "clear", inst)["limits"] == dict.fromkeys(doc["limits"])
    assert image_meta(ceph_admin, spec) == {}
    assert "needs at least one limit" in cli("qos", "set", inst, expect=2, as_json=False)


# -- space --------------------------------------------------------------------------


def _gate(backend: imagebackend.Backend, inst: str, name: str, dev: str) -> str:
    """A small disk whose hot-plug lets the guest go on past a ``wait:<dev>`` step."""
    gate = backend.by_name(inst, name, image_type="rbd")
    assert isinstance(gate, Rbd)
    gate.driver.create(gate.rbd_name, MIB)
    return gate.libvirt_info({"dev": dev})


def allocated_bytes(ceph_admin: Any) -> int:
    """Bytes the cluster's OSDs hold on disk (bluestore's own counter, read at once)."""
    return sum(int(ceph_admin("ceph", "tell", f"osd.{osd}", "perf", "dump", "bluestore")
                   ["bluestore"]["bluestore_allocated"])
               for osd in ceph_admin("ceph", "osd", "ls"))


def test_discarded_and_zeroed_space_goes_back_to_the_pool(guest_backend, golden, instances,
                                                         hypervisor, guest_image,
                                                         ceph_admin) -> None:
    """blkdiscard frees whole objects: ``rbd du`` sees it. Zeroes come in requests
    smaller than an object, which detect_zeroes turns into discards that punch
    holes: the OSDs free the space, while ``rbd du`` (which counts objects)
    still counts them, so the OSDs' own allocation is the oracle there."""
    inst = _instance(instances)
    disk = _clone(guest_backend, golden, inst)
    disk.resize_image(192 * MIB)  # the clone's overlap is the first 64 MiB: fill beyond it
    spec, span = f"vms/{disk.rbd_name}", 64 * MIB
    gates = [_gate(guest_backend, inst, f"gate{i}", dev)
             for i, dev in enumerate(("vdb", "vdc", "vdd"))]
    xml = disk.libvirt_info({"dev": "vda"})
    driver = ET.fromstring(xml).find("driver")
    assert driver is not None
    assert (driver.get("discard"), driver.get("detect_zeroes")) == ("unmap", "unmap")
    du, osd = {"base": used_bytes(ceph_admin, spec)}, {}
    vm = hypervisor.boot(guest_image, [xml], [
        "fill:vda:128:64", "wait:vdb", "discard:vda:128:64", "wait:vdc",
        "fill:vda:64:64", "wait:vdd", "zero:vda:64:64"])
    # Each step waits for the next gate disk, so that the pool is measured between steps.
    for step, gate in (("filled vda 128 64", gates[0]), ("discarded vda 128 64", gates[1]),
                       ("filled vda 64 64", gates[2]), ("zeroed vda 64 64", None)):
        vm.wait_for(f"^{step}$", timeout=300)
        if step.endswith("128 64"):
            du[step] = used_bytes(ceph_admin, spec) - du["base"]
        if step == "discarded vda 128 64":
            osd["base"] = allocated_bytes(ceph_admin)
        elif step.endswith("vda 64 64"):
            osd[step] = allocated_bytes(ceph_admin) - osd["base"]
        if gate:
            vm.attach(gate)
    print("rbd du, MiB above the start:", {k: v / MIB for k, v in du.items()})
    print("OSD allocation, MiB above the start:", {k: v / MIB for k, v in osd.items()})
    assert du["filled vda 128 64"] >= 0.9 * span, du
    assert du["discarded vda 128 64"] <= 0.1 * span, du
    assert osd["filled vda 64 64"] >= 0.9 * span, osd
    assert osd["zeroed vda 64 64"] <= 0.1 * span, osd


# -- flushed data survives a killed QEMU ------------------------------------------------


def _qemu_pid(vm: Guest) -> int:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and f"guest={vm.name},".encode() in b" ".join(args):
            pids.append(int(pid))
    assert len(pids) == 1, pids
    return pids[0]


def _blocklist_watchers(ceph_admin: Any, spec: str) -> None:
    """Fence the killed QEMU's librbd client as an operator would, so that its
    watch goes now rather than after the OSD's 30 s timeout (cleanup waits on it)."""
    for watcher in ceph_admin("rbd", "status", spec).get("watchers", []):
        ceph_admin("ceph", "osd", "blocklist", "add", watcher["address"], "600")
    deadline = time.monotonic() + 60
    while ceph_admin("rbd", "status", spec).get("watchers") and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.parametrize("cache_mode", ["none", "writeback"])
def test_every_flushed_write_survives_sigkill_of_qemu(cache_mode, guest_backend, golden,
                                                     instances, hypervisor, guest_image,
                                                     ceph_cluster, ceph_admin, tmp_path) -> None:
    disk = _clone(guest_backend, golden, _instance(instances))
    vm = hypervisor.boot(guest_image, [disk.libvirt_info({"dev": "vda"}, cache_mode)],
                         ["mark:vda:4000"])
    vm.wait_for(r"^flushed 40$", timeout=240)
    os.kill(_qemu_pid(vm), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while vm.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    _blocklist_watchers(ceph_admin, f"vms/{disk.rbd_name}")
    flushed = max(int(m[1]) for m in (re.match(r"flushed (\d+)$", line) for line in vm.lines())
                  if m)
    target = tmp_path / f"export-{uuid.uuid4().hex}"
    subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress",
                    f"vms/{disk.rbd_name}", str(target)], check=True, capture_output=True,
                   timeout=120)
    data = target.read_bytes()
    missing = [i for i in range(1, flushed + 1)
               if not data[i * 4096:(i + 1) * 4096].startswith(f"MARK{i}\0".encode())]
    print(f"cache={cache_mode}: {flushed} flushed records before SIGKILL, missing {missing}")
    assert flushed >= 40 and not missing, (flushed, missing[:20])
