"""Modules moved into rooms keep their old import paths for one release.

``libvirt_config`` and ``libvirt_secret`` moved into ``rbd_driver.libvirt``,
the managers into ``rbd_driver.ops``, ``krbd`` into ``rbd_driver.storage``.
Each old path re-exports the public names from the new module and emits a
``DeprecationWarning`` naming the new path on import. The modules of the
public contract (``volumes``, ``imagebackend``, ``exception``, ``conf``)
did not move and import without a warning, and no product module still
imports an old path.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import rbd_driver

MOVED = {
    "rbd_driver.libvirt_config": "rbd_driver.libvirt.disk_xml",
    "rbd_driver.libvirt_secret": "rbd_driver.libvirt.secret",
    "rbd_driver.krbd": "rbd_driver.storage.krbd",
    "rbd_driver.backup": "rbd_driver.ops.backup",
    "rbd_driver.golden": "rbd_driver.ops.golden",
    "rbd_driver.provision": "rbd_driver.ops.provision",
    "rbd_driver.snapshots": "rbd_driver.ops.snapshots",
    "rbd_driver.collector": "rbd_driver.ops.collector",
}
# Names the docs use that the new module does not list in __all__.
EXTRA = {"rbd_driver.provision": {"DEFAULT_PG_NUM"}}
# The deprecated shims of the command line, tested in test_cli_shims.py.
CLI_SHIMS = {"rbd_driver.commands", "rbd_driver.commands_backup", "rbd_driver.commands_golden",
             "rbd_driver.commands_provision"}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_naming_the_new_one_and_re_exports(
        old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new = importlib.import_module(MOVED[old])
    monkeypatch.delitem(sys.modules, old, raising=False)
    expected = f"{old} is deprecated: use {MOVED[old]}".replace(".", r"\.")
    with pytest.warns(DeprecationWarning, match=expected):
        module = importlib.import_module(old)
    assert set(module.__all__) == set(new.__all__) | EXTRA.get(old, set())
    for name in module.__all__:
        assert getattr(module, name) is getattr(new, name), name


def test_flatten_queue_is_still_reached_through_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    # backups.rst names FlattenQueue under golden; it lives in storage.
    from rbd_driver.storage.flatten_queue import FlattenQueue
    monkeypatch.delitem(sys.modules, "rbd_driver.golden", raising=False)
    with pytest.warns(DeprecationWarning):
        from rbd_driver.golden import FlattenQueue as old
    from rbd_driver.ops.golden import FlattenQueue as new
    assert old is new is FlattenQueue


_IMPORT_ALL = """
import importlib, json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    for name in sys.argv[1:]:
        importlib.import_module(name)
print(json.dumps([f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
                  for w in caught]))
"""


def _warnings_on_fresh_import(names: list[str]) -> list[str]:
    # A fresh interpreter: in this one the modules are already imported and
    # would not warn again.
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *names], capture_output=True,
                         text=True, check=True).stdout
    return [w for w in json.loads(out) if "DeprecationWarning" in w]


def test_the_public_contract_imports_without_a_warning() -> None:
    assert _warnings_on_fresh_import(["rbd_driver.volumes", "rbd_driver.imagebackend",
                                      "rbd_driver.exception", "rbd_driver.conf"]) == []


def test_no_product_module_imports_an_old_path() -> None:
    names = [m.name for m in pkgutil.walk_packages(rbd_driver.__path__, "rbd_driver.")
             if m.name not in MOVED and m.name not in CLI_SHIMS
             and not m.name.endswith("__main__")]
    assert "rbd_driver.ops.golden" in names and "rbd_driver.libvirt.secret" in names
    assert _warnings_on_fresh_import(names) == []
