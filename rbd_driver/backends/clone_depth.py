"""The clone-depth policy on the launch path (:meth:`Rbd.direct_fetch`).

A golden image has depth 0, its clones 1; a golden registered from a
snapshot of a clone (an instance snapshot, say) makes deeper chains, and
every read of data a disk never wrote walks the chain. As in
:meth:`rbd_driver.ops.golden.GoldenImages.clone`, a new disk deeper than
``[rbd] max_clone_depth`` is flattened before the launch returns, and one
deeper than ``[rbd] clone_depth_soft_limit`` is flattened in the background
by the driver's :attr:`~rbd_driver.storage.rbd_utils.RBDDriver.flattener`.

A golden snapshot's depth is remembered by its identity (image id and
snapshot id, which are never reused), as the format verdict is, so the
common launch from a depth-0 golden costs a dictionary lookup. The depth of
a snapshot only shrinks later (its image flattened with deep-flatten), so a
remembered depth can only cause a flatten that was not needed, never skip
one that is.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from oslo_config import cfg

from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.rbd_utils import RBDDriver, SnapshotIdentity

__all__ = ["DEPTH_CACHE_SIZE", "apply_policy", "snapshot_depth"]

LOG = logging.getLogger(__name__)

DEPTH_CACHE_SIZE = 4096
_depths: dict[Any, int] = {}
_depths_lock = threading.Lock()
_MAX_WALK = 256  # a chain longer than this is a loop in corrupt metadata


def _walk(driver: RBDDriver, pool: str, image: str, snapshot: str | None) -> int:
    """Return how many parents ``pool/image@snapshot`` has, following each at its snapshot."""
    depth = 0
    while depth < _MAX_WALK:
        parent = driver.parent_info(image, pool, snapshot=snapshot)
        if parent is None:
            return depth
        pool, image, snapshot = parent
        depth += 1
    return depth


def snapshot_depth(driver: RBDDriver, location: RbdLocation,
                   identity: SnapshotIdentity | None) -> int:
    """Return the depth of a golden snapshot (0: its image has no parent there).

    Remembered by ``(fsid, identity)`` when the identity is known.

    :raises ImageNotFound: / :raises SnapshotNotFound: / :raises PermissionDenied:
    """
    key = (driver.fsid, identity) if identity is not None else None
    if key is not None:
        with _depths_lock:
            cached = _depths.get(key)
        if cached is not None:
            return cached
    depth = _walk(driver, location.pool, location.image, location.snapshot)
    if key is not None:
        with _depths_lock:
            if len(_depths) >= DEPTH_CACHE_SIZE:
                _depths.pop(next(iter(_depths)))
            _depths[key] = depth
    return depth


def apply_policy(driver: RBDDriver, conf: cfg.ConfigOpts, pool: str, name: str,
                 depth: int) -> str:
    """Apply the policy to the new clone ``pool/name`` of depth ``depth``.

    Returns ``"none"``, ``"queued"`` (a background flatten was asked for) or
    ``"done"`` (flattened here: it has no parent now).

    :raises RbdDriverError: the flatten failed (the clone is left as it was).
    """
    group = conf.rbd
    if depth > group.max_clone_depth:
        driver.flatten(name, pool)
        LOG.info("flattened %s/%s: depth %d is over max_clone_depth %d", pool, name, depth,
                 group.max_clone_depth)
        return "done"
    if depth > group.clone_depth_soft_limit:
        driver.flattener.submit(pool, name)
        LOG.info("queued a flatten of %s/%s: depth %d is over clone_depth_soft_limit %d",
                 pool, name, depth, group.clone_depth_soft_limit)
        return "queued"
    return "none"
