# SPDX-License-Identifier: Apache-2.0
"""Golden images: registered once, cloned copy-on-write by hundreds of disks.

Registering imports a raw file (or converts another format with qemu-img)
into ``[rbd] golden_pool``, snapshots it and protects the snapshot; the
result is recorded as an ``rbd://fsid/pool/image/snapshot`` location, the
form :meth:`rbd_driver.backends.rbd.Rbd.direct_fetch` clones from. A golden
image can also be registered from a snapshot already in the cluster (say,
an instance's), which clones it and so deepens the chain of parents.

Clone depth (a golden image is 0, its clones 1, a golden registered from a
clone's snapshot 2...) is bounded: a clone deeper than ``max_clone_depth``
is flattened before it is returned, and one deeper than
``clone_depth_soft_limit`` is flattened in the background by a
:class:`~rbd_driver.storage.flatten_queue.FlattenQueue` that runs at most ``flatten_concurrency`` at once.

A golden image with clones is never deleted under them: deletion is refused
with their names, or with ``force`` the image goes to the RBD trash, where
it stays readable for its clones until they are gone.

Policy only; the librbd calls are in
:class:`~rbd_driver.storage.rbd_utils.RBDDriver`.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.conf import option_default
from rbd_driver.encryption import DiskEncryption, key_for, load_key_manager
from rbd_driver.storage import convert
from rbd_driver.storage import encryption as crypt
from rbd_driver.storage.flatten_queue import FlattenQueue
from rbd_driver.storage.location import RbdLocation, SnapshotIdentity
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.storage.spares import is_spare_name

__all__ = ["CloneResult", "GoldenImage", "GoldenImages"]

LOG = logging.getLogger(__name__)

#: Seconds a golden delete waits for other hosts to finish a spare clone they
#: had started before the hold, and how often it looks again.
SPARES_WAIT = 30.0
SPARES_POLL = 0.5


@dataclasses.dataclass(frozen=True)
class GoldenImage:
    """A registered golden image and the location its clones come from."""

    pool: str
    name: str
    snapshot: str
    size: int
    location: str  # rbd://fsid/pool/name/snapshot


@dataclasses.dataclass(frozen=True)
class CloneResult:
    """A clone made under the depth policy.

    ``depth`` is its chain of parents as made; ``flatten`` says what the policy
    did: ``"none"``, ``"queued"`` (in the background: wait on ``future``),
    ``"deferred"`` (over the soft limit, but the caller asked to queue it
    itself) or ``"done"`` (flattened before returning: it has no parent).
    """

    pool: str
    name: str
    depth: int
    flatten: str
    future: concurrent.futures.Future[None] | None = None


class GoldenImages:
    """Register, clone, list and delete golden images in one pool.

    :param driver: the cluster connection (not owned).
    :param pool: pool of the golden images.
    :param snapshot: name of their protected snapshot.
    :param max_clone_depth: / :param soft_limit: the depth policy (see the module).
    :param flatten_concurrency: background flattens at once.
    """

    def __init__(self, driver: RBDDriver, *, pool: str = option_default("golden_pool"),
                 snapshot: str = option_default("golden_snapshot"),
                 max_clone_depth: int = option_default("max_clone_depth"),
                 soft_limit: int = option_default("clone_depth_soft_limit"),
                 flatten_concurrency: int = option_default("flatten_concurrency"),
                 convert_timeout: int = option_default("convert_timeout"),
                 key_manager: Any = None) -> None:
        if max_clone_depth < 1 or soft_limit < 1:
            raise exception.InvalidArgument(op="clone policy", target=pool, detail=(
                f"max_clone_depth ({max_clone_depth}) and soft limit ({soft_limit}) must be >= 1"))
        self.driver, self.pool, self.snapshot = driver, pool, snapshot
        self.max_clone_depth, self.soft_limit = max_clone_depth, soft_limit
        self.convert_timeout = convert_timeout
        self.flattener = FlattenQueue(driver, flatten_concurrency)
        #: The key manager of encrypted goldens, or a callable returning it (loaded on use).
        self.key_manager = key_manager

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, driver: RBDDriver) -> GoldenImages:
        """Build from the ``[rbd]`` golden-image options."""
        group = conf.rbd
        return cls(driver, pool=group.golden_pool, snapshot=group.golden_snapshot,
                   max_clone_depth=group.max_clone_depth, soft_limit=group.clone_depth_soft_limit,
                   flatten_concurrency=group.flatten_concurrency,
                   convert_timeout=group.convert_timeout,
                   key_manager=lambda: load_key_manager(conf))

    def close(self) -> None:
        """Finish the queued background flattens."""
        self.flattener.close()

    def __enter__(self) -> GoldenImages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registering -----------------------------------------------------------

    def _golden(self, name: str) -> GoldenImage:
        location = RbdLocation(self.driver.fsid, self.pool, name, self.snapshot)
        return GoldenImage(self.pool, name, self.snapshot,
                           self.driver.size(name, self.pool, snapshot=self.snapshot),
                           location.url)

    def register(self, name: str, path: str, *, progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None,
                 encryption: DiskEncryption | None = None) -> GoldenImage:
        """Import the local image file ``path`` as golden image ``name``; return it.

        Raw (and ISO) data is copied sparse through the datapath engine; other
        formats are converted by qemu-img (safety checks of
        :mod:`rbd_driver.storage.convert`). The image is built, snapshotted
        and protected under a temporary name and renamed last.

        With ``encryption``, the golden is formatted with the passphrase of its
        secret (from the key manager) and the data written through librbd's
        encryption layer: the cluster only holds ciphertext. Its metadata
        records the secret's UUID (never the key), so a disk asking for that
        secret is a clone of it (:mod:`rbd_driver.backends.encrypted`).

        :raises ImageExists: ``name`` is taken.
        :raises KeyManagerError: / :raises EncryptionError: the key could not be had.
        :raises ImageConversionFailed: an unsafe or unconvertible file.
        :raises OperationCancelled: / :raises OSError: nothing is left behind.
        """
        if self.driver.exists(name, self.pool):
            raise exception.ImageExists(pool=self.pool, image=name, detail="already registered")
        temp = f"{name}.registering-{uuid.uuid4().hex[:8]}"
        with self._built(temp, name):
            found = convert.sniff_file(path)
            if encryption is not None:
                self._register_encrypted(path, found, temp, encryption, progress, cancel)
            elif found in ("raw", "iso"):
                self.driver.import_file(path, temp, self.pool, progress=progress, cancel=cancel)
            else:
                client = self.driver.client
                spec = convert.rbd_spec(self.pool, temp, client.user, client.ceph_conf,
                                        client.keyring)
                convert.convert_to_rbd(path, found, spec, timeout=self.convert_timeout)
        return self._golden(name)

    def _register_encrypted(self, path: str, found: str, temp: str, encryption: DiskEncryption,
                            progress: Callable[[int, int], None] | None,
                            cancel: threading.Event | None) -> None:
        manager = self.key_manager() if callable(self.key_manager) else self.key_manager
        if manager is None:
            raise exception.ConfigError(detail="an encrypted golden image needs a key manager")
        key = key_for(manager, encryption)
        raw = path
        if found not in ("raw", "iso"):  # converted beside the file, as create_image does
            raw = f"{path}.raw-{uuid.uuid4().hex[:8]}"
            convert.convert_to_raw_file(path, raw, found, timeout=self.convert_timeout)
        try:
            crypt.import_encrypted(self.driver.client, raw, self.pool, temp, key,
                                   window=self.driver.io_window, progress=progress,
                                   cancel=cancel)
        finally:
            if raw != path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(raw)

    def register_from_snapshot(self, name: str, source: RbdLocation) -> GoldenImage:
        """Register golden image ``name`` as a clone of a snapshot in the cluster.

        The clone follows the depth policy of :meth:`clone` (a flatten
        queued in the background keeps running after this returns).

        :raises ImageExists: / :raises SnapshotNotFound:
        """
        if self.driver.exists(name, self.pool):
            raise exception.ImageExists(pool=self.pool, image=name, detail="already registered")
        temp = f"{name}.registering-{uuid.uuid4().hex[:8]}"
        with self._built(temp, name):
            made = self.clone(source, temp, self.pool, background=False)
        if made.flatten == "deferred":
            self.flattener.submit(self.pool, name)
        return self._golden(name)

    @contextlib.contextmanager
    def _built(self, temp: str, name: str) -> Any:
        """Run the block that creates ``temp``; then snapshot, protect and rename it to
        ``name``. On any failure ``temp`` is removed."""
        try:
            yield
            self.driver.create_snap(temp, self.snapshot, protect=True, pool=self.pool)
            self.driver.rename(temp, name, self.pool)
        except BaseException as err:
            report = self.driver.remove_image(temp, self.pool)
            if not report.ok:
                err.add_note(f"{self.pool}/{temp} was left behind: "
                             f"{report.left_behind(temp)}")
            raise
        LOG.info("registered golden image %s/%s@%s", self.pool, name, self.snapshot)

    # -- facts -------------------------------------------------------------------

    def get(self, name: str) -> GoldenImage:
        """Return golden image ``name``.

        :raises ImageNotFound: / :raises SnapshotNotFound: not a golden image.
        """
        return self._golden(name)

    def list(self) -> list[GoldenImage]:
        """Return every image of the pool that has the protected golden snapshot."""
        found = []
        for name in self.driver.list_images(self.pool):
            with contextlib.suppress(exception.ImageNotFound):
                snaps = self.driver.list_snapshots(name, self.pool)
                if any(s.name == self.snapshot and s.protected for s in snaps):
                    found.append(self._golden(name))
        return found

    def encryption_of(self, name: str) -> dict[str, str] | None:
        """Return the ``format`` and ``secret_uuid`` golden ``name`` records, or
        None for a plain golden (the same shape as ``register``'s report)."""
        found = crypt.recorded(self.driver.client, self.pool, name)
        return None if found is None else {"format": found[0], "secret_uuid": found[1]}

    def children(self, name: str) -> builtins.list[str]:
        """Return ``pool/image`` of each clone of golden image ``name``, sorted;
        a clone in the RBD trash is marked `` (in the trash)``."""
        return [f"{c['pool']}/{c['image']}" + (" (in the trash)" if c["trash"] else "")
                for c in self.driver.snap_children(name, self.snapshot, self.pool)]

    def depth(self, image: str, pool: str) -> int:
        """Return the length of ``pool/image``'s chain of parents (0: no parent)."""
        depth, parent = 0, self.driver.parent_info(image, pool)
        while parent is not None:
            depth += 1
            parent = self.driver.parent_info(parent[1], parent[0])
        return depth

    # -- cloning -------------------------------------------------------------------

    def clone(self, source: str | RbdLocation, name: str, pool: str | None = None, *,
              background: bool = True) -> CloneResult:
        """Clone golden image ``source`` (a name in this pool, or a location) into
        ``pool/name`` under the depth policy; protect the snapshot first if needed.

        With ``background`` false a clone over the soft limit is not queued
        (``flatten="deferred"``), for a caller that renames it first.

        :raises ImageExists: / :raises SnapshotNotFound: / :raises ImageNotFound:
        """
        pool = pool or self.driver.pool
        if isinstance(source, str):
            source = RbdLocation(self.driver.fsid, self.pool, source, self.snapshot)
        snaps = self.driver.list_snapshots(source.image, source.pool)
        snap = next((s for s in snaps if s.name == source.snapshot), None)
        if snap is None:
            raise exception.SnapshotNotFound(pool=source.pool, image=source.image,
                                             snapshot=source.snapshot)
        if not snap.protected:  # clone format 1 needs it; protection is handled here
            with contextlib.suppress(exception.ImageBusy):  # protected meanwhile
                self.driver.protect_snap(source.image, source.snapshot, source.pool)
        depth = self.depth(source.image, source.pool) + 1
        self.driver.clone(source, name, pool)
        if depth > self.max_clone_depth:
            try:
                self.driver.flatten(name, pool)
            except BaseException:
                self.driver.remove_image(name, pool)
                raise
            LOG.info("flattened %s/%s: depth %d is over max_clone_depth %d", pool, name,
                     depth, self.max_clone_depth)
            return CloneResult(pool, name, depth, "done")
        if depth > self.soft_limit:
            if not background:
                return CloneResult(pool, name, depth, "deferred")
            return CloneResult(pool, name, depth, "queued", self.flattener.submit(pool, name))
        return CloneResult(pool, name, depth, "none")

    # -- deleting ---------------------------------------------------------------

    def delete(self, name: str, *, force: bool = False, flatten_images: bool = False,
               progress: Callable[[int, int], Any] | None = None) -> str:
        """Delete golden image ``name``; return ``"removed"`` or ``"trashed"``.

        Its spare clones (``[rbd] clone_spares``) are not instance disks: they
        are removed first, then the rule on clones applies. Golden images
        made from it in its own pool (instance snapshots that share its data,
        see ``[rbd] snapshot_flatten``) are clones too; with ``flatten_images``
        they are flattened first (a full copy each; with librbd's deep-flatten
        feature their snapshots are detached too), so they no longer hold it;
        ``progress(done, total)`` follows each flatten.

        :raises GoldenImageHasClones: it has clones and ``force`` is false; the
            message names them, marking the golden images made from it.
        :raises ImageInUse: it (or one of its spares) is open by a client; it was
            neither removed nor trashed.
        :raises CleanupFailed: it (or one of its spares) could not be removed.
        """
        with self._spares_held(name) as identity:
            deadline = time.monotonic() + SPARES_WAIT
            pools: set[str] = set()
            while True:
                pools.update(self._remove_spares(name))
                try:
                    outcome = self._delete(name, force, flatten_images, progress)
                    break
                except exception.GoldenImageHasClones:
                    # A spare another host had started before the hold
                    # appeared after the last look: look again, for a while.
                    if time.monotonic() >= deadline or not self._only_spares(name):
                        raise
                    time.sleep(SPARES_POLL)
            if identity is not None:
                self._sweep_spares(identity, sorted(pools | {self.driver.pool}),
                                   wait=bool(pools))
            return outcome

    def _only_spares(self, name: str) -> bool:
        children = self.driver.snap_children(name, self.snapshot, self.pool)
        return bool(children) and all(is_spare_name(c["image"]) for c in children)

    def _sweep_spares(self, identity: SnapshotIdentity, pools: builtins.list[str],
                      wait: bool) -> None:
        """After the golden went: remove spares of it that a host finished meanwhile.

        Their names carry the golden's identity, so they are found by name
        prefix even though the golden is gone. Their makers remove them too
        (a refill checks the hold and the golden after each clone); this
        covers a maker that died first. Looked for once, and for a few polls
        more when ``wait`` (spares were seen: a host was refilling).
        """
        deadline = time.monotonic() + (SPARES_POLL * 4 if wait else 0)
        while True:
            for pool in pools:
                self.driver.remove_spares(pool, identity)
            if time.monotonic() >= deadline:
                return
            time.sleep(SPARES_POLL)

    def _delete(self, name: str, force: bool, flatten_images: bool,
                progress: Callable[[int, int], Any] | None = None) -> str:
        if flatten_images:
            for image in self._derived_goldens(name):
                self.driver.flatten(image, self.pool, progress=progress)
                LOG.info("flattened golden image %s/%s, made from %s, before deleting it",
                         self.pool, image, name)
        children = self.children(name)
        derived = {f"{self.pool}/{image}" for image in self._derived_goldens(name)}
        if derived and not force and not flatten_images:
            children = [c + (" (a golden image made from it: --flatten-images)"
                             if c in derived else "") for c in children]
        if children:
            if not force:
                raise exception.GoldenImageHasClones(pool=self.pool, image=name,
                                                     snapshot=self.snapshot,
                                                     children=", ".join(children))
            self.driver.move_to_trash(name, self.pool)
            LOG.warning("moved golden image %s/%s to the trash; clones: %s", self.pool, name,
                        ", ".join(children))
            return "trashed"
        report = self.driver.remove_image(name, self.pool)
        if name in report.busy:
            raise exception.ImageInUse(pool=self.pool, image=name, watchers=report.busy[name])
        if report.failed:
            raise exception.CleanupFailed(pool=self.pool, image=name, detail=report.failed[name])
        return "trashed" if report.trashed else "removed"

    @contextlib.contextmanager
    def _spares_held(self, name: str) -> Iterator[SnapshotIdentity | None]:
        """Hold every host's spare refills of golden ``name`` while the block runs;
        give the block the golden snapshot's identity (None if there is none)."""
        location = RbdLocation(self.driver.fsid, self.pool, name, self.snapshot)
        try:
            identity = self.driver.snapshot_identity(location)
        except (exception.ImageNotFound, exception.SnapshotNotFound):
            identity = None  # nothing to clone from, so nothing to refill
        if identity is None:
            yield None
            return
        with self.driver.spares.hold_everywhere(identity):
            yield identity

    def _derived_goldens(self, name: str) -> builtins.list[str]:
        """Return the golden images of this pool that are clones of ``name``'s snapshot."""
        found = []
        for child in self.driver.snap_children(name, self.snapshot, self.pool):
            if child["pool"] != self.pool or child["trash"]:
                continue
            with contextlib.suppress(exception.ImageNotFound):
                snaps = self.driver.list_snapshots(child["image"], self.pool)
                if any(s.name == self.snapshot and s.protected for s in snaps):
                    found.append(child["image"])
        return found

    def _remove_spares(self, name: str) -> builtins.list[str]:
        """Remove the spare clones of golden image ``name``, in whichever pools they
        are; return those pools.

        Every host's refills are held (:meth:`_spares_held`), but a host may
        be finishing a clone it started: looked for again, every
        :data:`SPARES_POLL` seconds for up to :data:`SPARES_WAIT`; one left
        after that counts as a clone.
        """
        location = RbdLocation(self.driver.fsid, self.pool, name, self.snapshot)
        deadline = time.monotonic() + SPARES_WAIT
        pools = self._spare_pools(name)
        seen = set(pools)
        while pools:
            identity = self.driver.snapshot_identity(location)
            if identity is None:  # no spares (spares need a known identity)
                break
            for pool in pools:
                self.driver.remove_spares(pool, identity)
            pools = self._spare_pools(name)
            seen.update(pools)
            if not pools or time.monotonic() >= deadline:
                break
            time.sleep(SPARES_POLL)
        return sorted(seen)

    def _spare_pools(self, name: str) -> builtins.list[str]:
        """The pools holding spare clones of golden ``name`` (made, being made or removed)."""
        return sorted({c["pool"] for c in self.driver.snap_children(name, self.snapshot, self.pool)
                       if not c["trash"] and is_spare_name(c["image"])})
