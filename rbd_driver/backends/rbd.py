"""Rbd: instance disks as RBD images. Clone when possible, copy when not.

This module is policy. It decides whether an image location may be cloned
(:meth:`Rbd.check_location`), when to fall back to a copy, and how disks are
named and cleaned up. The Ceph calls themselves are in
:class:`rbd_driver.storage.rbd_utils.RBDDriver`.

Disk names are ``<instance_uuid>_<disk_name>`` in ``[rbd] pool``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from oslo_concurrency import lockutils
from oslo_config import cfg

from rbd_driver import exception, imagebackend
from rbd_driver.backends import clone_depth, encrypted, instance_snapshot, qos
from rbd_driver.libvirt import disk_xml
from rbd_driver.storage import convert, formats, krbd, rados_lock
from rbd_driver.storage.location import InvalidLocation, RbdLocation, parse_location
from rbd_driver.storage.rbd_utils import CleanupReport, RBDDriver, SnapshotIdentity

__all__ = ["InstancesCleanupReport", "Rbd", "copy_in", "disk_name_for"]

LOG = logging.getLogger(__name__)

# Names of the disk locks the current thread holds.
_held_locks = threading.local()

# Format verdicts of golden snapshots, keyed by (fsid, SnapshotIdentity).
VERDICT_CACHE_SIZE = 4096
_verdicts: dict[Any, tuple[str, int]] = {}
_verdicts_lock = threading.Lock()


@dataclasses.dataclass
class InstancesCleanupReport:
    """What a bulk cleanup did, instance by instance."""

    instances: dict[str, CleanupReport]

    @property
    def ok(self) -> bool:
        """True when no instance left a disk behind."""
        return all(report.ok for report in self.instances.values())

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok,
                "instances": {u: report.as_dict() for u, report in self.instances.items()}}


def disk_name_for(instance_uuid: str, disk_name: str) -> str:
    """Return the RBD image name of an instance's disk."""
    return f"{instance_uuid}_{disk_name}"


class Rbd(qos.QosMixin, imagebackend.Image):
    """An instance disk kept as an RBD image in ``[rbd] pool``."""

    driver: RBDDriver
    supports_encryption = True

    def __init__(self, instance_uuid: str, disk_name: str, conf: cfg.ConfigOpts,
                 driver: RBDDriver | None = None, encryption: Any = None) -> None:
        super().__init__(instance_uuid, disk_name, conf, driver, encryption)
        self.pool = self.driver.pool
        self.rbd_name = disk_name_for(instance_uuid, disk_name)

    @classmethod
    def make_driver(cls, conf: cfg.ConfigOpts) -> RBDDriver:
        return RBDDriver.from_conf(conf)

    # -- identity -------------------------------------------------------------

    @property
    def path(self) -> str:
        """``rbd:pool/name:id=user:conf=path``; never holds a key."""
        return convert.rbd_spec(self.pool, self.rbd_name, self.conf.rbd.user,
                                self.conf.rbd.ceph_conf)

    def exists(self) -> bool:
        return self.driver.exists(self.rbd_name)

    def get_disk_size(self, name: str | None = None) -> int:
        """Return the size in bytes that librbd reports.

        ``name`` may be this disk's :attr:`path`, an ``rbd:pool/image[:...]``
        spec, ``pool/image``, or an image name in ``[rbd] pool``; default this disk.

        :raises ImageNotFound: no such image.
        """
        pool, image = self._split_name(name)
        if self.encryption is not None and (pool, image) == (self.pool, self.rbd_name):
            return encrypted.guest_size(self)  # what the guest sees, the header left out
        return self.driver.size(image, pool)

    def _split_name(self, name: str | None) -> tuple[str, str]:
        if not name:
            return self.pool, self.rbd_name
        if name.startswith("rbd:"):
            name = name[4:]
            # Cut the options at the first unescaped ':'.
            out, escaped = [], False
            for ch in name:
                if escaped:
                    out.append(ch)
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == ":":
                    break
                else:
                    out.append(ch)
            name = "".join(out)
        if "/" in name:
            pool, image = name.split("/", 1)
            return pool, image
        return self.pool, name

    # -- direct_fetch: clone when every check passes --------------------------

    def check_location(self, url: Any, image_meta: dict[str, Any], max_size: int = 0) -> RbdLocation:
        """Return the parsed location if it can be cloned; otherwise raise with the reason.

        The checks, in order: the URL is a valid ``rbd://fsid/pool/image/snap``;
        the fsid is this cluster's; ``disk_format`` is raw; the snapshot
        opens read-only with our cephx user; its first bytes are raw, not
        another format; its size is within ``max_size`` (when non-zero).

        :raises ValueError: with a sentence a person can act on.
        """
        return self._check_location(url, image_meta, max_size)[0]

    def _check_location(self, url: Any, image_meta: dict[str, Any], max_size: int = 0,
                        accept: tuple[str, ...] = ("raw", "iso"),
                        ) -> tuple[RbdLocation, SnapshotIdentity | None]:
        """:meth:`check_location`, also returning the snapshot's identity (None if unknown)."""
        if not isinstance(url, str):
            raise ValueError(f"location URL {url!r} is not a string")
        try:
            location = parse_location(url)
        except InvalidLocation as err:
            raise ValueError(f"malformed location: {err}") from None
        if location.fsid != self.driver.fsid:
            raise ValueError(
                f"it is in cluster {location.fsid}, not in this cluster {self.driver.fsid}")
        disk_format = (image_meta or {}).get("disk_format")
        if disk_format != "raw":
            raise ValueError(f"disk_format is {disk_format!r}, and only 'raw' can be cloned")
        try:
            found, size, identity = self._sniff(location)
        except exception.RbdDriverError as err:
            raise ValueError(
                f"snapshot {location.pool}/{location.image}@{location.snapshot} cannot be "
                f"opened read-only as client.{self.conf.rbd.user or 'admin'}: {err}") from None
        if found == "luks" and "luks" not in accept:
            raise ValueError("the data is luks, an encrypted image: ask for the disk with "
                             "encryption=DiskEncryption(...); it is never made a plaintext disk")
        # An ISO is plain bytes to QEMU, so it is as safe as raw.
        if found not in accept:
            raise ValueError(
                f"disk_format says raw but the data is {found}; cloning it would "
                "let QEMU interpret it as raw")
        if max_size and size > max_size:
            raise ValueError(f"the image is {size} bytes, more than max_size {max_size}")
        return location, identity

    def _sniff(self, location: RbdLocation) -> tuple[str, int, SnapshotIdentity | None]:
        """Return (format, size, identity) of a snapshot, the format remembered by identity.

        The identity (image id, snapshot id) comes from two small reads that
        need the same caps as opening the snapshot, so a cache hit still
        proves the snapshot is readable. A snapshot's bytes never change and
        a recreated image or snapshot gets new ids, so a verdict is never stale.
        """
        identity = self.driver.snapshot_identity(location)
        key = (self.driver.fsid, identity) if identity else None
        if key is not None:
            with _verdicts_lock:
                cached = _verdicts.get(key)
            if cached is not None:
                return cached[0], cached[1], identity
        head, tail, size = self.driver.read_edges(location, formats.HEADER_BYTES,
                                                  formats.TAIL_BYTES)
        found = formats.detect_format(head, tail)
        if found.startswith("qcow"):
            backing = formats.qcow2_backing_file(head)
            if backing:
                found += f" with backing file {backing[:200]!r}"
        if key is not None:
            with _verdicts_lock:
                if len(_verdicts) >= VERDICT_CACHE_SIZE:
                    _verdicts.pop(next(iter(_verdicts)))
                _verdicts[key] = (found, size)
        return found, size, identity

    @qos.with_default_qos
    def direct_fetch(self, image_id: str, image_meta: dict[str, Any],
                     image_locations: list[dict[str, Any]], max_size: int = 0) -> None:
        """Clone the first cloneable location into this disk; see :meth:`check_location`.

        Does nothing if the disk already exists. With ``[rbd] clone_spares``
        set, the disk is a spare clone of the snapshot taken by a rename when
        one is ready (see :mod:`rbd_driver.storage.spares`), and a background
        refill is asked for; otherwise it is cloned here.

        The clone-depth policy applies (see :mod:`rbd_driver.backends.clone_depth`):
        a disk deeper than ``[rbd] max_clone_depth`` is flattened before this
        returns, one deeper than ``clone_depth_soft_limit`` in the background.

        :raises ImageUnacceptable: no location qualified; the message gives each
            location's reason, and nothing was created.
        """
        with self._disk_lock():
            if self.exists():
                LOG.debug("%s exists; direct_fetch of %s skipped", self.rbd_name, image_id)
                return
            if self.encryption is not None:  # clone or per-disk copy: backends/encrypted.py
                encrypted.direct_fetch(self, image_id, image_meta, image_locations, max_size)
                return
            reasons = []
            for index, loc in enumerate(image_locations or []):
                url = loc.get("url") if isinstance(loc, dict) else None
                try:
                    location, identity = self._check_location(url, image_meta, max_size)
                except ValueError as err:
                    reasons.append(f"location {index + 1} ({_shorten(url)}): {err}")
                    continue
                spares = self.conf.rbd.clone_spares if identity is not None else 0
                try:
                    spare = self._claim_spare(identity, spares)
                    if spare is None:
                        self.driver.clone(location, self.rbd_name)
                except exception.ImageExists:
                    return  # created meanwhile by another process: same outcome
                except exception.RbdDriverError as err:
                    reasons.append(f"location {index + 1} ({_shorten(url)}): clone failed: {err}")
                    continue
                try:
                    self._limit_depth(location, identity)
                except exception.RbdDriverError as err:
                    reasons.append(f"location {index + 1} ({_shorten(url)}): flatten failed: {err}")
                    continue
                if spares:
                    assert identity is not None
                    self._refill_spares(location, identity, spares)
                if spare is not None:
                    LOG.info("took spare clone %s of %s as %s for image %s", spare,
                             location.url, self.rbd_name, image_id)
                else:
                    LOG.info("cloned %s from %s for image %s", self.rbd_name, location.url,
                             image_id)
                return
            if self.conf.rbd.image_cache_pool and image_id:
                cached = self._cache_location(image_id)
                if self._is_cached(cached):
                    self.driver.clone(cached, self.rbd_name)
                    LOG.info("cloned %s from the cached %s", self.rbd_name, cached.url)
                    return
            if not reasons:
                reasons.append("no locations were given")
            raise exception.ImageUnacceptable(image_id=image_id, reason="; ".join(reasons))

    def _limit_depth(self, location: RbdLocation, identity: SnapshotIdentity | None) -> None:
        """Apply the clone-depth policy to this new disk (see :mod:`.clone_depth`).

        :raises RbdDriverError: flattening failed; the disk was removed.
        """
        depth = clone_depth.launch_depth(self.driver, self.conf, location, identity)
        try:
            clone_depth.apply_policy(self.driver, self.conf, self.pool, self.rbd_name, depth)
        except BaseException as err:
            report = self.driver.remove_image(self.rbd_name)
            if not report.ok:
                err.add_note(f"{self.pool}/{self.rbd_name} was left behind: {report.failed}")
            raise

    def _claim_spare(self, identity: SnapshotIdentity | None, spares: int) -> str | None:
        """Rename a spare clone of ``identity`` to this disk; return its old name, or
        None when there is none (or spares are off, or taking one failed: then
        the caller clones, which reports a real problem of the cluster).

        :raises ImageExists: this disk exists.
        """
        if not spares or identity is None:
            return None
        try:
            return self.driver.spares.claim(identity, self.rbd_name, self.pool)
        except exception.ImageExists:
            raise
        except exception.RbdDriverError as err:
            LOG.warning("could not take a spare clone for %s; cloning instead: %s",
                        self.rbd_name, err)
            return None

    def _refill_spares(self, location: RbdLocation, identity: SnapshotIdentity,
                       spares: int) -> None:
        """Ask the driver's worker to bring the spares of ``identity`` back to ``spares``."""
        try:
            self.driver.spares.refill(location, identity, spares, self.pool)
        except Exception as err:  # the launch itself succeeded (say, the interpreter is exiting)
            LOG.warning("could not schedule spare clones of %s: %s", location.url, err)

    # -- create_image: the fallback copy ---------------------------------------

    @contextlib.contextmanager
    def _disk_lock(self) -> Iterator[None]:
        """Serialise creation of this disk across threads; re-entrant per thread.

        Re-entrant because ``create_image`` holds it while the caller's
        ``prepare_template`` may call ``direct_fetch`` on the same disk.
        """
        name = f"rbd-driver-disk-{self.pool}-{self.rbd_name}"
        held: set[str] = _held_locks.__dict__.setdefault("names", set())
        if name in held:
            yield
            return
        with lockutils.lock(name):
            held.add(name)
            try:
                yield
            finally:
                held.discard(name)

    @qos.with_default_qos
    def create_image(self, prepare_template: Callable[..., Any], base: str,
                     size: int | None, *args: Any, **kwargs: Any) -> None:
        """See :meth:`~rbd_driver.imagebackend.Image.create_image`. The copy goes through librbd, sparse.

        With ``[rbd] image_cache_pool`` set and ``image_id`` among the
        keyword arguments, the image is imported once into the cache pool
        (under a cluster-wide lock) and the disk is cloned from it.
        A non-raw download (qcow2, vmdk...) is converted with qemu-img.
        ``progress=callable(done, total)`` follows the copy.

        :raises DiskSizeTooSmall: ``size`` is below the image's size (checked
            before copying a local file, so nothing is created).
        :raises ImageConversionFailed: the download is unsafe or unconvertible.
        """
        progress = kwargs.pop("progress", None)
        image_id = kwargs.get("image_id")
        with self._disk_lock():
            if (not self.exists() and self.conf.rbd.image_cache_pool and image_id
                    and self.encryption is None):  # the cache holds plain goldens
                location = self._cached_golden(image_id, prepare_template, base, args, kwargs,
                                               progress)
                self.driver.clone(location, self.rbd_name)
            if not self.exists():
                prepare_template(*args, target=base, **kwargs)
            if not self.exists():
                base_size = os.path.getsize(base)
                if size and size < base_size:
                    raise exception.DiskSizeTooSmall(size=size, pool=self.pool,
                                                     image=self.rbd_name, current=base_size)
                self._copy_in(base, progress)
            if size:
                self.resize_image(size)

    # -- copy once, then clone ------------------------------------------------------

    def _cache_location(self, image_id: str) -> RbdLocation:
        return RbdLocation(self.driver.fsid, self.conf.rbd.image_cache_pool,
                           f"cached-{image_id}", "snap")

    def _is_cached(self, location: RbdLocation) -> bool:
        try:
            self.driver.snapshot_identity(location)
        except (exception.ImageNotFound, exception.SnapshotNotFound):
            return False
        return True

    def _cached_golden(self, image_id: str, prepare_template: Callable[..., Any], base: str,
                       args: tuple[Any, ...], kwargs: dict[str, Any],
                       progress: Callable[[int, int], None] | None) -> RbdLocation:
        """Return the cache's golden snapshot of ``image_id``, importing it once.

        Only one host imports: the others wait on the cluster-wide lock and
        find the golden ready. The golden is built under a temporary name
        (copy, snapshot, protect) and renamed last, so the final name never
        holds a half-made golden.
        """
        location = self._cache_location(image_id)
        if self._is_cached(location):
            return location
        pool, name = location.pool, location.image
        with rados_lock.cluster_lock(self.driver.client, pool, f"rbd_driver_lock.{name}",
                                     timeout=self.conf.rbd.image_cache_lock_timeout,
                                     lease=self.conf.rbd.image_cache_lock_lease):
            if self._is_cached(location):
                return location  # another host imported it while we waited
            if self.driver.exists(name, pool):
                # Left by an import that died after its rename; we hold the lock.
                self.driver.remove_image(name, pool)
            prepare_template(*args, target=base, **kwargs)
            temp = f"{name}.caching-{uuid.uuid4().hex[:8]}"
            copy_in(self.driver, self.conf, base, pool, temp, progress)
            try:
                self.driver.create_snap(temp, "snap", protect=True, pool=pool)
                self.driver.rename(temp, name, pool)
            except BaseException:
                self.driver.remove_image(temp, pool)
                raise
            LOG.info("imported image %s once into %s/%s", image_id, pool, name)
        return location

    def _copy_in(self, base: str, progress: Callable[[int, int], None] | None) -> None:
        if self.encryption is None:
            copy_in(self.driver, self.conf, base, self.pool, self.rbd_name, progress)
        else:
            encrypted.copy_in(self, base, progress)

    def resize_image(self, size: int) -> None:
        if self.encryption is not None:
            encrypted.resize(self, size)
            return
        current = self.get_disk_size()
        if size < current:
            raise exception.DiskSizeTooSmall(size=size, pool=self.pool, image=self.rbd_name,
                                             current=current)
        if size > current:
            self.driver.resize(self.rbd_name, size)
            self.refresh_qos()

    # -- snapshots and lifecycle ------------------------------------------------

    def create_snap(self, name: str, protect: bool = False) -> None:
        self.driver.create_snap(self.rbd_name, name, protect=protect)

    def remove_snap(self, name: str, force: bool = False) -> None:
        self.driver.remove_snap(self.rbd_name, name, force=force)

    def rollback_to_snap(self, name: str) -> None:
        self.driver.rollback_to_snap(self.rbd_name, name)

    def flatten(self) -> None:
        self.driver.flatten(self.rbd_name)

    def parent_info(self) -> tuple[str, str, str] | None:
        """Return (pool, image, snapshot) of the golden image, or None when flat."""
        return self.driver.parent_info(self.rbd_name)

    # -- instance snapshots to golden images (backends/instance_snapshot.py) ------

    def direct_snapshot(self, snapshot_name: str, image_format: str, image_id: str,
                        parent_pool: str | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        cancel: threading.Event | None = None) -> str:
        """Make this disk a new golden image ``image_id`` inside the cluster; return
        its ``rbd://fsid/pool/image_id/snap`` location, cloneable by :meth:`direct_fetch`.

        The image pool is ``parent_pool``, else the pool of this disk's parent,
        else ``[rbd] snapshot_pool``. Atomic: on any failure, ^C or SIGTERM
        nothing is left. ``progress(done, total)`` follows the data copied.
        See :mod:`rbd_driver.backends.instance_snapshot`.

        :raises ImageUnacceptable: ``image_format`` is not ``raw``, or no pool is
            known; nothing was made (fall back to ``snapshot_extract``).
        :raises PermissionDenied: the user lacks ``profile rbd`` on the image pool.
        """
        return instance_snapshot.direct_snapshot(self, snapshot_name, image_format, image_id,
                                                 parent_pool, progress=progress, cancel=cancel)

    def cleanup_direct_snapshot(self, location: str, also_destroy_volume: bool = False,
                                ignore_errors: bool = False) -> None:
        """Remove the snapshot at ``location`` (with ``also_destroy_volume``, its whole
        image); see :func:`rbd_driver.backends.instance_snapshot.cleanup_direct_snapshot`."""
        instance_snapshot.cleanup_direct_snapshot(self, location, also_destroy_volume,
                                                  ignore_errors)

    def remove(self) -> None:
        """Remove this disk and its snapshots (a missing disk counts as removed).

        A disk that a client has open (a guest here or on another host, or a
        krbd device of this host that is still held) is left in place.

        :raises ImageInUse: it is in use; nothing was changed.
        :raises CleanupFailed: it could be neither removed nor trashed.
        """
        busy = _unmap_kernel_mappings(self.conf, self.driver, self.pool,
                                      lambda name: name == self.rbd_name)
        if busy:
            raise exception.ImageInUse(pool=self.pool, image=self.rbd_name,
                                       watchers=busy[self.rbd_name])
        report = self.driver.remove_image(self.rbd_name)
        if self.rbd_name in report.busy:
            raise exception.ImageInUse(pool=self.pool, image=self.rbd_name,
                                       watchers=report.busy[self.rbd_name])
        if report.failed:
            raise exception.CleanupFailed(pool=self.pool, image=self.rbd_name,
                                          detail=report.failed[self.rbd_name])

    @classmethod
    def cleanup_instance(cls, conf: cfg.ConfigOpts, instance_uuid: str,
                         driver: RBDDriver | None = None) -> CleanupReport:
        """Remove every disk ``<instance_uuid>_*`` in ``[rbd] pool``, through librbd.

        Returns the report: removed, trashed (with why), busy (in use, with
        who: left in place, never trashed) and failed (with why). A disk left
        behind is also logged; it is never only a log line. The disks are
        found by name prefix in the pool directory, without listing the pool.
        A busy disk loses the temporary snapshots a dead direct_snapshot left.
        """
        return cls.cleanup_instances(conf, [instance_uuid], driver).instances[instance_uuid]

    @classmethod
    def cleanup_instances(cls, conf: cfg.ConfigOpts, instance_uuids: Iterable[str],
                          driver: RBDDriver | None = None) -> InstancesCleanupReport:
        """Remove the disks of many instances, ``[rbd] cleanup_concurrency`` at once.

        Each instance's disks are removed as :meth:`cleanup_instance` removes
        them (busy disks left in place, retries, the trash as last resort).
        Returns one report with a :class:`~rbd_driver.storage.removal.CleanupReport` per
        instance, in the order given; an instance without disks gets an empty one.
        """
        uuids = list(dict.fromkeys(instance_uuids))
        prefixes = tuple(f"{u}_" for u in uuids)
        owned = driver is None
        driver = driver or cls.make_driver(conf)
        reports = {u: CleanupReport() for u in uuids}
        try:
            # A disk this host still has mapped (kernelspace) is unmapped first;
            # one whose device is in use is left alone and reported.
            busy = _unmap_kernel_mappings(conf, driver, driver.pool,
                                          lambda name: name.startswith(prefixes))
            listed = driver.map_bounded(driver.list_images_named, list(prefixes))
            disks = [(u, name) for u, names in zip(uuids, listed) for name in names]
            instance_snapshot.wait_for_removals(driver, [name for _, name in disks])
            for u, name in disks:
                if name in busy:
                    reports[u].busy[name] = busy[name]
            todo = [(u, name) for u, name in disks if name not in busy]
            removals = driver.map_bounded(lambda disk: driver.remove_image(disk[1]), todo)
            for (u, _), one in zip(todo, removals):
                reports[u].merge(one)
            instance_snapshot.remove_leftovers(driver, reports.values())
        finally:
            if owned:
                driver.close()
        for u, report in reports.items():
            for name, why in report.busy.items():
                LOG.warning("instance %s: disk %s is in use and was left in place: %s",
                            u, name, why)
            for name, why in report.failed.items():
                LOG.error("instance %s: disk %s was left behind: %s", u, name, why)
        return InstancesCleanupReport(reports)

    def get_pool_info(self) -> dict[str, int]:
        """Return ``total``, ``free`` and ``used`` bytes of ``[rbd] pool``."""
        return self.driver.get_pool_info()

    # -- the disk as a local file: image uploads, config drives, rescue disks --------

    #: The formats :meth:`snapshot_extract` writes.
    EXTRACT_FORMATS = ("raw", *convert.EXPORT_FORMATS)

    def is_shared_block_storage(self) -> bool:
        """True: every host of the cluster reaches the same disk (live migration
        then moves no disk data)."""
        return True

    def snapshot_extract(self, target: str, out_format: str, snapshot: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> None:
        """Write the disk (or its ``snapshot``) to the local file ``target`` as ``out_format``.

        ``raw`` goes through the parallel sparse export of the data path;
        ``qcow2`` through qemu-img, which reads the disk with librbd (only
        the ceph.conf and keyring paths on its command line, never a key).
        Either way the file is written beside ``target`` under a temporary
        name and renamed when complete, and removed on failure, ^C or
        SIGTERM: ``target`` never holds a partial file. A running guest keeps
        writing: for a consistent copy, take a snapshot (:meth:`create_snap`)
        and pass its name. ``progress(done, total)`` follows a raw export
        byte by byte; a qcow2 one reports only its start and end.

        :raises UnsupportedFormat: ``out_format`` is not one of
            :data:`EXTRACT_FORMATS`; nothing was written.
        :raises ImageNotFound: / :raises SnapshotNotFound: no such disk or snapshot.
        :raises ImageConversionFailed: qemu-img failed.
        :raises OperationCancelled: SIGTERM came during the copy.
        :raises OSError: writing the local file.
        """
        if out_format not in self.EXTRACT_FORMATS:
            raise exception.UnsupportedFormat(target=target, out_format=out_format,
                                              supported=", ".join(self.EXTRACT_FORMATS))
        if self.encryption is not None:
            encrypted.extract(self, target, out_format, snapshot, progress)
            return
        if out_format == "raw":
            self.driver.export_file(self.rbd_name, target, snapshot=snapshot, progress=progress)
            return
        total = self.driver.size(self.rbd_name, snapshot=snapshot)  # ImageNotFound first
        if progress:
            progress(0, total)
        spec = convert.rbd_spec(self.pool, self.rbd_name, self.conf.rbd.user,
                                self.conf.rbd.ceph_conf, self.conf.rbd.keyring, snapshot=snapshot)
        convert.convert_from_rbd(spec, target, out_format, timeout=self.conf.rbd.convert_timeout,
                                 size=total)
        if progress:
            progress(total, total)
        LOG.info("extracted %s%s to %s as %s", self.rbd_name,
                 f"@{snapshot}" if snapshot else "", target, out_format)

    @qos.with_default_qos
    def import_file(self, local_file: str,
                    progress: Callable[[int, int], None] | None = None) -> None:
        """Make the local file ``local_file`` this disk: a config drive ISO, a rescue image.

        Raw data (an ISO is raw) goes through the data path: parallel,
        sparse, and atomic (a temporary image renamed when complete, removed
        on failure, ^C or SIGTERM). Another format (a qcow2 rescue image) is
        converted to raw on the way in, as :meth:`create_image` does. The
        disk keeps the file's size. Being ``<instance_uuid>_<name>``, it goes
        with the instance's other disks in :meth:`cleanup_instance`.

        :raises ImageExists: the disk exists; it is never overwritten
            (:meth:`remove` it first).
        :raises FileNotFoundError: no such file.
        :raises ImageConversionFailed: the file is unsafe or not convertible.
        :raises OperationCancelled: SIGTERM came during the copy.
        """
        with self._disk_lock():
            if self.exists():
                raise exception.ImageExists(pool=self.pool, image=self.rbd_name)
            self._copy_in(local_file, progress)
        LOG.info("imported %s as %s/%s", local_file, self.pool, self.rbd_name)

    # -- libvirt -----------------------------------------------------------------

    def libvirt_info(self, disk_info: dict[str, Any] | None = None, cache_mode: str | None = None,
                     extra_specs: dict[str, Any] | None = None, boot_order: str | None = None,
                     disk_unit: int | None = None, **kwargs: Any) -> str:
        """Return the ``<disk>`` XML of this disk, as ``[rbd] access`` says.

        ``userspace``: ``<disk type='network'>``, protocol rbd, every monitor,
        and ``<auth>`` with the ceph secret when ``[rbd] secret_uuid`` is set.
        ``kernelspace``: the disk is mapped through krbd (refused when an OSD
        of the pool runs on this host) and a ``<disk type='block'>`` is returned.

        Both carry :func:`~rbd_driver.backends.qos.disk_io`: ``<iotune>`` from
        ``extra_specs`` (``quota:disk_*``), ``discard`` and ``detect_zeroes``.

        :raises InvalidExtraSpecs: a bad ``quota:disk_*`` key or value; nothing was mapped.
        :raises KernelRbdUnavailable: / :raises LocalOsdRefused: kernelspace only.
        """
        info = dict(disk_info or {})
        if self.conf.rbd.access == "kernelspace" and self.encryption is not None:
            raise self._unsupported("kernelspace access to a LUKS disk of librbd (use userspace)")
        cache_mode = cache_mode or self.conf.rbd.cache_mode
        io = qos.disk_io(self.conf, extra_specs, f"{self.pool}/{self.rbd_name}")
        if self.conf.rbd.access == "kernelspace":
            kernel = krbd.KernelRbd.from_conf(self.conf, self.driver.client,
                                              monitors=self.driver.monitors)
            device = kernel.map(self.pool, self.rbd_name)
            return disk_xml.block_disk_xml(
                device,
                target_dev=info.get("dev", kwargs.get("target_dev", "vda")),
                target_bus=info.get("bus", kwargs.get("target_bus", "virtio")),
                device=info.get("type", "disk"), cache_mode=cache_mode, boot_order=boot_order,
                **io)
        # Today's monitors, asked now: this XML starts a guest or receives a
        # migrated one, and libvirt keeps it (stale addresses in migrated XML
        # were a long-lived Nova bug). The answer refreshes the driver's one cache.
        hosts = [m.preferred for m in self.driver.get_monitors(fresh=True)]
        return disk_xml.network_disk_xml(
            pool=self.pool,
            image=self.rbd_name,
            hosts=hosts,
            user=self.conf.rbd.user,
            secret_uuid=self.conf.rbd.secret_uuid,
            target_dev=info.get("dev", kwargs.get("target_dev", "vda")),
            target_bus=info.get("bus", kwargs.get("target_bus", "virtio")),
            device=info.get("type", "disk"),
            cache_mode=cache_mode,
            boot_order=boot_order,
            driver_format=self.driver_format,
            **io,
            encryption=self.encryption,
        )


def copy_in(driver: RBDDriver, conf: cfg.ConfigOpts, base: str, pool: str, name: str,
            progress: Callable[[int, int], None] | None = None) -> None:
    """Copy the local file ``base`` into new image ``pool/name``, converting non-raw data.

    Raw data goes through the parallel sparse engine; other formats through
    qemu-img, as ``[rbd] convert_via`` says. Atomic either way.

    :raises ImageConversionFailed: the file is unsafe or not convertible.
    :raises ImageExists: ``pool/name`` exists.
    """
    found = convert.sniff_file(base)
    if found in ("raw", "iso"):
        driver.import_file(base, name, pool, progress=progress)
        return
    timeout = conf.rbd.convert_timeout
    if conf.rbd.convert_via == "local":
        raw = f"{base}.raw-{uuid.uuid4().hex[:8]}"
        try:
            convert.convert_to_raw_file(base, raw, found, timeout=timeout)
            driver.import_file(raw, name, pool, progress=progress)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(raw)
        return
    temp = f"{name}.converting-{uuid.uuid4().hex[:8]}"
    spec = convert.rbd_spec(pool, temp, conf.rbd.user, conf.rbd.ceph_conf,
                            conf.rbd.keyring)
    try:
        convert.convert_to_rbd(base, found, spec, timeout=timeout)
        driver.rename(temp, name, pool)
    except BaseException:
        with contextlib.suppress(Exception):
            driver.remove_image(temp, pool)
        raise
    if progress:
        total = driver.size(name, pool)
        progress(total, total)


def _shorten(url: Any) -> str:
    text = repr(url)
    return text if len(text) <= 120 else text[:117] + "..."


def _unmap_kernel_mappings(conf: cfg.ConfigOpts, driver: RBDDriver, pool: str,
                           wanted: Callable[[str], bool]) -> dict[str, str]:
    """Unmap this host's krbd mappings of the images of ``pool`` that ``wanted`` picks.

    Only with ``[rbd] access = kernelspace``; without the rbd kernel module
    there is nothing mapped. Never forced: a device a guest or a mount still
    holds stays mapped, and counts as a watcher. Returns ``{image: who}`` for those.
    """
    if conf.rbd.access != "kernelspace":
        return {}
    kernel = krbd.KernelRbd.from_conf(conf, driver.client, monitors=driver.monitors)
    busy: dict[str, str] = {}
    for mapping in kernel.mapped():
        if mapping.pool != pool or mapping.snapshot is not None or not wanted(mapping.image):
            continue
        try:
            kernel.unmap_mapping(mapping)
        except exception.RbdDriverError as err:
            busy[mapping.image] = f"{mapping.device} on this host (still mapped: {err})"
    return busy
