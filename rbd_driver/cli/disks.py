# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver ls|clone|import|export|snapshot|cleanup``: instance disks and images.

As text, ``ls`` is an aligned table with human sizes (as ``rbd ls -l`` and
``rbd du`` print), ``snapshot`` the disk and a table of its snapshots, and
``cleanup`` one report per instance: each disk removed, trashed (with why),
busy (with who holds it) or failed (with why).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.backends.rbd import Rbd, copy_in, disk_name_for
from rbd_driver.cli._common import Handler, Renderer, Result, UsageError
from rbd_driver.cli.errors import CommandError
from rbd_driver.cli.output import fields, human_size, progress_bar, table
from rbd_driver.ops import collector
from rbd_driver.storage.location import InvalidLocation, parse_location
from rbd_driver.storage.spares import is_spare_name

__all__ = ["HANDLERS", "TEXT", "add_parsers", "cleanup", "cleanup_text", "clone",
           "export_file", "import_file", "list_disks", "ls_text", "snapshot"]


def add_parsers(sub: Any) -> None:
    """Add the disk-level subcommands to the subparsers ``sub``."""
    ls = sub.add_parser("ls", help="disks with parent, provisioned size and used bytes")
    ls.add_argument("--all", action="store_true",
                    help="also list spare clones ([rbd] clone_spares)")
    ls.add_argument("--pool", help="default: [rbd] pool")

    cl = sub.add_parser("clone", help="launch an instance disk from an rbd:// location")
    cl.add_argument("url", help="rbd://fsid/pool/image/snapshot of a raw golden image")
    cl.add_argument("instance", help="instance UUID")
    cl.add_argument("--disk", default="disk", help="disk name (default disk)")
    cl.add_argument("--image-id", help="image id for messages (default: the URL)")

    im = sub.add_parser("import", help="copy a local image file into a new RBD image "
                                       "(qcow2, vmdk... are converted to raw with qemu-img)")
    im.add_argument("file", metavar="FILE", help="local image file: raw, or a format qemu-img "
                                                 "reads (converted)")
    im.add_argument("name", metavar="NAME", help="name of the new RBD image (must not exist)")
    im.add_argument("--pool", help="default: [rbd] pool")

    ex = sub.add_parser("export", help="copy an RBD image or snapshot to a sparse local file")
    ex.add_argument("name", metavar="NAME", help="RBD image to copy")
    ex.add_argument("file", metavar="FILE", help="local file to write (raw, sparse)")
    ex.add_argument("--pool", help="default: [rbd] pool")
    ex.add_argument("--snapshot", help="copy this snapshot of NAME instead of its head")
    ex.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    sn = sub.add_parser("snapshot", help="snapshots of an instance disk")
    actions = sn.add_subparsers(dest="action", required=True, metavar="ACTION")
    disk = argparse.ArgumentParser(add_help=False)
    disk.add_argument("instance", help="instance UUID")
    disk.add_argument("--disk", default="disk", help="disk name (default disk)")
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("name", help="snapshot name")
    create = actions.add_parser("create", parents=[disk, named], help="take a snapshot")
    create.add_argument("--protect", action="store_true", help="protect it (to clone it)")
    actions.add_parser("ls", parents=[disk], help="the disk's snapshots, with when each was taken")
    actions.add_parser("rollback", parents=[disk, named],
                       help="roll the disk back to a snapshot (the guest must be stopped)")
    rm = actions.add_parser("rm", parents=[disk, named], help="remove a snapshot")
    rm.add_argument("--force", action="store_true", help="unprotect it first")

    cu = sub.add_parser("cleanup", help="remove every disk of one or more instances")
    cu.add_argument("instance", nargs="+",
                    help="instance UUID; several are cleaned up concurrently "
                         "([rbd] cleanup_concurrency disks at once)")
    cu.add_argument("--dry-run", action="store_true", help="only list what would go")




def list_disks(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    pool = args.pool or conf.rbd.pool
    with imagebackend.Backend(conf) as backend:
        driver = backend.driver("rbd")
        disks = [collector.image_usage(driver.client, pool, name)
                 for name in sorted(driver.list_images(pool))
                 if args.all or not is_spare_name(name)]
    return disks, 0


def clone(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    try:
        wanted = parse_location(args.url)
    except InvalidLocation as err:
        raise UsageError(f"clone: {err}") from None
    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(args.instance, args.disk, image_type="rbd")
        assert isinstance(disk, Rbd)
        where = f"{disk.pool}/{disk.rbd_name}"
        if disk.exists():  # a clone never replaces a disk: say so rather than do nothing
            parent = disk.parent_info()
            asked = (wanted.pool, wanted.image, wanted.snapshot)
            if parent is None or tuple(parent) != asked:
                have = "{}/{}@{}".format(*parent) if parent else "no parent (a full copy)"
                raise CommandError(
                    f"disk {where} already exists, with {have}, not "
                    f"{asked[0]}/{asked[1]}@{asked[2]}; next: rbd-driver cleanup "
                    f"{args.instance} first, or choose another --disk")
            return {"disk": where, "parent": parent, "existed": True, "ms": 0.0}, 0
        started = time.perf_counter()
        disk.direct_fetch(args.image_id or args.url, {"disk_format": "raw"}, [{"url": args.url}])
        return {"disk": where, "parent": disk.parent_info(), "existed": False,
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
    target = os.path.abspath(args.file)
    if not os.path.isdir(os.path.dirname(target)):
        raise CommandError(f"directory {os.path.dirname(target)} of {args.file} does not "
                           "exist; next: create it, or name a file in an existing directory")
    if os.path.lexists(args.file) and not args.force:
        raise CommandError(f"{args.file} exists; next: pass --force to overwrite it")
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


def _count_removals(driver: Any, instances: list[str], bar: Any) -> None:
    """Make each disk removal of this (command-private) driver advance ``bar``."""
    total = sum(len(driver.list_images_named(disk_name_for(u, ""))) for u in instances)
    remove, lock, done = driver.remove_image, threading.Lock(), [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return remove(*args, **kwargs)
        finally:
            with lock:
                done[0] += 1
                bar(min(done[0], total), total)

    if total:
        driver.remove_image = counted


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
        bar = progress_bar(not args.json, unit="disks") if len(instances) > 1 else None
        if bar is not None:
            _count_removals(driver, instances, bar)
        report = backend.backend("rbd").cleanup_instances(conf, instances, driver=driver)
    if len(instances) == 1:
        return report.instances[instances[0]].as_dict(), 0 if report.ok else 1
    return report.as_dict(), 0 if report.ok else 1


# -- text ------------------------------------------------------------------------


def ls_text(disks: list[dict[str, Any]], args: argparse.Namespace | None = None) -> list[str]:
    """Return the disks as a table: NAME, SIZE (provisioned), USED, PARENT."""
    if not disks:
        return []
    return table(["NAME", "SIZE", "USED", "PARENT"],
                 [[d["name"], human_size(d["provisioned"]), human_size(d["used"]), d["parent"]]
                  for d in disks], right=(1, 2))


def _snapshot_text(doc: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [f"disk:  {doc['disk']}"]
    if not doc["snapshots"]:
        return lines + ["snapshots: none"]
    return lines + [""] + table(
        ["SNAPSHOT", "SIZE", "PROTECTED", "TIMESTAMP"],
        [[s["name"], human_size(s["size"]), "yes" if s["protected"] else "no", s["timestamp"]]
         for s in doc["snapshots"]], right=(1,))


def _instance_report(report: dict[str, Any]) -> list[str]:
    """One instance's cleanup: a line per disk, with why or who when it stayed."""
    lines = [f"removed  {name}" for name in report.get("removed", [])]
    for key, what in (("trashed", "why"), ("busy", "held by"), ("failed", "why")):
        lines += [f"{key:<8} {name}  ({what}: {reason})"
                  for name, reason in report.get(key, {}).items()]
    return lines or ["nothing to remove"]


def cleanup_text(doc: dict[str, Any], args: argparse.Namespace | None = None) -> list[str]:
    """Return a cleanup (or ``--dry-run``) result as lines, one report per instance."""
    if "would_remove" in doc:
        would = doc["would_remove"]
        per = would if isinstance(would, dict) else {None: would}
        lines = []
        for instance, names in per.items():
            if instance is not None:
                lines.append(f"instance {instance}:")
            prefix = "  " if instance is not None else ""
            lines += [f"{prefix}would remove  {doc['pool']}/{n}" for n in names] or [
                f"{prefix}nothing to remove"]
        return lines
    if "instances" not in doc:
        return _instance_report(doc)
    lines = []
    for instance, report in doc["instances"].items():
        left = bool(report.get("busy") or report.get("failed"))
        lines.append(f"instance {instance}: {'disks left behind' if left else 'ok'}")
        lines += ["  " + line for line in _instance_report(report)]
    return lines


HANDLERS: dict[str, Handler] = {
    "ls": list_disks,
    "clone": clone,
    "import": import_file,
    "export": export_file,
    "snapshot": snapshot,
    "cleanup": cleanup,
}


def _clone_text(doc: dict[str, Any], args: argparse.Namespace) -> list[str]:
    parent = doc.get("parent")
    if isinstance(parent, (list, tuple)) and len(parent) == 3:
        parent = "{}/{}@{}".format(*parent)
    return fields({**doc, "parent": parent})


TEXT: dict[str, Renderer] = {
    "ls": ls_text,
    "clone": _clone_text,
    "import": lambda doc, args: fields(doc),
    "export": lambda doc, args: fields(doc),
    "snapshot": _snapshot_text,
    "cleanup": cleanup_text,
}
