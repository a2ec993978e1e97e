#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Copy-engine benchmark: ``import_to_image`` / ``export_from_image`` against
``rbd import`` / ``rbd export`` and ``qemu-img convert``.

Usage::

    .venv/bin/python benchmarks/bench_datapath.py [--runs 5] [--json out.json]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file, started with :class:`rbd_driver.testing.local_cluster.LocalCluster`), as the
cluster's non-admin cephx user (``rbd -c CONF --id USER --keyring KEYRING``;
qemu-img gets the ``rbd:`` spec of :func:`convert.rbd_spec`, which names the
keyring file, never a key):

1. writes the source once: a sparse 2 GiB raw file holding 512 MiB of
   random data (128 random 4 MiB-aligned 4 MiB chunks, fixed seed) in a
   temporary directory under ``--workdir``, and reads it into the page
   cache (again before every timed run, untimed), so every tool reads it
   from memory;
2. import: ``--runs`` timed runs of each of ``import_to_image(window=16)``
   on the benchmark's warm connection, the same on a new connection made
   (and closed) inside the timing, ``rbd import --image-format 2`` and
   ``qemu-img convert -f raw -O raw -W -m 16``, and of the write ceiling
   ``rbd bench --io-type write --io-size 4M --io-threads 16 --io-total 1G
   --io-pattern seq`` on a fresh 2 GiB image, in rotating order (a
   Williams design: each tool runs in each position and after each other
   tool equally often); the target image is removed with librbd between
   runs (untimed);
3. export: an image imported once with our engine is exported ``--runs``
   times by each of ``export_from_image`` (warm connection and new
   connection), ``rbd export`` and ``qemu-img convert``, in the same kind
   of order, to a file in the same directory, deleted between runs. Each
   tool's first output is checked against the source's sha256 and its
   allocated size is recorded (both untimed). After every run the output
   is fsynced, timed separately: ``export_from_image`` already fsyncs (and
   renames atomically) inside its own time, the CLIs do not;
3b. start cost: ``--start-runs`` (10) runs, rotating, of the least work
   each tool does on a 4 MiB image: ``rbd info``, ``qemu-img info`` (each a
   process that starts, connects and opens the image), and ours opening it
   on the warm connection and on a new one. It is what every CLI run pays
   before its first byte;
4. a sweep of our engine's tuning (``--sweep``: chunk size and window,
   ``--sweep-runs`` each, rotating), import and export, as a diagnostic;
5. conversion path: the same data as qcow2, converted ``--runs`` times by
   each path, alternating (ABBA): "direct" (``convert_to_rbd``: qemu-img
   writes into RBD) and "local" (``convert_to_raw_file`` to a raw file,
   then ``import_to_image``, then unlink);
6. peak RSS: a child Python imports a sparse 8 GiB file holding 4 GiB of
   data (1024 random 4 MiB chunks at random aligned offsets) with the
   default tuning, started under ``/usr/bin/time``, whose maximum resident
   set size is the child's peak RSS (cross-checked with the child's own
   ``VmHWM``). A baseline child does the same imports and connects, without
   the import call;
7. removes every image (and checks that ``vms`` and its trash are empty),
   deletes the temporary directory, and stops the cluster (also on errors).

Before every timed run the benchmark waits until the OSD is idle (at most
10 % of a core over 0.5 s), so that the space an image removal frees in the
background is not charged to the next run. Wall time is
``time.perf_counter`` around the library call or around
``subprocess.run``. CPU time is ``time.process_time`` of this process (all
its threads, librbd's included) for our engine, ``RUSAGE_CHILDREN`` deltas
for a CLI; the OSD's CPU time per run comes from ``/proc/<pid>/stat``.

Two views of the copy targets (median(ours) / median(tool) <= 1.0): *as a
user meets them*, ours on the agent's warm connection against a CLI that
starts, connects and opens the image every time; and *at equal terms*, ours
connecting anew inside the timing as well. Each ratio carries its noise, the
sum of the two series' relative median absolute deviations. Ours is faster
(slower) only when both the ratio of the medians and the median of the
per-round ratios are below 1 - noise (above 1 + noise); otherwise it is a
tie (``_benchlib.compare``). A copy target fails when ours is slower in
either view. The peers' times less their start cost are printed too.

Each run's JSON and printed report are kept in ``--results``
(``benchmarks/results/bench_datapath-<UTC time>-<commit>.json/.txt``, and
copied to ``bench_datapath.json/.txt``), with the git commit measured.

Exit status: 0 when every target passes, 1 when one fails (or an output
differs from the source), 2 when the cleanup left something behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _benchlib import (
    CLK_TCK,
    DISK_POOL,
    GIB,
    MIB,
    add_output_args,
    bluestore_cluster,
    command_line,
    compare,
    environment,
    finish,
    git_commit,
    machine_cpu,
    other_processes_cpu,
    others_delta,
    own_cpu,
    rbd_argv,
    summarize,
)

from rbd_driver.storage import convert, datapath
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.testing.local_cluster import ClusterState

#: Targets from the issue.
TARGET_RATIO = 1.0          # median(ours) / median(tool), import and export
TARGET_CEILING_PCT = 80.0   # our import's data throughput, % of rbd bench write
TARGET_RSS_MIB = 200.0      # peak RSS of a process importing 4 GiB of data

OBJ = 4 * MIB
SRC_SIZE = 2 * GIB
SRC_CHUNKS = 128            # x 4 MiB = 512 MiB of data
SRC_SEED = 0x5EED
RSS_SIZE = 8 * GIB
RSS_CHUNKS = 1024           # x 4 MiB = 4 GiB of data
RSS_SEED = 0xB16
BENCH_TOTAL = GIB           # rbd bench --io-total

# Before each timed run: wait until the OSD used at most 10 % of a core over
# 0.5 s (at most 20 s).
QUIET_PERIOD_S = 0.5
QUIET_CPU_FRACTION = 0.10
QUIET_MAX_S = 20.0

#: What the RSS child runs: argv = conf user keyring pool path name mode.
RSS_CHILD = r"""
import json, os, resource, sys, time
from rbd_driver.storage import datapath
from rbd_driver.storage.rados_client import RadosClient
conf, user, keyring, pool, path, name, mode = sys.argv[1:8]
client = RadosClient(conf, user=user, keyring=keyring)
client.get_ioctx(pool)
out = {"mode": mode}
if mode == "import":
    start = time.perf_counter()
    stats = datapath.import_to_image(client, path, pool, name)
    out["seconds"] = time.perf_counter() - start
    out["data_bytes"] = stats.data_bytes
client.close()
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            out["vmhwm_kib"] = int(line.split()[1])
out["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def osd_stat(state: ClusterState) -> tuple[float, int]:
    """CPU seconds (user + system) and minor page faults of the cluster's OSD so far."""
    pid = state.pids["osd.0"]
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[7])


def osd_cpu(state: ClusterState) -> float:
    """CPU seconds (user + system) used so far by the cluster's OSD."""
    return osd_stat(state)[0]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_sparse(path: str, size: int, chunks: int, seed: int,
                 data: Callable[[random.Random], bytes]) -> list[int]:
    """Write ``chunks`` 4 MiB chunks at random aligned offsets of a new sparse file.

    Returns the offsets.
    """
    rng = random.Random(seed)
    offsets = sorted(i * OBJ for i in rng.sample(range(size // OBJ), chunks))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        for off in offsets:
            os.pwrite(fd, data(rng), off)
    finally:
        os.close(fd)
    return offsets


def warm(path: str) -> float:
    """Read every data segment of ``path`` (holes need no caching); return the seconds."""
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, pos, os.SEEK_HOLE)
            while pos < end:
                pos += len(os.pread(fd, min(16 * MIB, end - pos), pos)) or end - pos
    finally:
        os.close(fd)
    return time.perf_counter() - start


def cached_fraction(path: str) -> str:
    """fincore's view of ``path`` (resident pages), for the report."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE",
                              path], capture_output=True, text=True, timeout=30, check=True)
        res, size = (int(v) for v in out.stdout.split()[:2])
        return f"{res / MIB:.0f} MiB resident of {size / MIB:.0f} MiB apparent"
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown (fincore unavailable)"


class Bench:
    """The cluster handles, the files and everything made, so cleanup finds it all."""

    def __init__(self, state: ClusterState, workdir: str, args: argparse.Namespace) -> None:
        self.state = state
        self.args = args
        self.dir = workdir
        self.client = RadosClient(state.conf_path, user=state.user, keyring=state.user_keyring)
        self.ioctx = self.client.get_ioctx(DISK_POOL)
        self.cli = rbd_argv(state)
        self.images: set[str] = set()
        self.src = os.path.join(workdir, "source.raw")
        self.src_offsets: list[int] = []
        self.src_sha = ""
        self.counter = 0
        self.last_minflt = 0

    # -- helpers -------------------------------------------------------------

    def spec(self, name: str) -> str:
        return convert.rbd_spec(DISK_POOL, name, self.state.user, self.state.conf_path,
                                self.state.user_keyring)

    def new_name(self, prefix: str) -> str:
        self.counter += 1
        name = f"{prefix}-{self.counter}"
        self.images.add(name)
        return name

    def remove(self, name: str) -> None:
        self.client.rbd.RBD().remove(self.ioctx, name)
        self.images.discard(name)

    def run_cmd(self, argv: list[str]) -> tuple[float, float, str]:
        """Run a command; return (wall, its CPU, stdout). Raise on failure."""
        cpu0 = children_cpu()
        flt0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        wall = time.perf_counter() - start
        cpu = children_cpu() - cpu0
        self.last_minflt = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - flt0
        if proc.returncode != 0:
            shown = [a if not a.startswith("rbd:") else "<rbd spec>" for a in argv]
            raise RuntimeError(f"{' '.join(shown)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-800:]}")
        return wall, cpu, proc.stdout

    def timed(self, fn: Callable[[], Any]) -> tuple[float, float, Any]:
        """Call ``fn`` in this process; return (wall, this process's CPU, result)."""
        cpu0 = time.process_time()
        flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
        self.last_minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
        return wall, time.process_time() - cpu0, result

    def quiesce(self) -> float:
        """Wait (at most ``QUIET_MAX_S``) until the OSD is idle; return the seconds waited.

        Removing an image leaves the OSD busy for a while (freeing space,
        RocksDB work); without this, that work lands on the next run.
        """
        start = time.perf_counter()
        while time.perf_counter() - start < QUIET_MAX_S:
            before = osd_cpu(self.state)
            time.sleep(QUIET_PERIOD_S)
            if osd_cpu(self.state) - before <= QUIET_CPU_FRACTION * QUIET_PERIOD_S:
                break
        return time.perf_counter() - start

    def sample(self, measure: Callable[[], tuple[float, float, Any]]) -> dict[str, Any]:
        """Run one measurement once the OSD is idle, adding its CPU seconds spent meanwhile."""
        waited = self.quiesce()
        osd0, osd_flt0 = osd_stat(self.state)
        exclude = {os.getpid(), *self.state.pids.values()}
        others0 = other_processes_cpu(exclude)
        busy0, steal0 = machine_cpu()
        own0 = own_cpu(self.state)
        self.last_minflt = 0
        wall, cpu, extra = measure()
        osd1, osd_flt1 = osd_stat(self.state)
        busy1, steal1 = machine_cpu()
        own = own_cpu(self.state) - own0
        # Other user-space processes (the CLI this run started was reaped, so
        # it is in `own`, not here); the rest of the busy time is the kernel's:
        # threads and interrupts, much of it doing our own I/O and networking.
        foreign = max(0.0, others_delta(others0, other_processes_cpu(exclude)))
        kernel = max(0.0, (busy1 - busy0) - own - foreign)
        return {"wall": wall, "cpu": cpu, "osd_cpu": osd1 - osd0,
                "osd_minor_faults": osd_flt1 - osd_flt0, "extra": extra,
                "quiesce_wait": waited, "minor_faults": self.last_minflt,
                "load1": os.getloadavg()[0], "foreign_cpu": foreign, "kernel_cpu": kernel,
                "steal": steal1 - steal0}

    def spot_check(self, name: str, size: int = SRC_SIZE) -> str | None:
        """Compare 8 data chunks and 2 holes of image ``name`` with the source.

        Returns None if they are equal, else what differs.
        """
        rng = random.Random(len(name))
        holes = sorted(set(range(0, SRC_SIZE, OBJ)) - set(self.src_offsets))
        picks = rng.sample(self.src_offsets, 8) + [holes[0], holes[-1]]
        with self.client.open_image(DISK_POOL, name, read_only=True) as image, \
                open(self.src, "rb") as f:
            if image.size() != size:
                return f"{name}: size {image.size()} != {size}"
            for off in picks:
                f.seek(off)
                if image.read(off, OBJ) != f.read(OBJ):
                    return f"{name}: bytes at {off} differ from the source"
        return None

    # -- the source ----------------------------------------------------------

    def make_source(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.src_offsets = write_sparse(self.src, SRC_SIZE, SRC_CHUNKS, SRC_SEED,
                                        lambda rng: rng.randbytes(OBJ))
        self.src_sha = sha256(self.src)
        st = os.stat(self.src)
        warm_s = warm(self.src)
        return {"path": self.src, "apparent_bytes": st.st_size,
                "allocated_bytes": st.st_blocks * 512, "data_bytes": SRC_CHUNKS * OBJ,
                "sha256": self.src_sha, "seconds_to_write": time.perf_counter() - start,
                "warm_read_seconds": warm_s, "page_cache": cached_fraction(self.src)}

    # -- import ----------------------------------------------------------------

    def fresh(self, fn: Callable[[RadosClient], Any]) -> Callable[[], Any]:
        """``fn`` on a new connection, connected, used and closed inside the timing:
        what a new process pays before its first byte, as a CLI does."""
        def call() -> Any:
            client = RadosClient(self.state.conf_path, user=self.state.user,
                                 keyring=self.state.user_keyring)
            try:
                return fn(client)
            finally:
                client.close()
        return call

    def imp_ours(self, window: int, chunk: int | None = None,
                 fresh: bool = False) -> dict[str, Any]:
        """One import_to_image; ``chunk`` None leaves the library's default chunk size;
        ``fresh`` connects anew inside the timing instead of using the warm connection."""
        name = self.new_name("imp-fresh" if fresh else "imp-ours")
        tuning: dict[str, int] = {"window": window}
        if chunk is not None:
            tuning["chunk_size"] = chunk

        def imp(client: RadosClient) -> Any:
            return datapath.import_to_image(client, self.src, DISK_POOL, name, **tuning)

        warm(self.src)
        s = self.sample(lambda: self.timed(
            self.fresh(imp) if fresh else lambda: imp(self.client)))
        stats = s.pop("extra")
        s["data_bytes"], s["hole_bytes"] = stats.data_bytes, stats.hole_bytes
        s["name"] = name
        return s

    def imp_rbd(self) -> dict[str, Any]:
        name = self.new_name("imp-rbd")
        warm(self.src)
        s = self.sample(lambda: self.run_cmd(
            self.cli + ["import", "--image-format", "2", self.src, f"{DISK_POOL}/{name}"]))
        s.pop("extra")
        s["name"] = name
        return s

    def imp_qemu(self) -> dict[str, Any]:
        name = self.new_name("imp-qemu")
        warm(self.src)
        s = self.sample(lambda: self.run_cmd(
            ["qemu-img", "convert", "-f", "raw", "-O", "raw", "-W", "-m", "16", self.src,
             self.spec(name)]))
        s.pop("extra")
        s["name"] = name
        return s

    def rbd_bench(self) -> dict[str, Any]:
        name = self.new_name("benchimg")
        self.client.rbd.RBD().create(self.ioctx, name, SRC_SIZE)
        s = self.sample(lambda: self.run_cmd(
            self.cli + ["bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "16",
                        "--io-total", "1G", "--io-pattern", "seq", f"{DISK_POOL}/{name}"]))
        out = s.pop("extra")
        summary = [ln for ln in out.splitlines() if ln.strip().startswith("elapsed:")]
        if not summary:
            raise RuntimeError(f"no summary line in rbd bench output: {out[-500:]!r}")
        m = re.search(r"ops/sec:\s*([\d.]+)\s+bytes/sec:\s*([\d.]+\s*\S+)", summary[-1])
        if not m:
            raise RuntimeError(f"cannot parse rbd bench summary {summary[-1]!r}")
        s["summary"] = summary[-1].strip()
        # ops/sec x 4 MiB is bytes/sec with more digits than the printed one.
        s["mib_s"] = float(m.group(1)) * OBJ / MIB
        s["mib_s_printed"] = m.group(2)
        s["mib_s_wall"] = BENCH_TOTAL / MIB / s["wall"]
        s["name"] = name
        return s

    # -- export ----------------------------------------------------------------

    def exp_run(self, tool: str, image: str, window: int | None = None,
                chunk: int | None = None) -> dict[str, Any]:
        """One export; for ours, None leaves the library's default window / chunk size."""
        out = os.path.join(self.dir, f"export-{tool}.raw")
        if tool in ("ours", "fresh"):
            tuning = {k: v for k, v in (("window", window), ("chunk_size", chunk))
                      if v is not None}

            def exp(client: RadosClient) -> Any:
                return datapath.export_from_image(client, DISK_POOL, image, out, **tuning)

            s = self.sample(lambda: self.timed(
                self.fresh(exp) if tool == "fresh" else lambda: exp(self.client)))
            s.pop("extra")
        elif tool == "rbd":
            s = self.sample(lambda: self.run_cmd(self.cli + ["export", f"{DISK_POOL}/{image}",
                                                             out]))
            s.pop("extra")
        else:
            s = self.sample(lambda: self.run_cmd(
                ["qemu-img", "convert", "-f", "raw", "-O", "raw", "-W", "-m", "16",
                 self.spec(image), out]))
            s.pop("extra")
        # Untimed: the fsync export_from_image does inside its time, the CLIs never.
        start = time.perf_counter()
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        s["fsync_after"] = time.perf_counter() - start
        s["out"] = out
        return s

    # -- fixed start cost ------------------------------------------------------

    def start_cost(self, tool: str, image: str) -> float:
        """Wall seconds of the least work each tool can do on ``image``: start (for
        a CLI), connect, open the image, read its size, close. No data moves."""
        if tool == "rbd":
            return self.run_cmd(self.cli + ["info", f"{DISK_POOL}/{image}"])[0]
        if tool == "qemu":
            return self.run_cmd(["qemu-img", "info", "-f", "raw", self.spec(image)])[0]

        def info(client: RadosClient) -> int:
            with client.open_image(DISK_POOL, image, read_only=True) as handle:
                return int(handle.size())

        if tool == "fresh":
            return self.timed(self.fresh(info))[0]
        return self.timed(lambda: info(self.client))[0]

    # -- conversion ------------------------------------------------------------

    def conv_direct(self, qcow2: str) -> dict[str, Any]:
        name = self.new_name("conv-direct")
        warm(qcow2)
        cpu0 = children_cpu()
        s = self.sample(lambda: self.timed(
            lambda: convert.convert_to_rbd(qcow2, "qcow2", self.spec(name))))
        s.pop("extra")
        s["cpu"] += children_cpu() - cpu0  # qemu-img info and convert
        s["name"] = name
        return s

    def conv_local(self, qcow2: str) -> dict[str, Any]:
        name = self.new_name("conv-local")
        raw = os.path.join(self.dir, "converted.raw")
        warm(qcow2)
        parts: dict[str, float] = {}

        def local() -> None:
            t0 = time.perf_counter()
            convert.convert_to_raw_file(qcow2, raw, "qcow2")
            t1 = time.perf_counter()
            datapath.import_to_image(self.client, raw, DISK_POOL, name)
            t2 = time.perf_counter()
            os.unlink(raw)
            parts.update(convert_s=t1 - t0, import_s=t2 - t1, unlink_s=time.perf_counter() - t2)

        cpu0 = children_cpu()
        s = self.sample(lambda: self.timed(local))
        s.pop("extra")
        s["cpu"] += children_cpu() - cpu0
        s.update(parts)
        s["name"] = name
        return s

    # -- RSS -------------------------------------------------------------------

    def rss_child(self, path: str, name: str, mode: str) -> dict[str, Any]:
        """Run the RSS child under GNU time; return its report plus time's maximum RSS.

        Not ``RUSAGE_CHILDREN`` or ``wait4`` from this process: Python starts
        children with vfork, and Linux then counts the parent's (this
        benchmark's, several hundred MiB) high-water RSS into the child's
        ``ru_maxrss`` at exec. ``/usr/bin/time`` is a small process, so the
        figure it reports is the child's own; ``VmHWM`` (the high-water mark of
        the child's own address space) cross-checks it.
        """
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        timefile = os.path.join(self.dir, f"time-{mode}.out")
        argv = ["/usr/bin/time", "-f", "%M", "-o", timefile,
                sys.executable, "-c", RSS_CHILD, self.state.conf_path, self.state.user,
                self.state.user_keyring, DISK_POOL, path, name, mode]
        if mode == "import":
            self.images.add(name)
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, timeout=900, env=env, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"RSS child ({mode}) failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace').strip()[-800:]}")
        report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        with open(timefile, encoding="ascii") as f:
            report["time_maxrss_kib"] = int(f.read().split()[-1])
        os.unlink(timefile)
        report["wall"] = wall
        return report

    # -- cleanup -----------------------------------------------------------------

    def cleanup(self) -> dict[str, Any]:
        problems: dict[str, str] = {}
        removed = 0
        for name in sorted(self.images):
            try:
                self.client.rbd.RBD().remove(self.ioctx, name)
                removed += 1
            except self.client.rbd.ImageNotFound:
                pass
            except Exception as err:  # keep going: remove as much as possible
                problems[name] = repr(err)
        self.images.clear()
        left: list[str] = []
        try:
            left = list(self.client.rbd.RBD().list(self.ioctx))
            left += [f"trash:{t['name']}" for t in self.client.rbd.RBD().trash_list(self.ioctx)]
        except Exception as err:
            problems["list"] = repr(err)
        self.client.close()
        return {"images_removed": removed, "problems": problems, "left_behind": left}


def williams(items: list[str]) -> list[list[str]]:
    """Orders of a Williams design: rotations of 0, 1, n-1, 2, n-2, ...

    Every item runs in every position, and (over the rows; for an odd count
    the rows and their reverses) follows every other item equally often, so
    neither a position nor a predecessor's after-effects favour one tool.
    """
    n = len(items)
    first, lo, hi = [0], 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    rows = [[items[(i + k) % n] for i in first] for k in range(n)]
    if n % 2:
        rows += [list(reversed(row)) for row in rows]
    return rows


def order_of(items: list[str], r: int) -> list[str]:
    rows = williams(items)
    return rows[r % len(rows)]


def series(samples: list[dict[str, Any]], data_bytes: int, apparent: int) -> dict[str, Any]:
    walls = [s["wall"] for s in samples]
    out: dict[str, Any] = summarize(walls)
    med = statistics.median(walls)
    out["median_s"] = med
    out["data_mib_s"] = data_bytes / MIB / med
    out["apparent_mib_s"] = apparent / MIB / med
    out["cpu_median_s"] = statistics.median(s["cpu"] for s in samples)
    out["osd_cpu_median_s"] = statistics.median(s["osd_cpu"] for s in samples)
    out["quiesce_wait_median_s"] = statistics.median(s["quiesce_wait"] for s in samples)
    out["minor_faults_median"] = statistics.median(s["minor_faults"] for s in samples)
    out["osd_minor_faults_median"] = statistics.median(s["osd_minor_faults"] for s in samples)
    out["foreign_cpu_median_s"] = statistics.median(s["foreign_cpu"] for s in samples)
    return out


def run(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    log("writing the 2 GiB source...")
    raw["source"] = bench.make_source()

    # -- 2./3. import and the write ceiling, Williams order --------------------
    log("import series...")
    imp: dict[str, Callable[[], dict[str, Any]]] = {
        "ours": lambda: bench.imp_ours(args.window),
        "fresh": lambda: bench.imp_ours(args.window, fresh=True),
        "rbd": bench.imp_rbd, "qemu": bench.imp_qemu, "bench": bench.rbd_bench}
    order = ["ours", "fresh", "rbd", "qemu", "bench"]
    for tool in order[:4]:  # warm-up: connection, binaries and libraries in the page cache
        for _ in range(args.warmup):
            bench.remove(imp[tool]()["name"])
    samples: dict[str, list[dict[str, Any]]] = {t: [] for t in order}
    checks: dict[str, str | None] = {}
    raw["import_orders"] = []
    for r in range(args.runs):
        raw["import_orders"].append(order_of(order, r))
        for tool in order_of(order, r):
            s = imp[tool]()
            if tool != "bench" and tool not in checks:
                checks[tool] = bench.spot_check(s["name"])
            bench.remove(s["name"])
            samples[tool].append(s)
    raw["import"] = samples
    raw["import_checks"] = checks

    # -- 4. export, Williams order ---------------------------------------------
    log("export series...")
    exp_image = bench.new_name("exp-src")
    datapath.import_to_image(bench.client, bench.src, DISK_POOL, exp_image)
    tools = ["ours", "fresh", "rbd", "qemu"]
    for tool in tools:
        for _ in range(args.warmup):
            os.unlink(bench.exp_run(tool, exp_image)["out"])
    exp: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    outputs: dict[str, dict[str, Any]] = {}
    raw["export_orders"] = []
    for r in range(args.runs):
        raw["export_orders"].append(order_of(tools, r))
        for tool in order_of(tools, r):
            s = bench.exp_run(tool, exp_image)
            if tool not in outputs:  # once per tool, untimed
                st = os.stat(s["out"])
                digest = sha256(s["out"])
                outputs[tool] = {"apparent_bytes": st.st_size,
                                 "allocated_bytes": st.st_blocks * 512,
                                 "sha256": digest, "identical": digest == bench.src_sha}
            os.unlink(s["out"])
            exp[tool].append(s)
    raw["export"] = exp
    raw["export_outputs"] = outputs

    # -- the fixed cost of starting each tool, on a tiny image ----------------------
    log("start costs...")
    tiny = bench.new_name("tiny")
    bench.client.rbd.RBD().create(bench.ioctx, tiny, 4 * MIB)
    costs = ["ours", "fresh", "rbd", "qemu"]
    raw["start_cost"] = {t: [] for t in costs}
    for tool in costs:  # warm-up
        bench.start_cost(tool, tiny)
    for r in range(args.start_runs):
        for tool in order_of(costs, r):
            raw["start_cost"][tool].append(bench.start_cost(tool, tiny))
    bench.remove(tiny)

    # -- tuning sweep (diagnostic) --------------------------------------------------
    raw["sweep"] = {"import": {}, "export": {}}
    if args.sweep:
        keys = list(args.sweep)
        log(f"tuning sweep {', '.join(keys)}...")
        for k in keys:
            raw["sweep"]["import"][k], raw["sweep"]["export"][k] = [], []
        for r in range(args.sweep_runs):
            for k in order_of(keys, r):
                s = bench.imp_ours(args.sweep[k][1], args.sweep[k][0])
                bench.remove(s["name"])
                raw["sweep"]["import"][k].append(s)
            for k in order_of(keys, r):
                s = bench.exp_run("ours", exp_image, window=args.sweep[k][1],
                                  chunk=args.sweep[k][0])
                os.unlink(s["out"])
                raw["sweep"]["export"][k].append(s)
    bench.remove(exp_image)

    # -- 6. conversion path -------------------------------------------------------
    log("conversion series...")
    qcow2 = os.path.join(bench.dir, "source.qcow2")
    bench.run_cmd(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", bench.src, qcow2])
    raw["qcow2_bytes"] = os.stat(qcow2).st_blocks * 512
    conv: dict[str, list[dict[str, Any]]] = {"direct": [], "local": []}
    fns = {"direct": bench.conv_direct, "local": bench.conv_local}
    conv_checks: dict[str, str | None] = {}
    for r in range(args.runs):
        for path in (["direct", "local"] if r % 2 == 0 else ["local", "direct"]):
            s = fns[path](qcow2)
            if path not in conv_checks:
                conv_checks[path] = bench.spot_check(s["name"])
            bench.remove(s["name"])
            conv[path].append(s)
    raw["convert"] = conv
    raw["convert_checks"] = conv_checks
    os.unlink(qcow2)

    # -- 5. peak RSS -------------------------------------------------------------------
    log("peak RSS: writing the 8 GiB file (4 GiB of data)...")
    big = os.path.join(bench.dir, "rss-8g.raw")
    start = time.perf_counter()
    write_sparse(big, RSS_SIZE, RSS_CHUNKS, RSS_SEED, lambda rng: os.urandom(OBJ))
    raw["rss_file_seconds"] = time.perf_counter() - start
    warm(big)
    log("peak RSS: children...")
    raw["rss_baseline"] = bench.rss_child(big, "-", "baseline")
    name = bench.new_name("rss")
    raw["rss_import"] = bench.rss_child(big, name, "import")
    with bench.client.open_image(DISK_POOL, name, read_only=True) as image:
        raw["rss_image_size"] = image.size()
    bench.remove(name)
    os.unlink(big)
    block = os.path.join(bench.state.directory, "osd", "ceph-0.block")
    raw["osd_file_allocated"] = os.stat(block).st_blocks * 512 if os.path.exists(block) else -1
    return raw


def report(env: dict[str, Any], args: argparse.Namespace, raw: dict[str, Any],
           cleanup: dict[str, Any]) -> tuple[dict[str, Any], int]:
    data, apparent = SRC_CHUNKS * OBJ, SRC_SIZE
    tools = ("ours", "fresh", "rbd", "qemu")
    imp = {t: series(raw["import"][t], data, apparent) for t in tools}
    bench_samples = raw["import"]["bench"]
    ceiling = {
        "n": len(bench_samples),
        "mib_s_median": statistics.median(s["mib_s"] for s in bench_samples),
        "mib_s_wall_median": statistics.median(s["mib_s_wall"] for s in bench_samples),
        "wall_median_s": statistics.median(s["wall"] for s in bench_samples),
        "cpu_median_s": statistics.median(s["cpu"] for s in bench_samples),
        "osd_cpu_median_s": statistics.median(s["osd_cpu"] for s in bench_samples),
        "osd_minor_faults_median": statistics.median(s["osd_minor_faults"]
                                                     for s in bench_samples),
        "foreign_cpu_median_s": statistics.median(s["foreign_cpu"] for s in bench_samples),
        "summaries": [s["summary"] for s in bench_samples],
    }
    exp = {t: series(raw["export"][t], data, apparent) for t in tools}
    for t in exp:
        exp[t]["fsync_after_median_s"] = statistics.median(
            s["fsync_after"] for s in raw["export"][t])
    conv = {p: series(raw["convert"][p], data, apparent) for p in ("direct", "local")}
    for part in ("convert_s", "import_s", "unlink_s"):
        conv["local"][f"{part}_median"] = statistics.median(
            s[part] for s in raw["convert"]["local"])

    def per_round(kind: str, a: str, b: str) -> float:
        return statistics.median(x["wall"] / y["wall"]
                                 for x, y in zip(raw[kind][a], raw[kind][b], strict=True))

    ratios = {
        "import_ours_over_rbd": imp["ours"]["median_s"] / imp["rbd"]["median_s"],
        "import_ours_over_qemu": imp["ours"]["median_s"] / imp["qemu"]["median_s"],
        "export_ours_over_rbd": exp["ours"]["median_s"] / exp["rbd"]["median_s"],
        "export_ours_over_qemu": exp["ours"]["median_s"] / exp["qemu"]["median_s"],
        "export_ours_over_rbd_plus_fsync":
            exp["ours"]["median_s"] / (exp["rbd"]["median_s"] + exp["rbd"]["fsync_after_median_s"]),
        "export_ours_over_qemu_plus_fsync":
            exp["ours"]["median_s"] / (exp["qemu"]["median_s"]
                                       + exp["qemu"]["fsync_after_median_s"]),
        "convert_local_over_direct": conv["local"]["median_s"] / conv["direct"]["median_s"],
    }
    per_round_ratios = {
        "import_ours_over_rbd": per_round("import", "ours", "rbd"),
        "import_ours_over_qemu": per_round("import", "ours", "qemu"),
        "export_ours_over_rbd": per_round("export", "ours", "rbd"),
        "export_ours_over_qemu": per_round("export", "ours", "qemu"),
    }
    # The copy targets in two views: ours on the agent's warm connection (as a
    # user meets them: a CLI always starts, connects and opens), and ours
    # connecting anew inside the timing (equal terms). A ratio within the
    # noise of the two series is a tie (see _benchlib.compare).
    views = {"as_met": "ours", "equal_terms": "fresh"}
    comparisons = {
        f"{kind}_{view}_over_{peer}": compare([x["wall"] for x in raw[kind][ours]],
                                              [x["wall"] for x in raw[kind][peer]])
        for kind in ("import", "export") for peer in ("rbd", "qemu")
        for view, ours in views.items()}
    start = {t: summarize(v) for t, v in raw["start_cost"].items()}
    # The other way to equal terms: the peers' time less their fixed start cost.
    for kind, table in (("import", imp), ("export", exp)):
        for peer in ("rbd", "qemu"):
            ratios[f"{kind}_ours_over_{peer}_less_start"] = table["ours"]["median_s"] / (
                table[peer]["median_s"] - start[peer]["median_ms"] / 1000)
    ceiling_pct = 100.0 * imp["ours"]["data_mib_s"] / ceiling["mib_s_median"]
    base, imp_rss = raw["rss_baseline"], raw["rss_import"]
    rss = {
        "import_peak_mib": imp_rss["time_maxrss_kib"] / 1024,
        "import_vmhwm_mib": imp_rss["vmhwm_kib"] / 1024,
        "baseline_peak_mib": base["time_maxrss_kib"] / 1024,
        "baseline_vmhwm_mib": base["vmhwm_kib"] / 1024,
        "import_seconds": imp_rss["seconds"],
        "import_data_mib_s": imp_rss["data_bytes"] / MIB / imp_rss["seconds"],
        "data_bytes": imp_rss["data_bytes"],
        "image_size": raw["rss_image_size"],
    }
    rss["engine_share_mib"] = rss["import_peak_mib"] - rss["baseline_peak_mib"]
    outputs = raw["export_outputs"]
    identical = all(o["identical"] for o in outputs.values())
    spot_ok = all(v is None for v in {**raw["import_checks"], **raw["convert_checks"]}.values())
    peer_names = {"rbd": {"import": "rbd import", "export": "rbd export"},
                  "qemu": {"import": "qemu-img convert", "export": "qemu-img convert"}}
    targets = {}
    for kind in ("import", "export"):
        for peer in ("rbd", "qemu"):
            # Met unless ours is slower by more than the noise, in either view.
            targets[f"{kind}: median(ours) / median({peer_names[peer][kind]}) <= "
                    f"{TARGET_RATIO:g} (a tie within the noise), both views"] = all(
                comparisons[f"{kind}_{view}_over_{peer}"]["verdict"] != "slower"
                for view in views)
        if kind == "import":
            targets[f"import: our data throughput >= {TARGET_CEILING_PCT:g} % of rbd bench "
                    "write"] = ceiling_pct >= TARGET_CEILING_PCT
    targets[f"peak RSS importing 4 GiB of data <= {TARGET_RSS_MIB:g} MiB"] = (
        rss["import_peak_mib"] <= TARGET_RSS_MIB)
    checks = {
        "every export output has the source's sha256": identical,
        "spot checks of imported/converted images match the source": spot_ok,
    }

    src = raw["source"]
    print(f"\nCopy-engine benchmark, {env['date_utc']}")
    print(f"  machine: {env['cpus']} CPUs ({env['cpu_model']}), {env['mem_gib']:.0f} GiB RAM, "
          f"kernel {env['kernel']}, load average at start {env['loadavg_start'][0]:.2f}, "
          f"at end {env['loadavg_end'][0]:.2f}")
    timed = [s for kind in ("import", "export", "convert") for v in raw[kind].values()
             for s in v]
    loads = [s["load1"] for s in timed]
    share = [s["foreign_cpu"] / s["wall"] for s in timed]
    kernel = [s["kernel_cpu"] / s["wall"] for s in timed]
    steal = [s["steal"] / s["wall"] for s in timed]
    noise = {"load1_median": statistics.median(loads), "load1_max": max(loads),
             "other_processes_cpus_median": statistics.median(share),
             "other_processes_cpus_max": max(share),
             "kernel_cpus_median": statistics.median(kernel), "kernel_cpus_max": max(kernel),
             "steal_cpus_median": statistics.median(steal), "steal_cpus_max": max(steal)}
    print(f"  during the timed runs (in CPUs busy): other processes median "
          f"{noise['other_processes_cpus_median']:.2f}, max "
          f"{noise['other_processes_cpus_max']:.2f}; kernel threads and interrupts (our I/O "
          f"included) median {noise['kernel_cpus_median']:.2f}, max "
          f"{noise['kernel_cpus_max']:.2f}; stolen by the hypervisor median "
          f"{noise['steal_cpus_median']:.2f}, max {noise['steal_cpus_max']:.2f}; 1-minute "
          f"load average median {noise['load1_median']:.2f}, max {noise['load1_max']:.2f}")
    print(f"  Ceph daemons of other clusters on the machine: {env['other_ceph_daemons_start']} at"
          f" start, {env['other_ceph_daemons_end']} at end")
    print(f"  {env['ceph']}; {env['qemu_img']}")
    dp = env["datapath"]
    changed = "; CHANGED ON DISK DURING THE RUN" if dp["file_changed_during_run"] else ""
    print(f"  datapath.py at git {dp['git_head']}"
          f"{' (modified since)' if dp['file_modified_since_head'] else ''}, sha256 "
          f"{dp['file_sha256'][:12]}{changed}; defaults: import "
          f"{dp['import_chunk_size'] // MIB} MiB chunks, export "
          f"{dp['export_chunk_size'] // MIB} MiB chunks, window {dp['window']}")
    print(f"  one bluestore OSD on a {args.osd_size_gib} GiB sparse file; non-admin user; "
          f"pool {DISK_POOL}, size 1; files in {env['workdir_fs']}")
    print(f"  source: {src['apparent_bytes'] / GIB:.0f} GiB sparse raw, "
          f"{src['data_bytes'] / MIB:.0f} MiB data ({SRC_CHUNKS} x 4 MiB, seed {SRC_SEED:#x}); "
          f"page cache: {src['page_cache']}")
    print(f"  {args.runs} timed runs per series in rotating (Williams) order after the OSD "
          f"went idle, {args.warmup} warm-up run(s) per tool not counted; times in seconds "
          "(median [min-max])")

    def row(label: str, s: dict[str, Any], extra: str = "") -> None:
        print(f"  {label:<35}{s['n']:>3}{s['median_s']:>8.2f}{s['min_ms'] / 1000:>7.2f}"
              f"{s['max_ms'] / 1000:>7.2f}{s['data_mib_s']:>8.0f}{s['apparent_mib_s']:>10.0f}"
              f"{s['cpu_median_s']:>7.2f}{s['osd_cpu_median_s']:>9.2f}"
              f"{s['osd_minor_faults_median'] / 1000:>12.1f}{s['foreign_cpu_median_s']:>8.2f}"
              f"{extra}")

    def head(title: str, extra: tuple[str, str] = ("", "")) -> None:
        print(f"\n  {title}")
        print(f"  {'':<35}{'n':>3}{'median':>8}{'min':>7}{'max':>7}{'data':>8}{'apparent':>10}"
              f"{'CPU':>7}{'OSD CPU':>9}{'OSD faults':>12}{'others':>8}{extra[0]}")
        print(f"  {'':<35}{'':>3}{'s':>8}{'s':>7}{'s':>7}{'MiB/s':>8}{'MiB/s':>10}"
              f"{'s':>7}{'s':>9}{'thousands':>12}{'CPU s':>8}{extra[1]}")

    head("IMPORT: 2 GiB sparse raw file (512 MiB of data) -> new image")
    row(f"ours import_to_image, {env['datapath']['import_chunk_size'] // MIB}M x {args.window}",
        imp["ours"])
    row("  the same, connecting anew", imp["fresh"])
    row("rbd import --image-format 2", imp["rbd"])
    row("qemu-img convert -W -m 16", imp["qemu"])
    print(f"  {'rbd bench write 4M x16, 1 GiB seq':<35}{ceiling['n']:>3}"
          f"{ceiling['wall_median_s']:>8.2f}{'':>14}{ceiling['mib_s_median']:>8.0f}"
          f"{'':>10}{ceiling['cpu_median_s']:>7.2f}{ceiling['osd_cpu_median_s']:>9.2f}"
          f"{ceiling['osd_minor_faults_median'] / 1000:>12.1f}"
          f"{ceiling['foreign_cpu_median_s']:>8.2f}")
    print(f"    (rbd bench: median of its reported rate, ops/s x 4 MiB; by wall time around "
          f"the process: {ceiling['mib_s_wall_median']:.0f} MiB/s)")
    print(f"    median(ours)/median(rbd import)  = {ratios['import_ours_over_rbd']:.3f}"
          f"   (median of per-round ratios {per_round_ratios['import_ours_over_rbd']:.3f})")
    print(f"    median(ours)/median(qemu-img)    = {ratios['import_ours_over_qemu']:.3f}"
          f"   (median of per-round ratios {per_round_ratios['import_ours_over_qemu']:.3f})")
    print(f"    our data throughput / rbd bench  = {ceiling_pct:.1f} %")
    head("EXPORT: image (512 MiB of data in 2 GiB) -> local sparse file",
         ("  fsync after", "            s"))
    exp_label = (f"ours export_from_image, {env['datapath']['export_chunk_size'] // MIB}M x "
                 f"{env['datapath']['window']}")
    for t, label in (("ours", exp_label), ("fresh", "  the same, connecting anew"),
                     ("rbd", "rbd export"), ("qemu", "qemu-img convert -W -m 16")):
        row(label, exp[t], f"{exp[t]['fsync_after_median_s']:>13.2f}")
    print(f"    median(ours)/median(rbd export)  = {ratios['export_ours_over_rbd']:.3f}"
          f"   (median of per-round ratios {per_round_ratios['export_ours_over_rbd']:.3f})")
    print(f"    median(ours)/median(qemu-img)    = {ratios['export_ours_over_qemu']:.3f}"
          f"   (median of per-round ratios {per_round_ratios['export_ours_over_qemu']:.3f})")
    print(f"    with the CLIs' outputs fsynced too: ours/rbd = "
          f"{ratios['export_ours_over_rbd_plus_fsync']:.3f}, ours/qemu-img = "
          f"{ratios['export_ours_over_qemu_plus_fsync']:.3f}")
    for t, o in outputs.items():
        print(f"    {t:<5} output: {o['allocated_bytes'] / MIB:.1f} MiB allocated of "
              f"{o['apparent_bytes'] / MIB:.0f} MiB apparent; sha256 "
              f"{'== source' if o['identical'] else '!= SOURCE'}")
    if raw["sweep"]["import"]:
        print(f"\n  TUNING SWEEP (ours, chunk size / window, {args.sweep_runs} runs each, "
              "rotating; medians of: seconds, data MiB/s,\n  CPU s, OSD CPU s, minor page "
              "faults of this process and of the OSD)")
        for kind in ("import", "export"):
            for k, samples in raw["sweep"][kind].items():
                s = series(samples, data, apparent)
                print(f"    {kind:<7} {k:>7}: {s['median_s']:6.2f} s "
                      f"{s['data_mib_s']:6.0f} MiB/s  CPU {s['cpu_median_s']:.2f}  "
                      f"OSD {s['osd_cpu_median_s']:.2f}  faults {s['minor_faults_median']:.0f}"
                      f" / OSD {s['osd_minor_faults_median']:.0f}")
    head(f"CONVERSION: qcow2 ({raw['qcow2_bytes'] / MIB:.0f} MiB) -> new image, ABBA")
    row("direct: convert_to_rbd", conv["direct"])
    row("local: to raw file + import", conv["local"])
    cl = conv["local"]
    print(f"    local = convert {cl['convert_s_median']:.2f} + import {cl['import_s_median']:.2f}"
          f" + unlink {cl['unlink_s_median']:.3f} s (medians)")
    winner = "direct" if ratios["convert_local_over_direct"] > 1 else "local"
    print(f"    median(local)/median(direct) = {ratios['convert_local_over_direct']:.3f}: "
          f"{winner} is faster")
    print("\n  PEAK RSS: child importing a sparse 8 GiB file with 4 GiB of data "
          f"(library defaults: {env['datapath']['import_chunk_size'] // MIB} MiB x "
          f"{env['datapath']['window']})")
    print(f"    import child: {rss['import_peak_mib']:.0f} MiB (GNU time %M; VmHWM "
          f"{rss['import_vmhwm_mib']:.0f} MiB), {rss['import_seconds']:.1f} s, "
          f"{rss['import_data_mib_s']:.0f} MiB/s of data")
    print(f"    baseline child (same imports and connection, no import): "
          f"{rss['baseline_peak_mib']:.0f} MiB (VmHWM {rss['baseline_vmhwm_mib']:.0f} MiB)")
    print(f"    engine's share: {rss['engine_share_mib']:.0f} MiB")
    print("\n  START COST: connect and open a 4 MiB image, read its size, close "
          f"({args.start_runs} runs each, rotating; ms)")
    for t, label in (("ours", "ours, warm connection (open only)"),
                     ("fresh", "ours, new RadosClient"),
                     ("rbd", "rbd info (process)"), ("qemu", "qemu-img info (process)")):
        c = start[t]
        print(f"    {label:<36} median {c['median_ms']:7.1f}  MAD {c['mad_ms']:5.1f}  "
              f"[{c['min_ms']:.1f}-{c['max_ms']:.1f}]")
    print("\n  COPY TARGETS in two views: median(ours) / median(tool), +/- the noise (the two "
          "series'\n  relative median absolute deviations, summed); inside it a tie. As a "
          "user meets them: ours on the\n  agent's warm connection, each CLI starting and "
          "connecting. At equal terms: ours connecting anew too.")
    print(f"    {'':<28}{'as a user meets them':<36}at equal terms")
    for kind in ("import", "export"):
        for peer in ("rbd", "qemu"):
            cells = []
            for view in views:
                c = comparisons[f"{kind}_{view}_over_{peer}"]
                cells.append(f"{c['ratio']:.3f} {c['per_round_ratio']:.3f} +/-{c['noise']:.3f} "
                             f"{c['verdict']:<6} {c['rounds_faster']}/{c['rounds']}")
            print(f"    {kind + ' vs ' + peer_names[peer][kind]:<28}{cells[0]:<36}{cells[1]}")
    print("    (each: ratio of the medians, median of the per-round ratios, +/- the noise, "
          "verdict,\n    rounds in which ours was faster; faster or slower only when both "
          "ratios are beyond the noise)")
    for kind in ("import", "export"):
        print(f"    {kind}, peers less their start cost: ours/rbd "
              f"{ratios[f'{kind}_ours_over_rbd_less_start']:.3f}, ours/qemu-img "
              f"{ratios[f'{kind}_ours_over_qemu_less_start']:.3f}")
    print("\n  targets:")
    for name, ok in targets.items():
        print(f"    {'PASS' if ok else 'FAIL'}  {name}")
    print("  checks:")
    for name, ok in checks.items():
        print(f"    {'PASS' if ok else 'FAIL'}  {name}")
    for kind, found in (("import", raw["import_checks"]), ("convert", raw["convert_checks"])):
        for tool, problem in found.items():
            if problem:
                print(f"      {kind} {tool}: {problem}")
    waits = [s["quiesce_wait"] for kind in ("import", "export", "convert")
             for v in raw[kind].values() for s in v]
    print(f"\n  waits for an idle OSD before a timed run: median {statistics.median(waits):.1f} s,"
          f" max {max(waits):.1f} s")
    print(f"  the OSD's bluestore file had {raw['osd_file_allocated'] / GIB:.1f} GiB allocated at "
          "the end")
    print(f"  cleanup: {cleanup['images_removed']} images removed at the end, work directory "
          f"{'removed' if cleanup['workdir_removed'] else 'LEFT'}; left behind: "
          f"{cleanup['left_behind'] or 'nothing'}")
    if cleanup["problems"]:
        print(f"  cleanup problems: {cleanup['problems']}")

    def strip(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()
                 if k not in ("name", "out")} for s in samples]

    doc = {
        "environment": env,
        "command": command_line("bench_datapath"),
        "parameters": {
            "runs": args.runs, "warmup": args.warmup, "window": args.window,
            "osd_size_gib": args.osd_size_gib, "objectstore": "bluestore", "osds": 1,
            "pool": DISK_POOL, "source_bytes": SRC_SIZE, "source_data_bytes": data,
            "source_seed": SRC_SEED, "rss_file_bytes": RSS_SIZE,
            "rss_data_bytes": RSS_CHUNKS * OBJ, "sweep": list(args.sweep),
            "sweep_runs": args.sweep_runs,
            "order": "rotating, row r mod len(rows) of a Williams design over (ours, rbd, "
                     "qemu, bench) for import and (ours, rbd, qemu) for export (rows and "
                     "their reverses); sweep likewise over its settings; conversion ABBA",
            "quiesce": f"before each timed run, wait until the OSD used <= "
                       f"{QUIET_CPU_FRACTION:.0%} of a core over {QUIET_PERIOD_S} s "
                       f"(at most {QUIET_MAX_S:g} s)",
            "timer": "time.perf_counter around the library call / subprocess.run",
            "cpu": "time.process_time (this process) / RUSAGE_CHILDREN (a CLI); "
                   "OSD: /proc/<pid>/stat utime+stime",
        },
        "noise_during_timed_runs": noise,
        "source": src,
        "import": imp,
        "rbd_bench_write": ceiling,
        "export": exp,
        "export_outputs": outputs,
        "convert": conv,
        "peak_rss": rss,
        "ratios": ratios,
        "per_round_ratios": per_round_ratios,
        "comparisons": comparisons,
        "start_cost": start,
        "import_pct_of_rbd_bench": ceiling_pct,
        "convert_winner": winner,
        "osd_file_allocated_bytes": raw["osd_file_allocated"],
        "targets": {name: ("PASS" if ok else "FAIL") for name, ok in targets.items()},
        "checks": {name: ("PASS" if ok else "FAIL") for name, ok in checks.items()},
        "spot_checks": {"import": raw["import_checks"], "convert": raw["convert_checks"]},
        "sweep": {kind: {k: series(v, data, apparent) for k, v in d.items()}
                  for kind, d in raw["sweep"].items()},
        "orders": {"import": raw["import_orders"], "export": raw["export_orders"]},
        "samples": {
            "import": {t: strip(v) for t, v in raw["import"].items()},
            "export": {t: strip(v) for t, v in raw["export"].items()},
            "convert": {t: strip(v) for t, v in raw["convert"].items()},
            "sweep": {kind: {k: strip(v) for k, v in d.items()}
                      for kind, d in raw["sweep"].items()},
            "rss": {"baseline": base, "import": imp_rss},
            "start_cost_s": raw["start_cost"],
        },
        "cleanup": cleanup,
    }
    status = 0 if all(targets.values()) and all(checks.values()) else 1
    if cleanup["left_behind"] or cleanup["problems"] or not cleanup["workdir_removed"]:
        status = 2
    return doc, status


def datapath_facts() -> dict[str, Any]:
    """The engine's defaults as imported, and which version of datapath.py this is."""
    path = datapath.__file__
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    git = git_commit(path)
    return {
        "import_chunk_size": getattr(datapath, "IMPORT_CHUNK_SIZE", datapath.DEFAULT_CHUNK_SIZE),
        "export_chunk_size": datapath.DEFAULT_CHUNK_SIZE,
        "window": datapath.DEFAULT_WINDOW,
        "file_sha256": digest,
        "git_head": git["commit"],
        "file_modified_since_head": git["modified_since_commit"],
    }


def other_ceph_daemons() -> int:
    """How many Ceph daemons (of other clusters) run on this machine right now."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as f:
                count += f.read().strip() in ("ceph-osd", "ceph-mon", "ceph-mgr")
        except OSError:
            continue
    return count


def extra_environment(workdir: str) -> dict[str, Any]:
    out: dict[str, Any] = {"other_ceph_daemons_start": other_ceph_daemons()}
    try:
        out["qemu_img"] = subprocess.run(["qemu-img", "--version"], capture_output=True,
                                         text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError):
        out["qemu_img"] = "qemu-img unknown"
    try:
        df = subprocess.run(["df", "--output=source,fstype", workdir], capture_output=True,
                            text=True, timeout=30).stdout.splitlines()[-1].split()
        out["workdir_fs"] = f"{workdir} ({df[1]} on {df[0]})"
    except (OSError, IndexError):
        out["workdir_fs"] = workdir
    out["mem_gib"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return out


DEFAULT_SWEEP = "4/4,4/16,4/64,2/16,2/32"


def parse_sweep(value: str) -> dict[str, tuple[int, int]]:
    """``"4/16,2/32"`` -> {"4M/16": (4 MiB, 16), "2M/32": (2 MiB, 32)}."""
    out: dict[str, tuple[int, int]] = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        try:
            chunk, window = (int(x) for x in item.split("/"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not CHUNK_MIB/WINDOW") from None
        if chunk < 1 or window < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: both must be positive")
        out[f"{chunk}M/{window}"] = (chunk * MIB, window)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the copy engine against rbd import/export and qemu-img convert "
                    "on a throwaway cluster.")
    parser.add_argument("--runs", type=int, default=5,
                        help="timed runs of each tool in each series (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each tool before the import and export series "
                             "(default 1)")
    parser.add_argument("--window", type=int, default=16,
                        help="window of our import in the main series (default 16)")
    parser.add_argument("--sweep", type=parse_sweep, default=DEFAULT_SWEEP,
                        help="settings of the diagnostic sweep of our engine, as "
                             "CHUNK_MIB/WINDOW,...; empty to skip (default "
                             f"{DEFAULT_SWEEP})")
    parser.add_argument("--sweep-runs", type=int, default=5,
                        help="runs per setting in the sweep (default 5)")
    parser.add_argument("--osd-size-gib", type=int, default=24,
                        help="size of the OSD's sparse bluestore file (default 24)")
    parser.add_argument("--workdir", default="/var/tmp",
                        help="where the temporary directory for the files goes (default /var/tmp)")
    parser.add_argument("--start-runs", type=int, default=10,
                        help="runs of each tool's start cost on a tiny image (default 10)")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if (args.runs < 1 or args.window < 1 or args.sweep_runs < 1 or args.warmup < 0
            or args.start_runs < 1):
        parser.error("--runs, --window, --sweep-runs and --start-runs must be positive, "
                     "--warmup >= 0")

    started = time.perf_counter()
    env = environment()
    workdir = tempfile.mkdtemp(prefix="bench-datapath-", dir=args.workdir)
    env.update(extra_environment(workdir))
    env["datapath"] = datapath_facts()
    cleanup: dict[str, Any] = {}
    try:
        with bluestore_cluster(args.osd_size_gib, env) as state:
            bench = Bench(state, workdir, args)
            try:
                raw = run(bench, args)
            finally:
                print("cleaning up...", file=sys.stderr)
                cleanup = bench.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        cleanup["workdir_removed"] = not os.path.exists(workdir)
    env["other_ceph_daemons_end"] = other_ceph_daemons()
    with open(datapath.__file__, "rb") as f:
        env["datapath"]["file_changed_during_run"] = (
            hashlib.sha256(f.read()).hexdigest() != env["datapath"]["file_sha256"])
    env["total_seconds"] = time.perf_counter() - started
    return finish("bench_datapath", args, env,
                  lambda: report(env, args, raw, cleanup))


if __name__ == "__main__":
    sys.exit(main())
