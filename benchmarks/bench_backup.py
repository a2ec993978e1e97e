#!/usr/bin/env python3
"""Backup benchmark: full RAW backups against ``rbd export``, incrementals against fulls.

Usage::

    .venv/bin/python benchmarks/bench_backup.py [--rounds 5] [--json out.json]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file, :class:`rbd_driver.testing.cluster.LocalCluster`), as the cluster's
non-admin cephx user:

1. creates a 2 GiB disk ``vms/bench-disk``, writes every byte of it
   (``--fill-mib``, default all 2048 MiB) and snapshots it as ``base``;
2. times ``--rounds`` full RAW backups of ``base``
   (``BackupManager.full_backup(snapshot="base")``: export, checksum,
   fsync, manifest), as many with ``backup_fsync`` off (the same without the
   fsyncs) and as many ``rbd export vms/bench-disk@base FILE`` processes,
   in a rotating order (each in each position equally often over six
   rounds). The CLI's time is also reported with an ``fsync`` of its file
   added. Each is compared at equal durability: the default with ``rbd
   export`` + fsync, ``backup_fsync`` off with plain ``rbd export``;
3. times ``--rounds`` pairs of incremental backups, each after rewriting 1%
   of the disk (``--change-pct``) in 256 KiB pieces at random offsets:

   a. *of a snapshot*: the caller snapshots (untimed, as ``base`` is for the
      full series) and ``incremental_backup(snapshot=...)`` extracts it:
      export-diff stream, checksum, fsync, manifest. This is the like-for-like
      of a full backup, and what the 10% target is judged on. Reference: ``rbd
      export-diff`` of the same two snapshots plus an fsync;
   b. *taking its own snapshot*: ``incremental_backup()`` also creates its
      snapshot and, by retention (``--retention`` 2), removes an old one: two
      monitor commits on top of the data, the steady state of scheduled
      backups. Reference: ``rbd snap create``, ``rbd export-diff`` plus an
      fsync, ``rbd snap rm``; and the monitor's cost alone is timed too (one
      librbd snapshot create and remove);

4. removes the disk and its snapshots through the library, checks the pool
   and its trash are empty, and stops the cluster (also on errors).

Statistics: medians of the rounds; ratios are from this one run. Exit
status: 0 when every target passes, 1 when one fails, 2 when the cleanup
left something behind.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from _benchlib import DISK_POOL, GIB, MIB, environment, summarize, write_json

from rbd_driver.backup import BackupManager
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.cluster import ClusterState, LocalCluster, make_conf

DISK = "bench-disk"
TARGET_INCREMENTAL_RATIO = 0.10  # incremental <= 10% of a full backup
TARGET_FULL_RATIO = 1.0  # full RAW backup no slower than `rbd export`


def _fill(driver: RBDDriver, size: int, fill: int) -> None:
    """Write ``fill`` bytes of incompressible data from offset 0."""
    seed = os.urandom(4 * MIB)
    with driver.client.open_image(DISK_POOL, DISK) as image:
        for offset in range(0, min(size, fill), 4 * MIB):
            chunk = offset.to_bytes(8, "little") + seed[8:]
            image.write(chunk[: min(4 * MIB, fill - offset)], offset)
        image.flush()


def _change(driver: RBDDriver, size: int, pct: float, rng: random.Random) -> int:
    """Rewrite ``pct`` percent of the disk in 256 KiB pieces; return the bytes written."""
    piece = 256 * 1024
    count = max(1, int(size * pct / 100) // piece)
    with driver.client.open_image(DISK_POOL, DISK) as image:
        for offset in rng.sample(range(0, size // piece), count):
            image.write(os.urandom(piece), offset * piece)
        image.flush()
    return count * piece


def _cli(state: ClusterState, *args: str) -> float:
    argv = ["rbd", "-c", state.conf_path, "--id", state.user, "--keyring",
            state.user_keyring, "--no-progress", *args]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')}")
    return elapsed


def _fsync(path: str) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def run(state: ClusterState, args: argparse.Namespace, work: str) -> dict[str, list[float]]:
    conf = make_conf(state)
    driver = RBDDriver.from_conf(conf)
    samples: dict[str, list[float]] = {k: [] for k in (
        "full_backup", "full_backup_no_fsync", "rbd_export", "rbd_export_fsync",
        "incremental_backup",
        "rbd_export_diff_fsync", "incremental_backup_own_snapshot",
        "rbd_snap_export_diff_cycle", "snapshot_create_remove")}
    size = 2 * GIB
    try:
        driver.create(DISK, size)
        _fill(driver, size, args.fill_mib * MIB)
        driver.create_snap(DISK, "base")
        orders = list(itertools.permutations(("ours", "ours_no_fsync", "cli")))
        for round_ in range(args.rounds + 1):  # round 0 warms up and is not counted
            target = os.path.join(work, f"full-{round_}")
            took: dict[str, float] = {}

            def ours(fsync: bool) -> float:
                manager = BackupManager(driver, os.path.join(target, str(fsync)),
                                        retention=args.rounds + 10, fsync=fsync)
                start = time.perf_counter()
                manager.full_backup(DISK, snapshot="base")
                return time.perf_counter() - start

            def cli() -> None:
                path = os.path.join(work, f"cli-{round_}.raw")
                took["cli"] = _cli(state, "export", f"{DISK_POOL}/{DISK}@base", path)
                took["cli_fsync"] = took["cli"] + _fsync(path)
                os.unlink(path)

            # Each tool in each position equally often, over the six orders.
            for tool in orders[round_ % len(orders)]:
                if tool == "cli":
                    cli()
                else:
                    took[tool] = ours(tool == "ours")
            shutil.rmtree(target)
            if round_:
                samples["full_backup"].append(took["ours"])
                samples["full_backup_no_fsync"].append(took["ours_no_fsync"])
                samples["rbd_export"].append(took["cli"])
                samples["rbd_export_fsync"].append(took["cli_fsync"])
            print(f"  full round {round_}: ours {took['ours']:.2f} s (backup_fsync false "
                  f"{took['ours_no_fsync']:.2f} s), rbd export {took['cli']:.2f} s (+fsync "
                  f"{took['cli_fsync']:.2f} s)", file=sys.stderr)

        manager = BackupManager(driver, os.path.join(work, "chain"), retention=args.retention)
        manager.full_backup(DISK)
        rng = random.Random(1)
        for round_ in range(args.rounds + 1):
            # (a) The caller snapshots (untimed, as for the full series) and the
            # backup extracts that snapshot: the like-for-like of a full backup.
            _change(driver, size, args.change_pct, rng)
            snap = f"frozen-{round_}"
            driver.create_snap(DISK, snap)
            previous = manager.list_backups(DISK)[-1].snapshot["name"]
            start = time.perf_counter()
            backup = manager.incremental_backup(DISK, snapshot=snap)
            took = time.perf_counter() - start
            path = os.path.join(work, f"cli-{round_}.diff")
            cli_diff = (_cli(state, "export-diff", "--from-snap", previous,
                              f"{DISK_POOL}/{DISK}@{snap}", path) + _fsync(path))
            os.unlink(path)
            # (b) The backup takes its own snapshot, and retention removes an old
            # one: two monitor commits on top of the data.
            _change(driver, size, args.change_pct, rng)
            previous = backup.snapshot["name"]
            start = time.perf_counter()
            own = manager.incremental_backup(DISK)
            took_own = time.perf_counter() - start
            # The CLI doing (b)'s work: one snapshot made and one removed, and the
            # same diff exported and made durable.
            spare = f"{DISK_POOL}/{DISK}@cli-{round_}"
            cli_cycle = (_cli(state, "snap", "create", spare)
                         + _cli(state, "export-diff", "--from-snap", previous,
                                f"{DISK_POOL}/{DISK}@{own.snapshot['name']}", path)
                         + _fsync(path) + _cli(state, "snap", "rm", spare))
            os.unlink(path)
            # The monitor's part alone: one librbd snapshot create and remove.
            start = time.perf_counter()
            driver.create_snap(DISK, f"fixed-{round_}")
            driver.remove_snap(DISK, f"fixed-{round_}")
            fixed = time.perf_counter() - start
            if round_ > 1:  # the caller's own retention, untimed: keep its last two
                driver.remove_snap(DISK, f"frozen-{round_ - 2}")
            if round_:
                samples["incremental_backup"].append(took)
                samples["rbd_export_diff_fsync"].append(cli_diff)
                samples["incremental_backup_own_snapshot"].append(took_own)
                samples["rbd_snap_export_diff_cycle"].append(cli_cycle)
                samples["snapshot_create_remove"].append(fixed)
            print(f"  incremental round {round_}: of a snapshot {took:.2f} s "
                  f"({backup.data_bytes >> 20} MiB of data; rbd export-diff + fsync "
                  f"{cli_diff:.2f} s); taking its own snapshot {took_own:.2f} s (rbd snap "
                  f"create + export-diff + fsync + snap rm {cli_cycle:.2f} s); snapshot "
                  f"create + remove alone {fixed:.2f} s", file=sys.stderr)
    finally:
        driver.remove_image(DISK)
        driver.close()
    return samples


def cleanup_check(state: ClusterState) -> list[str]:
    driver = RBDDriver.from_conf(make_conf(state))
    try:
        left = driver.list_images(DISK_POOL)
        with driver.client.ioctx(DISK_POOL) as ioctx:
            left += [f"trash:{t['name']}" for t in driver.rbd.RBD().trash_list(ioctx)]
        return left
    finally:
        driver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time backups on a throwaway cluster.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (>= 5)")
    parser.add_argument("--fill-mib", type=int, default=2048, help="MiB of data on the disk")
    parser.add_argument("--change-pct", type=float, default=1.0,
                        help="percent of the disk rewritten before each incremental")
    parser.add_argument("--retention", type=int, default=2,
                        help="backup retention in the incremental series (default 2)")
    parser.add_argument("--osd-size-gib", type=int, default=8)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    env = environment()
    work = tempfile.mkdtemp(prefix="bench-backup-")
    cluster = LocalCluster(osds=1, objectstore="bluestore", osd_size_gib=args.osd_size_gib)
    print(f"starting a bluestore cluster ({args.osd_size_gib} GiB OSD file)...", file=sys.stderr)
    state = cluster.start()
    try:
        raw = run(state, args, work)
        left = cleanup_check(state)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    env["loadavg_end"] = list(os.getloadavg())
    series = {key: summarize(values) for key, values in raw.items()}
    med = {key: s["median_ms"] / 1000 for key, s in series.items()}
    ratios = {
        "full_backup_over_rbd_export": med["full_backup"] / med["rbd_export"],
        "full_backup_over_rbd_export_fsync": med["full_backup"] / med["rbd_export_fsync"],
        "full_backup_no_fsync_over_rbd_export": med["full_backup_no_fsync"] / med["rbd_export"],
        "incremental_over_full_backup": med["incremental_backup"] / med["full_backup"],
        "incremental_over_rbd_export_diff_fsync": med["incremental_backup"]
        / med["rbd_export_diff_fsync"],
        "incremental_own_snapshot_over_full": med["incremental_backup_own_snapshot"]
        / med["full_backup"],
        "incremental_own_snapshot_over_rbd_cycle": med["incremental_backup_own_snapshot"]
        / med["rbd_snap_export_diff_cycle"],
        "snapshot_create_remove_over_full": med["snapshot_create_remove"] / med["full_backup"],
    }
    # A full backup is compared with `rbd export` at the same durability: the
    # default (fsync) with `rbd export` + fsync, backup_fsync=false with plain
    # `rbd export`, which returns with its data still in the page cache.
    targets = {
        f"median(incremental of a snapshot) / median(full of a snapshot) <= "
        f"{TARGET_INCREMENTAL_RATIO}":
            ratios["incremental_over_full_backup"] <= TARGET_INCREMENTAL_RATIO,
        f"median(full RAW backup, default: fsynced) / median(rbd export + fsync) <= "
        f"{TARGET_FULL_RATIO}":
            ratios["full_backup_over_rbd_export_fsync"] <= TARGET_FULL_RATIO,
        f"median(full RAW backup, backup_fsync=false) / median(rbd export) <= "
        f"{TARGET_FULL_RATIO}":
            ratios["full_backup_no_fsync_over_rbd_export"] <= TARGET_FULL_RATIO,
    }
    print(f"\nBackup benchmark, {env['date_utc']}; {env['cpus']} CPUs ({env['cpu_model']}), "
          f"load {env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}; {env['ceph']}")
    print(f"  2 GiB disk, {args.fill_mib} MiB written; {args.change_pct}% rewritten before "
          f"each incremental; {args.rounds} rounds (+1 warm-up), full series in rotating order\n")
    print(f"  {'series (seconds)':<34}{'n':>4}{'median':>9}{'min':>9}{'max':>9}")
    for key, s in series.items():
        print(f"  {key:<34}{s['n']:>4}{s['median_ms'] / 1000:>9.3f}{s['min_ms'] / 1000:>9.3f}"
              f"{s['max_ms'] / 1000:>9.3f}")
    print()
    for key, value in ratios.items():
        print(f"  {key:<40} = {value:.3f}")
    print("\n  targets:")
    for name, ok in targets.items():
        print(f"    {'PASS' if ok else 'FAIL'}  {name}")
    print(f"  left behind: {left or 'nothing'}")
    if args.json:
        write_json(args.json, {
            "environment": env, "command": "benchmarks/bench_backup.py " + " ".join(sys.argv[1:]),
            "parameters": vars(args), "series": series, "ratios": ratios,
            "targets": {k: "PASS" if v else "FAIL" for k, v in targets.items()},
            "samples_s": raw, "left_behind": left})
    if left:
        return 2
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
