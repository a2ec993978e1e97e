"""Deprecated: moved to :mod:`rbd_driver.libvirt.secret`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.libvirt.secret import (define_ceph_secret, remove_ceph_secret, secret_xml,
                                       usage_name)

__all__ = ["define_ceph_secret", "remove_ceph_secret", "secret_xml", "usage_name"]

warnings.warn("rbd_driver.libvirt_secret is deprecated: use rbd_driver.libvirt.secret",
              DeprecationWarning, stacklevel=2)
