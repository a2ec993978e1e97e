# SPDX-License-Identifier: Apache-2.0
"""Docs and ``--help`` in step (issue 26).

Every subcommand and option that ``rbd-driver --help`` shows, recursively,
appears in the docs (README.md or doc/source), and every ``rbd-driver ...``
command line the docs show parses.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from rbd_driver import cli
from rbd_driver.cli import options

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "doc" / "source").glob("*.rst"))]


def _docs_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Yield (command path, option strings, sub-parsers) of the parser tree."""
    opts = [s for a in parser._actions for s in a.option_strings
            if s.startswith("--") and s not in ("--help",)]
    yield path, opts
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


COMMANDS = list(_walk(cli._build_parser()))


@pytest.mark.parametrize("path, opts", COMMANDS, ids=[" ".join(p) or "rbd-driver"
                                                      for p, _ in COMMANDS])
def test_every_subcommand_and_option_is_documented(path, opts) -> None:
    text = _docs_text()
    if path:
        # "backup create", or both words in one synopsis ("backup create|ls|verify").
        spelled = re.compile(r"\b" + r"\b[^\n]*?\b".join(map(re.escape, path)) + r"\b")
        assert spelled.search(text), f"rbd-driver {' '.join(path)} is not in the docs"
    # Each option where an operator looks: in a paragraph (or table row, or
    # code line) that names its subcommand too.
    # A block of many command lines (a synopsis) counts line by line.
    paragraphs = re.split(r"\n\s*\n|\n\s*\* - |\n\| ", text)
    units = [p for p in paragraphs if p.count("rbd-driver ") < 3] + text.splitlines()
    blocks = [b for b in units
              if not path or re.search(r"\b" + re.escape(path[-1]) + r"\b", b)]
    missing = [o for o in opts
               if not any(re.search(re.escape(o) + r"(?![\w-])", b) for b in blocks)]
    assert not missing, f"rbd-driver {' '.join(path)}: {missing} not in the docs"


def _doc_commands() -> list[tuple[str, str]]:
    """The literal ``rbd-driver ...`` lines of code blocks (not synopses with [..] or |)."""
    found = []
    for path in DOCS:
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))  # continuations
        for line in text.splitlines():
            match = re.match(r"^\s*(?:\$ )?(?:\.venv/bin/)?rbd-driver(\s.*)?$", line)
            if not match:
                continue
            rest = (match.group(1) or "").split("#")[0].strip()
            if any(mark in rest for mark in ("[", "|", "...", "<")):
                continue  # a synopsis, not a command
            found.append((path.name, rest))
    return found


@pytest.mark.parametrize("where, line", _doc_commands(), ids=lambda x: str(x)[:60])
def test_every_command_in_the_docs_parses(where, line) -> None:
    parser = cli._build_parser()
    try:
        parser.parse_args(options.hoist(shlex.split(line)))
    except SystemExit as err:
        assert err.code == 0, f"{where}: rbd-driver {line} does not parse"


def test_the_docs_show_commands_at_all() -> None:
    assert len(_doc_commands()) >= 10


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_argument_has_help_text() -> None:
    bare = [f"{' '.join(path) or 'rbd-driver'} {a.dest}"
            for path, parser in _parsers(cli._build_parser()) for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and not a.help]
    assert not bare, f"arguments without help: {bare}"
