"""Helpers shared by the benchmark scripts in this directory.

Not part of the library: these scripts start a throwaway bluestore cluster
with :class:`rbd_driver.testing.cluster.LocalCluster`, talk to it as its
non-admin user the way a compute agent would, and clean up after themselves.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable
from typing import Any


from rbd_driver.storage.rbd_utils import RBDDriver

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
    }


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
