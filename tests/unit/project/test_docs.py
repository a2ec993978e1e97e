# SPDX-License-Identifier: Apache-2.0
"""The documentation builds with warnings as errors, and its generated pages are complete.

This is the build ``tox -e docs`` and ``.ci/check-release`` run
(``sphinx-build -W -n``: nitpicky, so a cross-reference to a renamed module
or an undocumented name fails too), made here so that CI catches a broken
page without tox. ``-E`` rebuilds every page: an incremental build can hide
an error in a page that did not change.
"""

from __future__ import annotations

import html
import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

from rbd_driver import conf as conf_module

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    # Only the tests of the built pages need sphinx; the tox.ini check does not.
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "-n", "-q", "-b", "html",
         str(ROOT / "doc" / "source"), str(out)],
        capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, f"sphinx-build -W -n failed:\n{proc.stderr[-4000:]}"
    return out


def _text(page: pathlib.Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_tox_docs_env_runs_sphinx_with_warnings_as_errors() -> None:
    tox = (ROOT / "tox.ini").read_text()
    section = tox.split("[testenv:docs]", 1)[1].split("\n[", 1)[0]
    command = re.search(r"commands\s*=\s*sphinx-build((?:\s+-\S+)*)\s", section)
    assert command, section
    assert {"-W", "-n"} <= set(command.group(1).split()), section


def test_the_release_gate_builds_the_docs_nitpicky() -> None:
    gate = (ROOT / ".ci" / "check-release").read_text()
    command = re.search(r"-m sphinx((?:\s+-\S+)*)\s", gate)
    assert command, "no sphinx build in .ci/check-release"
    assert {"-W", "-n"} <= set(command.group(1).split())


def test_plugin_page_lists_every_installed_backend(built: pathlib.Path) -> None:
    text = _text(built / "plugins.html")
    names = {ep.name for ep in
             importlib.metadata.entry_points(group="rbd_driver.image_backends")}
    assert names >= {"rbd", "flat"}
    for name in names:
        assert re.search(rf"\b{name}\b\s*¶", text), f"backend {name} missing from plugins page"
    assert "An instance disk kept as an RBD image" in text  # the class docstring, rendered


def test_configuration_reference_lists_every_option(built: pathlib.Path) -> None:
    page = (built / "configuration.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="([^"]+)"', page))  # oslo_config.sphinxext: "group.option"
    expected = []
    for group, opts in conf_module.list_opts():
        group_name = group if isinstance(group, str) else group.name
        expected += [f"{group_name}.{opt.dest}" for opt in opts]
    assert len(expected) > 30
    missing = [name for name in expected if name not in anchors]
    assert not missing, f"options missing from the configuration reference: {missing}"
