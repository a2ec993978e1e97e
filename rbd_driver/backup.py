"""Deprecated: moved to :mod:`rbd_driver.ops.backup`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.ops.backup import SNAPSHOT_PREFIX, BackupManager, BackupManifest, PruneReport

__all__ = ["SNAPSHOT_PREFIX", "BackupManager", "BackupManifest", "PruneReport"]

warnings.warn("rbd_driver.backup is deprecated: use rbd_driver.ops.backup",
              DeprecationWarning, stacklevel=2)
