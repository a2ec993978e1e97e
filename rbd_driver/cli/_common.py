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

__all__ = ["Handler", "Renderer", "Result", "UsageError", "positive_int"]

Result = tuple[Any, int]
Handler = Callable[[argparse.Namespace, cfg.ConfigOpts], Result]
Renderer = Callable[[Any, argparse.Namespace], list[str]]


class UsageError(Exception):
    """Arguments that parse but do not go together; the CLI exits 2 with this message."""


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
