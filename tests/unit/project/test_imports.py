# SPDX-License-Identifier: Apache-2.0
"""Every module imports cleanly, and the pre-release paths are gone.

Until 0.2.0 the package had never been released, so the modules moved into
rooms (``ops/``, ``libvirt/``, ``storage/``, ``cli/``) keep no shim at their
old paths: the release notes say where each went. From 0.2.0 on, a moved
public path keeps a shim naming the version that removes it.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import rbd_driver

# Where each pre-0.2.0 path went (doc/source/releasenotes.rst lists the same).
MOVED = {
    "rbd_driver.libvirt_config": "rbd_driver.libvirt.disk_xml",
    "rbd_driver.libvirt_secret": "rbd_driver.libvirt.secret",
    "rbd_driver.krbd": "rbd_driver.storage.krbd",
    "rbd_driver.backup": "rbd_driver.ops.backup",
    "rbd_driver.golden": "rbd_driver.ops.golden",
    "rbd_driver.provision": "rbd_driver.ops.provision",
    "rbd_driver.snapshots": "rbd_driver.ops.snapshots",
    "rbd_driver.collector": "rbd_driver.ops.collector",
    "rbd_driver.commands": "rbd_driver.cli.disks",
    "rbd_driver.commands_backup": "rbd_driver.cli.backup",
    "rbd_driver.commands_golden": "rbd_driver.cli.golden",
    "rbd_driver.commands_provision": "rbd_driver.cli.provision",
    "rbd_driver.demo": "rbd_driver.cli.demo",
    "rbd_driver.cli.cluster": "rbd_driver.cli.health",
    "rbd_driver.cli.devcluster": "rbd_driver.cli.throwaway",
    "rbd_driver.testing.cluster": "rbd_driver.testing.local_cluster",
    "rbd_driver.testing.fakes.cluster": "rbd_driver.testing.fakes.fake_cluster",
    "rbd_driver.testing.fakes.storage": "rbd_driver.testing.fakes.sparse_data",
    "rbd_driver.conf_guest_io": "rbd_driver.conf",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_pre_release_path_is_gone_and_its_new_home_imports(old: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
    importlib.import_module(MOVED[old])


def test_the_release_notes_name_every_move() -> None:
    from pathlib import Path
    notes = (Path(rbd_driver.__file__).parents[1] / "doc" / "source"
             / "releasenotes.rst").read_text()
    missing = [f"{old} -> {new}" for old, new in MOVED.items()
               if f"``{old}``" not in notes or f"``{new}``" not in notes]
    assert missing == []


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


def test_every_product_module_imports_without_a_warning() -> None:
    names = [m.name for m in pkgutil.walk_packages(rbd_driver.__path__, "rbd_driver.")
             if not m.name.endswith("__main__")]
    assert "rbd_driver.ops.golden" in names and "rbd_driver.libvirt.secret" in names
    assert _warnings_on_fresh_import(names) == []
