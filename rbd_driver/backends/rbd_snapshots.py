# SPDX-License-Identifier: Apache-2.0
"""Rbd's snapshots, and the disk as a local file.

:class:`SnapshotsMixin` is the part of :class:`~rbd_driver.backends.rbd.Rbd`
that keeps snapshots of a disk (create, remove, roll back, flatten, the
parent), makes an instance snapshot a golden image inside the cluster
(``direct_snapshot``, whose policy is
:mod:`rbd_driver.backends.instance_snapshot`), and moves a disk to and from a
local file: ``snapshot_extract`` (an image upload when ``direct_snapshot``
cannot be used) and ``import_file`` (a config drive, a rescue image).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from rbd_driver import exception
from rbd_driver.backends import encrypted, instance_snapshot, qos
from rbd_driver.backends.rbd_disk import RbdDisk
from rbd_driver.storage import convert

__all__ = ["SnapshotsMixin"]

LOG = logging.getLogger(__name__)


class SnapshotsMixin(RbdDisk):
    """Snapshots, ``direct_snapshot``, ``snapshot_extract`` and ``import_file`` of an
    instance disk (a mixin of ``Rbd``)."""

    if TYPE_CHECKING:  # the rest of Rbd: its copy path (rbd_copy.py)
        def _copy_in(self, base: str, progress: Callable[[int, int], None] | None) -> None: ...

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

    # -- the disk as a local file: image uploads, config drives, rescue disks --------

    #: The formats :meth:`snapshot_extract` writes.
    EXTRACT_FORMATS = ("raw", *convert.EXPORT_FORMATS)

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
