# SPDX-License-Identifier: Apache-2.0
"""rbd_driver: keep instance disks in Ceph RBD, from the hypervisor, in-process.

The public API is re-exported here; see ARCHITECTURE and the user guide.
"""

import logging

from rbd_driver import exception
from rbd_driver.conf import list_opts, register_opts

__version__ = "0.2.0"

__all__ = ["__version__", "exception", "list_opts", "register_opts"]

# A library never configures logging; the application decides where it goes.
logging.getLogger(__name__).addHandler(logging.NullHandler())
