"""Deprecated: the disk-level handlers moved to :mod:`rbd_driver.cli.disks`.

Kept for one release; importing it warns. ``status`` and ``pool_info`` are
in :mod:`rbd_driver.cli.cluster`, the shared helpers in
:mod:`rbd_driver.cli._common` and :mod:`rbd_driver.cli.output`.
"""

from __future__ import annotations

import warnings

from rbd_driver.cli import cluster as _cluster
from rbd_driver.cli import disks as _disks
from rbd_driver.cli._common import Handler, Result, UsageError, positive_int
from rbd_driver.cli.cluster import pool_info, status
from rbd_driver.cli.disks import (cleanup, clone, export_file, import_file, list_disks,
                                  snapshot)
from rbd_driver.cli.output import progress_bar

__all__ = ["HANDLERS", "Handler", "Result", "UsageError", "cleanup", "clone", "export_file",
           "import_file", "list_disks", "pool_info", "positive_int", "progress_bar", "snapshot",
           "status"]

warnings.warn("rbd_driver.commands is deprecated: use rbd_driver.cli.disks, "
              "rbd_driver.cli.cluster and rbd_driver.cli._common",
              DeprecationWarning, stacklevel=2)

HANDLERS: dict[str, Handler] = {**_cluster.HANDLERS, **_disks.HANDLERS}
