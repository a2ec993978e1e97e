# SPDX-License-Identifier: Apache-2.0
"""Installing Ganeti's ExtStorage provider ``rbd_driver``: its files, nothing else.

:func:`install_provider` writes into a directory the executables of
:data:`rbd_driver.ops.ganeti.ACTIONS`, each one line that runs
``python -m rbd_driver.cli.extstorage`` with the given Python and the library's
config file, and ``parameters.list`` (:data:`rbd_driver.ops.ganeti.PARAMETERS`).
The scripts hold paths only, never a key. Each file is written whole and
renamed into place, so a reinstall is safe while Ganeti runs them.
``rbd-driver ganeti install`` and the Ganeti test fixture call it.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile

from rbd_driver.ops.ganeti import ACTIONS, PARAMETERS

__all__ = ["DEFAULT_CONFIG", "DEFAULT_DIR", "install_provider"]

#: Where Ganeti looks for the provider ``rbd_driver`` (its ES_SEARCH_PATH).
DEFAULT_DIR = "/usr/share/ganeti/extstorage/rbd_driver"
#: The library's config file the scripts read, unless ``--config-file`` says otherwise.
DEFAULT_CONFIG = "/etc/rbd_driver/rbd_driver.conf"


def _script(action: str, config_file: str, python: str) -> str:
    return ("#!/bin/sh\n"
            f"# Ganeti ExtStorage provider rbd_driver: {action}. Written by "
            "`rbd-driver ganeti install`.\n"
            f"exec {shlex.quote(python)} -m rbd_driver.cli.extstorage {action} "
            f"--config-file {shlex.quote(config_file)}\n")


def _write(path: str, text: str, mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".install-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def install_provider(directory: str, config_file: str, python: str | None = None) -> list[str]:
    """Write the provider into ``directory`` (made if missing); return the paths written."""
    python = python or sys.executable
    config_file = os.path.abspath(config_file)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = []
    for action in ACTIONS:
        path = os.path.join(directory, action)
        _write(path, _script(action, config_file, python), 0o755)
        written.append(path)
    path = os.path.join(directory, "parameters.list")
    _write(path, "".join(f"{name} {text}\n" for name, text in PARAMETERS), 0o644)
    written.append(path)
    return written
