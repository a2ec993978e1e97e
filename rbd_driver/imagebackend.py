# SPDX-License-Identifier: Apache-2.0
"""The image-backend interface and the factory that loads its plugins.

A compute driver asks :class:`Backend` for the disk of an instance::

    backend = imagebackend.Backend(conf)
    disk = backend.by_name(instance_uuid, "disk", image_type="rbd")
    disk.direct_fetch(image_id, image_meta, image_locations)

Plugins are :class:`Image` subclasses published under the entry-point
namespace ``rbd_driver.image_backends`` (``rbd`` and ``flat`` ship here).
Each plugin may declare its own options (``opts`` and ``opt_group``); the
factory registers them on the ``conf`` it was given.
"""

from __future__ import annotations

import abc
import importlib.metadata
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Callable, ClassVar

import stevedore
from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver import exception

__all__ = ["NAMESPACE", "Backend", "Image"]

#: The entry-point namespace of image-backend plugins.
NAMESPACE = "rbd_driver.image_backends"


class Image(abc.ABC):
    """One disk of one instance, kept by some storage backend.

    :param instance_uuid: the instance owning the disk.
    :param disk_name: the disk's name within the instance (``disk``,
        ``disk.local``...).
    :param conf: the caller's ``ConfigOpts`` with rbd_driver options.
    :param driver: a shared storage driver from :meth:`make_driver`, so all
        disks of one backend reuse one connection.
    :param encryption: a :class:`rbd_driver.encryption.DiskEncryption` for an
        encrypted disk (None: plain); backends that cannot encrypt raise NotSupported.
    """

    #: Options of this backend, registered in
    #: :attr:`~rbd_driver.imagebackend.Image.opt_group` (any sequence: a
    #: plugin's list of StrOpt is one).
    opts: ClassVar[Sequence[cfg.Opt]] = []
    #: The configuration group of :attr:`~rbd_driver.imagebackend.Image.opts`
    #: (None: the backend has no options of its own).
    opt_group: ClassVar[str | None] = None
    #: The disk format QEMU sees (``raw`` for every shipped backend).
    driver_format: ClassVar[str] = "raw"
    #: Whether the backend keeps encrypted disks (``encryption=``).
    supports_encryption: ClassVar[bool] = False

    def __init__(
        self,
        instance_uuid: str,
        disk_name: str,
        conf: cfg.ConfigOpts,
        driver: Any = None,
        encryption: Any = None,
    ) -> None:
        self.instance_uuid = instance_uuid
        self.disk_name = disk_name
        self.conf = conf
        if encryption is not None and not self.supports_encryption:
            raise exception.NotSupported(op="encryption", target=f"{instance_uuid}/{disk_name}",
                                         detail=f"the {type(self).__name__} backend cannot "
                                         "encrypt disks")
        self.encryption = encryption
        #: How an encrypted disk was made by this object: ``clone`` or ``copy`` (None: not yet).
        self.encryption_method: str | None = None
        self.driver = driver if driver is not None else self.make_driver(conf)

    @classmethod
    def make_driver(cls, conf: cfg.ConfigOpts) -> Any:
        """Return the storage driver the disks of this backend share (None if none)."""
        return None

    # -- what every backend provides -------------------------------------

    @property
    @abc.abstractmethod
    def path(self) -> str:
        """The disk's address for QEMU (a file path, or an ``rbd:`` spec without keys)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Return True if the disk exists. Raises RbdDriverError on storage errors."""

    @abc.abstractmethod
    def create_image(
        self,
        prepare_template: Callable[..., Any],
        base: str,
        size: int | None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Create the disk, calling ``prepare_template(target=base, ...)`` if needed.

        If the disk still does not exist afterwards, copy the local file
        ``base`` in. Then grow the disk to ``size`` bytes when larger.

        :raises DiskSizeTooSmall: ``size`` is smaller than the image.
        :raises RbdDriverError: the copy or the storage failed.
        """

    @abc.abstractmethod
    def direct_fetch(
        self,
        image_id: str,
        image_meta: dict[str, Any],
        image_locations: list[dict[str, Any]],
        max_size: int = 0,
    ) -> None:
        """Create the disk as a copy-on-write clone of the image, without copying data.

        Does nothing if the disk exists.

        :raises ImageUnacceptable: no location can be cloned; the message
            holds each location's reason, and nothing was created.
        """

    @abc.abstractmethod
    def resize_image(self, size: int) -> None:
        """Grow the disk to ``size`` bytes (no-op if equal).

        :raises DiskSizeTooSmall: ``size`` is smaller than the disk.
        """

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove the disk and its snapshots (a missing disk is fine).

        :raises CleanupFailed: the disk could be neither removed nor trashed.
        """

    @abc.abstractmethod
    def libvirt_info(self, disk_info: dict[str, Any] | None = None, cache_mode: str = "none",
                     extra_specs: dict[str, Any] | None = None, boot_order: str | None = None,
                     disk_unit: int | None = None, **kwargs: Any) -> str:
        """Return the libvirt ``<disk>`` XML of this disk, as a string.

        ``disk_info`` is a dict with ``dev`` (default ``vda``), ``bus``
        (default ``virtio``) and ``type`` (``disk`` or ``cdrom``).
        """

    @classmethod
    @abc.abstractmethod
    def cleanup_instance(cls, conf: cfg.ConfigOpts, instance_uuid: str,
                         driver: Any = None) -> Any:
        """Remove every disk of ``instance_uuid``; return a report of what happened."""

    # -- optional features, refused unless a backend supports them -------

    def get_disk_size(self, name: str | None = None) -> int:
        """Return the size in bytes of the disk at ``name`` (default: this disk).

        The base class reads a local file; backends that keep disks
        elsewhere override it.

        :raises FileNotFoundError: no file at ``name``.
        """
        return os.stat(name or self.path).st_size

    def _unsupported(self, op: str) -> exception.NotSupported:
        return exception.NotSupported(op=op, target=self.path,
                                      detail=f"the {type(self).__name__} backend cannot do it")

    def is_shared_block_storage(self) -> bool:
        """Return True if every host reaches the same disk (a cluster), so that
        live migration moves no disk data. False by default (local disks)."""
        return False

    def snapshot_extract(self, target: str, out_format: str, snapshot: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> None:
        """Write the disk (or its ``snapshot``) to the local file ``target`` as
        ``out_format``, atomically. Raises NotSupported by default."""
        raise self._unsupported("snapshot_extract")

    def import_file(self, local_file: str,
                    progress: Callable[[int, int], None] | None = None) -> None:
        """Make the local file ``local_file`` this disk; ImageExists if it exists.
        Raises NotSupported by default."""
        raise self._unsupported("import_file")

    def create_snap(self, name: str, protect: bool = False) -> None:
        """Create snapshot ``name`` (and protect it). Raises NotSupported by default."""
        raise self._unsupported("create_snap")

    def remove_snap(self, name: str, force: bool = False) -> None:
        """Remove snapshot ``name``. Raises NotSupported by default."""
        raise self._unsupported("remove_snap")

    def rollback_to_snap(self, name: str) -> None:
        """Roll the disk back to snapshot ``name``. Raises NotSupported by default."""
        raise self._unsupported("rollback_to_snap")

    def direct_snapshot(self, snapshot_name: str, image_format: str, image_id: str,
                        parent_pool: str | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        cancel: threading.Event | None = None) -> str:
        """Make this disk a new image inside the storage; return its location.

        ``progress(done, total)`` follows the data copied; setting ``cancel``
        stops the work and undoes it. By default the backend cannot: raises
        ImageUnacceptable, so the caller falls back to extracting the disk to
        a file and uploading it.
        """
        raise exception.ImageUnacceptable(
            image_id=image_id,
            reason=f"the {type(self).__name__} backend cannot make an image in place")

    def cleanup_direct_snapshot(self, location: str, also_destroy_volume: bool = False,
                                ignore_errors: bool = False) -> None:
        """Remove what :meth:`direct_snapshot` made. Raises NotSupported by default."""
        if not ignore_errors:
            raise self._unsupported("cleanup_direct_snapshot")

    def flatten(self) -> None:
        """Copy the parent's data into the disk so it stands alone. NotSupported by default."""
        raise self._unsupported("flatten")

    @classmethod
    def cleanup_instances(cls, conf: cfg.ConfigOpts, instance_uuids: Iterable[str],
                          driver: Any = None) -> Any:
        """Remove the disks of many instances; return a report, instance by instance.

        Raises NotSupported by default (:meth:`cleanup_instance` them one by one).
        """
        raise exception.NotSupported(op="cleanup_instances", target=cls.__name__,
                                     detail=f"the {cls.__name__} backend cannot do it")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


class Backend:
    """Loads image backends from entry points and hands out disks.

    :param conf: the caller's ``ConfigOpts``; rbd_driver's options and each
        loaded plugin's options are registered on it.
    :param extension_manager: a ready ``stevedore`` manager, for tests
        (``ExtensionManager.make_test_instance``); default: discovery.
    """

    def __init__(self, conf: cfg.ConfigOpts,
                 extension_manager: stevedore.ExtensionManager[Image] | None = None) -> None:
        self.conf = conf
        conf_module.register_opts(conf)
        self._manager: stevedore.ExtensionManager[Image] = extension_manager or stevedore.ExtensionManager(
            NAMESPACE, invoke_on_load=False, on_load_failure_callback=_load_failed
        )
        self._drivers: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Every plugin's options exist from the start, so the caller can set
        # or override them before asking for a disk.
        for ext in self._manager:
            plugin = ext.plugin
            if getattr(plugin, "opts", None) and getattr(plugin, "opt_group", None):
                conf.register_opts(plugin.opts, group=plugin.opt_group)

    @property
    def available(self) -> list[str]:
        """Names of the backends that loaded."""
        return sorted(self._manager.names())

    def backend(self, image_type: str | None = None) -> type[Image]:
        """Return the Image class of ``image_type`` (default ``[rbd] images_type``).

        :raises BackendNotFound: no such plugin; the message lists the available ones.
        """
        name = image_type or self.conf.rbd.images_type
        if name not in self._manager.names():
            raise exception.BackendNotFound(image_type=name,
                                            available=", ".join(self.available) or "none")
        cls: type[Image] = self._manager[name].plugin
        return cls

    def driver(self, image_type: str | None = None) -> Any:
        """Return the storage driver shared by all disks of one backend."""
        cls = self.backend(image_type)
        name = image_type or self.conf.rbd.images_type
        with self._lock:
            if name not in self._drivers:
                self._drivers[name] = cls.make_driver(self.conf)
            return self._drivers[name]

    def by_name(self, instance_uuid: str, disk_name: str,
                image_type: str | None = None, encryption: Any = None) -> Image:
        """Return the disk ``disk_name`` of ``instance_uuid`` in backend ``image_type``,
        encrypted as ``encryption`` (a :class:`rbd_driver.encryption.DiskEncryption`) says.

        :raises BackendNotFound: unknown ``image_type``.
        :raises NotSupported: the backend cannot encrypt.
        """
        cls = self.backend(image_type)
        if encryption is None:
            return cls(instance_uuid, disk_name, self.conf, driver=self.driver(image_type))
        return cls(instance_uuid, disk_name, self.conf, driver=self.driver(image_type),
                   encryption=encryption)

    def close(self) -> None:
        """Close every shared driver (their cluster connections)."""
        with self._lock:
            drivers, self._drivers = self._drivers, {}
        for driver in drivers.values():
            if driver is not None and hasattr(driver, "close"):
                driver.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_failed(manager: stevedore.ExtensionManager[Image],
                 entrypoint: importlib.metadata.EntryPoint, err: BaseException) -> None:
    # A broken third-party plugin must not hide the others; it is simply
    # absent from `available`, and its import error is logged.
    import logging

    logging.getLogger(__name__).error("image backend %s failed to load: %s", entrypoint, err)
