#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Backup benchmark: full RAW backups against ``rbd export``, incrementals against fulls.

Usage::

    .venv/bin/python benchmarks/bench_backup.py [--rounds 5] [--json out.json]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file, :class:`rbd_driver.testing.local_cluster.LocalCluster`), as the cluster's
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
      backups. Reference: ``rbd snap create``, ``rbd export-diff`` to that
      snapshot plus an fsync, ``rbd snap rm``; and the monitor's cost alone
      is timed too (one librbd snapshot create and remove);

   The monitor commits OSD map changes (each snapshot create or remove is
   one) at most once per ``paxos_propose_interval`` (1 s), so a call that
   follows another's commits waits for the cycle, and the order of the
   series would decide their times. So each timed call starts after a pause
   of ``--settle`` (1.5 s, untimed), and the order rotates: (a)'s two
   alternate, (b)'s three take each position equally often over six rounds;

4. removes the disk and its snapshots through the library, checks the pool
   and its trash are empty, and stops the cluster (also on errors).

Statistics: medians of the rounds; ratios are from this one run, each
comparison of ours with the CLI with its noise and verdict (faster, slower
or a tie: see ``_benchlib.compare``); a tie does not fail a target. Each
run's JSON and printed report are kept in ``--results``
(``benchmarks/results/bench_backup-<UTC time>-<commit>.json/.txt``, and
copied to ``bench_backup.json/.txt``), with the git commit measured.
Exit status: 0 when every target passes, 1 when one fails, 2 when the
cleanup left something behind.
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
from typing import Any

from _benchlib import (
    DISK_POOL,
    GIB,
    MIB,
    add_output_args,
    bluestore_cluster,
    command_line,
    compare,
    environment,
    finish,
    rbd_argv,
    summarize,
)

from rbd_driver.ops.backup import BackupManager
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState, make_conf

DISK = "bench-disk"
TARGET_INCREMENTAL_RATIO = 0.10  # incremental <= 10% of a full backup
TARGET_FULL_RATIO = 1.0  # full RAW backup no slower than `rbd export`
#: The series reported (their keys) and what each round calls them.
FULL_SERIES = {"full_backup": "ours", "full_backup_no_fsync": "ours_no_fsync",
               "rbd_export": "cli", "rbd_export_fsync": "cli_fsync"}
INCREMENTAL_SERIES = {"incremental_backup": "ours", "rbd_export_diff_fsync": "cli_diff",
                      "incremental_backup_own_snapshot": "own",
                      "rbd_snap_export_diff_cycle": "cli_cycle",
                      "snapshot_create_remove": "fixed"}
#: The orders of the series of incrementals taking their own snapshot, one per round.
OWN_SNAPSHOT_ORDERS = list(itertools.permutations(("ours", "cli", "fixed")))


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
    argv = rbd_argv(state) + ["--no-progress", *args]
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
    samples: dict[str, list[float]] = {k: [] for k in (*FULL_SERIES, *INCREMENTAL_SERIES)}
    size = 2 * GIB
    try:
        driver.create(DISK, size)
        _fill(driver, size, args.fill_mib * MIB)
        driver.create_snap(DISK, "base")
        orders = list(itertools.permutations(("ours", "ours_no_fsync", "cli")))
        for round_ in range(args.rounds + 1):  # round 0 warms up and is not counted
            target = os.path.join(work, f"full-{round_}")
            took: dict[str, float] = {}

            # The steps run within their round: each binds the round's values.
            def ours(fsync: bool, target: str = target) -> float:
                manager = BackupManager(driver, os.path.join(target, str(fsync)),
                                        retention=args.rounds + 10, fsync=fsync)
                start = time.perf_counter()
                manager.full_backup(DISK, snapshot="base")
                return time.perf_counter() - start

            def cli(round_: int = round_, took: dict[str, float] = took) -> None:
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
                for key, name in FULL_SERIES.items():
                    samples[key].append(took[name])
            print(f"  full round {round_}: ours {took['ours']:.2f} s (backup_fsync false "
                  f"{took['ours_no_fsync']:.2f} s), rbd export {took['cli']:.2f} s (+fsync "
                  f"{took['cli_fsync']:.2f} s)", file=sys.stderr)

        manager = BackupManager(driver, os.path.join(work, "chain"), retention=args.retention)
        manager.full_backup(DISK)
        rng = random.Random(1)
        path = os.path.join(work, "cli.diff")

        def settle() -> None:
            # Every snapshot create or remove is an OSD map change, and the
            # monitor commits at most one per paxos_propose_interval (1 s):
            # a series that follows another's commits waits for the cycle. So
            # each timed call starts after the cycle has passed.
            time.sleep(args.settle)

        for round_ in range(args.rounds + 1):
            took: dict[str, float] = {}
            # (a) The caller snapshots (untimed, as for the full series) and the
            # backup extracts that snapshot: the like-for-like of a full backup.
            _change(driver, size, args.change_pct, rng)
            snap = f"frozen-{round_}"
            driver.create_snap(DISK, snap)
            previous = manager.list_backups(DISK)[-1].snapshot["name"]
            backups = []

            # The steps run within their round: each binds the round's values.
            def ours_of_snapshot(backups: list[Any] = backups, snap: str = snap,
                                 took: dict[str, float] = took) -> None:
                start = time.perf_counter()
                backups.append(manager.incremental_backup(DISK, snapshot=snap))
                took["ours"] = time.perf_counter() - start

            def cli_diff(previous: str = previous, snap: str = snap,
                         took: dict[str, float] = took) -> None:
                took["cli_diff"] = (_cli(state, "export-diff", "--from-snap", previous,
                                         f"{DISK_POOL}/{DISK}@{snap}", path) + _fsync(path))
                os.unlink(path)

            for step in ((ours_of_snapshot, cli_diff) if round_ % 2 == 0
                         else (cli_diff, ours_of_snapshot)):
                settle()
                step()
            # (b) The backup takes its own snapshot, and retention removes an old
            # one: two monitor commits on top of the data. Against the CLI doing
            # the same (its own snapshot made, diffed to and removed) and the
            # monitor's part alone (one librbd snapshot create and remove).
            _change(driver, size, args.change_pct, rng)
            previous = backups[0].snapshot["name"]

            def ours_own(took: dict[str, float] = took) -> None:
                start = time.perf_counter()
                manager.incremental_backup(DISK)
                took["own"] = time.perf_counter() - start

            def cli_cycle(round_: int = round_, previous: str = previous,
                          took: dict[str, float] = took) -> None:
                spare = f"{DISK_POOL}/{DISK}@cli-{round_}"
                took["cli_cycle"] = (_cli(state, "snap", "create", spare)
                                     + _cli(state, "export-diff", "--from-snap", previous,
                                            spare, path)
                                     + _fsync(path) + _cli(state, "snap", "rm", spare))
                os.unlink(path)

            def fixed(round_: int = round_, took: dict[str, float] = took) -> None:
                start = time.perf_counter()
                driver.create_snap(DISK, f"fixed-{round_}")
                driver.remove_snap(DISK, f"fixed-{round_}")
                took["fixed"] = time.perf_counter() - start

            # Each in each position equally often, over six rounds.
            for step in OWN_SNAPSHOT_ORDERS[round_ % len(OWN_SNAPSHOT_ORDERS)]:
                settle()
                {"ours": ours_own, "cli": cli_cycle, "fixed": fixed}[step]()
            if round_ > 1:  # the caller's own retention, untimed: keep its last two
                driver.remove_snap(DISK, f"frozen-{round_ - 2}")
            if round_:
                for key, name in INCREMENTAL_SERIES.items():
                    samples[key].append(took[name])
            print(f"  incremental round {round_}: of a snapshot {took['ours']:.2f} s "
                  f"({backups[0].data_bytes >> 20} MiB of data; rbd export-diff + fsync "
                  f"{took['cli_diff']:.2f} s); taking its own snapshot {took['own']:.2f} s "
                  f"(rbd snap create + export-diff + fsync + snap rm {took['cli_cycle']:.2f} "
                  f"s); snapshot create + remove alone {took['fixed']:.2f} s; order "
                  f"{'/'.join(OWN_SNAPSHOT_ORDERS[round_ % len(OWN_SNAPSHOT_ORDERS)])}",
                  file=sys.stderr)
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


def report(env: dict[str, Any], args: argparse.Namespace, raw: dict[str, list[float]],
           left: list[str]) -> tuple[dict[str, Any], int]:
    """Print the tables; return the JSON document and the exit status."""
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
    # Ours against the CLI, with the noise of the two series (see _benchlib.compare).
    comparisons = {name: compare(raw[ours], raw[theirs]) for name, ours, theirs in (
        ("full_backup_over_rbd_export_fsync", "full_backup", "rbd_export_fsync"),
        ("full_backup_no_fsync_over_rbd_export", "full_backup_no_fsync", "rbd_export"),
        ("full_backup_over_rbd_export", "full_backup", "rbd_export"),
        ("incremental_over_rbd_export_diff_fsync", "incremental_backup",
         "rbd_export_diff_fsync"),
        ("incremental_own_snapshot_over_rbd_cycle", "incremental_backup_own_snapshot",
         "rbd_snap_export_diff_cycle"))}
    # A full backup is compared with `rbd export` at the same durability: the
    # default (fsync) with `rbd export` + fsync, backup_fsync=false with plain
    # `rbd export`, which returns with its data still in the page cache. Met
    # unless ours is slower by more than the noise.
    targets = {
        f"median(incremental of a snapshot) / median(full of a snapshot) <= "
        f"{TARGET_INCREMENTAL_RATIO}":
            ratios["incremental_over_full_backup"] <= TARGET_INCREMENTAL_RATIO,
        f"median(full RAW backup, default: fsynced) / median(rbd export + fsync) <= "
        f"{TARGET_FULL_RATIO} (a tie within the noise)":
            comparisons["full_backup_over_rbd_export_fsync"]["verdict"] != "slower",
        f"median(full RAW backup, backup_fsync=false) / median(rbd export) <= "
        f"{TARGET_FULL_RATIO} (a tie within the noise)":
            comparisons["full_backup_no_fsync_over_rbd_export"]["verdict"] != "slower",
    }
    print(f"\nBackup benchmark, {env['date_utc']}; {env['cpus']} CPUs ({env['cpu_model']}), "
          f"load {env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}; {env['ceph']}")
    print(f"  2 GiB disk, {args.fill_mib} MiB written; {args.change_pct}% rewritten before "
          f"each incremental; {args.rounds} rounds (+1 warm-up), full series in rotating order; "
          f"incremental series in rotating order, each call after a {args.settle:g} s pause "
          "(the monitor's commit cycle)\n")
    print(f"  {'series (seconds)':<34}{'n':>4}{'median':>9}{'min':>9}{'max':>9}{'MAD':>9}")
    for key, s in series.items():
        print(f"  {key:<34}{s['n']:>4}{s['median_ms'] / 1000:>9.3f}{s['min_ms'] / 1000:>9.3f}"
              f"{s['max_ms'] / 1000:>9.3f}{s['mad_ms'] / 1000:>9.3f}")
    print()
    for key, value in ratios.items():
        c = comparisons.get(key)
        verdict = (f" (per round {c['per_round_ratio']:.3f}) +/-{c['noise']:.3f}: {c['verdict']}"
                   f" ({c['rounds_faster']}/{c['rounds']} rounds faster)") if c else ""
        print(f"  {key:<40} = {value:.3f}{verdict}")
    print("\n  targets:")
    for name, ok in targets.items():
        print(f"    {'PASS' if ok else 'FAIL'}  {name}")
    print(f"  left behind: {left or 'nothing'}")
    doc = {"environment": env,
           "command": command_line("bench_backup"),
           "parameters": vars(args), "series": series, "ratios": ratios,
           "comparisons": comparisons,
           "targets": {k: "PASS" if v else "FAIL" for k, v in targets.items()},
           "samples_s": raw, "left_behind": left}
    if left:
        return doc, 2
    return doc, 0 if all(targets.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time backups on a throwaway cluster.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (>= 5)")
    parser.add_argument("--fill-mib", type=int, default=2048, help="MiB of data on the disk")
    parser.add_argument("--change-pct", type=float, default=1.0,
                        help="percent of the disk rewritten before each incremental")
    parser.add_argument("--retention", type=int, default=2,
                        help="backup retention in the incremental series (default 2)")
    parser.add_argument("--settle", type=float, default=1.5,
                        help="seconds to wait before each timed incremental call, longer than "
                             "the monitor's paxos_propose_interval (default 1.5)")
    parser.add_argument("--osd-size-gib", type=int, default=8)
    add_output_args(parser)
    args = parser.parse_args(argv)
    env = environment()
    work = tempfile.mkdtemp(prefix="bench-backup-")
    try:
        with bluestore_cluster(args.osd_size_gib, env) as state:
            raw = run(state, args, work)
            left = cleanup_check(state)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return finish("bench_backup", args, env, lambda: report(env, args, raw, left))


if __name__ == "__main__":
    sys.exit(main())
