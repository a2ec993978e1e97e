# SPDX-License-Identifier: Apache-2.0
"""The in-memory cluster one :func:`~rbd_driver.testing.fakes.make_modules` call creates.

:class:`FakeCluster` is what a test holds on to: it owns the pools, lets the
test pre-populate and inspect them, sets the knobs (health, capacity, clone
format, aio mode, extra mon commands), makes chosen API calls fail
(:meth:`FakeCluster.fail_next`), lets another client's calls run in the middle
of a call that librbd does in several steps (:meth:`FakeCluster.pause_in`) and
tracks every connection, ioctx and image handle so leaks show up
(:meth:`FakeCluster.assert_no_open_handles`).

Every public method of the fake classes goes through :func:`api`, which takes
the cluster lock, records the call and raises an injected failure before the
call has any effect.
"""

from __future__ import annotations

import functools
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rbd_driver.testing.fakes import mon
from rbd_driver.testing.fakes.errors import instantiate
from rbd_driver.testing.fakes.model import FakeImage, FakePool

if TYPE_CHECKING:
    from rbd_driver.testing.fakes.image import Image
    from rbd_driver.testing.fakes.rados import Ioctx, Rados

__all__ = ["FakeCluster", "MonCommandHandler", "api"]

MonCommandHandler = Callable[[dict[str, Any], bytes], tuple[int, bytes, str]]
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass
class _FailureRule:
    method: str
    exc: BaseException | type[BaseException]
    times: int | None
    after: int


class FakeCluster:
    """The cluster both fake modules of one :func:`make_modules` call share.

    Knobs tests may set: ``health`` (``"HEALTH_OK"``), ``total_bytes``
    (capacity reported by ``df``/``get_cluster_stats``), ``allow_pool_delete``
    (False makes ``delete_pool`` fail with EPERM, as a real cluster does by
    default), ``clone_format`` (1: clone needs a protected snapshot; 2: it
    does not, and removing a snapshot that clones still read from moves it
    to the trash namespace, as librbd does with clone v2), ``aio_mode``
    (``"sync"``: aio completes before ``aio_*`` returns; ``"thread"``: on a
    separate thread), ``mon_commands`` (prefix ->
    handler, pre-filled with status, health, fsid, df and mon dump),
    ``require_osd_release`` (``"pacific"``; ``"luminous"`` or ``"mimic"``
    make the header's snapshot records use the pre-nautilus encoding, as
    cls_rbd writes them while ``require_osd_release`` is below nautilus).
    ``calls`` lists the qualified name of every API call made
    (``"Image.write"``); ``connect_count`` counts successful connects.
    """

    def __init__(self, fsid: str | None = None) -> None:
        self.fsid = fsid or str(uuid.uuid4())
        self.health = "HEALTH_OK"
        self.total_bytes = 1 << 40
        self.allow_pool_delete = True
        self.clone_format = 1
        self.aio_mode = "sync"
        self.require_osd_release = "pacific"
        self.pools: dict[str, FakePool] = {}
        self.calls: list[str] = []
        self.connect_count = 0
        self.mon_commands: dict[str, MonCommandHandler] = mon.default_handlers(self)
        # Reentrant: API methods call helpers that lock too (create_pool -> add_pool).
        self._lock = threading.RLock()
        self._failures: list[_FailureRule] = []
        self._pauses: dict[str, Callable[[], None]] = {}
        self._pool_ids = itertools.count(1)
        self._image_ids = itertools.count(1)
        # Handle registries and id sources, updated by the fake classes.
        self._instance_ids = itertools.count(4100)
        self._cookies = itertools.count(140000000000001)
        self._connections: dict[int, Rados] = {}
        self._ioctxs: dict[int, Ioctx] = {}
        self._images: dict[int, Image] = {}

    def __repr__(self) -> str:
        return f"<FakeCluster fsid={self.fsid} pools={sorted(self.pools)}>"

    # -- pre-population and inspection -------------------------------------

    def add_pool(self, name: str) -> FakePool:
        """Create pool ``name`` (or return the existing one)."""
        with self._lock:
            pool = self.pools.get(name)
            if pool is None:
                pool = self.pools[name] = FakePool(next(self._pool_ids), name)
            return pool

    def pool(self, name: str) -> FakePool:
        """Return pool ``name``; raises KeyError if it does not exist."""
        return self.pools[name]

    def add_image(
        self,
        pool: str,
        name: str,
        size: int,
        *,
        data: bytes = b"",
        order: int = 22,
        features: int = 61,
        old_format: bool = False,
    ) -> FakeImage:
        """Create image ``pool/name`` (and the pool), with ``data`` written at 0; returns it."""
        with self._lock:
            fake_pool = self.add_pool(pool)
            if fake_pool.image_by_name(name) is not None:
                raise ValueError(f"image {pool}/{name} exists")
            image = self.new_image(fake_pool, name, size, order, 0 if old_format else features, old_format)
            if data:
                image.write(data, 0)
            return image

    def image(self, pool: str, name: str) -> FakeImage:
        """Return image ``pool/name`` (not one in the trash); raises KeyError if absent."""
        image = self.pools[pool].image_by_name(name)
        if image is None:
            raise KeyError(f"no image {pool}/{name}")
        return image

    def lockers(self, pool: str, key: str, name: str | None = None) -> list[dict[str, Any]]:
        """Return ``{"name", "entity", "cookie", "description", "expiration"}`` per lock on ``key``."""
        with self._lock:
            fake_pool = self.pools[pool]
            result = []
            for okey, lname in sorted(fake_pool.locks):
                if okey != key or (name is not None and lname != name):
                    continue
                locker = fake_pool.lock_holder(okey, lname)
                if locker is not None:
                    result.append(
                        {
                            "name": lname,
                            "entity": locker.entity,
                            "cookie": locker.cookie,
                            "description": locker.description,
                            "expiration": locker.expiration,
                        }
                    )
            return result

    def used_bytes(self) -> int:
        """Bytes stored in the whole cluster; chunks shared by snapshots count once."""
        seen: set[int] = set()
        used = 0
        for pool in self.pools.values():
            used += sum(len(o.data) for o in pool.objects.values())
            for image in pool.images.values():
                for view in [image.head, *(s.view for s in image.snaps.values())]:
                    for chunk in view.chunks.values():
                        if id(chunk) not in seen:
                            seen.add(id(chunk))
                            used += len(chunk.data)
        return used

    # -- failure injection --------------------------------------------------

    def fail_next(
        self,
        method: str,
        exc: BaseException | type[BaseException],
        *,
        times: int | None = 1,
        after: int = 0,
    ) -> None:
        """Make calls of ``method`` raise ``exc``.

        ``method`` is a qualified name (``"Rados.connect"``, ``"Image.write"``,
        ``"RBD.clone"``, ``"Image.__init__"`` for opening an image) or a bare
        method name matching every class. ``exc`` is an exception instance or
        class; a class is instantiated with an errno fitting it. The first
        ``after`` matching calls pass, then ``times`` calls fail (None:
        forever). The failure is raised before the call has any effect; for
        ``Image.aio_*`` it is delivered through the completion instead.
        """
        with self._lock:
            self._failures.append(_FailureRule(method, exc, times, after))

    def clear_failures(self) -> None:
        """Forget every pending :meth:`fail_next`."""
        with self._lock:
            self._failures.clear()

    def on_call(self, name: str, *, raise_failure: bool = True) -> BaseException | None:
        """Record a call; return (or raise) the failure injected for it, if any."""
        self.calls.append(name)
        short = name.rsplit(".", 1)[-1]
        for rule in list(self._failures):
            if rule.method not in (name, short):
                continue
            if rule.after > 0:
                rule.after -= 1
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._failures.remove(rule)
            exc = instantiate(rule.exc, name)
            if raise_failure:
                raise exc
            return exc
        return None

    def pause_in(self, method: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, without the cluster lock, in the middle of the next
        ``method`` call, so a test can put another client's calls between its steps.

        Only calls that are several steps in librbd have such a point:
        ``"RBD.remove"`` pauses after it resolved the name (librbd then removes
        what it resolved, whatever the name has become meanwhile).
        """
        with self._lock:
            self._pauses[method] = callback

    def pause_point(self, method: str) -> None:
        """Called by the fake classes at their pause point (the lock held once)."""
        callback = self._pauses.pop(method, None)
        if callback is None:
            return
        self._lock.release()
        try:
            callback()
        finally:
            self._lock.acquire()

    # -- handle tracking ----------------------------------------------------

    def open_handles(self) -> dict[str, list[str]]:
        """Return what is still open: ``{"connections", "ioctxs", "images"}`` -> descriptions."""
        with self._lock:
            return {
                "connections": [f"{r._entity_name} (client.{r._instance_id})"
                                for r in self._connections.values()],
                "ioctxs": [i.name for i in self._ioctxs.values()],
                "images": [img._describe() for img in self._images.values()],
            }

    def assert_no_open_handles(self) -> None:
        """Raise AssertionError naming every connection, ioctx or image left open."""
        leaked = {kind: items for kind, items in self.open_handles().items() if items}
        if leaked:
            raise AssertionError(f"handles left open: {leaked}")

    # -- shared by the fake classes -------------------------------------------

    def new_image(
        self, pool: FakePool, name: str, size: int, order: int, features: int, old_format: bool
    ) -> FakeImage:
        """Create an image record with a fresh id (librbd-style hex)."""
        image_id = f"{0x5E3F00000000 + next(self._image_ids):x}"
        image = pool.images[image_id] = FakeImage(pool, image_id, name, size, order, features, old_format)
        return image

    def descendants(self, image: FakeImage) -> list[FakeImage]:
        """Return the clones of every snapshot of ``image``, and theirs, recursively."""
        found: list[FakeImage] = []
        pending = [image]
        while pending:
            for child in self.children(pending.pop(), None):
                if child not in found:
                    found.append(child)
                    pending.append(child)
        return sorted(found, key=lambda c: (c.pool.name, c.name))

    def prune_trashed_snaps(self) -> None:
        """Drop the trash-namespace snapshots no clone reads from any more, as
        librbd does when the last clone of such a snapshot detaches."""
        for pool in self.pools.values():
            for image in pool.images.values():
                for snap in image.trashed_snaps():
                    if not self.children(image, [snap.id]):
                        del image.snaps[snap.id]

    def children(self, image: FakeImage, snap_ids: Iterable[int] | None) -> list[FakeImage]:
        """Return the images whose head or snapshots are cloned from ``image@snap_ids``
        (from any snapshot of ``image`` when ``snap_ids`` is None)."""
        wanted = set(image.snaps if snap_ids is None else snap_ids)
        found = []
        for pool in self.pools.values():
            for child in pool.images.values():
                views = [child.head, *(s.view for s in child.snaps.values())]
                links = [v.parent for v in views if v.parent is not None]
                if any(link.image is image and link.snap_id in wanted for link in links):
                    found.append(child)
        return sorted(found, key=lambda c: (c.pool.name, c.name))


def api(func: _F) -> _F:
    """Wrap a public fake method: hold the cluster lock, record the call, inject failures.

    The cluster is the instance's ``_cluster``; ``RBD`` methods and
    ``Image.__init__`` have none yet, so their first argument, the ioctx,
    brings it. Anything else there raises the TypeError the bindings raise.
    """
    name = func.__qualname__

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        cluster = getattr(self, "_cluster", None)
        if cluster is None:
            ioctx = args[0] if args else kwargs.get("ioctx", kwargs.get("p_ioctx"))
            cluster = getattr(ioctx, "_cluster", None)
            if not isinstance(cluster, FakeCluster):
                raise TypeError("ioctx must be rados.Ioctx object")
        with cluster._lock:
            cluster.on_call(name)
            return func(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
