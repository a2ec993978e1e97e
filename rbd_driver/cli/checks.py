# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver check``: can the configured cephx user do what a compute host needs?

Runs :func:`rbd_driver.ops.checks.check_from_conf` as ``[rbd] user`` and
prints each check (``ok``, ``FAILED`` or ``unknown``) with what to fix.
Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

from oslo_config import cfg

from rbd_driver.cli._common import Handler, Renderer, Result
from rbd_driver.ops import checks as ops_checks

__all__ = ["HANDLERS", "TEXT", "add_parsers", "check_cmd", "check_text"]


def add_parsers(sub: Any) -> None:
    """Add ``check`` to the subparsers ``sub``."""
    sub.add_parser("check", help="check that [rbd] user has the rights a compute host needs "
                                 "(blocklisting a dead lock owner)")


def check_cmd(args: argparse.Namespace, conf: cfg.ConfigOpts) -> Result:
    report = ops_checks.check_from_conf(conf)
    return report.as_dict(), 0 if report.ok else 1


def check_text(doc: dict[str, Any], args: argparse.Namespace | None = None) -> list[str]:
    lines = [f"user: client.{doc['user']}"]
    for check in doc["checks"]:
        state = {True: "ok", False: "FAILED", None: "unknown"}[check["ok"]]
        lines.append(f"{check['name']}: {state}: {check['detail']}")
        if check.get("fix") and not check["ok"]:
            lines.append(f"  fix: {check['fix']}")
    return lines


HANDLERS: dict[str, Handler] = {"check": check_cmd}
TEXT: dict[str, Renderer] = {"check": check_text}
