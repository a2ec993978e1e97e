#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Encrypted disks benchmark: the cost of LUKS by librbd on launch and on reads.

Usage::

    .venv/bin/python benchmarks/bench_encryption.py [--rounds 5] [--osd-size-gib 10]

In one run, on a fresh throwaway bluestore cluster (one OSD on a sparse
file), as the cluster's non-admin cephx user, with the ``file`` key manager:

1. writes a local raw file of 2 GiB whose first 512 MiB are incompressible
   data, and registers it twice as a golden image: plain, and encrypted
   (LUKS2) with secret A (``GoldenImages.register(..., encryption=...)``);
2. each round times, in an order that alternates between rounds:

   * ``plain_clone``: ``direct_fetch`` of a plain disk from the plain golden;
   * ``encrypted_clone``: ``direct_fetch`` of a disk with secret A from the
     encrypted golden (method ``clone``: a CoW clone opened with A); the
     very first one (``encrypted_clone_first``, timed once before the rounds)
     also checks that A opens the golden: one LUKS unlock, whose key
     derivation takes seconds by design, remembered for the process;
   * ``plain_copy``: ``create_image`` of a plain disk from the local file
     (the fallback copy through the data path);
   * ``per_disk_copy``: ``direct_fetch`` of a disk with secret B from the
     encrypted golden (method ``copy``: a new image formatted with B, the
     golden's data read through A and written through B);
   * ``plain_read`` / ``encrypted_read``: a sequential read of the first
     512 MiB (4 MiB requests, 8 in flight) of the plain copy, and through the
     encryption layer of the per-disk copy;
   * ``luks2_format`` / ``luks2_unlock``: ``encryption_format`` and
     ``encryption_load`` alone on an empty 64 MiB image, where a per-disk
     copy's time goes (the bindings are called directly: a probe, not a path
     of the library);

   the disks are removed (untimed) at the end of each round;
3. removes everything, checks the pools are empty and stops the cluster.

Targets (issue 22): encrypted clone within 1.3x a plain clone; per-disk copy
within 1.3x a plain copy (median ratios). Exit status: 0 when both are met,
1 otherwise, 2 when the cleanup left something.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import threading
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
    command_line,
    compare,
    environment,
    finish,
    summarize,
)

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.encryption import DiskEncryption
from rbd_driver.ops.golden import GoldenImages
from rbd_driver.storage import encryption as crypt
from rbd_driver.testing.local_cluster import ClusterState, make_conf

TARGET = 1.3
GOLDEN_SIZE = 2 * GIB
DATA = 512 * MIB
CHUNK = 4 * MIB
READ_WINDOW = 8
SERIES = ("plain_clone", "encrypted_clone", "plain_copy", "per_disk_copy", "plain_read",
          "encrypted_read")


def _golden_file(path: str) -> None:
    with open(path, "wb") as f:
        for offset in range(0, DATA, CHUNK):
            f.write(offset.to_bytes(8, "little") + os.urandom(CHUNK - 8))
        f.truncate(GOLDEN_SIZE)


def _key(directory: str) -> tuple[str, bytes]:
    u, value = str(uuid.uuid4()), os.urandom(24).hex().encode()
    path = os.path.join(directory, u)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return u, value


def _read(image: Any, length: int) -> None:
    """Read ``length`` bytes from the start, ``READ_WINDOW`` requests of ``CHUNK`` in flight."""
    done = threading.Semaphore(0)
    errors: list[int] = []

    def callback(completion: Any, data: bytes | None = None) -> None:
        if completion.get_return_value() < 0:
            errors.append(completion.get_return_value())
        done.release()

    issued = 0
    for offset in range(0, length, CHUNK):
        if issued >= READ_WINDOW:
            done.acquire()
        image.aio_read(offset, CHUNK, callback)
        issued += 1
    for _ in range(min(issued, READ_WINDOW)):
        done.acquire()
    if errors:
        raise RuntimeError(f"read failed: {errors[0]}")


def run(state: ClusterState, args: argparse.Namespace, work: str) -> dict[str, list[float]]:
    keys = os.path.join(work, "keys")
    os.mkdir(keys, 0o700)
    secret_a, pass_a = _key(keys)
    secret_b, pass_b = _key(keys)
    conf = make_conf(state)
    conf.set_override("key_manager", "file", group="encryption")
    conf.set_override("key_dir", keys, group="encryption")
    base = os.path.join(work, "golden.raw")
    print("writing the golden file...", file=sys.stderr)
    _golden_file(base)
    samples: dict[str, list[float]] = {name: [] for name in SERIES}
    samples["encrypted_clone_first"] = []
    samples["luks2_format"], samples["luks2_unlock"] = [], []
    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        print("registering the plain and the encrypted golden...", file=sys.stderr)
        with GoldenImages.from_conf(conf, driver) as images:
            plain = images.register("golden-plain", base)
            enc = images.register("golden-enc", base,
                                  encryption=DiskEncryption("luks2", secret_a))
        # The first encrypted clone of a golden checks its key: one LUKS unlock.
        first = backend.by_name(str(uuid.uuid4()), "disk", "rbd",
                                encryption=DiskEncryption("luks2", secret_a))
        started = time.perf_counter()
        first.direct_fetch("e", RAW, [{"url": enc.location}])
        samples["encrypted_clone_first"] = [time.perf_counter() - started]
        Rbd.cleanup_instance(conf, first.instance_uuid, driver=driver)
        for rnd in range(args.rounds):
            inst = {name: str(uuid.uuid4()) for name in SERIES[:4]}
            disks: dict[str, Rbd] = {
                "plain_clone": backend.by_name(inst["plain_clone"], "disk", "rbd"),
                "encrypted_clone": backend.by_name(
                    inst["encrypted_clone"], "disk", "rbd",
                    encryption=DiskEncryption("luks2", secret_a)),
                "plain_copy": backend.by_name(inst["plain_copy"], "disk", "rbd"),
                "per_disk_copy": backend.by_name(
                    inst["per_disk_copy"], "disk", "rbd",
                    encryption=DiskEncryption("luks2", secret_b)),
            }  # type: ignore[dict-item]
            actions = {
                "plain_clone": functools.partial(disks["plain_clone"].direct_fetch,
                                                 "p", RAW, [{"url": plain.location}]),
                "encrypted_clone": functools.partial(disks["encrypted_clone"].direct_fetch,
                                                     "e", RAW, [{"url": enc.location}]),
                "plain_copy": functools.partial(disks["plain_copy"].create_image,
                                                lambda **kw: None, base, None),
                "per_disk_copy": functools.partial(disks["per_disk_copy"].direct_fetch,
                                                   "e", RAW, [{"url": enc.location}]),
            }
            order = list(actions) if rnd % 2 == 0 else list(reversed(actions))
            for name in order:
                started = time.perf_counter()
                actions[name]()
                samples[name].append(time.perf_counter() - started)
            assert disks["encrypted_clone"].encryption_method == "clone"
            assert disks["per_disk_copy"].encryption_method == "copy"
            client = driver.client
            reads = [("plain_read", disks["plain_copy"].rbd_name, None),
                     ("encrypted_read", disks["per_disk_copy"].rbd_name,
                      crypt.Key("luks2", secret_b, pass_b))]
            for name, image_name, key in (reads if rnd % 2 == 0 else reversed(reads)):
                with crypt.open_encrypted(client, "vms", image_name, key,
                                          read_only=True) as image:
                    started = time.perf_counter()
                    _read(image, DATA)
                    samples[name].append(time.perf_counter() - started)
            # Where a per-disk copy's time goes: LUKS2 format (key slot made with
            # cryptsetup's calibrated key derivation) and one unlock, on an empty image.
            probe = f"probe-{uuid.uuid4().hex[:8]}"
            driver.create(probe, 64 * MIB)
            with client.open_image("vms", probe) as image:
                started = time.perf_counter()
                image.encryption_format(client.rbd.RBD_ENCRYPTION_FORMAT_LUKS2, pass_b)
                samples["luks2_format"].append(time.perf_counter() - started)
            with client.open_image("vms", probe) as image:
                started = time.perf_counter()
                image.encryption_load(client.rbd.RBD_ENCRYPTION_FORMAT_LUKS2, pass_b)
                samples["luks2_unlock"].append(time.perf_counter() - started)
            driver.remove_image(probe)
            print(f"round {rnd + 1}: " + ", ".join(
                f"{k} {v[-1]:.3f}s" for k, v in samples.items()), file=sys.stderr)
            Rbd.cleanup_instances(conf, list(inst.values()), driver=driver)
        del pass_a
        for name in ("golden-plain", "golden-enc"):
            driver.remove_image(name, GOLDEN_POOL)
    return samples


def cleanup_check(state: ClusterState) -> list[str]:
    conf = make_conf(state)
    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        return [f"{pool}/{n}" for pool in ("vms", GOLDEN_POOL) for n in driver.list_images(pool)]


def report(env: dict[str, Any], args: argparse.Namespace, raw: dict[str, list[float]],
           left: list[str]) -> tuple[dict[str, Any], int]:
    series = {key: summarize(values) for key, values in raw.items()}
    pairs = (("encrypted_clone_over_plain_clone", "encrypted_clone", "plain_clone"),
             ("per_disk_copy_over_plain_copy", "per_disk_copy", "plain_copy"),
             ("encrypted_read_over_plain_read", "encrypted_read", "plain_read"))
    comparisons = {name: compare(raw[a], raw[b]) for name, a, b in pairs}
    print(f"\nencrypted disks, {args.rounds} rounds, golden 2 GiB with 512 MiB of data")
    print(f"  {'series':<18}{'median':>10}{'p90':>10}{'min':>10}{'max':>10}")
    for key in (*SERIES, "encrypted_clone_first", "luks2_format", "luks2_unlock"):
        s = series[key]
        print(f"  {key:<18}{s['median_ms']:>9.1f}ms{s['p90_ms']:>8.1f}ms"
              f"{s['min_ms']:>8.1f}ms{s['max_ms']:>8.1f}ms")
    for name, c in comparisons.items():
        print(f"  {name}: {c['ratio']:.2f}x (per round {c['per_round_ratio']:.2f}x, "
              f"noise {c['noise']:.2f}, {c['verdict']})")
    met = {name: comparisons[name]["ratio"] <= TARGET for name in pairs_targeted()}
    for name, ok in met.items():
        print(f"  target {name} <= {TARGET}: {'met' if ok else 'NOT met'}")
    if left:
        print(f"  left behind: {left}")
    doc = {"environment": env, "command": command_line("bench_encryption"),
           "rounds": args.rounds, "series": series, "samples_s": raw, "comparisons": comparisons,
           "targets": met, "left_behind": left}
    return doc, 2 if left else (0 if all(met.values()) else 1)


def pairs_targeted() -> tuple[str, ...]:
    return ("encrypted_clone_over_plain_clone", "per_disk_copy_over_plain_copy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time encrypted disks on a throwaway cluster.")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (5)")
    parser.add_argument("--osd-size-gib", type=int, default=10)
    add_output_args(parser)
    args = parser.parse_args(argv)
    env = environment()
    work = tempfile.mkdtemp(prefix="bench-encryption-")
    try:
        with bluestore_cluster(args.osd_size_gib, env) as state:
            raw = run(state, args, work)
            left = cleanup_check(state)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return finish("bench_encryption", args, env, lambda: report(env, args, raw, left))


if __name__ == "__main__":
    sys.exit(main())
