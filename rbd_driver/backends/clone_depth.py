# SPDX-License-Identifier: Apache-2.0
"""The clone-depth policy on the launch path (:meth:`Rbd.direct_fetch
<rbd_driver.backends.rbd.Rbd.direct_fetch>`).

A golden image has depth 0, its clones 1; a golden registered from a
snapshot of a clone (an instance snapshot, say) makes deeper chains, and
every read of data a disk never wrote walks the chain. As in
:meth:`rbd_driver.ops.golden.GoldenImages.clone`, a new disk deeper than
``[rbd] max_clone_depth`` is flattened before the launch returns, and one
deeper than ``[rbd] clone_depth_soft_limit`` is flattened in the background
by the driver's :attr:`~rbd_driver.storage.rbd_utils.RBDDriver.flattener`.

A golden snapshot's depth is remembered by its identity (image id and
snapshot id, which are never reused), as the format verdict is, so the
common launch from a depth-0 golden costs a dictionary lookup (about 4 us
with the policy applied; ``benchmarks/bench_snapshot.py`` finds no cost on
a launch above noise). Nothing invalidates an entry, because none can be
wrong where it matters: a snapshot's depth never grows (a recreated image or
snapshot has new ids, so a new entry), it only shrinks (an ancestor
flattened with deep-flatten). A remembered depth that allows the clone
without a flatten therefore still does; one that would cause a flatten is
walked again first (``recheck_over``), so no flatten comes from a stale entry.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from oslo_config import cfg

from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.rbd_utils import RBDDriver, SnapshotIdentity

__all__ = ["DEPTH_CACHE_SIZE", "apply_policy", "launch_depth", "snapshot_depth"]

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
                   identity: SnapshotIdentity | None, recheck_over: int | None = None) -> int:
    """Return the depth of a golden snapshot (0: its image has no parent there).

    Remembered by ``(fsid, identity)`` when the identity is known. A
    remembered depth above ``recheck_over`` (it would make a clone the caller
    flattens) is walked again, since it may have shrunk.

    :raises ImageNotFound: / :raises SnapshotNotFound: / :raises PermissionDenied:
    """
    key = (driver.fsid, identity) if identity is not None else None
    if key is not None:
        with _depths_lock:
            cached = _depths.get(key)
        if cached is not None and (recheck_over is None or cached <= recheck_over):
            return cached
    depth = _walk(driver, location.pool, location.image, location.snapshot)
    if key is not None:
        with _depths_lock:
            if key not in _depths and len(_depths) >= DEPTH_CACHE_SIZE:
                _depths.pop(next(iter(_depths)))
            _depths[key] = depth
    return depth


def launch_depth(driver: RBDDriver, conf: cfg.ConfigOpts, location: RbdLocation,
                 identity: SnapshotIdentity | None) -> int:
    """Return the depth of a new clone of ``location``, exact when it decides a flatten."""
    group = conf.rbd
    threshold = min(group.clone_depth_soft_limit, group.max_clone_depth) - 1
    return snapshot_depth(driver, location, identity, recheck_over=threshold) + 1


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
