# SPDX-License-Identifier: Apache-2.0
"""Ganeti's ExtStorage interface on rbd_driver: what each script of the provider does.

Ganeti (``man ganeti-extstorage-interface``) runs one executable per action
with the volume in environment variables: ``VOL_NAME``, ``VOL_SIZE`` and
``VOL_NEW_SIZE`` (MiB), ``VOL_METADATA``, ``VOL_SNAPSHOT_NAME`` and the
disk's ext parameters as ``EXTP_<NAME>``. The provider ``rbd_driver``
(installed by ``rbd-driver ganeti install``) has two parameters:

``origin``
    the golden image a new disk clones: an ``rbd://fsid/pool/image/snap``
    URL, or the name of a golden image of ``rbd-driver golden`` (in
    ``[rbd] golden_pool``, snapshot ``[rbd] golden_snapshot``).
``pool``
    the pool of the disk instead of ``[rbd] pool`` (the caller sets it on
    the conf before building the backend).

Each action is a method of :class:`ExtStorage`, which returns what the
script prints and raises the library's errors; the script turns an error
into its message on stderr and a non-zero exit, which Ganeti shows.
Policy only: the disk is an :class:`~rbd_driver.backends.rbd.Rbd` named
``VOL_NAME``, so creation applies ``direct_fetch``'s checks (the location
parses, same cluster, RAW verified from the bytes, readable by our user,
the clone-depth policy) and removal the library's cleanup rules (never a
disk that a client has open).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage import convert, image_meta, krbd
from rbd_driver.storage.location import InvalidLocation, RbdLocation
from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["ACTIONS", "METADATA_KEY", "PARAMETERS", "ExtStorage", "GanetiVolume", "MIB",
           "Request"]

LOG = logging.getLogger(__name__)

MIB = 1 << 20

#: The scripts Ganeti runs, each one an action of :class:`ExtStorage`.
ACTIONS = ("create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot")

#: ``parameters.list``: each ext parameter and its one-line description.
PARAMETERS = (
    ("origin", "golden image to clone: rbd://fsid/pool/image/snap or a golden image name"),
    ("pool", "RBD pool of the disk (default: [rbd] pool of the provider's config file)"),
)

#: The image-metadata key that keeps Ganeti's ``VOL_METADATA`` (``setinfo``).
METADATA_KEY = "ganeti.metadata"

_GOLDEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Request:
    """One script's input, read from Ganeti's environment variables."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.origin = env.get("EXTP_ORIGIN", "").strip()
        self.pool = env.get("EXTP_POOL", "").strip()

    def text(self, var: str) -> str:
        """Return ``var``; :raises InvalidArgument: it is unset or blank."""
        value = self.env.get(var, "").strip()
        if not value:
            raise exception.InvalidArgument(op="ganeti extstorage", target=var,
                                            detail="Ganeti did not set it")
        return value

    def mib(self, var: str) -> int:
        """Return ``var`` as a whole, positive number of MiB, in bytes."""
        value = self.text(var)
        if not value.isdigit() or int(value) <= 0:
            raise exception.InvalidArgument(op="ganeti extstorage", target=var, detail=(
                f"{value!r} is not a positive whole number of MiB"))
        return int(value) * MIB

    @property
    def name(self) -> str:
        return self.text("VOL_NAME")


class GanetiVolume(Rbd):
    """The RBD image ``VOL_NAME`` in the driver's pool, with the backend's policy."""

    def __init__(self, name: str, conf: cfg.ConfigOpts, driver: RBDDriver) -> None:
        super().__init__(name, "ganeti", conf, driver)
        self.rbd_name = name


def _mib(size: int) -> str:
    return f"{size / MIB:g} MiB ({size} bytes)"


class ExtStorage:
    """The provider's actions on one cluster connection (not owned).

    :param conf: the library's options (``[rbd] pool`` already the disk's pool).
    :param driver: the backend's driver for that pool.
    """

    def __init__(self, conf: cfg.ConfigOpts, driver: RBDDriver) -> None:
        self.conf, self.driver = conf, driver

    def run(self, action: str, env: Mapping[str, str]) -> str:
        """Do ``action`` for the volume in ``env``; return what the script prints.

        :raises InvalidArgument: an unknown action or a bad variable.
        :raises RbdDriverError: the action failed (the message says why).
        """
        if action not in ACTIONS:
            raise exception.InvalidArgument(op="ganeti extstorage", target=action, detail=(
                f"unknown action; the scripts are {', '.join(ACTIONS)}"))
        result: str = getattr(self, action)(Request(env))
        return result

    def _volume(self, name: str) -> GanetiVolume:
        return GanetiVolume(name, self.conf, self.driver)

    def _target(self, name: str) -> str:
        return f"{self.driver.pool}/{name}"

    # -- origin ---------------------------------------------------------------

    def origin_url(self, origin: str) -> str:
        """Return the ``rbd://`` URL of ``origin`` (a URL, or a golden image's name).

        :raises ImageUnacceptable: it is neither.
        """
        if origin.startswith("rbd://"):
            return origin
        if not _GOLDEN_NAME.fullmatch(origin):
            raise exception.ImageUnacceptable(image_id=origin, reason=(
                "origin is neither an rbd://fsid/pool/image/snap URL nor the name of a "
                "golden image"))
        try:
            return RbdLocation(self.driver.fsid, self.conf.rbd.golden_pool, origin,
                               self.conf.rbd.golden_snapshot).url
        except InvalidLocation as err:
            raise exception.ImageUnacceptable(image_id=origin, reason=str(err)) from None

    def check_origin(self, origin: str) -> tuple[str, RbdLocation, int]:
        """Check that ``origin`` can be cloned; return (url, location, size in bytes).

        :raises ImageUnacceptable: with ``direct_fetch``'s reason.
        """
        url = self.origin_url(origin)
        try:
            location = self._volume("origin-check").check_location(url, {"disk_format": "raw"})
        except ValueError as err:
            raise exception.ImageUnacceptable(image_id=origin, reason=str(err)) from None
        size = self.driver.size(location.image, location.pool, snapshot=location.snapshot)
        return url, location, size

    # -- the scripts -------------------------------------------------------------

    def create(self, req: Request) -> str:
        """Make ``VOL_NAME`` of ``VOL_SIZE``: blank, or a clone of ``origin`` grown to it.

        Any failure leaves nothing behind.

        :raises ImageExists: the volume exists (it is left as it was).
        :raises ImageUnacceptable: ``origin`` cannot be cloned, or is larger than
            ``VOL_SIZE`` (both sizes named).
        """
        name, size = req.name, req.mib("VOL_SIZE")
        disk = self._volume(name)
        if disk.exists():
            raise exception.ImageExists(pool=self.driver.pool, image=name,
                                        detail="Ganeti's create never reuses a disk")
        if not req.origin:
            self.driver.create(name, size)
            LOG.info("created blank %s of %s", self._target(name), _mib(size))
            return ""
        url, _, golden = self.check_origin(req.origin)
        if size < golden:
            raise exception.ImageUnacceptable(image_id=req.origin, reason=(
                f"the disk size {_mib(size)} is smaller than the golden image's "
                f"{_mib(golden)}; give the disk at least {-(-golden // MIB)} MiB"))
        disk.direct_fetch(req.origin, {"disk_format": "raw"}, [{"url": url}])
        try:
            if size > golden:
                disk.resize_image(size)
        except BaseException as err:
            try:
                disk.remove()
            except exception.RbdDriverError as left:
                err.add_note(f"{self._target(name)} was left behind: {left}")
            raise
        LOG.info("cloned %s from %s, %s", self._target(name), url, _mib(size))
        return ""

    def attach(self, req: Request) -> str:
        """Return the block device line (kernelspace, else empty) and the ``kvm:`` URI.

        The URI names the pool, image, user, ceph.conf and keyring paths, never
        a key. QEMU's ``-drive`` splits on commas, so a comma in it is refused.

        :raises ImageNotFound: no such volume (Ganeti then takes it as absent).
        """
        name = req.name
        if not self._volume(name).exists():
            raise exception.ImageNotFound(pool=self.driver.pool, image=name)
        rbd = self.conf.rbd
        uri = "kvm:" + convert.rbd_spec(self.driver.pool, name, rbd.user, rbd.ceph_conf,
                                        rbd.keyring)
        if "," in uri:
            raise exception.InvalidArgument(op="attach", target=self._target(name), detail=(
                "a ',' in the pool, image, user or a path would split QEMU's -drive option"))
        device = ""
        if rbd.access == "kernelspace":
            device = krbd.KernelRbd.from_conf(self.conf, self.driver.client).map(
                self.driver.pool, name)
        return f"{device}\n{uri}\n"

    def detach(self, req: Request) -> str:
        """Unmap a kernelspace mapping of ``VOL_NAME``; userspace has nothing to undo."""
        name = req.name
        if self.conf.rbd.access == "kernelspace":
            kernel = krbd.KernelRbd.from_conf(self.conf, self.driver.client)
            if kernel.find(self.driver.pool, name) is not None:
                kernel.unmap(self.driver.pool, name)
        return ""

    def remove(self, req: Request) -> str:
        """Remove ``VOL_NAME`` by the library's cleanup rules (a missing one is removed).

        A volume made by :meth:`snapshot` also loses the snapshot it was cloned from.

        :raises ImageInUse: a client has it open (named); it was left in place.
        :raises CleanupFailed: it could be neither removed nor trashed.
        """
        name = req.name
        disk = self._volume(name)
        try:
            parent = disk.parent_info()
        except exception.ImageNotFound:
            return ""
        disk.remove()
        if parent is not None and parent[2] == name and parent[0] == self.driver.pool:
            with contextlib.suppress(exception.SnapshotNotFound):
                self.driver.remove_snap(parent[1], parent[2], force=True, pool=parent[0])
        return ""

    def grow(self, req: Request) -> str:
        """Grow ``VOL_NAME`` to ``VOL_NEW_SIZE``; :raises DiskSizeTooSmall: a shrink."""
        self._volume(req.name).resize_image(req.mib("VOL_NEW_SIZE"))
        return ""

    def setinfo(self, req: Request) -> str:
        """Keep ``VOL_METADATA`` as the image metadata :data:`METADATA_KEY`."""
        image_meta.update_metadata(self.driver.client, self.driver.pool, req.name,
                                   {METADATA_KEY: req.env.get("VOL_METADATA", "")})
        return ""

    def verify(self, req: Request) -> str:
        """Check the parameters: the pool is reachable, ``origin`` can be cloned.

        :raises PoolNotFound: / :raises ImageUnacceptable: naming what is wrong.
        """
        self.driver.pool_id()
        if req.origin:
            self.check_origin(req.origin)
        return ""

    def snapshot(self, req: Request) -> str:
        """Make ``VOL_SNAPSHOT_NAME``, a point-in-time volume of ``VOL_NAME``.

        A protected snapshot of the disk named like the new volume, cloned
        into it: no data is copied. :meth:`remove` of that volume removes the
        snapshot too. On failure nothing is left.
        """
        name, snap = req.name, req.text("VOL_SNAPSHOT_NAME")
        if self._volume(snap).exists():
            raise exception.ImageExists(pool=self.driver.pool, image=snap,
                                        detail="a snapshot volume of that name exists")
        self.driver.create_snap(name, snap, protect=True)
        try:
            self.driver.clone(RbdLocation(self.driver.fsid, self.driver.pool, name, snap), snap)
        except BaseException:
            with contextlib.suppress(exception.RbdDriverError):
                self.driver.remove_snap(name, snap, force=True)
            raise
        return ""

