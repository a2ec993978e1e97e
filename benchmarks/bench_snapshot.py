#!/usr/bin/env python3
"""Instance snapshot benchmark: ``Rbd.direct_snapshot`` against export + import.

Usage::

    .venv/bin/python benchmarks/bench_snapshot.py [--rounds 3] [--launches 50] [--json out.json]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file), as the cluster's non-admin cephx user:

1. creates ``images/golden``: 2 GiB, its first 512 MiB written with
   incompressible data, with a protected snapshot ``snap``;
2. each round launches a new disk from it with ``direct_fetch`` and writes
   64 MiB into it (16 x 4 MiB, spread over the disk, half over golden data),
   then times, in an order that alternates between rounds (ABC, CBA, ...):

   * ``shared``: ``direct_snapshot`` as configured by default (the new image
     clones the golden and receives only the 64 MiB the disk changed);
   * ``flattened``: ``direct_snapshot`` with ``[rbd] snapshot_flatten`` (a
     full in-cluster copy, librbd's flatten);
   * ``baseline``: the path without it: snapshot the disk, ``export_file`` it
     to a local raw file (the data path's parallel sparse export), then
     ``import_file`` that file into a new image of the image pool (parallel
     sparse import) and snapshot + protect it, remove the disk snapshot;

   every image made is removed (untimed) before the next series;
3. times ``--launches`` ``direct_fetch`` launches from the depth-0 golden with
   the clone-depth policy on, and as many with it bypassed (the code before
   it), alternating in blocks of 10, to show its cost on the common launch;
4. removes everything, checks the pools are empty and stops the cluster.

Target (issue 14): median(baseline) / median(shared) >= 3.
Exit status: 0 when met, 1 otherwise, 2 when the cleanup left something.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from _benchlib import GIB, GOLDEN_POOL, MIB, RAW, environment, summarize, write_json

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.testing.cluster import ClusterState, LocalCluster, make_conf

TARGET_SPEEDUP = 3.0
GOLDEN_SIZE = 2 * GIB
GOLDEN_DATA = 512 * MIB
WRITTEN = 64 * MIB
CHUNK = 4 * MIB


def _block(seed: int) -> bytes:
    """4 MiB that no other block equals (bluestore does not dedupe, but be honest)."""
    return seed.to_bytes(8, "little") + os.urandom(CHUNK - 8)


class Bench:
    def __init__(self, state: ClusterState, workdir: str) -> None:
        self.conf = make_conf(state)
        self.backend = imagebackend.Backend(self.conf)
        self.driver = self.backend.driver("rbd")
        self.workdir = workdir
        self.golden_url = ""

    def make_golden(self) -> None:
        self.driver.create("golden", GOLDEN_SIZE, pool=GOLDEN_POOL)
        with self.driver.client.open_image(GOLDEN_POOL, "golden") as image:
            for offset in range(0, GOLDEN_DATA, CHUNK):
                image.write(_block(offset), offset)
            image.flush()
        self.driver.create_snap("golden", "snap", protect=True, pool=GOLDEN_POOL)
        self.golden_url = f"rbd://{self.driver.fsid}/{GOLDEN_POOL}/golden/snap"

    def launch(self) -> Rbd:
        disk = self.backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
        disk.direct_fetch("golden", RAW, [{"url": self.golden_url, "metadata": {}}])
        return disk

    def launch_and_write(self) -> Rbd:
        disk = self.launch()
        # 16 x 4 MiB at every 128 MiB: the first 4 over golden data, the rest over holes.
        with self.driver.client.open_image("vms", disk.rbd_name) as image:
            for i in range(WRITTEN // CHUNK):
                image.write(_block(10_000 + i), i * 128 * MIB)
            image.flush()
        return disk

    def shared(self, disk: Rbd) -> float:
        self.conf.set_override("snapshot_flatten", False, group="rbd")
        start = time.perf_counter()
        disk.direct_snapshot("bench-snap", "raw", "snap-shared")
        return time.perf_counter() - start

    def flattened(self, disk: Rbd) -> float:
        self.conf.set_override("snapshot_flatten", True, group="rbd")
        start = time.perf_counter()
        disk.direct_snapshot("bench-snap", "raw", "snap-flat")
        return time.perf_counter() - start

    def baseline(self, disk: Rbd) -> float:
        path = os.path.join(self.workdir, "snapshot.raw")
        driver = self.driver
        start = time.perf_counter()
        driver.create_snap(disk.rbd_name, "bench-snap")
        driver.export_file(disk.rbd_name, path, snapshot="bench-snap")
        driver.import_file(path, "snap-baseline", GOLDEN_POOL)
        driver.create_snap("snap-baseline", "snap", protect=True, pool=GOLDEN_POOL)
        driver.remove_snap(disk.rbd_name, "bench-snap")
        elapsed = time.perf_counter() - start
        os.unlink(path)
        return elapsed

    def remove(self, pool: str, name: str) -> None:
        report = self.driver.remove_image(name, pool)
        if not report.ok:
            raise RuntimeError(f"could not remove {pool}/{name}: {report.failed}")

    def cleanup(self) -> dict[str, Any]:
        for name in self.driver.list_images("vms"):
            self.remove("vms", name)
        for name in self.driver.list_images(GOLDEN_POOL):
            self.remove(GOLDEN_POOL, name)
        left = {p: self.driver.list_images(p) for p in ("vms", GOLDEN_POOL)}
        self.backend.close()
        return {"left": {p: names for p, names in left.items() if names}}


def run_snapshots(bench: Bench, rounds: int) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {"shared": [], "flattened": [], "baseline": []}
    made = {"shared": "snap-shared", "flattened": "snap-flat", "baseline": "snap-baseline"}
    order = ["shared", "flattened", "baseline"]
    for index in range(rounds):
        for kind in order if index % 2 == 0 else list(reversed(order)):
            disk = bench.launch_and_write()
            seconds = getattr(bench, kind)(disk)
            series[kind].append(seconds)
            print(f"  round {index + 1} {kind:9s} {seconds:.3f} s", file=sys.stderr)
            bench.remove(GOLDEN_POOL, made[kind])
            bench.remove("vms", disk.rbd_name)
    return series


def run_launches(bench: Bench, launches: int) -> dict[str, list[float]]:
    """Time direct_fetch with the depth policy and with it bypassed, in blocks of 10."""
    series: dict[str, list[float]] = {"with_policy": [], "without_policy": []}
    original = Rbd._limit_depth
    for _ in range(3):  # warm-up: the golden's verdict and depth are remembered
        bench.remove("vms", bench.launch().rbd_name)
    try:
        for block in range(0, 2 * launches, 10):
            with_policy = (block // 10) % 2 == 0
            Rbd._limit_depth = original if with_policy else (  # type: ignore[method-assign]
                lambda self, location, identity: None)
            for _ in range(10):
                disk = bench.backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
                start = time.perf_counter()
                disk.direct_fetch("golden", RAW, [{"url": bench.golden_url, "metadata": {}}])
                elapsed = time.perf_counter() - start
                series["with_policy" if with_policy else "without_policy"].append(elapsed)
                bench.remove("vms", disk.rbd_name)
    finally:
        Rbd._limit_depth = original  # type: ignore[method-assign]
    return {k: v[:launches] for k, v in series.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each series (3)")
    parser.add_argument("--launches", type=int, default=50,
                        help="launches timed with and without the depth policy (50; 0 skips)")
    parser.add_argument("--osd-size-gib", type=int, default=8)
    parser.add_argument("--json", help="also write the results (and raw samples) here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.launches < 0:
        parser.error("--rounds must be positive and --launches not negative")

    env = environment()
    cluster = LocalCluster(osds=1, objectstore="bluestore", osd_size_gib=args.osd_size_gib)
    print(f"starting a bluestore cluster ({args.osd_size_gib} GiB OSD file)...", file=sys.stderr)
    state = cluster.start()
    cleanup: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as workdir:
            bench = Bench(state, workdir)
            try:
                print("writing the golden image...", file=sys.stderr)
                bench.make_golden()
                print("measuring snapshots...", file=sys.stderr)
                snaps = run_snapshots(bench, args.rounds)
                launches = run_launches(bench, args.launches) if args.launches else {}
            finally:
                print("cleaning up...", file=sys.stderr)
                cleanup = bench.cleanup()
    finally:
        cluster.stop()

    medians = {k: statistics.median(v) for k, v in snaps.items()}
    speedup = medians["baseline"] / medians["shared"]
    speedup_flat = medians["baseline"] / medians["flattened"]
    print(f"\nsnapshot of a disk cloned from a 2 GiB golden (512 MiB data) with 64 MiB "
          f"written, median of {args.rounds}:")
    for kind in ("shared", "flattened", "baseline"):
        print(f"  {kind:10s} {medians[kind]:7.3f} s   "
              f"({', '.join(f'{s:.3f}' for s in snaps[kind])})")
    print(f"  baseline / shared    = {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x)")
    print(f"  baseline / flattened = {speedup_flat:.1f}x")
    launch_summary = {k: summarize(v) for k, v in launches.items()}
    if launches:
        print(f"\ndirect_fetch from a depth-0 golden, {args.launches} each:")
        for kind, summary in launch_summary.items():
            print(f"  {kind:15s} median {summary['median_ms']:.2f} ms, "
                  f"p90 {summary['p90_ms']:.2f} ms")
    met = speedup >= TARGET_SPEEDUP
    print(f"\ntarget {'met' if met else 'NOT met'}; cleanup: "
          f"{'clean' if not cleanup.get('left') else cleanup['left']}")
    if args.json:
        write_json(args.json, {
            "environment": env, "rounds": args.rounds,
            "snapshot_seconds": snaps, "median_seconds": medians,
            "speedup_shared": speedup, "speedup_flattened": speedup_flat,
            "target_speedup": TARGET_SPEEDUP, "met": met,
            "launches": launch_summary, "launch_samples_s": launches, "cleanup": cleanup,
        })
    if cleanup.get("left"):
        return 2
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
