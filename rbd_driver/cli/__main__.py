# SPDX-License-Identifier: Apache-2.0
"""``python -m rbd_driver.cli``: the ``rbd-driver`` command."""

import sys

from rbd_driver.cli import main

sys.exit(main())
