"""``rbd-driver ganeti install [--dir DIR] [--config-file FILE]``.

Writes Ganeti's ExtStorage provider ``rbd_driver`` into DIR (default
:data:`DEFAULT_DIR`, on Ganeti's ExtStorage search path): the executables
of :data:`rbd_driver.ops.ganeti.ACTIONS`, each one line that runs
:mod:`rbd_driver.cli.extstorage` with this Python and the library's config
file FILE (default :data:`DEFAULT_CONFIG`), and ``parameters.list``
(``origin``, ``pool``). The scripts hold paths only, never a key. Each file
is written whole and renamed into place, so a reinstall is safe while
Ganeti runs them. Needs no config file itself (FILE is read by the scripts).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from typing import Any

from oslo_config import cfg

from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.cli.output import fields
from rbd_driver.ops.ganeti import ACTIONS, PARAMETERS

__all__ = ["DEFAULT_CONFIG", "DEFAULT_DIR", "HANDLERS", "NEEDS_CONF", "TEXT", "add_parsers",
           "install_provider"]

#: Where Ganeti looks for the provider ``rbd_driver`` (its ES_SEARCH_PATH).
DEFAULT_DIR = "/usr/share/ganeti/extstorage/rbd_driver"
#: The library's config file the scripts read, unless ``--config-file`` says otherwise.
DEFAULT_CONFIG = "/etc/rbd_driver/rbd_driver.conf"

NEEDS_CONF = False


def add_parsers(sub: Any) -> None:
    """Add ``ganeti`` and its actions to the subparsers ``sub``."""
    gn = sub.add_parser("ganeti", help="Ganeti: the ExtStorage provider rbd_driver")
    actions = gn.add_subparsers(dest="action", required=True, metavar="ACTION")
    inst = actions.add_parser("install", help="write the provider's scripts and parameters.list")
    inst.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                      help=f"provider directory (default {DEFAULT_DIR})")
    inst.add_argument("--config-file", dest="provider_config", default=DEFAULT_CONFIG,
                      metavar="FILE",
                      help=f"the library's config file the scripts read (default {DEFAULT_CONFIG})")


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


def ganeti(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    files = install_provider(args.dir, args.provider_config)
    return {"provider": "rbd_driver", "directory": os.path.abspath(args.dir),
            "config_file": os.path.abspath(args.provider_config),
            "files": [os.path.basename(f) for f in files]}, 0


def _text(result: Any, args: argparse.Namespace) -> list[str]:
    return fields({**result, "files": " ".join(result["files"])})


HANDLERS: dict[str, Handler] = {"ganeti": ganeti}
TEXT: dict[str, Renderer] = {"ganeti": _text}
