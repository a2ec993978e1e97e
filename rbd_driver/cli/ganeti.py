# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver ganeti install [--dir DIR] [--config-file FILE]``.

Writes Ganeti's ExtStorage provider ``rbd_driver`` into DIR (default
``/usr/share/ganeti/extstorage/rbd_driver``, on Ganeti's ExtStorage search
path) with :func:`rbd_driver.ops.ganeti_install.install_provider`: the
scripts run this Python and read the library's config file FILE (default
``/etc/rbd_driver/rbd_driver.conf``). ``--config-file`` is the command's
global option (accepted after the subcommand too): the file the command
would read is the one the scripts read. Needs no config file itself.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from oslo_config import cfg

from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.cli.output import fields
from rbd_driver.ops.ganeti_install import DEFAULT_CONFIG, DEFAULT_DIR, install_provider

__all__ = ["HANDLERS", "NEEDS_CONF", "TEXT", "add_parsers"]

NEEDS_CONF = False


def add_parsers(sub: Any) -> None:
    """Add ``ganeti`` and its actions to the subparsers ``sub``."""
    gn = sub.add_parser("ganeti", help="Ganeti: the ExtStorage provider rbd_driver")
    actions = gn.add_subparsers(dest="action", required=True, metavar="ACTION")
    inst = actions.add_parser("install", help="write the provider's scripts and parameters.list")
    inst.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                      help=f"provider directory (default {DEFAULT_DIR})")
    inst.description = (f"--config-file FILE (the global option) names the library's config "
                        f"file the scripts read (default {DEFAULT_CONFIG}).")


def ganeti(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    config = args.config_file[-1] if args.config_file else DEFAULT_CONFIG
    files = install_provider(args.dir, config)
    return {"provider": "rbd_driver", "directory": os.path.abspath(args.dir),
            "config_file": os.path.abspath(config),
            "files": [os.path.basename(f) for f in files]}, 0


def _text(result: Any, args: argparse.Namespace) -> list[str]:
    return fields({**result, "files": " ".join(result["files"])})


HANDLERS: dict[str, Handler] = {"ganeti": ganeti}
TEXT: dict[str, Renderer] = {"ganeti": _text}
