# SPDX-License-Identifier: Apache-2.0
"""No product module grows past 700 lines: one idea a module, read in one sitting.

``conf.py`` is the exception: most of it is option help (``Possible values``,
``Related options``), which an operator reads in the sample config, not code.
A module that outgrows the limit is split by concern (as ``Rbd`` is into its
mixin modules), not trimmed.
"""

from __future__ import annotations

import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "rbd_driver"
MAX_LINES = 700
EXEMPT = {"conf.py"}


def _too_long(package: pathlib.Path) -> dict[str, int]:
    sizes = {str(path.relative_to(package)): len(path.read_text().splitlines())
             for path in sorted(package.rglob("*.py"))}
    return {name: lines for name, lines in sizes.items()
            if lines > MAX_LINES and name not in EXEMPT}


def test_no_module_is_over_700_lines() -> None:
    assert _too_long(PACKAGE) == {}, f"split these by concern (limit {MAX_LINES} lines)"


def test_the_check_sees_a_long_module_and_spares_conf(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "conf.py").write_text("x = 1\n" * (MAX_LINES * 2))
    assert _too_long(tmp_path) == {"sub/long.py": MAX_LINES + 1}
