# SPDX-License-Identifier: Apache-2.0
"""Only ``storage/`` (and ``testing/``) touches the rados/rbd bindings.

Everything else sees library types and library errors. Walking imports is
not enough: a module can reach the bindings through an attribute of the
client it was given (``client.rbd.RBD()``, ``driver.rbd.ImageNotFound``).
So this walks every product module outside ``storage/`` and ``testing/``
and fails on an import of ``rados``/``rbd`` and on any attribute chain
``<x>.rbd.<Name>`` or ``<x>.rados.<Name>`` where ``Name`` is a binding's
class, function or exception (``conf.rbd.pool``, an option of the ``[rbd]``
group, is lower case and passes).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "rbd_driver"
ALLOWED_ROOMS = ("storage", "testing")
BINDINGS = {"rados", "rbd"}


def _outside_storage() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.relative_to(PACKAGE).parts[0] not in ALLOWED_ROOMS)


def _uses_of_the_bindings(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in BINDINGS]
        elif isinstance(node, ast.ImportFrom) and not node.level \
                and (node.module or "").split(".")[0] in BINDINGS:
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and node.value.attr in BINDINGS and node.attr[:1].isupper()):
            found.append(f"line {node.lineno}: .{node.value.attr}.{node.attr}")
    return found


def test_the_walk_sees_the_product_rooms() -> None:
    rooms = {p.relative_to(PACKAGE).parts[0] for p in _outside_storage()}
    assert {"backends", "ops", "cli", "libvirt", "volumes.py"} <= rooms


@pytest.mark.parametrize("source, expected", [
    ("import rbd\n", ["line 1: import rbd"]),
    ("from rados import Rados\n", ["line 1: from rados import ..."]),
    ("names = client.rbd.RBD().list(ioctx)\n", ["line 1: .rbd.RBD"]),
    ("try:\n    pass\nexcept driver.rbd.ImageNotFound:\n    pass\n",
     ["line 3: .rbd.ImageNotFound"]),
    ("x = self.client.rados.ObjectNotFound\n", ["line 1: .rados.ObjectNotFound"]),
    ("pool = conf.rbd.pool\nuser = self.conf.rbd.user\n", []),
])
def test_the_check_tells_a_binding_from_an_option(source: str, expected: list[str]) -> None:
    assert _uses_of_the_bindings(source, "<case>") == expected


def test_only_storage_touches_the_bindings() -> None:
    wrong = [f"{path.relative_to(ROOT)} {use}" for path in _outside_storage()
             for use in _uses_of_the_bindings(path.read_text(), str(path))]
    assert wrong == []
