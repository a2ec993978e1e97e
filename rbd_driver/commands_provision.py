"""Deprecated: moved to :mod:`rbd_driver.cli.provision`; kept for one release, importing it warns."""

from __future__ import annotations

import warnings

from rbd_driver.cli.provision import HANDLERS, add_parsers, provision_cmd

__all__ = ["HANDLERS", "add_parsers", "provision_cmd"]

warnings.warn("rbd_driver.commands_provision is deprecated: use rbd_driver.cli.provision",
              DeprecationWarning, stacklevel=2)
