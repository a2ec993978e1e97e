# SPDX-License-Identifier: Apache-2.0
"""Live migration of a running guest: its pause and the migration's length.

One throwaway bluestore cluster, two private libvirt daemons on this machine
(:mod:`rbd_driver.testing.hypervisor`, each its own host UUID), one TCG test
guest booted from a ``direct_fetch`` clone that writes a counter to its disk
without pause (each value with O_DIRECT and fsync to a sector of its own,
printed once written). The guest is live-migrated back and forth
``--migrations`` (8) times over 127.0.0.1 (:mod:`rbd_driver.testing.migration`),
each destination XML made by ``libvirt_info()`` of that host's own
``Backend``. Per migration: libvirt's downtime (the guest paused, from the
completed job's statistics) and total time, the wall time of the call, and
the longest time between two new counter values on the consoles (the pause
as seen from outside, including the guest's own time between two writes).
At the end every printed value must be on the disk (``rbd export`` as
admin): a lost acknowledged write fails the run.

    .venv/bin/python benchmarks/bench_migration.py [--migrations 8]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _benchlib as lib  # noqa: E402

from rbd_driver import imagebackend  # noqa: E402
from rbd_driver.backends.rbd import Rbd  # noqa: E402
from rbd_driver.libvirt import secret as libvirt_secret  # noqa: E402
from rbd_driver.storage.cephx import read_key  # noqa: E402
from rbd_driver.testing.guest import build_guest  # noqa: E402
from rbd_driver.testing.hypervisor import Hypervisor  # noqa: E402
from rbd_driver.testing.local_cluster import ClusterState, make_conf  # noqa: E402
from rbd_driver.testing.migration import CounterWatch, destination_xml, migrate  # noqa: E402

SECTOR = 512
FIRST = 2048


def _counts(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"^RG count (\d+)\s*$", text.replace("\r", ""),
                                       re.MULTILINE)]


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _conf(state: ClusterState, secret_uuid: str) -> Any:
    conf = make_conf(state)
    conf.set_override("secret_uuid", secret_uuid, group="rbd")
    return conf


def run(state: ClusterState, migrations: int, tmp: str) -> dict[str, Any]:
    image = build_guest()
    key = read_key(state.user_keyring, f"client.{state.user}")
    samples: dict[str, list[float]] = {"downtime_ms": [], "total_ms": [], "wall_ms": [],
                                       "longest_gap_ms": []}
    with Hypervisor() as one, Hypervisor() as two:
        secret_uuid = libvirt_secret.define_ceph_secret(state.user, key, conn=one.conn)
        libvirt_secret.define_ceph_secret(state.user, key, secret_uuid=secret_uuid,
                                          conn=two.conn)
        with imagebackend.Backend(_conf(state, secret_uuid)) as b1, \
                imagebackend.Backend(_conf(state, secret_uuid)) as b2:
            driver = b1.driver("rbd")
            url = lib.make_golden(driver, "golden", 64 << 20)
            inst = str(uuid.uuid4())
            disk = b1.by_name(inst, "disk", image_type="rbd")
            disk.direct_fetch("golden", {"disk_format": "raw"}, [{"url": url, "metadata": {}}])
            hosts = [(one, b1), (two, b2)]
            guest = one.boot(image, [disk.libvirt_info()], [f"count:vda:{FIRST}:10000000"])
            consoles = [guest.console_path]
            try:
                guest.wait_for(r"^count 20$", timeout=300)
                for n in range(migrations):
                    dest, backend = hosts[(n + 1) % 2]
                    xml, console = destination_xml(
                        guest, dest, image,
                        [backend.by_name(inst, "disk", image_type="rbd").libvirt_info()])
                    watch = CounterWatch(guest.console_path, console).start()
                    try:
                        result = migrate(guest, dest, xml, console)
                        guest = result.guest
                        consoles.append(console)
                        last = max(_counts(_read(consoles[-2])))
                        guest.wait_for(rf"^count {last + 20}$", timeout=300)
                    finally:
                        watch.stop()
                    samples["downtime_ms"].append(float(result.downtime_ms or 0))
                    samples["total_ms"].append(float(result.total_ms or 0))
                    samples["wall_ms"].append(result.wall_s * 1000.0)
                    samples["longest_gap_ms"].append(watch.longest_gap() * 1000.0)
                    print(f"  migration {n + 1}: downtime {result.downtime_ms} ms, total "
                          f"{result.total_ms} ms, longest gap "
                          f"{watch.longest_gap() * 1000:.0f} ms", file=sys.stderr)
                    time.sleep(1)
            finally:
                guest.destroy()
                time.sleep(1)
            # One console after the other: a line may be cut by a switch-over.
            printed = _counts("".join(_read(path) for path in consoles))
            target = os.path.join(tmp, "disk.raw")
            subprocess.run(["rbd", "-c", state.conf_path, "export", "--no-progress",
                            f"vms/{disk.rbd_name}", target], check=True, capture_output=True,
                           timeout=300)
            with open(target, "rb") as f:
                data = f.read()
            lost = [i for i in printed
                    if data[(FIRST + i) * SECTOR:(FIRST + i) * SECTOR + 9] != b"C%08d" % i]
            gaps = printed != list(range(1, printed[-1] + 1))
            report = Rbd.cleanup_instance(b1.conf, inst, driver=driver)
            driver.remove_image("golden", pool="images")
    return {"samples": samples, "values": len(printed), "lost": lost[:20],
            "lost_count": len(lost), "sequence_gaps": gaps, "cleanup_ok": report.ok}


def report(env: dict[str, Any], args: argparse.Namespace,
           raw: dict[str, Any]) -> tuple[dict[str, Any], int]:
    samples = raw["samples"]
    medians = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\nlive migration of a counting TCG guest (160 MiB RAM), {args.migrations} "
          f"migrations back and forth over 127.0.0.1, median (min-max):")
    for name, label in (("downtime_ms", "downtime (libvirt: guest paused)"),
                        ("total_ms", "total (libvirt job)"),
                        ("wall_ms", "wall time of virDomainMigrate3"),
                        ("longest_gap_ms", "longest gap between counter values")):
        values = samples[name]
        print(f"  {label:40s} {medians[name]:7.0f} ms   ({min(values):.0f}-{max(values):.0f})")
    ok = raw["lost_count"] == 0 and not raw["sequence_gaps"] and raw["cleanup_ok"]
    print(f"\n  {raw['values']} values written and printed; lost: {raw['lost_count']}; "
          f"sequence without gaps: {not raw['sequence_gaps']}; cleanup ok: {raw['cleanup_ok']}")
    doc = {"environment": env, "migrations": args.migrations, "medians": medians, **raw}
    return doc, 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--migrations", type=int, default=8)
    parser.add_argument("--osd-size-gib", type=int, default=8)
    lib.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.migrations < 1:
        parser.error("--migrations must be positive")
    env = lib.environment()
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as tmp, \
            lib.bluestore_cluster(args.osd_size_gib, env) as state:
        raw = run(state, args.migrations, tmp)
    return lib.finish("bench_migration", args, env, lambda: report(env, args, raw))


if __name__ == "__main__":
    sys.exit(main())
