# SPDX-License-Identifier: Apache-2.0
"""Rbd's cleanup: ``remove`` of one disk, ``cleanup_instance(s)`` of many, and reports.

:class:`CleanupMixin` is the part of :class:`~rbd_driver.backends.rbd.Rbd`
that removes disks. The removal itself (snapshots first, busy disks left in
place, retries, the trash as last resort) is the driver's
(:mod:`rbd_driver.storage.removal`); this module decides which disks go, unmaps
this host's krbd mappings of them first, and reports what happened, instance
by instance (:class:`InstancesCleanupReport`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.backends import instance_snapshot
from rbd_driver.backends.rbd_disk import RbdDisk
from rbd_driver.storage import krbd
from rbd_driver.storage.rbd_utils import CleanupReport, RBDDriver

__all__ = ["CleanupMixin", "InstancesCleanupReport"]

LOG = logging.getLogger(__name__)


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


class CleanupMixin(RbdDisk):
    """``remove``, ``cleanup_instance`` and ``cleanup_instances`` (a mixin of ``Rbd``)."""

    if TYPE_CHECKING:  # the rest of Rbd (rbd.py)
        @classmethod
        def make_driver(cls, conf: cfg.ConfigOpts) -> RBDDriver: ...

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
        Returns one report with a :class:`~rbd_driver.storage.removal.CleanupReport`
        per instance, in the order given; an instance without disks gets an
        empty one.
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
            disks = [(u, name) for u, names in zip(uuids, listed, strict=True) for name in names]
            instance_snapshot.wait_for_removals(driver, [name for _, name in disks])
            for u, name in disks:
                if name in busy:
                    reports[u].busy[name] = busy[name]
            todo = [(u, name) for u, name in disks if name not in busy]
            removals = driver.map_bounded(lambda disk: driver.remove_image(disk[1]), todo)
            for (u, _), one in zip(todo, removals, strict=True):
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
