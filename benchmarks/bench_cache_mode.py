#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Cache mode benchmark: the guest's writes under ``cache='none'`` and ``'writeback'``.

Usage::

    .venv/bin/python benchmarks/bench_cache_mode.py [--rounds 3] [--json out.json]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file), with a private libvirtd and the busybox test guest
(:mod:`rbd_driver.testing.guest`; QEMU under TCG), each round boots one guest
per cache mode, in an order that alternates between rounds, on a new 256 MiB
disk made by the library and reached as the non-admin cephx user through
``Rbd.libvirt_info(cache_mode=...)``. Inside the guest, timed by its clock:

1. a warm-up: 8 MiB written and fsynced (librbd's cache stays write-through
   until the guest's first flush, ``rbd_cache_writethrough_until_flush``);
2. ``seq``: 64 MiB written sequentially in 1 MiB blocks, then fsynced (MiB/s);
3. ``4k direct``: 1000 writes of 4 KiB, O_DIRECT, one at a time, consecutive
   offsets from one ``dd`` (IOPS);
4. ``4k random direct`` / ``4k random fsync``: 200 / 150 writes of 4 KiB, O_DIRECT,
   at random aligned offsets in the first 64 MiB, one ``dd`` process per
   write, the second kind fsynced after each write (a flush: what a
   database's commit does). busybox has neither a random-IO tool nor
   O_DSYNC, so each write carries a process start: the difference between
   the modes is diluted, not hidden (IOPS).

It reports the median of each per mode and the ratio writeback / none. The
safety side (every flushed write survives a SIGKILLed QEMU, under both modes)
is a functional test: ``tests/functional/test_guest_io.py``.
Exit status: 0, or 2 when the cleanup left something.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import uuid
from typing import Any

from _benchlib import DISK_POOL, MIB, add_output_args, bluestore_cluster, command_line, environment, finish

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage.cephx import read_key
from rbd_driver.testing.guest import build_guest
from rbd_driver.testing.hypervisor import Hypervisor
from rbd_driver.testing.local_cluster import ClusterState, make_conf

MODES = ("none", "writeback")
DISK_SIZE = 256 * MIB
STEPS = ["seqwrite:vda:8", "seqwrite:vda:64", "stream4k:vda:1000:direct",
         "write4k:vda:200:direct", "write4k:vda:150:fsync"]
#: series name -> (regex of its guest line, unit); group 1 the amount, group 2 centiseconds.
SERIES = {
    "seq": (r"^seqwrite vda mib=(64) centiseconds=(\d+)$", "MiB/s"),
    "4k direct": (r"^stream4k vda direct ops=(\d+) centiseconds=(\d+)$", "IOPS"),
    "4k random direct": (r"^write4k vda direct ops=(\d+) centiseconds=(\d+)$", "IOPS"),
    "4k random fsync": (r"^write4k vda fsync ops=(\d+) centiseconds=(\d+)$", "IOPS"),
}


def one_guest(hv: Hypervisor, backend: imagebackend.Backend, guest: Any,
              cache_mode: str) -> dict[str, float]:
    """Boot one guest on a new disk under ``cache_mode``; return each series' rate."""
    disk = backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
    assert isinstance(disk, Rbd)
    disk.driver.create(disk.rbd_name, DISK_SIZE)
    try:
        with hv.scope() as scope:
            vm = scope.boot(guest, [disk.libvirt_info({"dev": "vda"}, cache_mode)], STEPS)
            vm.wait_for(r"^done$", timeout=1800)
            vm.wait_shutoff(timeout=120)
            lines = vm.lines()
    finally:
        report = Rbd.cleanup_instance(backend.conf, disk.instance_uuid,
                                      driver=backend.driver("rbd"))
        if not report.ok:
            print(f"left behind: {report.as_dict()}", file=sys.stderr)
    rates = {}
    for name, (pattern, _) in SERIES.items():
        found = next(m for m in (re.match(pattern, line) for line in lines) if m)
        rates[name] = int(found[1]) / (int(found[2]) / 100)
    return rates


def run(state: ClusterState, rounds: int) -> dict[str, dict[str, list[float]]]:
    raw: dict[str, dict[str, list[float]]] = {mode: {s: [] for s in SERIES} for mode in MODES}
    guest = build_guest()
    with Hypervisor() as hv:
        conf = make_conf(state, DISK_POOL)
        key = read_key(state.user_keyring, f"client.{state.user}")
        conf.set_override("secret_uuid", hv.define_ceph_secret(state.user, key), group="rbd")
        with imagebackend.Backend(conf) as backend:
            for index in range(rounds):
                order = MODES if index % 2 == 0 else MODES[::-1]
                for mode in order:
                    print(f"round {index + 1}/{rounds}: cache={mode}...", file=sys.stderr)
                    for name, rate in one_guest(hv, backend, guest, mode).items():
                        raw[mode][name].append(rate)
    return raw


def report(env: dict[str, Any], args: argparse.Namespace,
           raw: dict[str, dict[str, list[float]]]) -> tuple[dict[str, Any], int]:
    medians = {mode: {s: statistics.median(v) for s, v in series.items()}
               for mode, series in raw.items()}
    print(f"\nguest writes (busybox guest, TCG) by cache mode, median of {args.rounds}:")
    print(f"  {'series':18s} {'none':>10s} {'writeback':>10s}  writeback/none")
    ratios = {}
    for name, (_, unit) in SERIES.items():
        none, back = medians["none"][name], medians["writeback"][name]
        ratios[name] = back / none
        print(f"  {name:18s} {none:10.1f} {back:10.1f}  {ratios[name]:5.2f}x  ({unit})")
    doc = {"environment": env, "command": command_line("bench_cache_mode"),
           "rounds": args.rounds, "steps": STEPS, "samples": raw, "medians": medians,
           "ratio_writeback_over_none": ratios}
    return doc, 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--osd-size-gib", type=int, default=8)
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    env = environment()
    with bluestore_cluster(args.osd_size_gib, env) as state:
        raw = run(state, args.rounds)
    return finish("bench_cache_mode", args, env, lambda: report(env, args, raw))


if __name__ == "__main__":
    sys.exit(main())
