"""Deprecated: moved to :mod:`rbd_driver.cli.golden`; kept for one release, importing it warns."""

from __future__ import annotations

import warnings

from rbd_driver.cli.golden import HANDLERS, add_parsers, golden

__all__ = ["HANDLERS", "add_parsers", "golden"]

warnings.warn("rbd_driver.commands_golden is deprecated: use rbd_driver.cli.golden",
              DeprecationWarning, stacklevel=2)
