"""Each room's ``__init__`` says what lives there, and stays true.

A newcomer finds a module from its room's map: every module of
``storage/``, ``backends/``, ``ops/``, ``libvirt/`` and ``testing/`` is named
in its package docstring as ``:mod:`~rbd_driver.<room>.<module>```.
"""

from __future__ import annotations

import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "rbd_driver"
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
