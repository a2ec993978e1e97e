# SPDX-License-Identifier: Apache-2.0
"""Rbd's launch by copy: ``create_image``, the image cache, and ``copy_in``.

:class:`CopyMixin` is the part of :class:`~rbd_driver.backends.rbd.Rbd` that
makes a disk when no location can be cloned: the caller's download is copied
in through librbd, sparse (converted with qemu-img when it is not raw). With
``[rbd] image_cache_pool`` set, an image is imported once into the cache pool,
under a cluster-wide lock, and every disk of it is a clone of that golden.
:func:`copy_in` is the copy itself, also used by ``rbd-driver import``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.backends import encrypted, qos
from rbd_driver.backends.rbd_disk import RbdDisk
from rbd_driver.storage import convert, rados_lock
from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["CopyMixin", "copy_in"]

LOG = logging.getLogger(__name__)


class CopyMixin(RbdDisk):
    """``create_image`` of an instance disk and the image cache (a mixin of ``Rbd``)."""

    if TYPE_CHECKING:  # the rest of Rbd (rbd.py)
        def resize_image(self, size: int) -> None: ...

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
