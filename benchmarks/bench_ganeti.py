#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Ganeti launch benchmark: an instance cloned from ``origin`` against a blank disk
filled by the OS create script.

Usage (as root; needs the Debian packages ganeti and openssh-server)::

    .venv/bin/python benchmarks/bench_ganeti.py [--rounds 3] [--ceph-conf PATH] [--json out.json]

On a throwaway bluestore cluster (or the running cluster of ``--ceph-conf``,
say one of ``rbd-driver dev-cluster start``) and a one-node Ganeti cluster
(:class:`rbd_driver.testing.ganeti.GanetiCluster`), as the cluster's
non-admin user:

1. imports a 2 GiB golden image holding 1 GiB of data (a marker in its first
   sector) into ``images`` and keeps the same bytes as a local raw file;
2. each round, in an order that alternates (AB, BA, ...), times from
   ``gnt-instance add`` to the guest's console line that shows the marker:

   * ``origin``: ``--disk 0:size=2G,provider=rbd_driver,origin=<golden>`` (a clone);
   * ``blank``: ``--disk 0:size=2G,provider=rbd_driver`` with the OS parameter
     ``image=<raw file>``: the test OS's create script copies the file into the
     disk with ``qemu-img convert`` through ``DISK_0_URI``, as an OS image
     installer would;

   then removes the instance (untimed);
3. prints the medians and their ratio; removes the golden image.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from _benchlib import GIB, MIB, LoadMeter, add_output_args, bluestore_cluster, environment, finish

from rbd_driver.testing.ganeti import GanetiCluster
from rbd_driver.testing.guest import build_guest
from rbd_driver.testing.local_cluster import ClusterState, load_state

GOLDEN_SIZE = 2 * GIB
GOLDEN_DATA = GIB


def _rbd(state: ClusterState, *args: str) -> None:
    subprocess.run(["rbd", "-c", state.conf_path, *args], check=True, capture_output=True,
                   timeout=600)


@contextlib.contextmanager
def _golden(state: ClusterState, directory: str) -> Iterator[dict[str, str]]:
    name = f"bench-gnt-{uuid.uuid4().hex[:6]}"
    marker = f"GOLDEN-{uuid.uuid4().hex[:8]}"
    raw = os.path.join(directory, "golden.raw")
    with open(raw, "wb") as f:
        f.write(marker.encode().ljust(512, b"\0"))
        f.seek(MIB)
        block = os.urandom(MIB)
        for _ in range(GOLDEN_DATA // MIB - 1):
            f.write(block)
        f.truncate(GOLDEN_SIZE)
    _rbd(state, "import", "--no-progress", raw, f"images/{name}")
    _rbd(state, "snap", "create", f"images/{name}@snap")
    _rbd(state, "snap", "protect", f"images/{name}@snap")
    try:
        yield {"name": name, "marker": marker, "raw": raw}
    finally:
        for args in (("snap", "unprotect", f"images/{name}@snap"),
                     ("snap", "purge", f"images/{name}"), ("rm", "--no-progress",
                                                           f"images/{name}")):
            with contextlib.suppress(subprocess.CalledProcessError):
                _rbd(state, *args)


def _launch(ganeti: GanetiCluster, golden: dict[str, str], kind: str) -> float:
    name = f"b{uuid.uuid4().hex[:8]}.example.test"
    disk = "size=2G,provider=rbd_driver,access=userspace"
    started = time.monotonic()
    try:
        if kind == "origin":
            ganeti.add_instance(name, f"{disk},origin={golden['name']}")
        else:
            ganeti.add_instance(name, disk, os_params=f"image={golden['raw']}")
        ganeti.wait_for(name, rf"^disk vda sectors=\d+ data={golden['marker']}$", timeout=600)
        return time.monotonic() - started
    finally:
        ganeti.gnt("gnt-instance", "remove", "--force", "--shutdown-timeout=0", name,
                   check=False)


def _config(state: ClusterState, directory: str) -> str:
    path = os.path.join(directory, "rbd_driver.conf")
    with open(path, "w", encoding="ascii") as f:
        f.write(f"[rbd]\nceph_conf = {state.conf_path}\nuser = {state.user}\n"
                f"keyring = {state.user_keyring}\npool = vms\ngolden_pool = images\n")
    return path


def run(state: ClusterState, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"origin": [], "blank": []}
    with tempfile.TemporaryDirectory(prefix="bench-ganeti-") as directory, \
            _golden(state, directory) as golden, \
            GanetiCluster(build_guest(), _config(state, directory)) as ganeti:
        print(f"Ganeti cluster up in {ganeti.started_seconds:.1f} s", file=sys.stderr)
        for index in range(rounds):
            order = ("origin", "blank") if index % 2 == 0 else ("blank", "origin")
            for kind in order:
                samples[kind].append(_launch(ganeti, golden, kind))
                print(f"round {index + 1} {kind}: {samples[kind][-1]:.2f} s", file=sys.stderr)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ceph-conf", help="use this running cluster instead of starting one")
    add_output_args(parser)
    args = parser.parse_args()
    env = environment()
    if args.ceph_conf:
        state = load_state(args.ceph_conf)
        meter = LoadMeter(state)
        samples = run(state, args.rounds)
        env["load"] = meter.stop()
    else:
        with bluestore_cluster(8, env) as state:
            samples = run(state, args.rounds)

    def report() -> tuple[dict[str, Any], int]:
        origin, blank = statistics.median(samples["origin"]), statistics.median(samples["blank"])
        print(f"gnt-instance add -> guest console line with the golden's marker, "
              f"{args.rounds} rounds:")
        print(f"  origin (clone):            median {origin:.2f} s  {samples['origin']}")
        print(f"  blank + OS create (copy):  median {blank:.2f} s  {samples['blank']}")
        print(f"  ratio blank / origin: {blank / origin:.2f}")
        return {"environment": env, "samples_s": samples,
                "median_s": {"origin": origin, "blank": blank},
                "ratio_blank_over_origin": blank / origin}, 0

    return finish("bench_ganeti", args, env, report)


if __name__ == "__main__":
    sys.exit(main())
