"""Deprecated: moved to :mod:`rbd_driver.ops.provision`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.ops.provision import (DEFAULT_PG_NUM, CephxUser, PoolResult, ProvisionReport,
                                      Provisioner, default_keyring_path, provision_from_conf,
                                      snapshot_pools, user_caps)

__all__ = ["DEFAULT_PG_NUM", "CephxUser", "PoolResult", "ProvisionReport", "Provisioner",
           "default_keyring_path", "provision_from_conf", "snapshot_pools", "user_caps"]

warnings.warn("rbd_driver.provision is deprecated: use rbd_driver.ops.provision",
              DeprecationWarning, stacklevel=2)
