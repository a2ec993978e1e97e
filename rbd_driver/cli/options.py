# SPDX-License-Identifier: Apache-2.0
"""The global options of ``rbd-driver``, accepted before or after the subcommand.

As with ``openstack`` and ``rbd``, ``-f/--format json|table|value``,
``--json``, ``--no-progress``, ``--debug`` and ``--config-file`` may follow
the subcommand (``rbd-driver ls --json``): :func:`hoist` moves them in front
of it before argparse sees the line, so a group module adds its parsers the
usual way and gets them all. A ``--format`` whose value is not an output
format (``backup create --format qcow2``) is left to the subcommand.

``table`` is the text for people, ``json`` one JSON document (``--json`` is
its short form), ``value`` the bare values, one record per line, for
scripts (as ``openstack -f value``).
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Mapping
from typing import Any

from rbd_driver import __version__
from rbd_driver.cli import output
from rbd_driver.storage import sigterm

__all__ = ["FORMATS", "Terminated", "add_global_options", "finish", "hoist",
           "install_signal_handlers", "values"]

FORMATS = ("table", "json", "value")
_FLAGS = frozenset({"--json", "--no-progress", "--debug"})
_WITH_VALUE = {"-f": FORMATS, "--format": FORMATS, "--config-file": None}


class Terminated(BaseException):
    """The command got SIGTERM (exit 143), raised where it was when it came."""


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Add the options every subcommand takes to the top-level ``parser``."""
    parser.add_argument("--version", action="version", version=f"rbd-driver {__version__}")
    parser.add_argument("--config-file", action="append", default=[], metavar="PATH",
                        help="oslo.config file with an [rbd] section (repeatable; default "
                             "/etc/rbd_driver/rbd_driver.conf when it exists)")
    parser.add_argument("-f", "--format", dest="output_format", choices=FORMATS,
                        help="output: table (text for people, the default), json (one "
                             "document) or value (bare values, one record per line)")
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress line on stderr (shown only when it is a terminal)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def hoist(argv: list[str]) -> list[str]:
    """Return ``argv`` with the global options moved in front of everything else."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest += argv[index:]
            break
        name, eq, value = arg.partition("=")
        if arg in _FLAGS:
            front.append(arg)
        elif name in _WITH_VALUE and eq and name.startswith("--"):
            choices = _WITH_VALUE[name]
            (front if choices is None or value in choices else rest).append(arg)
        elif arg in _WITH_VALUE and index + 1 < len(argv):
            choices = _WITH_VALUE[arg]
            if choices is None or argv[index + 1] in choices:
                front += argv[index:index + 2]
                index += 2
                continue
            rest.append(arg)
        elif arg.startswith("-f") and len(arg) > 2 and arg[2:] in FORMATS:
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


def finish(args: argparse.Namespace) -> None:
    """Settle ``--json`` against ``--format`` and apply ``--no-progress``."""
    if args.json:
        args.output_format = "json"
    args.output_format = args.output_format or "table"
    args.json = args.output_format == "json"
    output.set_progress(not args.no_progress)


def _cell(value: Any) -> str:
    if value is None:
        return "-"  # a field that is empty still takes its place
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def values(result: Any) -> list[str]:
    """The ``value`` format: a list of records, one line each with its values
    separated by spaces; one record, one value per line; anything else as it is."""
    if isinstance(result, list):
        return [" ".join(_cell(v) for v in item.values()) if isinstance(item, Mapping)
                else _cell(item) for item in result]
    if isinstance(result, Mapping):
        return [_cell(v) for v in result.values()]
    return [_cell(result)]


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """For the command only: SIGTERM ends it as ^C does (exit 143 instead of 130),
    and the library's copies clean up on SIGTERM (:mod:`rbd_driver.storage.sigterm`)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    sigterm.enable()
