# SPDX-License-Identifier: Apache-2.0
"""Rbd's launch by clone: ``direct_fetch`` and the checks a location must pass.

:class:`CloneMixin` is the part of :class:`~rbd_driver.backends.rbd.Rbd` that
decides whether an image location may be cloned (:meth:`~CloneMixin.check_location`:
the URL, the cluster, the format recorded and the format found in the data,
the size), clones the first that passes, takes a spare clone when
``[rbd] clone_spares`` keeps some, and applies the clone-depth policy
(:mod:`rbd_driver.backends.clone_depth`). The format found in a golden
snapshot is remembered by the snapshot's identity, which never goes stale.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from rbd_driver import exception
from rbd_driver.backends import clone_depth, encrypted, qos
from rbd_driver.backends.rbd_disk import RbdDisk
from rbd_driver.storage import formats
from rbd_driver.storage.location import InvalidLocation, RbdLocation, parse_location
from rbd_driver.storage.rbd_utils import SnapshotIdentity

__all__ = ["VERDICT_CACHE_SIZE", "CloneMixin"]

LOG = logging.getLogger(__name__)

# Format verdicts of golden snapshots, keyed by (fsid, SnapshotIdentity).
VERDICT_CACHE_SIZE = 4096
_verdicts: dict[Any, tuple[str, int]] = {}
_verdicts_lock = threading.Lock()


class CloneMixin(RbdDisk):
    """``check_location`` and ``direct_fetch`` of an instance disk (a mixin of ``Rbd``)."""

    if TYPE_CHECKING:  # the rest of Rbd: its copy path (rbd_copy.py)
        def _cache_location(self, image_id: str) -> RbdLocation: ...
        def _is_cached(self, location: RbdLocation) -> bool: ...

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


def _shorten(url: Any) -> str:
    text = repr(url)
    return text if len(text) <= 120 else text[:117] + "..."
