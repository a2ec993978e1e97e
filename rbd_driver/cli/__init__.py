# SPDX-License-Identifier: Apache-2.0
"""The ``rbd-driver`` command for operators.

It reads the same oslo.config file as the library (``--config-file``, options
in ``[rbd]``), prints text for people or, with ``--json``, one JSON document.
Exit codes: 0 success, 1 error, 2 usage. An error prints one line naming
what is wrong; ``--debug`` adds the traceback. See ``rbd-driver --help`` and
the operator guide for every subcommand.

One module per command group, each with its parsers, its handlers and their
text (the contract is in :mod:`rbd_driver.cli._common`):

- :mod:`~rbd_driver.cli.health`: ``status``, ``pool-info``;
- :mod:`~rbd_driver.cli.disks`: ``ls``, ``clone``, ``import``, ``export``,
  ``snapshot``, ``cleanup``;
- :mod:`~rbd_driver.cli.backup`: ``backup``, ``restore``;
- :mod:`~rbd_driver.cli.golden`: ``golden``;
- :mod:`~rbd_driver.cli.provision`: ``provision``;
- :mod:`~rbd_driver.cli.qos`: ``qos``;
- :mod:`~rbd_driver.cli.checks`: ``check``;
- :mod:`~rbd_driver.cli.ganeti`: ``ganeti install`` (the scripts run
  :mod:`~rbd_driver.cli.extstorage`);
- :mod:`~rbd_driver.cli.secret`: ``secret`` (the libvirt secret, as ``[rbd] user``);
- :mod:`~rbd_driver.cli.throwaway`: ``throwaway`` (a local cluster, and the demo of
  :mod:`~rbd_driver.cli.demo`);
- :mod:`~rbd_driver.cli.output`: text for people (human sizes, tables, the
  progress bar); :mod:`~rbd_driver.cli.options`: the global options
  (``-f/--format``, ``--json``, ``--no-progress``, ``--version``) accepted
  before or after a subcommand, and signals; :mod:`~rbd_driver.cli.config`:
  the config file looked for and the defaults said once;
  :mod:`~rbd_driver.cli.errors`: library errors in the command's words.

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

from rbd_driver import exception
from rbd_driver.cli import (
    backup,
    checks,
    disks,
    ganeti,
    golden,
    health,
    options,
    provision,
    qos,
    secret,
    throwaway,
)
from rbd_driver.cli._common import UsageError
from rbd_driver.cli.config import load_conf
from rbd_driver.cli.errors import CommandError, one_line
from rbd_driver.cli.output import fields
from rbd_driver.testing.local_cluster import ClusterStartError

__all__ = ["GROUPS", "main"]

# In the order of ``rbd-driver --help``.
GROUPS: tuple[ModuleType, ...] = (health, disks, backup, golden, provision, qos, secret,
                                  checks, ganeti, throwaway)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbd-driver", description="Operate rbd_driver and the Ceph RBD disks it manages.",
        epilog="The options above may also follow the subcommand (rbd-driver ls --json).")
    options.add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


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
    conf = (load_conf(args.config_file) if getattr(group, "NEEDS_CONF", True)
            else cfg.ConfigOpts())
    args.cephx_user = conf.rbd.user if getattr(group, "NEEDS_CONF", True) else None
    result, code = group.HANDLERS[args.command](args, conf)
    if result is None:  # the handler printed already
        return code
    if args.output_format == "json":
        _print(result, None)
    elif args.output_format == "value":
        _print(result, options.values(result))
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
    if argv is None:  # the command itself, not a caller in Python: it owns the signals
        options.install_signal_handlers()
    args = _build_parser().parse_args(options.hoist(sys.argv[1:] if argv is None else argv))
    options.finish(args)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    try:
        return _run(args)
    except UsageError as err:
        return _usage(str(err))
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("rbd-driver: interrupted (^C)", file=sys.stderr)
        return 130
    except options.Terminated:
        print("rbd-driver: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except (exception.RbdDriverError, ClusterStartError, cfg.Error, OSError,
            CommandError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"rbd-driver: error: {one_line(err, getattr(args, 'cephx_user', None))}",
              file=sys.stderr)
        return 1
