"""Deprecated: moved to :mod:`rbd_driver.ops.snapshots`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.ops.snapshots import InstanceSnapshots, SnapshotInfo

__all__ = ["InstanceSnapshots", "SnapshotInfo"]

warnings.warn("rbd_driver.snapshots is deprecated: use rbd_driver.ops.snapshots",
              DeprecationWarning, stacklevel=2)
