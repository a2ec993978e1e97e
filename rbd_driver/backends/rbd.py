# SPDX-License-Identifier: Apache-2.0
"""Rbd: instance disks as RBD images. Clone when possible, copy when not.

This module is policy. It decides whether an image location may be cloned
(:meth:`Rbd.check_location`), when to fall back to a copy, and how disks are
named and cleaned up. The Ceph calls themselves are in
:class:`rbd_driver.storage.rbd_utils.RBDDriver`.

Disk names are ``<instance_uuid>_<disk_name>`` in ``[rbd] pool``.

:class:`Rbd` is assembled from one mixin per concern, each in its own module:

- :mod:`~rbd_driver.backends.rbd_clone`: ``check_location`` and
  ``direct_fetch`` (clone when every check passes; spare clones; the clone depth);
- :mod:`~rbd_driver.backends.rbd_copy`: ``create_image`` (the fallback copy),
  the image cache, and :func:`copy_in`;
- :mod:`~rbd_driver.backends.rbd_snapshots`: snapshots, ``direct_snapshot``,
  ``snapshot_extract`` and ``import_file``;
- :mod:`~rbd_driver.backends.rbd_cleanup`: ``remove``, ``cleanup_instance``,
  ``cleanup_instances`` and :class:`InstancesCleanupReport`;
- :mod:`~rbd_driver.backends.rbd_xml`: ``libvirt_info``;
- :mod:`~rbd_driver.backends.qos`: ``set_qos``, ``get_qos``, ``clear_qos``.

This module keeps the disk itself: its name, path, size and existence, and
the lock that serialises the paths that create it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from oslo_concurrency import lockutils
from oslo_config import cfg

from rbd_driver import exception, imagebackend
from rbd_driver.backends import encrypted, qos, rbd_cleanup, rbd_clone, rbd_copy, rbd_snapshots, rbd_xml
from rbd_driver.backends.rbd_cleanup import InstancesCleanupReport
from rbd_driver.backends.rbd_copy import copy_in
from rbd_driver.storage import convert
from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["InstancesCleanupReport", "Rbd", "copy_in", "disk_name_for"]

# Names of the disk locks the current thread holds.
_held_locks = threading.local()


def disk_name_for(instance_uuid: str, disk_name: str) -> str:
    """Return the RBD image name of an instance's disk."""
    return f"{instance_uuid}_{disk_name}"


class Rbd(qos.QosMixin, rbd_clone.CloneMixin, rbd_copy.CopyMixin, rbd_snapshots.SnapshotsMixin,
          rbd_cleanup.CleanupMixin, rbd_xml.XmlMixin, imagebackend.Image):
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

    # -- the lock of the paths that create the disk ----------------------------

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

    # -- size and place ----------------------------------------------------------

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

    def get_pool_info(self) -> dict[str, int]:
        """Return ``total``, ``free`` and ``used`` bytes of ``[rbd] pool``."""
        return self.driver.get_pool_info()

    def is_shared_block_storage(self) -> bool:
        """True: every host of the cluster reaches the same disk (live migration
        then moves no disk data)."""
        return True
