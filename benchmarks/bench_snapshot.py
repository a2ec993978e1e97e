#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Instance snapshot benchmark: ``Rbd.direct_snapshot`` against its floor and export + import.

Usage::

    .venv/bin/python benchmarks/bench_snapshot.py [--rounds 7] [--settle 1.5] [--launches 200] [--block 10]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file), as the cluster's non-admin cephx user:

1. creates ``images/golden``: 2 GiB, its first 512 MiB written with
   incompressible data, with a protected snapshot ``snap``;
2. each round launches a new disk from it with ``direct_fetch`` and writes
   64 MiB into it (16 x 4 MiB, spread over the disk, half over golden data),
   waits ``--settle`` seconds (so that no series starts inside the
   monitor's cycle left by the one before), then times, in an order that
   rotates between rounds (ABCD, DCBA, ...):

   * ``floor``: what no way of making the new golden can skip, as bare librbd
     calls in the order the shared path needs them: snapshot the disk
     (a monitor commit), copy the 64 MiB the disk holds itself into a clone of
     the golden with the copy engine of the shared path
     (``snapshot_copy.copy_changes``), snapshot that clone (a monitor commit).
     Each step is timed alone; the floor is the sum of their medians. Then
     the disk snapshot is removed, timed too: the bare cost of one remove;
   * ``shared``: ``direct_snapshot`` as configured by default (the new image
     clones the golden and receives only the 64 MiB the disk changed);
   * ``flattened``: ``direct_snapshot`` with ``[rbd] snapshot_flatten`` (a
     full in-cluster copy, librbd's flatten);
   * ``baseline``: the path without it: snapshot the disk, ``export_file`` it
     to a local raw file (the data path's parallel sparse export), then
     ``import_file`` that file into a new image of the image pool (parallel
     sparse import) and snapshot + protect it, remove the disk snapshot;

   within each ``direct_snapshot`` its snapshot creates are timed too (the
   commits it cannot avoid; the rest is its own work); after it the
   background removal of the disk's temporary snapshot is waited for
   (untimed for the call, reported as ``background removal``), and every
   image made is removed (untimed) before the next series;
3. times ``--launches`` ``direct_fetch`` launches from the depth-0 golden with
   the clone-depth policy on, and as many with it bypassed (the code before
   it), in blocks of ``--block`` in ABBA order (A B B A  B A A B ...), and
   compares the per-block medians (ratio, noise, verdict);
4. removes everything, checks the pools are empty and stops the cluster.

Target (issue 24): median(shared) <= 1.2 x floor. The ratios to the baseline
are reported as measured, not judged.
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

from _benchlib import (
    GIB,
    GOLDEN_POOL,
    MIB,
    RAW,
    add_output_args,
    bluestore_cluster,
    compare,
    environment,
    finish,
    summarize,
)

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage import snapshot_copy
from rbd_driver.storage.location import RbdLocation
from rbd_driver.testing.local_cluster import ClusterState, make_conf

TARGET_OF_FLOOR = 1.2
GOLDEN_SIZE = 2 * GIB
GOLDEN_DATA = 512 * MIB
WRITTEN = 64 * MIB
CHUNK = 4 * MIB
KINDS = ("floor", "shared", "flattened", "baseline")
MADE = {"floor": "floor-scratch", "shared": "snap-shared", "flattened": "snap-flat",
        "baseline": "snap-baseline"}


def _block(seed: int) -> bytes:
    """4 MiB that no other block equals (bluestore does not dedupe, but be honest)."""
    return seed.to_bytes(8, "little") + os.urandom(CHUNK - 8)


def _timed(call: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


class Bench:
    def __init__(self, state: ClusterState, workdir: str, settle: float) -> None:
        self.settle = settle
        self.conf = make_conf(state)
        self.backend = imagebackend.Backend(self.conf)
        self.driver = self.backend.driver("rbd")
        self.workdir = workdir
        self.golden_url = ""
        self.steps: dict[str, list[float]] = {
            "create_disk_snapshot": [], "copy_changes": [], "create_image_snapshot": [],
            "remove_snapshot": [], "background_removal": [], "shared_creates": [],
            "flattened_creates": []}

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

    def floor(self, disk: Rbd) -> float:
        """The unavoidable steps as bare librbd calls; returns their sum."""
        driver, steps = self.driver, self.steps
        create = _timed(driver.create_snap, disk.rbd_name, "bench-floor")
        golden = RbdLocation(driver.fsid, GOLDEN_POOL, "golden", "snap")
        driver.clone(golden, MADE["floor"], GOLDEN_POOL)  # untimed: no monitor commit
        copy = _timed(snapshot_copy.copy_changes, driver.client, "vms", disk.rbd_name,
                      "bench-floor", GOLDEN_POOL, MADE["floor"], window=driver.io_window)
        second = _timed(driver.create_snap, MADE["floor"], "snap", pool=GOLDEN_POOL)
        steps["remove_snapshot"].append(_timed(driver.remove_snap, disk.rbd_name,
                                               "bench-floor"))
        steps["create_disk_snapshot"].append(create)
        steps["copy_changes"].append(copy)
        steps["create_image_snapshot"].append(second)
        return create + copy + second

    def _direct(self, disk: Rbd, flatten: bool, image_id: str) -> float:
        self.conf.set_override("snapshot_flatten", flatten, group="rbd")
        driver, real, creates = self.driver, self.driver.create_snap, []

        def timed_create(*args: Any, **kwargs: Any) -> None:
            creates.append(_timed(real, *args, **kwargs))

        driver.create_snap = timed_create  # type: ignore[method-assign]
        try:
            start = time.perf_counter()
            disk.direct_snapshot("bench-snap", "raw", image_id)
            returned = time.perf_counter()
        finally:
            del driver.create_snap  # the class's method again
        self.steps["flattened_creates" if flatten else "shared_creates"].append(sum(creates))
        if not self.driver.snapshot_remover.wait(300):
            raise RuntimeError("the background snapshot removal did not finish in 300 s")
        self.steps["background_removal"].append(time.perf_counter() - returned)
        failed = self.driver.snapshot_remover.failed()
        if failed:
            raise RuntimeError(f"background snapshot removal failed: {failed}")
        return returned - start

    def shared(self, disk: Rbd) -> float:
        return self._direct(disk, False, MADE["shared"])

    def flattened(self, disk: Rbd) -> float:
        return self._direct(disk, True, MADE["flattened"])

    def baseline(self, disk: Rbd) -> float:
        path = os.path.join(self.workdir, "snapshot.raw")
        driver = self.driver
        start = time.perf_counter()
        driver.create_snap(disk.rbd_name, "bench-snap")
        driver.export_file(disk.rbd_name, path, snapshot="bench-snap")
        driver.import_file(path, MADE["baseline"], GOLDEN_POOL)
        driver.create_snap(MADE["baseline"], "snap", protect=True, pool=GOLDEN_POOL)
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
            if name != "golden":
                self.remove(GOLDEN_POOL, name)
        if "golden" in self.driver.list_images(GOLDEN_POOL):
            self.remove(GOLDEN_POOL, "golden")
        left = {p: self.driver.list_images(p) for p in ("vms", GOLDEN_POOL)}
        self.backend.close()
        return {"left": {p: names for p, names in left.items() if names}}


def run_snapshots(bench: Bench, rounds: int) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for index in range(rounds):
        order = KINDS[index % len(KINDS):] + KINDS[:index % len(KINDS)]
        for kind in order if index % 2 == 0 else tuple(reversed(order)):
            disk = bench.launch_and_write()
            time.sleep(bench.settle)
            seconds = getattr(bench, kind)(disk)
            series[kind].append(seconds)
            print(f"  round {index + 1} {kind:9s} {seconds:.3f} s", file=sys.stderr)
            bench.remove(GOLDEN_POOL, MADE[kind])
            bench.remove("vms", disk.rbd_name)
    return series


def run_launches(bench: Bench, launches: int, block: int) -> dict[str, Any]:
    """Time direct_fetch with the depth policy and with it bypassed, blocks in ABBA order."""
    samples: dict[str, list[float]] = {"with_policy": [], "without_policy": []}
    blocks: dict[str, list[float]] = {"with_policy": [], "without_policy": []}
    original = Rbd._limit_depth
    for _ in range(3):  # warm-up: the golden's verdict and depth are remembered
        bench.remove("vms", bench.launch().rbd_name)
    try:
        for index in range(2 * -(-launches // block)):
            # A B B A  B A A B ...: each kind as often first as second, early as late.
            with_policy = (index % 4 in (0, 3)) == ((index // 4) % 2 == 0)
            kind = "with_policy" if with_policy else "without_policy"
            Rbd._limit_depth = original if with_policy else (  # type: ignore[method-assign]
                lambda self, location, identity: None)
            times = []
            for _ in range(block):
                disk = bench.backend.by_name(str(uuid.uuid4()), "disk", image_type="rbd")
                start = time.perf_counter()
                disk.direct_fetch("golden", RAW, [{"url": bench.golden_url, "metadata": {}}])
                times.append(time.perf_counter() - start)
                bench.remove("vms", disk.rbd_name)
            samples[kind].extend(times)
            blocks[kind].append(statistics.median(times))
    finally:
        Rbd._limit_depth = original  # type: ignore[method-assign]
    return {"samples": {k: v[:launches] for k, v in samples.items()}, "block_medians": blocks}


def report(env: dict[str, Any], args: argparse.Namespace, snaps: dict[str, list[float]],
           steps: dict[str, list[float]], launches: dict[str, Any],
           cleanup: dict[str, Any]) -> tuple[dict[str, Any], int]:
    medians = {k: statistics.median(v) for k, v in snaps.items()}
    step_medians = {k: statistics.median(v) for k, v in steps.items() if v}
    floor = (step_medians["create_disk_snapshot"] + step_medians["copy_changes"]
             + step_medians["create_image_snapshot"])
    of_floor = medians["shared"] / floor
    ratios = {
        "shared_over_floor": of_floor,
        "baseline_over_shared": medians["baseline"] / medians["shared"],
        "baseline_over_flattened": medians["baseline"] / medians["flattened"],
    }
    print(f"\nsnapshot of a disk cloned from a 2 GiB golden (512 MiB data) with 64 MiB "
          f"written, median of {args.rounds}:")
    print("  the floor, bare librbd steps in the same run:")
    labels = {"create_disk_snapshot": "snapshot create (disk)",
              "copy_changes": "copy of 64 MiB changed",
              "create_image_snapshot": "snapshot create (new image)",
              "remove_snapshot": "snapshot remove (bare)"}
    for key, label in labels.items():
        print(f"    {label:28s} {step_medians[key]:7.3f} s   "
              f"({', '.join(f'{s:.3f}' for s in steps[key])})")
    print(f"    {'floor = create + copy + create':28s} {floor:7.3f} s")
    for kind in ("shared", "flattened", "baseline"):
        print(f"  {kind:10s} {medians[kind]:7.3f} s   "
              f"({', '.join(f'{s:.3f}' for s in snaps[kind])})")
    for kind in ("shared", "flattened"):
        rest = [t - c for t, c in zip(snaps[kind], steps[f"{kind}_creates"], strict=True)]
        print(f"  {kind} = its 2 snapshot creates {step_medians[kind + '_creates']:.3f} s + "
              f"the rest {statistics.median(rest):.3f} s (medians)")
    print(f"  background removal of the disk snapshot, after the call returned: "
          f"{step_medians['background_removal']:.3f} s (not waited for by the caller)")
    floors = [a + b + c for a, b, c in zip(steps["create_disk_snapshot"], steps["copy_changes"],
                                           steps["create_image_snapshot"], strict=True)]
    verdict = compare(snaps["shared"], floors)
    ratios["shared_over_floor_per_round"] = verdict["per_round_ratio"]
    print(f"  shared / floor        = {of_floor:.2f}x (target <= {TARGET_OF_FLOOR}x; per round "
          f"{verdict['per_round_ratio']:.2f}x, noise +-{verdict['noise']:.2f})")
    print(f"  baseline / shared     = {ratios['baseline_over_shared']:.2f}x")
    print(f"  baseline / flattened  = {ratios['baseline_over_flattened']:.2f}x")
    launch_summary: dict[str, Any] = {}
    if launches:
        samples, blocks = launches["samples"], launches["block_medians"]
        launch_summary = {k: summarize(v) for k, v in samples.items()}
        verdict = compare(blocks["with_policy"], blocks["without_policy"])
        launch_summary["policy_vs_none"] = verdict
        print(f"\ndirect_fetch from a depth-0 golden, {args.launches} each, blocks of "
              f"{args.block} in ABBA order:")
        for kind in ("with_policy", "without_policy"):
            summary = launch_summary[kind]
            print(f"  {kind:15s} median {summary['median_ms']:.2f} ms, "
                  f"p90 {summary['p90_ms']:.2f} ms")
        print(f"  with / without: {verdict['ratio']:.3f}x (per block pair "
              f"{verdict['per_round_ratio']:.3f}x), noise +-{verdict['noise']:.3f}: "
              f"{verdict['verdict']}")
    met = of_floor <= TARGET_OF_FLOOR
    print(f"\ntarget {'met' if met else 'NOT met'}; cleanup: "
          f"{'clean' if not cleanup.get('left') else cleanup['left']}")
    doc = {
        "environment": env, "rounds": args.rounds, "settle_s": args.settle,
        "snapshot_seconds": snaps, "median_seconds": medians,
        "step_seconds": steps, "step_median_seconds": step_medians,
        "floor_seconds": floor, "ratios": ratios, "target_of_floor": TARGET_OF_FLOOR,
        "met": met, "launches": launch_summary,
        "launch_samples_s": launches.get("samples", {}) if launches else {},
        "launch_block_medians_s": launches.get("block_medians", {}) if launches else {},
        "cleanup": cleanup,
    }
    status = 2 if cleanup.get("left") else (0 if met else 1)
    return doc, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each series (7)")
    parser.add_argument("--settle", type=float, default=1.5,
                        help="seconds of quiet before each timed series (1.5: longer than "
                             "the monitor's 1 s cycle)")
    parser.add_argument("--launches", type=int, default=200,
                        help="launches timed with and without the depth policy (200; 0 skips)")
    parser.add_argument("--block", type=int, default=10,
                        help="launches per block of the ABBA order (10)")
    parser.add_argument("--osd-size-gib", type=int, default=8)
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.launches < 0 or args.block < 1:
        parser.error("--rounds and --block must be positive and --launches not negative")

    env = environment()
    cleanup: dict[str, Any] = {}
    launches: dict[str, Any] = {}
    with bluestore_cluster(args.osd_size_gib, env) as state:
        with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as workdir:
            bench = Bench(state, workdir, args.settle)
            try:
                print("writing the golden image...", file=sys.stderr)
                bench.make_golden()
                print("measuring snapshots...", file=sys.stderr)
                snaps = run_snapshots(bench, args.rounds)
                if args.launches:
                    print("measuring launches...", file=sys.stderr)
                    launches = run_launches(bench, args.launches, args.block)
            finally:
                print("cleaning up...", file=sys.stderr)
                cleanup = bench.cleanup()
    return finish("bench_snapshot", args, env,
                  lambda: report(env, args, snaps, bench.steps, launches, cleanup))


if __name__ == "__main__":
    sys.exit(main())
