# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the benchmark scripts in this directory.

Not part of the library: these scripts start a throwaway bluestore cluster
with :class:`rbd_driver.testing.local_cluster.LocalCluster`, talk to it as its
non-admin user the way a compute agent would, and clean up after themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState, LocalCluster

#: The repository this benchmark runs from, and where results are kept.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000

GIB = 1 << 30
MIB = 1 << 20
RAW = {"disk_format": "raw"}
GOLDEN_POOL = "images"
DISK_POOL = "vms"
# What is written at the start of every golden image: 4 MiB of a plain-text
# pattern (one full RBD object), which format sniffing calls raw.
GOLDEN_DATA = (b"golden raw data\n" * 65536)[: 4 * MIB]


def make_golden(driver: RBDDriver, name: str, size: int) -> str:
    """Create a raw golden image in ``images`` with data at its start and a
    protected snapshot ``snap``; return its ``rbd://`` location URL."""
    driver.create(name, size, pool=GOLDEN_POOL)
    with driver.client.open_image(GOLDEN_POOL, name) as image:
        image.write(GOLDEN_DATA, 0)
        image.flush()
    driver.create_snap(name, "snap", protect=True, pool=GOLDEN_POOL)
    return f"rbd://{driver.fsid}/{GOLDEN_POOL}/{name}/snap"


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile (p90 of 100 samples is the 90th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def mad(values: Iterable[float]) -> float:
    """Median absolute deviation from the median."""
    values = list(values)
    if not values:
        return math.nan
    mid = statistics.median(values)
    return statistics.median(abs(v - mid) for v in values)


def compare(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    """median(ours) / median(theirs), the noise of the two series and a verdict.

    ``ours[i]`` and ``theirs[i]`` ran in the same round, close in time. The
    noise is the sum of the two series' relative spreads, each its median
    absolute deviation over its median (how far the typical run strays from
    the median). Ours is *faster* when both estimates of the ratio, the ratio
    of the medians and the median of the per-round ratios (which cancels
    drift of the machine's load between rounds), are below 1 - noise;
    *slower* when both are above 1 + noise; otherwise the difference is inside
    the noise, or the two estimates disagree: a *tie*.
    """
    mo, mt = statistics.median(ours), statistics.median(theirs)
    noise = mad(ours) / mo + mad(theirs) / mt
    ratio = mo / mt
    per_round = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    verdict = "tie"
    if max(ratio, per_round) < 1.0 - noise:
        verdict = "faster"
    elif min(ratio, per_round) > 1.0 + noise:
        verdict = "slower"
    return {"ratio": ratio, "per_round_ratio": per_round, "noise": noise, "verdict": verdict,
            "rounds_faster": sum(a < b for a, b in zip(ours, theirs, strict=True)),
            "rounds": len(ours)}


def summarize(samples_s: list[float]) -> dict[str, float]:
    """Median, p90, min, max and mean of samples in seconds, returned in ms."""
    ms = [s * 1000.0 for s in samples_s]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p90_ms": percentile(ms, 90),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
        "mad_ms": mad(ms),
    }


#: What a benchmark measures: the library and the benchmark scripts (not their results).
MEASURED = ("rbd_driver", "benchmarks/*.py")


def git_commit(*paths: str) -> dict[str, Any]:
    """The commit checked out at ``ROOT``, and whether ``paths`` (default
    :data:`MEASURED`) differ from it in the working tree."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--",
                                     *(paths or MEASURED)],
                                    capture_output=True, text=True, timeout=30).stdout.strip())
    except OSError:
        head, dirty = "", False
    return {"commit": head or "unknown", "modified_since_commit": dirty}


def command_line(bench: str) -> str:
    """How this run was started, quoted so that it can be run again."""
    return shlex.join([f"benchmarks/{bench}.py", *sys.argv[1:]])


def rbd_argv(state: ClusterState) -> list[str]:
    """``rbd`` as the cluster's non-admin user (the keyring is a path, never a key)."""
    return ["rbd", "-c", state.conf_path, "--id", state.user, "--keyring", state.user_keyring]


def machine_cpu() -> tuple[float, float]:
    """Busy CPU seconds of the whole machine (all CPUs) and stolen seconds, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def other_processes_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds of every live user-space process but ``exclude``.

    A process's own time only: counting its reaped children's time too would
    charge a child's whole life to the span in which it was reaped. So a
    process that comes and goes between two snapshots is missed: a lower bound.
    """
    out: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == 2 or int(fields[6]) & PF_KTHREAD:  # kernel threads
            continue
        out[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def others_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds other processes used between two snapshots (those that exited are lost)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def own_cpu(state: ClusterState) -> float:
    """CPU seconds of this process, its reaped children and the cluster's daemons so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in state.pids.values():
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            continue
    return total


class LoadMeter:
    """How busy the machine was, and with what, while the cluster ran.

    In CPUs (CPU seconds per second): the whole machine (non-idle time in
    /proc/stat), this benchmark (this process, its reaped children such as
    the CLIs, and its cluster's daemons), the rest (the machine less this
    benchmark: other work and the kernel's, our own I/O included), and of it
    the other user-space processes that lived through a snapshot (a lower
    bound, see :func:`other_processes_cpu`).
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.exclude = {os.getpid(), *state.pids.values()}
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = machine_cpu()
        self.own0 = own_cpu(state)
        self.others0 = other_processes_cpu(self.exclude)
        self.load0 = os.getloadavg()

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        busy, steal = machine_cpu()
        others = max(0.0, others_delta(self.others0, other_processes_cpu(self.exclude)))
        machine = (busy - self.busy0) / wall
        own = (own_cpu(self.state) - self.own0) / wall
        return {"seconds": wall, "machine_busy_cpus": machine, "benchmark_cpus": own,
                "rest_cpus": max(0.0, machine - own),
                "other_processes_cpus": others / wall,
                "steal_cpus": (steal - self.steal0) / wall,
                "loadavg_start": list(self.load0), "loadavg_end": list(os.getloadavg())}


def describe_load(load: dict[str, Any]) -> str:
    """One line for a report."""
    return (f"load while the cluster ran ({load['seconds'] / 60:.1f} min), in CPUs busy of "
            f"{os.cpu_count()}: the machine {load['machine_busy_cpus']:.2f}, this benchmark "
            f"and its cluster {load['benchmark_cpus']:.2f}, the rest {load['rest_cpus']:.2f} "
            f"(other processes at least {load['other_processes_cpus']:.2f}), stolen "
            f"{load['steal_cpus']:.2f}; "
            f"1-minute load average {load['loadavg_start'][0]:.2f} -> "
            f"{load['loadavg_end'][0]:.2f}")


def environment() -> dict[str, Any]:
    """Facts about the machine and software, for the report."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ceph = subprocess.run(["rbd", "--version"], capture_output=True, text=True,
                              timeout=30, check=False).stdout.strip()
    except OSError:
        ceph = "unknown"
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "ceph": ceph,
        "loadavg_start": list(os.getloadavg()),
    }


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write a benchmark's result document to ``path`` and say so."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"\n  wrote {path}")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark has for where its results go."""
    parser.add_argument("--json", help="also write the results (and raw samples) here")
    parser.add_argument("--results", default=RESULTS_DIR,
                        help="keep this run's JSON and report here as "
                             "<bench>-<UTC time>-<commit>.json/.txt, and copy them to "
                             "<bench>.json/.txt, the latest (default benchmarks/results)")
    parser.add_argument("--no-results", dest="results", action="store_const", const=None,
                        help="keep nothing in the results directory")


class _Tee(io.TextIOBase):
    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """Print as usual, and keep a copy of what was printed (the report)."""
    copy = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, copy)):
        yield copy


def save(bench: str, args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    """Write the result document where ``--json`` and ``--results`` say.

    In ``--results``, each run is kept under its own name (UTC start time and
    the commit measured, with ``+`` when the tree differed from it) and copied
    to ``<bench>.json`` / ``<bench>.txt``, the latest run.
    """
    if args.json:
        write_json(args.json, doc)
    if not args.results:
        return
    os.makedirs(args.results, exist_ok=True)
    env = doc["environment"]
    stamp = datetime.datetime.fromisoformat(env["date_utc"]).strftime("%Y%m%dT%H%M%SZ")
    git = env["git"]
    base = os.path.join(args.results, f"{bench}-{stamp}-{git['commit']}"
                        f"{'+' if git['modified_since_commit'] else ''}")
    write_json(base + ".json", doc)
    with open(base + ".txt", "w", encoding="utf-8") as f:
        f.write(text)
    for ext in (".json", ".txt"):
        shutil.copyfile(base + ext, os.path.join(args.results, bench + ext))
    print(f"  copied to {os.path.join(args.results, bench)}.json/.txt (the latest run)")


@contextlib.contextmanager
def bluestore_cluster(osd_size_gib: int, env: dict[str, Any]) -> Iterator[ClusterState]:
    """A throwaway cluster, one bluestore OSD on a sparse file; stopped on the way
    out, also after an error or ^C. The load while it ran goes to ``env["load"]``."""
    cluster = LocalCluster(osds=1, objectstore="bluestore", osd_size_gib=osd_size_gib)
    print(f"starting a bluestore cluster ({osd_size_gib} GiB OSD file)...", file=sys.stderr)
    try:
        state = cluster.start()
        meter = LoadMeter(state)
        yield state
        env["load"] = meter.stop()
    finally:
        cluster.stop()


def finish(bench: str, args: argparse.Namespace, env: dict[str, Any],
           report: Callable[[], tuple[dict[str, Any], int]]) -> int:
    """Print the report and keep it with the run's document; return the exit status."""
    env["loadavg_end"] = list(os.getloadavg())
    with captured() as text:
        doc, status = report()
        print(f"\n  commit measured: {env['git']['commit']}"
              f"{' (with uncommitted changes)' if env['git']['modified_since_commit'] else ''}")
        print(f"  {describe_load(env['load'])}")
    save(bench, args, doc, text.getvalue())
    return status
