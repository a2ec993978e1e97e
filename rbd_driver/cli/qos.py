# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver qos set|show|clear``: librbd limits of an instance disk.

The limits live in the disk's image metadata, where librbd enforces them for
every client that opens it (see :mod:`rbd_driver.backends.qos`). As text,
``show`` prints one line per limit in force; ``--json`` prints every name of
``Rbd.get_qos()``, null where there is no limit.
"""

from __future__ import annotations

import argparse
from typing import Any

from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.backends import qos
from rbd_driver.backends.rbd import Rbd
from rbd_driver.cli._common import Handler, Renderer, Result, UsageError, non_negative_int
from rbd_driver.cli.output import human_size

__all__ = ["HANDLERS", "TEXT", "add_parsers", "check", "qos_command", "qos_text"]


def add_parsers(sub: Any) -> None:
    """Add ``qos set|show|clear`` to the subparsers ``sub``."""
    parser = sub.add_parser("qos", help="librbd limits of an instance disk (image metadata)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {"set": "set limits (others are kept; 0 removes one)",
             "show": "the limits in force", "clear": "remove every limit"}
    for action, text in helps.items():
        act = actions.add_parser(action, help=text)
        act.add_argument("instance", help="instance UUID")
        act.add_argument("--disk", default="disk", help="disk name (default disk)")
        if action == "set":
            for name in qos.QOS_NAMES:
                act.add_argument(f"--{name.replace('_', '-')}", dest=name, type=non_negative_int,
                                 metavar="N", help=f"the {name} limit (0 removes it)")


def check(args: argparse.Namespace) -> None:
    """``set`` needs a limit."""
    given = [name for name in qos.QOS_NAMES if getattr(args, name, None) is not None]
    if args.action == "set" and not given:
        raise UsageError("qos set needs at least one limit, e.g. --read-iops 500")


def qos_command(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(args.instance, args.disk, image_type="rbd")
        assert isinstance(disk, Rbd)
        if args.action == "set":
            limits = disk.set_qos(**{n: getattr(args, n) for n in qos.QOS_NAMES
                                     if getattr(args, n, None) is not None})
        else:
            if args.action == "clear":
                disk.clear_qos()
            limits = disk.get_qos()
    return {"disk": f"{disk.pool}/{disk.rbd_name}", "limits": limits}, 0


def qos_text(doc: dict[str, Any], args: argparse.Namespace | None = None) -> list[str]:
    """Return the disk and one line per limit in force (bytes in binary units)."""
    lines = [f"disk:  {doc['disk']}"]
    shown = [(name, value) for name, value in doc["limits"].items() if value is not None]
    for name, value in shown:
        rate = f"{human_size(value)}/s" if name.startswith(("bps", "read_bps", "write_bps")) \
            else f"{value}/s"
        lines.append(f"{name + ':':<14} {rate}{' per GiB' if name.endswith('per_gib') else ''}")
    return lines if shown else lines + ["limits: none"]


HANDLERS: dict[str, Handler] = {"qos": qos_command}
TEXT: dict[str, Renderer] = {"qos": qos_text}
