# SPDX-License-Identifier: Apache-2.0
"""What every part of ``Rbd`` knows of its disk: the base of its mixins.

:class:`RbdDisk` declares, once, the attributes
:class:`~rbd_driver.backends.rbd.Rbd` sets on a disk (its options, driver,
pool, image name and encryption) and, for the type checker only, the
methods of ``Rbd`` itself that the mixins of
:mod:`~rbd_driver.backends.rbd_clone`, :mod:`~rbd_driver.backends.rbd_copy`,
:mod:`~rbd_driver.backends.rbd_snapshots`,
:mod:`~rbd_driver.backends.rbd_cleanup` and
:mod:`~rbd_driver.backends.rbd_xml` call. It has no behaviour of its own.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from oslo_config import cfg

from rbd_driver.storage.rbd_utils import RBDDriver

__all__ = ["RbdDisk"]


class RbdDisk:
    """The attributes of an ``Rbd`` disk, set by ``Rbd.__init__``."""

    #: The caller's configuration (``[rbd]``, ``[encryption]``).
    conf: cfg.ConfigOpts
    #: The driver: the one connection, and the librados/librbd calls.
    driver: RBDDriver
    #: The pool of the disk.
    pool: str
    #: The disk's image name (``<instance uuid>_<disk name>``).
    rbd_name: str
    #: The disk's :class:`~rbd_driver.encryption.DiskEncryption`, or None.
    encryption: Any
    #: How an encrypted disk was made (``"clone"`` or ``"copy"``), or None.
    encryption_method: str | None

    if TYPE_CHECKING:  # defined by Rbd (rbd.py)
        def exists(self) -> bool: ...
        def _disk_lock(self) -> contextlib.AbstractContextManager[None]: ...
