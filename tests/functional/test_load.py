# SPDX-License-Identifier: Apache-2.0
"""Load: 16 threads, 500 direct_fetch launches from one golden snapshot, one connection."""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid

import pytest

THREADS = 16
LAUNCHES = 500


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.load
def test_500_launches_from_16_threads(backend, record_property, ceph_admin) -> None:
    driver = backend.driver("rbd")
    golden = f"load-golden-{uuid.uuid4().hex[:6]}"
    driver.create(golden, 1 << 30, pool="images")
    driver.create_snap(golden, "snap", protect=True, pool="images")
    url = f"rbd://{driver.fsid}/images/{golden}/snap"
    prefix = f"load{uuid.uuid4().hex[:6]}-"
    meta = {"disk_format": "raw"}
    # Warm up: connection, ioctxs and the format verdict exist before measuring.
    backend.by_name(f"{prefix}warm", "disk").direct_fetch("img", meta, [{"url": url}])
    fds, threads, rss = _fds(), threading.active_count(), _rss_mib()
    latencies: list[float] = []
    errors: list[BaseException] = []
    counter = iter(range(LAUNCHES))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            disk = backend.by_name(f"{prefix}{i}", "disk")
            started = time.perf_counter()
            try:
                disk.direct_fetch("img", meta, [{"url": url}])
            except BaseException as err:  # every error counts
                errors.append(err)
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(600)
    wall = time.monotonic() - started
    try:
        assert not errors, errors[:3]
        assert len(latencies) == LAUNCHES
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        figures = {"launches": LAUNCHES, "threads": THREADS, "ops_per_s": round(LAUNCHES / wall, 1),
                   "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
                   "fds_before": fds, "fds_after": _fds(), "threads_before": threads,
                   "threads_after": threading.active_count(), "rss_before_mib": round(rss, 1),
                   "rss_after_mib": round(_rss_mib(), 1)}
        print("load figures:", figures)
        for key, value in figures.items():
            record_property(key, value)
        assert figures["fds_after"] <= fds + 2
        assert figures["threads_after"] <= threads
        assert figures["rss_after_mib"] - rss < 64
        # rbd as admin, not the library's own listing: every launch made its clone.
        children = ceph_admin("rbd", "children", f"images/{golden}@snap")
        names = {c["image"] for c in children if c["pool"] == "vms"}
        assert names == {f"{prefix}{i}_disk" for i in [*range(LAUNCHES), "warm"]}
    finally:
        report = driver.cleanup_volumes(lambda n: n.startswith(prefix))
        assert report.ok and not report.trashed, report
        assert driver.remove_image(golden, pool="images").removed == [golden]
    assert not [n for n in ceph_admin("rbd", "ls", "vms") or [] if n.startswith(prefix)]
    assert not [e for e in ceph_admin("rbd", "trash", "ls", "vms") or []
                if e["name"].startswith(prefix)]
    assert golden not in (ceph_admin("rbd", "ls", "images") or [])
