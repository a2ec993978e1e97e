"""What the disk-level ``rbd-driver`` subcommands do; their parser lives in :mod:`rbd_driver.cli`.

Every handler takes the parsed arguments and the loaded ``ConfigOpts`` and
returns ``(result, exit_code)``: a JSON-able result that the CLI prints as
JSON (``--json``) or as text. The operator subcommands built on the library's
managers (``backup``/``restore``, ``golden``, ``provision``) live in
``commands_backup``, ``commands_golden`` and ``commands_provision``, each with
its own parser.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from rbd_driver import collector, imagebackend
from rbd_driver.backends.rbd import Rbd, copy_in, disk_name_for
from rbd_driver.storage.spares import is_spare_name

__all__ = ["HANDLERS", "Handler", "Result", "UsageError", "positive_int", "progress_bar"]

Result = tuple[Any, int]
Handler = Callable[[argparse.Namespace, cfg.ConfigOpts], Result]


class UsageError(Exception):
    """Arguments that parse but do not go together; the CLI exits 2 with this message."""


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def progress_bar(enabled: bool) -> Callable[[int, int], None] | None:
    """A progress bar on stderr when it is a terminal, else nothing."""
    if not enabled or not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        share = done / total if total else 1.0
        rate = done / max(time.monotonic() - started, 1e-6) / (1 << 20)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r[{bar:<30}] {share:6.1%} {done >> 20}/{total >> 20} MiB "
                         f"{rate:7.1f} MiB/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def status(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    pools = args.pool or None
    doc = collector.collect_from_conf(conf, pools=pools, time_bound=args.time_bound,
                                      images=not args.no_images)
    return doc, 0 if doc["cluster"] is not None else 1


def pool_info(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with imagebackend.Backend(conf) as backend:
        info = backend.driver("rbd").get_pool_info(args.pool or conf.rbd.pool)
    return {"pool": args.pool or conf.rbd.pool, **info}, 0


def list_disks(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    pool = args.pool or conf.rbd.pool
    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        disks = [collector.image_usage(driver.client, pool, name)
                 for name in sorted(driver.list_images(pool))
                 if args.all or not is_spare_name(name)]
    return disks, 0


def clone(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(args.instance, args.disk, image_type="rbd")
        started = time.perf_counter()
        disk.direct_fetch(args.image_id or args.url, {"disk_format": "raw"}, [{"url": args.url}])
        assert isinstance(disk, Rbd)
        return {"disk": f"{disk.pool}/{disk.rbd_name}", "parent": disk.parent_info(),
                "ms": round((time.perf_counter() - started) * 1000, 1)}, 0


def import_file(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    pool = args.pool or conf.rbd.pool
    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        started = time.monotonic()
        copy_in(driver, conf, args.file, pool, args.name, progress_bar(not args.json))
        return {"image": f"{pool}/{args.name}", "size": driver.size(args.name, pool),
                "seconds": round(time.monotonic() - started, 2)}, 0


def export_file(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    pool = args.pool or conf.rbd.pool
    with imagebackend.Backend(conf) as backend:
        stats = backend.driver("rbd").export_file(args.name, args.file, pool,
                                                  snapshot=args.snapshot,
                                                  progress=progress_bar(not args.json))
    return {"file": args.file, "bytes": stats.total_bytes, "data_bytes": stats.data_bytes,
            "seconds": round(stats.seconds, 2)}, 0


def snapshot(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(args.instance, args.disk, image_type="rbd")
        assert isinstance(disk, Rbd)
        if args.action == "create":
            disk.create_snap(args.name, protect=args.protect)
        elif args.action == "rollback":
            disk.rollback_to_snap(args.name)
        elif args.action == "rm":
            disk.remove_snap(args.name, force=args.force)
        snaps = disk.driver.list_snaps(disk.rbd_name)
    return {"disk": f"{disk.pool}/{disk.rbd_name}", "snapshots": snaps}, 0


def cleanup(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    """One instance: its CleanupReport. Several: one report, instance by instance."""
    instances = list(dict.fromkeys(args.instance))
    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        if args.dry_run:
            names = {u: driver.list_images_named(disk_name_for(u, "")) for u in instances}
            if len(instances) == 1:
                return {"would_remove": names[instances[0]], "pool": conf.rbd.pool}, 0
            return {"would_remove": names, "pool": conf.rbd.pool}, 0
        report = backend.backend("rbd").cleanup_instances(conf, instances, driver=driver)
    if len(instances) == 1:
        return report.instances[instances[0]].as_dict(), 0 if report.ok else 1
    return report.as_dict(), 0 if report.ok else 1


HANDLERS: dict[str, Handler] = {
    "status": status,
    "pool-info": pool_info,
    "ls": list_disks,
    "clone": clone,
    "import": import_file,
    "export": export_file,
    "snapshot": snapshot,
    "cleanup": cleanup,
}
