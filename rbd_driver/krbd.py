"""Deprecated: moved to :mod:`rbd_driver.storage.krbd`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.storage.krbd import (KernelKeyring, KernelRbd, LinuxKeyring, Mapping,
                                     local_addresses, local_osds)

__all__ = ["KernelKeyring", "KernelRbd", "LinuxKeyring", "Mapping", "local_addresses",
           "local_osds"]

warnings.warn("rbd_driver.krbd is deprecated: use rbd_driver.storage.krbd",
              DeprecationWarning, stacklevel=2)
