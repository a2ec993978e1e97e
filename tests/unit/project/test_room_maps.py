# SPDX-License-Identifier: Apache-2.0
"""Each room's ``__init__`` says what lives there, and stays true.

A newcomer finds a module from its room's map: every module of
``storage/``, ``backends/``, ``ops/``, ``libvirt/`` and ``testing/`` is named
in its package docstring as ``:mod:`~rbd_driver.<room>.<module>```. And
finds its tests by its path: ``tests/unit/<room>/test_<module>*.py``
(doc/source/testing.rst).
"""

from __future__ import annotations

import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "rbd_driver"
UNIT = pathlib.Path(__file__).resolve().parents[1]
ROOMS = ["storage", "backends", "ops", "libvirt", "testing", "cli"]


@pytest.mark.parametrize("room", ROOMS)
def test_the_rooms_map_names_every_module(room: str) -> None:
    doc = importlib.import_module(f"rbd_driver.{room}").__doc__ or ""
    modules = sorted(p.stem if p.is_file() else p.name
                     for p in (PACKAGE / room).iterdir()
                     if (p.suffix == ".py" and not p.stem.startswith("_"))
                     or (p.is_dir() and (p / "__init__.py").exists()))
    missing = [m for m in modules if f":mod:`~rbd_driver.{room}.{m}`" not in doc]
    assert missing == [], f"rbd_driver/{room}/__init__.py does not name {missing}"


# Unit test files that cover several modules of their room, and why.
SEVERAL_MODULES = {
    "storage/test_fuzz.py": "URLs, image headers and the clone decision they feed",
    "cli/test_admin.py": "backup, restore, golden and provision through cli.main",
    "cli/test_conventions.py": "options, output and errors shared by every command",
}


def _module_names(directory: pathlib.Path) -> set[str]:
    return {p.stem if p.is_file() else p.name for p in directory.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__")
            or (p.is_dir() and (p / "__init__.py").exists())}


def test_each_unit_test_file_sits_where_its_module_does() -> None:
    rooms = {"": _module_names(PACKAGE) - set(ROOMS)}
    rooms.update({f"{room}/": _module_names(PACKAGE / room) for room in ROOMS})
    lost = []
    for path in sorted(UNIT.rglob("test_*.py")):
        where = path.relative_to(UNIT).as_posix()
        room, _, name = where.rpartition("/")
        if room == "project" or where in SEVERAL_MODULES:
            continue
        subject = name[len("test_"):-len(".py")]
        modules = rooms.get(f"{room}/" if room else "", set())
        if not any(subject == m or subject.startswith(m + "_") for m in modules):
            lost.append(where)
    assert lost == [], f"no module of the same room and name: {lost}"
    assert all((UNIT / where).exists() for where in SEVERAL_MODULES)
