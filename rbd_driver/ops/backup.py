# SPDX-License-Identifier: Apache-2.0
"""Backups of instance disks to secondary storage, and restores from them.

A backup is made from a snapshot that stays in the cluster. A *full* backup
writes the snapshot as a sparse RAW file or, through ``qemu-img``, as QCOW2.
An *incremental* backup writes only the extents that changed since the
previous backup's snapshot, in Ceph's own ``rbd export-diff`` stream format,
so ``rbd import-diff`` can restore it too. Every backup gets a JSON manifest
(source, snapshot, parent backup, sizes, checksum, format, timestamps),
written last: a backup without a manifest does not exist.

Layout: ``<backup_dir>/<pool>/<image>/<id>.{raw,qcow2,diff}`` and
``<id>.json``. Files appear only when complete (temporary name, fsync,
rename); a failed backup leaves neither a file nor the snapshot it made.

A restore builds a new image from a full backup and its chain of
incrementals under a temporary name, after checking every file's size and
checksum, and renames it only when all of it was written. Retention keeps
``backup_retention`` backup snapshots on the source and prunes older backups
that no kept one needs.

This module is policy; the data flows through
:mod:`rbd_driver.storage.backup_io`, librbd calls through
:class:`~rbd_driver.storage.rbd_utils.RBDDriver`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

from oslo_concurrency import lockutils
from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.conf import option_default
from rbd_driver.storage import backup_io, convert, diff_format, localfile
from rbd_driver.storage.diff_format import DiffReader
from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["SNAPSHOT_PREFIX", "BackupManager", "BackupManifest", "PruneReport"]

LOG = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "rbd-driver-backup."
MANIFEST_VERSION = 1
_EXTENSIONS = {"raw": "raw", "qcow2": "qcow2", "rbd-diff-v1": "diff"}
Progress = Callable[[int, int], None]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


@dataclasses.dataclass(frozen=True)
class BackupManifest:
    """One backup, as its JSON manifest records it; ``directory`` is where it lives."""

    id: str
    kind: str  # "full" or "incremental"
    format: str  # "raw", "qcow2" or "rbd-diff-v1"
    source: dict[str, Any]  # fsid, pool, image, image_id
    snapshot: dict[str, Any]  # name, id, size, timestamp
    parent: dict[str, Any] | None  # id and snapshot of the previous backup
    file: dict[str, Any]  # name, size, checksum {algorithm, value, of}
    data_bytes: int
    started_at: str
    completed_at: str
    directory: str = dataclasses.field(default="", compare=False)

    @property
    def path(self) -> str:
        """The manifest's path."""
        return os.path.join(self.directory, f"{self.id}.json")

    @property
    def data_path(self) -> str:
        """The backup file's path."""
        return os.path.join(self.directory, self.file["name"])

    def to_json(self) -> str:
        doc = {"version": MANIFEST_VERSION, **dataclasses.asdict(self)}
        del doc["directory"]
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str) -> BackupManifest:
        """Read a manifest.

        :raises BackupCorrupt: not JSON, another version, or fields missing.
        """
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            if doc.pop("version", None) != MANIFEST_VERSION:
                raise ValueError(f"manifest version is not {MANIFEST_VERSION}")
            names = {f.name for f in dataclasses.fields(cls)} - {"directory"}
            if set(doc) != names:
                raise ValueError(f"fields {sorted(set(doc) ^ names)} missing or unknown")
            return cls(**doc, directory=os.path.dirname(os.path.abspath(path)))
        except (OSError, ValueError, TypeError) as err:
            raise exception.BackupCorrupt(path=path, detail=f"bad manifest: {err}") from err


@dataclasses.dataclass
class PruneReport:
    """What retention removed: backup ids (file and manifest), source snapshots, failures."""

    removed_backups: list[str] = dataclasses.field(default_factory=list)
    removed_snapshots: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


class BackupManager:
    """Full and incremental backups of the disks of one driver, and their restores.

    :param driver: the cluster connection (not owned).
    :param backup_dir: secondary storage root.
    :param retention: backup snapshots kept per source disk (>= 1).
    :param checksum: ``crc32`` or ``sha256``.
    :param convert_timeout: seconds ``qemu-img`` may run.
    :param fsync: make every file durable before it appears (``[rbd] backup_fsync``).
    """

    def __init__(self, driver: RBDDriver, backup_dir: str, *,
                 retention: int = option_default("backup_retention"),
                 checksum: str = option_default("backup_checksum"),
                 convert_timeout: int = option_default("convert_timeout"),
                 fsync: bool = option_default("backup_fsync")) -> None:
        if retention < 1:
            raise exception.InvalidArgument(op="backup", target=backup_dir,
                                            detail=f"retention must be at least 1, not {retention}")
        self.driver, self.backup_dir = driver, backup_dir
        self.retention, self.checksum, self.convert_timeout = retention, checksum, convert_timeout
        self.fsync = fsync

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, driver: RBDDriver) -> BackupManager:
        """Build a manager from the ``[rbd]`` backup options."""
        group = conf.rbd
        return cls(driver, group.backup_dir, retention=group.backup_retention,
                   checksum=group.backup_checksum, convert_timeout=group.convert_timeout,
                   fsync=group.backup_fsync)

    # -- where things are ------------------------------------------------------

    def directory(self, image: str, pool: str | None = None) -> str:
        """Return the directory holding the backups of ``pool/image``."""
        return os.path.join(self.backup_dir, pool or self.driver.pool, image)

    def list_backups(self, image: str, pool: str | None = None) -> list[BackupManifest]:
        """Return the backups of ``pool/image``, oldest first.

        :raises BackupCorrupt: a manifest cannot be read.
        """
        directory = self.directory(image, pool)
        try:
            names = [n for n in os.listdir(directory) if n.endswith(".json") and ".part-" not in n]
        except FileNotFoundError:
            return []
        found = [BackupManifest.load(os.path.join(directory, n)) for n in names]
        return sorted(found, key=lambda m: (m.started_at, m.id))

    def get_backup(self, image: str, backup_id: str, pool: str | None = None) -> BackupManifest:
        """Return one backup of ``pool/image``.

        :raises BackupNotFound: / :raises BackupCorrupt:
        """
        directory = self.directory(image, pool)
        path = os.path.join(directory, f"{backup_id}.json")
        if "/" in backup_id or not os.path.isfile(path):
            raise exception.BackupNotFound(backup_id=backup_id, path=directory,
                                           target=f"{pool or self.driver.pool}/{image}")
        return BackupManifest.load(path)

    # -- making backups ----------------------------------------------------------

    def full_backup(self, image: str, *, pool: str | None = None, snapshot: str | None = None,
                    fmt: str = "raw", progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> BackupManifest:
        """Back up ``pool/image`` whole, from ``snapshot`` or a new backup snapshot.

        ``fmt`` is ``raw`` (sparse) or ``qcow2`` (through qemu-img, given only
        the ceph.conf and keyring paths). Retention runs afterwards.

        :raises ImageNotFound: / :raises SnapshotNotFound:
        :raises InvalidArgument: an unknown ``fmt``.
        :raises OperationCancelled: / :raises ImageConversionFailed: / :raises OSError:
            nothing of this backup is left behind, not even its snapshot.
        """
        if fmt not in ("raw", "qcow2"):
            raise exception.InvalidArgument(op="full backup", target=image,
                                            detail=f"format must be raw or qcow2, not {fmt!r}")
        pool = pool or self.driver.pool
        with self._lock(pool, image):
            return self._backup(image, pool, snapshot, fmt, None, progress, cancel)

    def incremental_backup(self, image: str, *, pool: str | None = None,
                           snapshot: str | None = None, progress: Progress | None = None,
                           cancel: threading.Event | None = None) -> BackupManifest:
        """Back up what changed in ``pool/image`` since its latest backup, as an export-diff.

        The new state is ``snapshot`` when given (a snapshot the caller took,
        e.g. with the guest's filesystems frozen; it stays the caller's and
        retention never removes it), else a new backup snapshot.

        :raises BackupChainBroken: there is no previous backup, or its snapshot
            is gone from the source (take a full backup).
        :raises SnapshotNotFound: ``snapshot`` does not exist.
        :raises InvalidArgument: ``snapshot`` is not newer than the latest
            backup's snapshot.
        """
        pool = pool or self.driver.pool
        with self._lock(pool, image):
            backups = self.list_backups(image, pool)
            target = f"{pool}/{image}"
            if not backups:
                raise exception.BackupChainBroken(target=target, backup_id="(none)",
                                                  detail="no previous backup; take a full one")
            parent = backups[-1]
            current = self._identity(pool, image, parent.snapshot["name"], missing_ok=True)
            if current is None or current["snap_id"] != parent.snapshot["id"] or \
                    current["image_id"] != parent.source["image_id"]:
                raise exception.BackupChainBroken(
                    target=target, backup_id=parent.id,
                    detail=f"its snapshot {parent.snapshot['name']} is no longer on the source; "
                           "take a full backup")
            return self._backup(image, pool, snapshot, "rbd-diff-v1", parent, progress, cancel)

    def _lock(self, pool: str, image: str) -> Any:
        # Backups and prunes of one disk take turns in this process; run the
        # backups of a disk from one host only.
        return lockutils.lock(f"rbd-driver-backup-{pool}-{image}")

    def _identity(self, pool: str, image: str, snap: str,
                  missing_ok: bool = False) -> dict[str, Any] | None:
        try:
            info = next(s for s in self.driver.list_snapshots(image, pool) if s.name == snap)
            ident = self.driver.snapshot_identity(RbdLocation(self.driver.fsid, pool, image, snap))
        except (StopIteration, exception.SnapshotNotFound):
            if missing_ok:
                return None
            raise exception.SnapshotNotFound(pool=pool, image=image, snapshot=snap) from None
        return {"snap_id": info.id, "size": info.size, "timestamp": info.timestamp.isoformat(),
                "image_id": ident.image_id if ident else None}

    def _backup(self, image: str, pool: str, snapshot: str | None, fmt: str,
                parent: BackupManifest | None, progress: Progress | None,
                cancel: threading.Event | None) -> BackupManifest:
        started = _now()
        backup_id = (datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
                     + f"-{secrets.token_hex(3)}")
        directory = self.directory(image, pool)
        data_name = f"{backup_id}.{_EXTENSIONS[fmt]}"
        data_path = os.path.join(directory, data_name)
        made_snapshot = snapshot is None
        snapshot = snapshot or f"{SNAPSHOT_PREFIX}{backup_id}"
        with contextlib.ExitStack() as undo:
            if made_snapshot:
                self.driver.create_snap(image, snapshot, pool=pool)
                undo.callback(self._remove_snapshot, pool, image, snapshot)
            ident = self._identity(pool, image, snapshot)
            assert ident is not None
            if parent is not None and ident["snap_id"] <= parent.snapshot["id"]:
                # Only a snapshot the caller gave can be older: a new one is newer.
                raise exception.InvalidArgument(
                    op="incremental backup", target=f"{pool}/{image}@{snapshot}",
                    detail=f"the snapshot must be newer than {parent.snapshot['name']}, "
                           f"the snapshot of the latest backup {parent.id}")
            os.makedirs(directory, mode=0o700, exist_ok=True)  # only once the source is known
            undo.callback(_unlink, data_path)
            client = self.driver.client
            if fmt == "raw":
                stats = backup_io.export_raw(client, pool, image, snapshot, data_path,
                                             checksum=self.checksum, window=self.driver.io_window,
                                             progress=progress, cancel=cancel, sync=self.fsync)
                file_size, digest, of = stats.image_size, stats.checksum, "content"
                data_bytes = stats.data_bytes
            elif fmt == "qcow2":
                if progress is not None:
                    progress(0, ident["size"])
                file_size, digest = backup_io.export_qcow2(
                    client, pool, image, snapshot, data_path, checksum=self.checksum,
                    timeout=self.convert_timeout, sync=self.fsync)
                if progress is not None:
                    progress(ident["size"], ident["size"])
                data_bytes, of = file_size, "file"
            else:
                assert parent is not None
                stats = backup_io.export_diff(client, pool, image, snapshot,
                                              parent.snapshot["name"], data_path,
                                              checksum=self.checksum,
                                              window=self.driver.io_window,
                                              progress=progress, cancel=cancel,
                                              sync=self.fsync)
                file_size, digest, of = stats.file_bytes, stats.checksum, "file"
                data_bytes = stats.data_bytes
            manifest = BackupManifest(
                id=backup_id, kind="full" if parent is None else "incremental", format=fmt,
                source={"fsid": self.driver.fsid, "pool": pool, "image": image,
                        "image_id": ident["image_id"]},
                snapshot={"name": snapshot, "id": ident["snap_id"], "size": ident["size"],
                          "timestamp": ident["timestamp"], "created": made_snapshot},
                parent=None if parent is None else {"id": parent.id,
                                                    "snapshot": parent.snapshot["name"]},
                file={"name": data_name, "size": file_size, "fsynced": self.fsync,
                      "checksum": {"algorithm": self.checksum, "value": digest, "of": of}},
                data_bytes=data_bytes, started_at=started, completed_at=_now(),
                directory=directory)
            with localfile.atomic_file(manifest.path, self.fsync) as (fd, _):
                os.write(fd, manifest.to_json().encode())
            undo.pop_all()
        LOG.info("backup %s of %s/%s@%s: %s %s, %d bytes", backup_id, pool, image, snapshot,
                 manifest.kind, fmt, file_size)
        report = self._prune(image, pool, self.retention)
        for name, why in report.failed.items():
            LOG.error("retention of %s/%s could not remove %s: %s", pool, image, name, why)
        return manifest

    def _remove_snapshot(self, pool: str, image: str, snapshot: str) -> None:
        try:
            self.driver.remove_snap(image, snapshot, force=True, pool=pool)
        except exception.RbdDriverError as err:
            LOG.error("could not remove backup snapshot %s/%s@%s: %s", pool, image, snapshot, err)

    # -- retention ----------------------------------------------------------------

    def prune(self, image: str, pool: str | None = None,
              retention: int | None = None) -> PruneReport:
        """Keep the newest ``retention`` backups' snapshots on the source; remove the
        files and manifests of older backups that no kept backup needs as a parent.

        Backup snapshots without a manifest (left by a crash) are removed too,
        when older than the newest kept one. Returns what was removed and what
        could not be (e.g. a snapshot someone cloned).
        """
        keep = self.retention if retention is None else retention
        if keep < 1:
            raise exception.InvalidArgument(op="prune", target=self.directory(image, pool),
                                            detail=f"retention must be at least 1, not {keep}")
        pool = pool or self.driver.pool
        with self._lock(pool, image):
            return self._prune(image, pool, keep)

    def _prune(self, image: str, pool: str, keep_count: int) -> PruneReport:
        report = PruneReport()
        backups = self.list_backups(image, pool)
        recent = backups[-keep_count:]
        by_id = {b.id: b for b in backups}
        needed: set[str] = set()
        for backup in recent:
            node: BackupManifest | None = backup
            while node is not None and node.id not in needed:
                needed.add(node.id)
                node = by_id.get(node.parent["id"]) if node.parent else None
        for backup in backups:
            if backup.id not in needed:
                try:
                    _unlink(backup.data_path)
                    os.unlink(backup.path)
                    report.removed_backups.append(backup.id)
                except OSError as err:
                    report.failed[backup.id] = str(err)
        kept = {b.snapshot["name"] for b in recent}
        newest = max((b.snapshot["id"] for b in recent), default=-1)
        for snap in self.driver.list_snapshots(image, pool):
            if snap.name.startswith(SNAPSHOT_PREFIX) and snap.name not in kept \
                    and snap.id < newest:
                try:
                    self.driver.remove_snap(image, snap.name, force=True, pool=pool)
                    report.removed_snapshots.append(snap.name)
                except exception.RbdDriverError as err:
                    report.failed[snap.name] = str(err)
        return report

    # -- restoring ------------------------------------------------------------------

    def chain(self, backup: BackupManifest) -> list[BackupManifest]:
        """Return the full backup and incrementals that ``backup`` needs, oldest first.

        :raises BackupChainBroken: a parent manifest is missing or does not match.
        """
        chain = [backup]
        target = f"{backup.source['pool']}/{backup.source['image']}"
        while (link := chain[0].parent) is not None:
            child = chain[0]
            try:
                parent = BackupManifest.load(os.path.join(child.directory, f"{link['id']}.json"))
            except exception.BackupCorrupt as err:
                raise exception.BackupChainBroken(
                    target=target, backup_id=child.id,
                    detail=f"its parent {link['id']} cannot be read: {err}") from err
            if parent.snapshot["name"] != link["snapshot"] or \
                    parent.source != child.source or parent in chain:
                raise exception.BackupChainBroken(
                    target=target, backup_id=child.id,
                    detail=f"its parent {parent.id} is of another source or snapshot")
            chain.insert(0, parent)
        if chain[0].kind != "full" or chain[0].format not in ("raw", "qcow2"):
            raise exception.BackupChainBroken(target=target, backup_id=chain[0].id,
                                              detail="the chain does not start with a full backup")
        return chain

    def verify(self, backup: BackupManifest) -> None:
        """Check the size and checksum of one backup file against its manifest.

        :raises BackupCorrupt: missing, truncated, extended or changed.
        """
        path, expected = backup.data_path, backup.file
        algorithm = expected["checksum"]["algorithm"]
        try:
            size = os.stat(path).st_size
            if size != expected["size"]:
                what = "truncated" if size < expected["size"] else "longer than recorded"
                raise exception.BackupCorrupt(path=path, detail=(
                    f"{what}: {size} bytes, the manifest says {expected['size']}"))
            if expected["checksum"]["of"] == "content":
                digest, _ = diff_format.raw_content_checksum(path, algorithm)
            else:
                digest = diff_format.file_checksum(path, algorithm)
        except OSError as err:
            raise exception.BackupCorrupt(path=path, detail=f"cannot be read: {err}") from err
        if digest != expected["checksum"]["value"]:
            raise exception.BackupCorrupt(path=path, detail=(
                f"{algorithm} checksum is {digest}, the manifest says "
                f"{expected['checksum']['value']}"))

    def restore(self, backup: BackupManifest, name: str, pool: str | None = None, *,
                progress: Progress | None = None,
                cancel: threading.Event | None = None) -> None:
        """Restore ``backup`` (with its chain) into a new image ``pool/name``.

        Every file is verified first; the image is built as
        ``name.restoring-<hex>`` and renamed when complete, and removed on any
        failure, so a failed restore creates no image.

        :raises ImageExists: ``pool/name`` exists.
        :raises BackupChainBroken: / :raises BackupCorrupt: nothing was created.
        :raises OperationCancelled: / :raises RbdDriverError: nothing is left.
        """
        pool = pool or self.driver.pool
        chain = self.chain(backup)
        for link in chain:
            self.verify(link)
        if self.driver.exists(name, pool):
            raise exception.ImageExists(pool=pool, image=name, detail="refusing to overwrite")
        total = chain[0].snapshot["size"] + sum(link.file["size"] for link in chain[1:])
        done = 0

        def report(offset: int) -> Progress:
            return lambda d, _t: progress(offset + d, total) if progress else None

        temp = f"{name}.restoring-{secrets.token_hex(4)}"
        try:
            self._restore_full(chain[0], pool, temp, report(0), cancel)
            done = chain[0].snapshot["size"]
            previous = chain[0]
            for link in chain[1:]:
                with open(link.data_path, "rb") as f:
                    reader = DiffReader(f, link.data_path, link.file["checksum"]["algorithm"])
                    if (reader.header.from_snap, reader.header.to_snap) != (
                            previous.snapshot["name"], link.snapshot["name"]):
                        raise exception.BackupCorrupt(path=link.data_path, detail=(
                            f"it goes from {reader.header.from_snap} to "
                            f"{reader.header.to_snap}, the manifests say "
                            f"{previous.snapshot['name']} to {link.snapshot['name']}"))
                    backup_io.apply_diff(self.driver.client, pool, temp, reader,
                                         window=self.driver.io_window, progress=report(done),
                                         total=link.file["size"], cancel=cancel)
                    if reader.checksum.hexdigest() != link.file["checksum"]["value"]:
                        raise exception.BackupCorrupt(path=link.data_path,
                                                      detail="it changed while being restored")
                done += link.file["size"]
                previous = link
            self.driver.rename(temp, name, pool)
        except BaseException as err:
            leftover = self.driver.remove_image(temp, pool)
            if not leftover.ok:
                err.add_note(f"the temporary image {pool}/{temp} could not be removed: "
                             f"{leftover.left_behind(temp)}")
            raise
        LOG.info("restored backup %s of %s/%s into %s/%s", backup.id, backup.source["pool"],
                 backup.source["image"], pool, name)

    def _restore_full(self, full: BackupManifest, pool: str, name: str, progress: Progress,
                      cancel: threading.Event | None) -> None:
        if full.format == "raw":
            self.driver.import_file(full.data_path, name, pool, progress=progress, cancel=cancel)
            return
        client = self.driver.client
        spec = convert.rbd_spec(pool, name, client.user, client.ceph_conf, client.keyring)
        convert.convert_to_rbd(full.data_path, "qcow2", spec, timeout=self.convert_timeout)
        progress(full.snapshot["size"], full.snapshot["size"])


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
