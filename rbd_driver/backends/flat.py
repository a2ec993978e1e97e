# SPDX-License-Identifier: Apache-2.0
"""Flat: instance disks as raw files on local disk.

The reference plugin: it proves the :class:`~rbd_driver.imagebackend.Image`
interface is not RBD-specific. Disks live at
``<[flat] instances_path>/<instance_uuid>/<disk_name>``. It cannot clone, so
``direct_fetch`` always refuses and callers fall back to ``create_image``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from typing import Any, Callable

from oslo_concurrency import lockutils
from oslo_config import cfg

from rbd_driver import exception, imagebackend
from rbd_driver.libvirt import disk_xml
from rbd_driver.storage.localfile import atomic_file

__all__ = ["Flat", "copy_sparse"]

CHUNK = 1 << 20

flat_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "instances_path",
        default="/var/lib/rbd_driver/instances",
        help="""
Directory that holds the disks of the ``flat`` backend.

Each instance gets a subdirectory named after its UUID.

Possible values:

* An absolute path on a local filesystem with room for the disks.

Related options:

* ``[rbd] images_type``: set to ``flat`` to use this backend by default.
""",
    ),
]


def copy_sparse(src: str, dst: str) -> None:
    """Copy ``src`` to a new file ``dst`` without writing its holes or zero blocks.

    The copy is written to a temporary name (mode 0600) and renamed, so
    ``dst`` never holds half a file.
    """
    with atomic_file(dst, sync=False) as (fd, _), open(src, "rb") as fin, \
            open(fd, "wb", closefd=False) as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                data_start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError as err:
                if err.errno != errno.ENXIO:  # ENXIO: only a hole remains
                    raise
                break
            hole = os.lseek(fin.fileno(), data_start, os.SEEK_HOLE)
            fin.seek(data_start)
            pos = data_start
            while pos < hole:
                block = fin.read(min(CHUNK, hole - pos))
                if not block:
                    break
                if block.count(0) != len(block):
                    fout.seek(pos)
                    fout.write(block)
                pos += len(block)
            offset = hole
        fout.truncate(size)


class Flat(imagebackend.Image):
    """An instance disk kept as a raw file under ``[flat] instances_path``."""

    opts = flat_opts
    opt_group = "flat"

    def __init__(self, instance_uuid: str, disk_name: str, conf: cfg.ConfigOpts,
                 driver: Any = None, encryption: Any = None) -> None:
        conf.register_opts(flat_opts, group="flat")
        super().__init__(instance_uuid, disk_name, conf, driver, encryption)

    @property
    def path(self) -> str:
        return os.path.join(self.conf.flat.instances_path, self.instance_uuid, self.disk_name)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def direct_fetch(self, image_id: str, image_meta: dict[str, Any],
                     image_locations: list[dict[str, Any]], max_size: int = 0) -> None:
        """Always refuses: local files cannot be cloned copy-on-write.

        :raises ImageUnacceptable: always (unless the disk already exists).
        """
        if self.exists():
            return
        raise exception.ImageUnacceptable(
            image_id=image_id, reason="the flat backend cannot clone; use create_image")

    def create_image(self, prepare_template: Callable[..., Any], base: str,
                     size: int | None, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("progress", None)
        with lockutils.lock(f"rbd-driver-flat-{self.path}"):
            if not self.exists():
                prepare_template(*args, target=base, **kwargs)
            if not self.exists():
                base_size = os.path.getsize(base)
                if size and size < base_size:
                    raise exception.DiskSizeTooSmall(size=size, pool=self.conf.flat.instances_path,
                                                     image=self.path, current=base_size)
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                copy_sparse(base, self.path)
            if size:
                self.resize_image(size)

    def resize_image(self, size: int) -> None:
        current = self.get_disk_size()
        if size < current:
            raise exception.DiskSizeTooSmall(size=size, pool=self.conf.flat.instances_path,
                                             image=self.path, current=current)
        if size > current:
            os.truncate(self.path, size)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @classmethod
    def cleanup_instance(cls, conf: cfg.ConfigOpts, instance_uuid: str,
                         driver: Any = None) -> dict[str, Any]:
        """Remove the instance's directory; return ``{'removed': [...], 'failed': {...}}``."""
        conf.register_opts(flat_opts, group="flat")
        directory = os.path.join(conf.flat.instances_path, instance_uuid)
        report: dict[str, Any] = {"removed": [], "trashed": {}, "failed": {}}
        if os.path.isdir(directory):
            names = sorted(os.listdir(directory))
            try:
                shutil.rmtree(directory)
                report["removed"] = names
            except OSError as err:
                report["failed"] = {directory: str(err)}
        return report

    def libvirt_info(self, disk_info: dict[str, Any] | None = None, cache_mode: str = "none",
                     extra_specs: dict[str, Any] | None = None, boot_order: str | None = None,
                     disk_unit: int | None = None, **kwargs: Any) -> str:
        info = dict(disk_info or {})
        return disk_xml.file_disk_xml(
            self.path, target_dev=info.get("dev", "vda"), target_bus=info.get("bus", "virtio"),
            device=info.get("type", "disk"), cache_mode=cache_mode, boot_order=boot_order)
