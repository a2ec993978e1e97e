"""Deprecated: moved to :mod:`rbd_driver.libvirt.disk_xml`.

Kept for one release; importing it warns.
"""

from __future__ import annotations

import warnings

from rbd_driver.libvirt.disk_xml import (DETECT_ZEROES_MODES, DISCARD_MODES, IOTUNE_KEYS,
                                         block_disk_xml, file_disk_xml, network_disk_xml)

__all__ = ["DETECT_ZEROES_MODES", "DISCARD_MODES", "IOTUNE_KEYS", "block_disk_xml",
           "file_disk_xml", "network_disk_xml"]

warnings.warn("rbd_driver.libvirt_config is deprecated: use rbd_driver.libvirt.disk_xml",
              DeprecationWarning, stacklevel=2)
