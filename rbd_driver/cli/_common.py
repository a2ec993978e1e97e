# SPDX-License-Identifier: Apache-2.0
"""What every command group of ``rbd-driver`` shares: the handler contract.

A group module (``cli/disks.py``, ``cli/backup.py``...) exposes
``add_parsers(subparsers)``, ``HANDLERS`` (subcommand -> :data:`Handler`)
and ``TEXT`` (subcommand -> :data:`Renderer`); optionally ``check(args)``,
run before the config file is read, and ``NEEDS_CONF = False`` when its
handlers read no config file. A handler returns ``(result, exit_code)``:
a JSON-able result that ``--json`` prints as it is, and that the group's
renderer turns into text for people (``None``: the handler printed already).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

__all__ = ["Handler", "Renderer", "Result", "UsageError", "non_negative_int", "positive_int"]

Result = tuple[Any, int]
Handler = Callable[[argparse.Namespace, cfg.ConfigOpts], Result]
Renderer = Callable[[Any, argparse.Namespace], list[str]]


class UsageError(Exception):
    """Arguments that parse but do not go together; the CLI exits 2 with this message."""


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0 (0 often means "none" or "remove")."""
    return _int_at_least(text, 0)
