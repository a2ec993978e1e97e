"""Deprecated: moved to :mod:`rbd_driver.ops.collector`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.ops.collector import SCHEMA_VERSION, collect, collect_from_conf, image_usage

__all__ = ["SCHEMA_VERSION", "collect", "collect_from_conf", "image_usage"]

warnings.warn("rbd_driver.collector is deprecated: use rbd_driver.ops.collector",
              DeprecationWarning, stacklevel=2)
