"""Deprecated: moved to :mod:`rbd_driver.ops.golden`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.ops.golden import CloneResult, FlattenQueue, GoldenImage, GoldenImages

__all__ = ["CloneResult", "FlattenQueue", "GoldenImage", "GoldenImages"]

warnings.warn("rbd_driver.golden is deprecated: use rbd_driver.ops.golden",
              DeprecationWarning, stacklevel=2)
