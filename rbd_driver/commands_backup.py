"""Deprecated: moved to :mod:`rbd_driver.cli.backup`; kept for one release, importing it warns."""

from __future__ import annotations

import warnings

from rbd_driver.cli.backup import HANDLERS, add_parsers, backup, restore

__all__ = ["HANDLERS", "add_parsers", "backup", "restore"]

warnings.warn("rbd_driver.commands_backup is deprecated: use rbd_driver.cli.backup",
              DeprecationWarning, stacklevel=2)
