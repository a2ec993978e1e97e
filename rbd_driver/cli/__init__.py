"""The ``rbd-driver`` command for operators.

It reads the same oslo.config file as the library (``--config-file``, options
in ``[rbd]``), prints text for people or, with ``--json``, one JSON document.
Exit codes: 0 success, 1 error, 2 usage. An error prints one line naming
what is wrong; ``--debug`` adds the traceback. See ``rbd-driver --help`` and
the operator guide for every subcommand.

One module per command group, each with its parsers, its handlers and their
text (the contract is in :mod:`rbd_driver.cli._common`):

- :mod:`~rbd_driver.cli.devcluster`: ``dev-cluster``, ``demo``;
- :mod:`~rbd_driver.cli.cluster`: ``status``, ``pool-info``;
- :mod:`~rbd_driver.cli.disks`: ``ls``, ``clone``, ``import``, ``export``,
  ``snapshot``, ``cleanup``;
- :mod:`~rbd_driver.cli.backup`: ``backup``, ``restore``;
- :mod:`~rbd_driver.cli.golden`: ``golden``;
- :mod:`~rbd_driver.cli.provision`: ``provision``;
- :mod:`~rbd_driver.cli.ganeti`: ``ganeti install`` (the scripts run
  :mod:`~rbd_driver.cli.extstorage`).

:func:`main` only wires them together.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from types import ModuleType
from typing import Any

from oslo_config import cfg

from rbd_driver import conf as conf_module
from rbd_driver import exception
from rbd_driver.cli import backup, cluster, devcluster, disks, ganeti, golden, provision
from rbd_driver.cli._common import UsageError
from rbd_driver.cli.output import fields
from rbd_driver.testing.cluster import ClusterStartError

__all__ = ["GROUPS", "main"]

# In the order of ``rbd-driver --help``.
GROUPS: tuple[ModuleType, ...] = (devcluster, cluster, disks, backup, golden, provision,
                                  ganeti)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbd-driver", description="Operate rbd_driver and the Ceph RBD disks it manages.")
    parser.add_argument("--config-file", action="append", default=[], metavar="PATH",
                        help="oslo.config file with an [rbd] section (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def _load_conf(files: list[str]) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf_module.register_opts(conf)
    args: list[str] = []
    for path in files:
        args += ["--config-file", path]
    conf(args, project="rbd_driver", default_config_files=[])
    return conf


def _print(result: Any, lines: list[str] | None) -> None:
    if lines is None:
        print(json.dumps(result, indent=2, default=str))
    else:
        for line in lines:
            print(line)


def _run(args: argparse.Namespace) -> int:
    group = next(g for g in GROUPS if args.command in g.HANDLERS)
    check = getattr(group, "check", None)
    if check is not None:
        check(args)
    conf = (_load_conf(args.config_file) if getattr(group, "NEEDS_CONF", True)
            else cfg.ConfigOpts())
    result, code = group.HANDLERS[args.command](args, conf)
    if result is None:  # the handler printed already
        return code
    if args.json:
        _print(result, None)
    else:
        render = group.TEXT.get(args.command)
        _print(result, render(result, args) if render else
               fields(result) if isinstance(result, dict) else [str(result)])
    return code


def _usage(message: str) -> int:
    print(f"rbd-driver: usage error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rbd-driver``; returns the exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return _run(args)
    except UsageError as err:
        return _usage(str(err))
    except (exception.RbdDriverError, ClusterStartError, cfg.Error, OSError) as err:
        if args.debug:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"rbd-driver: error: {message}", file=sys.stderr)
        return 1
