# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver backup create|ls|verify|prune`` and ``rbd-driver restore``.

The command-line face of :class:`rbd_driver.ops.backup.BackupManager`: the
parsers, the handlers and their text (the contract of :mod:`rbd_driver.cli._common`).
``--backup-dir`` overrides ``[rbd] backup_dir`` and ``--pool`` the pool of
the backed-up image (``[rbd] pool``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.cli._common import Handler, Renderer, Result, UsageError, positive_int
from rbd_driver.cli.errors import CommandError
from rbd_driver.cli.output import fields, human_size, progress_bar, table
from rbd_driver.ops.backup import BackupManager, BackupManifest

__all__ = ["HANDLERS", "TEXT", "add_parsers", "backup", "restore"]


def add_parsers(sub: Any) -> None:
    """Add ``backup`` (with its actions) and ``restore`` to the subparsers ``sub``."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--pool", help="pool of IMAGE (default: [rbd] pool)")
    where.add_argument("--backup-dir", metavar="DIR",
                       help="backup root on secondary storage (default: [rbd] backup_dir)")

    bk = sub.add_parser("backup", help="back up disks to secondary storage, list, verify, prune")
    actions = bk.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[where],
                                help="full (raw, qcow2) or incremental backup of an image")
    create.add_argument("image", metavar="IMAGE", help="RBD image to back up")
    create.add_argument("--incremental", action="store_true",
                        help="only what changed since its latest backup (rbd export-diff format)")
    create.add_argument("--format", choices=("raw", "qcow2"),
                        help="file format of a full backup (default raw, sparse)")
    create.add_argument("--snapshot", help="back up this existing snapshot, which stays yours "
                                           "(default: a new backup snapshot)")
    ls = actions.add_parser("ls", parents=[where], help="backups of an image, oldest first")
    ls.add_argument("image", metavar="IMAGE", help="RBD image (it may since have been removed)")
    verify = actions.add_parser("verify", parents=[where],
                                help="check the files of a backup and of its chain")
    verify.add_argument("image", metavar="IMAGE", help="the image that was backed up")
    verify.add_argument("backup_id", metavar="BACKUP_ID", help="a backup id from 'backup ls'")
    prune = actions.add_parser("prune", parents=[where], help="apply retention now")
    prune.add_argument("image", metavar="IMAGE", help="RBD image whose backups to prune")
    prune.add_argument("--keep", type=positive_int, metavar="N",
                       help="backup snapshots to keep (default: [rbd] backup_retention)")

    rs = sub.add_parser("restore", parents=[where],
                        help="restore a backup (with its chain) into a new image")
    rs.add_argument("image", metavar="IMAGE", help="the image that was backed up")
    rs.add_argument("backup_id", metavar="BACKUP_ID", help="a backup id from 'backup ls'")
    rs.add_argument("new_name", metavar="NEW_NAME", help="name of the new image (must not exist)")
    rs.add_argument("--to-pool", metavar="POOL", help="pool of the new image (default: --pool)")


@contextlib.contextmanager
def _manager(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Iterator[BackupManager]:
    if args.backup_dir:
        conf.set_override("backup_dir", args.backup_dir, group="rbd")
    with imagebackend.Backend(conf) as backend:
        yield BackupManager.from_conf(conf, backend.driver("rbd"))


def _summary(manifest: BackupManifest) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "kind": manifest.kind,
        "format": manifest.format,
        "image": f"{manifest.source['pool']}/{manifest.source['image']}",
        "snapshot": manifest.snapshot["name"],
        "size": manifest.snapshot["size"],
        "parent": manifest.parent["id"] if manifest.parent else None,
        "file": manifest.data_path,
        "file_size": manifest.file["size"],
        "data_bytes": manifest.data_bytes,
        "checksum": f"{manifest.file['checksum']['algorithm']}:"
                    f"{manifest.file['checksum']['value']}",
        "completed_at": manifest.completed_at,
    }


def backup(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    if args.action == "create" and args.incremental and args.format:
        raise UsageError("backup create --incremental takes no --format (it writes the "
                         "rbd export-diff format)")
    with _manager(args, conf) as manager:
        if args.action == "ls":
            found = [_summary(m) for m in manager.list_backups(args.image, args.pool)]
            if not found and not manager.driver.exists(args.image, args.pool):
                pool = args.pool or conf.rbd.pool
                raise CommandError(f"no image {pool}/{args.image} and no backups of it in "
                                   f"{manager.backup_dir}; next: check the name ('rbd-driver ls') "
                                   "and --pool, --backup-dir")
            return found, 0
        if args.action == "verify":
            chain = manager.chain(manager.get_backup(args.image, args.backup_id, args.pool))
            for link in chain:
                manager.verify(link)
            return {"backup": args.backup_id, "verified": [link.id for link in chain]}, 0
        if args.action == "prune":
            report = manager.prune(args.image, args.pool, args.keep)
            return dataclasses.asdict(report), 1 if report.failed else 0
        started = time.monotonic()
        progress = progress_bar(not args.json)
        if args.incremental:
            made = manager.incremental_backup(args.image, pool=args.pool,
                                              snapshot=args.snapshot, progress=progress)
        else:
            made = manager.full_backup(args.image, pool=args.pool, snapshot=args.snapshot,
                                       fmt=args.format or "raw", progress=progress)
        return {**_summary(made), "manifest": made.path,
                "seconds": round(time.monotonic() - started, 2)}, 0


def restore(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with _manager(args, conf) as manager:
        found = manager.get_backup(args.image, args.backup_id, args.pool)
        pool = args.to_pool or args.pool or conf.rbd.pool
        started = time.monotonic()
        manager.restore(found, args.new_name, pool, progress=progress_bar(not args.json))
        size = manager.driver.size(args.new_name, pool)
        chain = [link.id for link in manager.chain(found)]
    return {"image": f"{pool}/{args.new_name}", "size": size, "backup": found.id,
            "chain": chain, "seconds": round(time.monotonic() - started, 2)}, 0




def _backups_table(backups: list[dict[str, Any]]) -> list[str]:
    return table(["ID", "KIND", "FORMAT", "SIZE", "DATA", "PARENT", "COMPLETED"],
                 [[b["id"], b["kind"], b["format"], human_size(b["size"]),
                   human_size(b["data_bytes"]), b["parent"], b["completed_at"]]
                  for b in backups], right=(3, 4))


def _backup_text(result: Any, args: argparse.Namespace) -> list[str]:
    if args.action == "ls":
        return _backups_table(result) if result else []
    if args.action == "verify":
        return [f"backup {result['backup']} verified, with its chain: "
                + ", ".join(result["verified"])]
    return fields(result)


HANDLERS: dict[str, Handler] = {"backup": backup, "restore": restore}
TEXT: dict[str, Renderer] = {"backup": _backup_text, "restore": lambda doc, args: fields(doc)}
