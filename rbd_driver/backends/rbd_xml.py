# SPDX-License-Identifier: Apache-2.0
"""Rbd's disk XML: ``libvirt_info``, as ``[rbd] access`` says.

:class:`XmlMixin` is the part of :class:`~rbd_driver.backends.rbd.Rbd` that
gives libvirt the ``<disk>`` of an instance disk: a network disk that QEMU
opens with librbd (userspace), or a block device mapped through krbd
(kernelspace). The XML itself is built by :mod:`rbd_driver.libvirt.disk_xml`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rbd_driver import exception
from rbd_driver.backends import qos
from rbd_driver.backends.rbd_disk import RbdDisk
from rbd_driver.libvirt import disk_xml
from rbd_driver.storage import krbd

__all__ = ["XmlMixin"]


class XmlMixin(RbdDisk):
    """``libvirt_info`` of an instance disk (a mixin of ``Rbd``)."""

    driver_format: ClassVar[str]

    if TYPE_CHECKING:  # imagebackend.Image
        def _unsupported(self, op: str) -> exception.NotSupported: ...

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
