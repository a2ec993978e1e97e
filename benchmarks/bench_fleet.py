# SPDX-License-Identifier: Apache-2.0
"""Fleet scale: bulk cleanup against `rbd rm`, cleanup in a big pool, launch storms.

What a cloud does all day, on one throwaway bluestore cluster, as its
non-admin user, in one run:

1. **Bulk cleanup.** ``--instances`` (100) one-disk instances (clones of a
   golden) removed by ``Rbd.cleanup_instances`` (``[rbd] cleanup_concurrency``
   in flight), against as many disks removed by one ``rbd rm`` process each,
   one after another. ``--rounds`` rounds, alternating which goes first.
   Target: at least 5x the CLI's disks per second.
2. **Cleanup in a big pool.** ``cleanup_instance`` of a one-disk instance in
   pool ``big`` holding ``--pool-images`` (10,000) other images, against the
   same in pool ``small`` (empty but for it), ``--pool-rounds`` times,
   alternating. Target: at most 1.1x slower. A full ``RBD().list`` of the big
   pool is timed alongside to show what the old listing cost.
3. **Launch storm.** ``--hosts`` (4) processes, each a host with its own
   connection, ``--threads`` (8) threads each, ``--launches`` (256)
   ``direct_fetch`` launches from one golden snapshot, with and without
   ``clone_spares``; against the same launches from one thread of one process.
   Launches per second, p50 and p99, and the CPU of the hosts and of the
   cluster's daemons per launch (what limits the storm). The same launches
   from one process with as many threads show whether anything per process
   (our locks, the one connection) limits it.
4. **Image cache under a storm.** ``--hosts`` processes launch at once from an
   image that is not cloneable and not yet cached (``[rbd] image_cache_pool``):
   the number of copies made (must be 1) and each host's first launch time.

    .venv/bin/python benchmarks/bench_fleet.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _benchlib as lib  # noqa: E402

from rbd_driver import imagebackend  # noqa: E402
from rbd_driver.backends.rbd import Rbd  # noqa: E402
from rbd_driver.storage.location import parse_location  # noqa: E402
from rbd_driver.storage.rbd_utils import RBDDriver  # noqa: E402
from rbd_driver.testing.local_cluster import ClusterState, make_conf  # noqa: E402

CACHE_POOL = "cache"


def _admin(state: ClusterState, *args: str) -> None:
    subprocess.run(["ceph", "-c", state.conf_path, *args], check=True, capture_output=True,
                   timeout=120)


def _add_pool(state: ClusterState, pool: str) -> None:
    _admin(state, "osd", "pool", "create", pool, "8")
    _admin(state, "osd", "pool", "application", "enable", pool, "rbd")


def _fill(driver: RBDDriver, pool: str, count: int) -> None:
    """``count`` thin 1 GiB images named filler-N in ``pool``, 16 creates in flight."""
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda i: driver.create(f"filler-{i:05d}", lib.GIB, pool=pool), range(count)))


def _instances(driver: RBDDriver, url: str, count: int, pool: str = "vms") -> list[str]:
    """``count`` one-disk instances cloned from ``url``; return their UUIDs."""
    location = parse_location(url)
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda u: driver.clone(location, f"{u}_disk", pool), uuids))
    return uuids


# -- 1. bulk cleanup -------------------------------------------------------------------


def bulk_cleanup(state: ClusterState, url: str, args: argparse.Namespace) -> dict[str, Any]:
    conf = make_conf(state)
    conf.set_override("cleanup_concurrency", args.concurrency, group="rbd")
    ours: list[float] = []
    cli: list[float] = []
    with RBDDriver.from_conf(conf) as driver:
        for r in range(args.rounds):
            order = ("ours", "cli") if r % 2 == 0 else ("cli", "ours")
            for who in order:
                uuids = _instances(driver, url, args.instances)
                t0 = time.perf_counter()
                if who == "ours":
                    report = Rbd.cleanup_instances(conf, uuids, driver=driver)
                    assert report.ok, report.as_dict()
                    ours.append(time.perf_counter() - t0)
                else:
                    for u in uuids:
                        subprocess.run([*lib.rbd_argv(state), "rm", f"vms/{u}_disk"],
                                       check=True, capture_output=True, timeout=120)
                    cli.append(time.perf_counter() - t0)
                print(f"  bulk cleanup round {r + 1}: {who} {(ours if who == 'ours' else cli)[-1]:.2f} s",
                      file=sys.stderr)
    n = args.instances
    return {"instances": n, "concurrency": args.concurrency,
            "ours_s": ours, "cli_s": cli,
            "ours_disks_per_s": n / statistics.median(ours),
            "cli_disks_per_s": n / statistics.median(cli),
            "speedup": statistics.median(cli) / statistics.median(ours),
            "compare": lib.compare(ours, cli)}


# -- 2. cleanup in a big pool ---------------------------------------------------------


def pool_size(state: ClusterState, url: str, args: argparse.Namespace) -> dict[str, Any]:
    for pool in ("small", "big"):
        _add_pool(state, pool)
    times: dict[str, list[float]] = {"small": [], "big": [], "big_full_list": []}
    with RBDDriver.from_conf(make_conf(state)) as filler:
        t0 = time.perf_counter()
        _fill(filler, "big", args.pool_images)
        fill_s = time.perf_counter() - t0
    print(f"  filled pool big with {args.pool_images} images in {fill_s:.0f} s", file=sys.stderr)
    drivers = {}
    for pool in ("small", "big"):
        conf = make_conf(state, pool=pool)
        drivers[pool] = (conf, RBDDriver.from_conf(conf))
    try:
        for r in range(args.pool_rounds):
            for pool in (("small", "big") if r % 2 == 0 else ("big", "small")):
                conf, driver = drivers[pool]
                inst = str(uuid.uuid4())
                driver.clone(parse_location(url), f"{inst}_disk", pool)
                t0 = time.perf_counter()
                report = Rbd.cleanup_instance(conf, inst, driver=driver)
                times[pool].append(time.perf_counter() - t0)
                assert report.removed == [f"{inst}_disk"], report
            t0 = time.perf_counter()
            listed = drivers["big"][1].list_images("big")
            times["big_full_list"].append(time.perf_counter() - t0)
            assert len(listed) == args.pool_images
        # The pool is emptied later with the cluster; nothing of ours is left in it.
    finally:
        for _, driver in drivers.values():
            driver.close()
    return {"pool_images": args.pool_images, "fill_s": fill_s, "samples_s": times,
            "small_ms": statistics.median(times["small"]) * 1000,
            "big_ms": statistics.median(times["big"]) * 1000,
            "full_list_ms": statistics.median(times["big_full_list"]) * 1000,
            "ratio": statistics.median(times["big"]) / statistics.median(times["small"]),
            "compare": lib.compare(times["big"], times["small"])}


# -- 3. launch storm -------------------------------------------------------------------


def _host(job: dict[str, Any]) -> dict[str, Any]:
    """One host: its own process, conf and connection; ``threads`` launching at once."""
    from oslo_config import cfg

    from rbd_driver import conf as conf_module

    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    conf([], project="rbd_driver", default_config_files=[])
    for key, value in job["conf"].items():
        conf.set_override(key, value, group="rbd")
    latencies: list[float] = []
    firsts: list[float] = []
    uuids = [str(uuid.uuid4()) for _ in range(job["launches"])]
    copies_file = job.get("copies_file")

    def fetch(target: str, **kwargs: Any) -> None:  # the image service download
        with open(copies_file, "a", encoding="ascii") as f:  # type: ignore[arg-type]
            f.write(f"{os.getpid()}\n")
        with open(target, "wb") as f:
            f.truncate(job["image_size"])
            f.write(lib.GOLDEN_DATA)

    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        driver.fsid  # noqa: B018 (connect before the start line)

        def launch(inst: str) -> None:
            disk = backend.by_name(inst, "disk", image_type="rbd")
            t0 = time.perf_counter()
            if job.get("cache"):
                try:
                    disk.direct_fetch(job["image_id"], {"disk_format": "qcow2"}, [])
                except Exception:  # not cloneable and not cached yet: copy once, then clone
                    disk.create_image(fetch, os.path.join(job["tmp"], f"{inst}.raw"),
                                      None, image_id=job["image_id"])
            else:
                disk.direct_fetch("img", lib.RAW, [{"url": job["url"]}])
            elapsed = time.perf_counter() - t0
            latencies.append(elapsed)
            if not firsts:
                firsts.append(elapsed)

        while time.time() < job["start_at"]:
            time.sleep(0.001)
        cpu0, t0 = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(job["threads"]) as ex:
            list(ex.map(launch, uuids))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        driver.wait_spares(120)
    return {"latencies": latencies, "wall": wall, "cpu": cpu, "uuids": uuids,
            "first": firsts[0] if firsts else None}


def _storm(state: ClusterState, hosts: int, threads: int, launches: int,
           conf: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    job = {"conf": conf, "threads": threads, "launches": launches // hosts,
           "start_at": time.time() + 3.0, **(extra or {})}
    daemons0 = lib.own_cpu(state)
    ctx = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with ctx.Pool(hosts) as pool:
        results = pool.map(_host, [job] * hosts)
    outer = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r["latencies"])
    wall = max(r["wall"] for r in results)
    return {"hosts": hosts, "threads": threads, "launches": len(lat),
            "per_s": len(lat) / wall, "wall_s": wall,
            "p50_ms": lib.percentile(lat, 50) * 1000, "p99_ms": lib.percentile(lat, 99) * 1000,
            "hosts_cpu_ms_per_launch": sum(r["cpu"] for r in results) / len(lat) * 1000,
            # own_cpu counts this process, its reaped children (the hosts) and the daemons.
            "all_cpu_ms_per_launch": (lib.own_cpu(state) - daemons0) / len(lat) * 1000,
            "outer_s": outer, "firsts_s": [r["first"] for r in results],
            "uuids": [u for r in results for u in r["uuids"]]}


def storms(state: ClusterState, url: str, args: argparse.Namespace) -> dict[str, Any]:
    base = {"ceph_conf": state.conf_path, "user": state.user, "keyring": state.user_keyring,
            "pool": "vms"}
    out: dict[str, Any] = {}
    # The same 32 launches in flight from one process (one connection) tells
    # whether anything per process (our locks, the connection) limits a storm.
    series = [("one_thread", 1, 1, 0), ("storm", args.hosts, args.threads, 0),
              ("one_process", 1, args.hosts * args.threads, 0),
              ("storm_spares", args.hosts, args.threads, args.spares)]
    for name, hosts, threads, spares in series:
        result = _storm(state, hosts, threads, args.launches,
                        {**base, "clone_spares": spares}, {"url": url})
        uuids = result.pop("uuids")
        report = Rbd.cleanup_instances(make_conf(state), uuids)
        assert report.ok and sum(len(r.removed) for r in report.instances.values()) == len(uuids)
        if spares:
            with RBDDriver.from_conf(make_conf(state)) as driver:
                driver.remove_spares("vms")
        out[name] = result
        print(f"  {name}: {result['per_s']:.1f} launches/s, p50 {result['p50_ms']:.0f} ms, "
              f"p99 {result['p99_ms']:.0f} ms", file=sys.stderr)
    return out


def cache_storm(state: ClusterState, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    _add_pool(state, CACHE_POOL)
    copies = os.path.join(tmp, "copies")
    open(copies, "w").close()
    image_id = f"img-{uuid.uuid4().hex[:8]}"
    conf = {"ceph_conf": state.conf_path, "user": state.user, "keyring": state.user_keyring,
            "pool": "vms", "image_cache_pool": CACHE_POOL}
    result = _storm(state, args.hosts, 1, args.hosts, conf,
                    {"cache": True, "image_id": image_id, "copies_file": copies, "tmp": tmp,
                     "image_size": args.cache_image_mib * lib.MIB})
    with open(copies, encoding="ascii") as f:
        made = len(f.read().split())
    uuids = result.pop("uuids")
    assert Rbd.cleanup_instances(make_conf(state), uuids).ok
    with RBDDriver.from_conf(make_conf(state, pool=CACHE_POOL)) as driver:
        report = driver.remove_image(f"cached-{image_id}", CACHE_POOL)
        assert report.removed, report
    result["copies"] = made
    return result


# -- report -----------------------------------------------------------------------------


def report(env: dict[str, Any], args: argparse.Namespace,
           raw: dict[str, Any]) -> tuple[dict[str, Any], int]:
    targets = []
    if "bulk" in raw:
        b = raw["bulk"]
        print(f"\nBulk cleanup, {b['instances']} one-disk instances, {args.rounds} rounds "
              f"(cleanup_concurrency {b['concurrency']}):")
        print(f"  cleanup_instances   median {statistics.median(b['ours_s']):6.2f} s  "
              f"{b['ours_disks_per_s']:6.1f} disks/s")
        print(f"  rbd rm, one per disk median {statistics.median(b['cli_s']):6.2f} s  "
              f"{b['cli_disks_per_s']:6.1f} disks/s")
        ok = b["speedup"] >= 5
        targets.append(("bulk cleanup >= 5x rbd rm", f"{b['speedup']:.2f}x", ok))
    if "pool" in raw:
        p = raw["pool"]
        print(f"\ncleanup_instance in a pool of {p['pool_images']} images vs an empty pool, "
              f"{args.pool_rounds} rounds:")
        print(f"  empty pool {p['small_ms']:6.1f} ms   big pool {p['big_ms']:6.1f} ms   "
              f"(a full listing of the big pool alone: {p['full_list_ms']:.1f} ms)")
        c = p["compare"]
        ok = p["ratio"] <= 1.1 or c["verdict"] != "slower"
        targets.append(("big pool / empty pool <= 1.1",
                        f"{p['ratio']:.3f} (per round {c['per_round_ratio']:.3f}, noise "
                        f"{c['noise']:.3f}, {c['verdict']})", ok))
    if "storm" in raw:
        print(f"\nLaunch storm, {args.launches} launches from one golden snapshot:")
        print("  series                    launches/s   p50 ms   p99 ms  host CPU ms/launch  "
              "all CPU ms/launch")
        for name, s in raw["storm"].items():
            label = {"one_thread": "1 process x 1 thread",
                     "storm": f"{s['hosts']} hosts x {s['threads']} threads",
                     "one_process": f"1 host x {s['threads']} threads",
                     "storm_spares": f"... with clone_spares {args.spares}"}[name]
            print(f"  {label:26} {s['per_s']:9.1f} {s['p50_ms']:8.1f} {s['p99_ms']:8.1f} "
                  f"{s['hosts_cpu_ms_per_launch']:18.1f} {s['all_cpu_ms_per_launch']:18.1f}")
    if "cache" in raw:
        c = raw["cache"]
        print(f"\nImage cache under a storm of {args.hosts} hosts, image not cached yet "
              f"({args.cache_image_mib} MiB): {c['copies']} copy made; first launch per host "
              + ", ".join(f"{x:.2f} s" for x in sorted(c["firsts_s"])))
        targets.append(("image cache: exactly one copy", str(c["copies"]), c["copies"] == 1))
    print("\nTargets:")
    for what, value, ok in targets:
        print(f"  {what:34} {value:40} {'PASS' if ok else 'FAIL'}")
    doc = {"benchmark": "bench_fleet", "environment": env, "args": vars(args), "results": raw,
           "targets": [{"target": t, "value": v, "pass": ok} for t, v, ok in targets]}
    return doc, 0 if all(ok for _, _, ok in targets) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16,
                        help="[rbd] cleanup_concurrency of the bulk series "
                             "(default 16, the option's default)")
    parser.add_argument("--pool-images", type=int, default=10000)
    parser.add_argument("--pool-rounds", type=int, default=30)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--launches", type=int, default=256)
    parser.add_argument("--spares", type=int, default=8)
    parser.add_argument("--cache-image-mib", type=int, default=256)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["bulk", "pool", "storm", "cache"])
    parser.add_argument("--osd-size-gib", type=int, default=8)
    lib.add_output_args(parser)
    args = parser.parse_args(argv)
    env = lib.environment()
    raw: dict[str, Any] = {}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, \
            lib.bluestore_cluster(args.osd_size_gib, env) as state:
        with RBDDriver.from_conf(make_conf(state)) as driver:
            url = lib.make_golden(driver, "golden", lib.GIB)
        print("measuring...", file=sys.stderr)
        if "bulk" not in args.skip:
            raw["bulk"] = bulk_cleanup(state, url, args)
        if "storm" not in args.skip:
            raw["storm"] = storms(state, url, args)
        if "cache" not in args.skip:
            raw["cache"] = cache_storm(state, args, tmp)
        if "pool" not in args.skip:
            raw["pool"] = pool_size(state, url, args)
    return lib.finish("bench_fleet", args, env, lambda: report(env, args, raw))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
