# SPDX-License-Identifier: Apache-2.0
""".ci/run fails on a skip that is not on .ci/allowed-skips, and when pytest collects nothing.

``.ci/run`` is run here in a copy of ``.ci/`` beside a fake ``run.sh`` that
prints a given pytest output and exits with a given status, so its logic is
checked without running the suite.
"""

from __future__ import annotations

import configparser
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
ALLOWED = "SKIPPED [1] tests/functional/test_rbd_backend.py:455: clone v1 needs a protected snapshot"
NOT_ALLOWED = "SKIPPED [5] tests/functional/test_libvirt_xml.py:89: could not import 'libvirt'"
SUMMARY = "=========================== short test summary info ============================"


def _ci_run(tmp_path: pathlib.Path, output: str, status: int,
            release: int = 0) -> subprocess.CompletedProcess[str]:
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    # The release gates build docs and packages: here a stand-in that records
    # it ran and exits with the given status.
    gate = tmp_path / ".ci" / "check-release"
    gate.write_text(f'#!/usr/bin/env bash\ntouch "$(dirname "$0")/../release-ran"\nexit {release}\n')
    gate.chmod(0o755)
    # The logic under test, not today's list: one entry that ALLOWED matches.
    (tmp_path / ".ci" / "allowed-skips").write_text(
        "# test list\ntests/functional/test_rbd_backend.py:*: clone v1 *  # a reason\n")
    (tmp_path / "output").write_text(output)
    run_sh = tmp_path / "run.sh"
    run_sh.write_text('#!/usr/bin/env bash\necho "$*" > "$(dirname "$0")/args"\n'
                      'echo "${CI:-}" > "$(dirname "$0")/ci"\n'
                      f'cat "$(dirname "$0")/output"\nexit {status}\n')
    run_sh.chmod(0o755)
    return subprocess.run([str(tmp_path / ".ci" / "run")], capture_output=True, text=True,
                          timeout=60, check=False)


def _check(tmp_path: pathlib.Path, allow: str, output: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "allow").write_text(allow)
    (tmp_path / "output").write_text(output)
    return subprocess.run([str(ROOT / ".ci" / "check-skips"), str(tmp_path / "allow"),
                           str(tmp_path / "output")],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("output, status, expected", [
    (f"..s\n{SUMMARY}\n{ALLOWED}\n2 passed, 1 skipped\n", 0, 0),
    ("...\n3 passed\n", 0, 0),
    (f"..s\n{SUMMARY}\n{NOT_ALLOWED}\n2 passed, 5 skipped\n", 0, 1),
    (f"F..\n{SUMMARY}\n{ALLOWED}\n1 failed, 2 passed\n", 1, 1),
    (f"F..\n{SUMMARY}\n{NOT_ALLOWED}\n1 failed\n", 1, 1),
    ("no tests ran\n", 5, 1),
])
def test_ci_run_status(tmp_path, output: str, status: int, expected: int) -> None:
    proc = _ci_run(tmp_path, output, status)
    assert proc.returncode == expected, proc.stderr
    assert (tmp_path / "args").read_text() == "test\n"  # exactly ./run.sh test
    assert (tmp_path / "ci").read_text() == "true\n"  # tests fail rather than fall back
    assert proc.stdout == output  # the user still sees pytest's output
    if NOT_ALLOWED in output:
        assert f"skip not on .ci/allowed-skips: {NOT_ALLOWED}" in proc.stderr
    if status == 5:
        assert "collected no tests" in proc.stderr
    else:
        assert (tmp_path / "release-ran").exists()


@pytest.mark.parametrize("status", [0, 1])
def test_a_failed_release_gate_fails_ci(tmp_path, status: int) -> None:
    proc = _ci_run(tmp_path, "...\n3 passed\n", status, release=1)
    assert proc.returncode == 1
    assert "a release gate failed" in proc.stderr


def test_every_skip_not_allowed_is_named(tmp_path) -> None:
    docs = "SKIPPED [1] tests/unit/test_docs.py:47: the docs extra is not installed: " \
           "pip install -e '.[docs]'"
    output = f"{SUMMARY}\n{ALLOWED}\n\x1b[33m{NOT_ALLOWED}\x1b[0m\n{docs}\n"
    allow = ("# a comment\n\n"
             "tests/functional/test_rbd_backend.py:*: clone v1 *  # why # and more\n")
    proc = _check(tmp_path, allow, output)
    assert proc.returncode == 1
    named = [line for line in proc.stderr.splitlines() if line.startswith("skip not on")]
    assert named == [f"skip not on {tmp_path / 'allow'}: {NOT_ALLOWED}",
                     f"skip not on {tmp_path / 'allow'}: {docs}"]
    # A glob with an escaped bracket allows the docs skip; the line number is free.
    allow += "tests/unit/test_docs.py:*: *'.\\[docs\\]'  # reason\n" \
             "tests/functional/test_libvirt_xml.py:*: could not import 'libvirt'  # reason\n"
    assert _check(tmp_path, allow, output).returncode == 0


def test_an_entry_without_a_reason_fails(tmp_path) -> None:
    proc = _check(tmp_path, "tests/functional/test_rbd_backend.py:*: clone v1 *\n",
                  f"{ALLOWED}\n")
    assert proc.returncode == 1 and "PATTERN  # reason" in proc.stderr
    proc = _check(tmp_path, "tests/functional/test_rbd_backend.py:*: clone v1 * #  \n",
                  f"{ALLOWED}\n")
    assert proc.returncode == 1


def test_an_allowed_skip_no_longer_seen_is_noted(tmp_path) -> None:
    proc = _check(tmp_path, "tests/x.py:*: gone  # reason\n", "3 passed\n")
    assert proc.returncode == 0
    assert "no skip matched 'tests/x.py:*: gone'" in proc.stderr


def test_the_real_allow_list_is_short_and_has_reasons(tmp_path) -> None:
    text = (ROOT / ".ci" / "allowed-skips").read_text()
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(entries) <= 5
    assert all("#" in line and line.split("#", 1)[1].strip() for line in entries)
    proc = _check(tmp_path, text, "...\n3 passed\n")  # it parses, and a run without skips passes
    assert proc.returncode == 0, proc.stderr
    proc = _check(tmp_path, text, f"{SUMMARY}\n{NOT_ALLOWED}\n")
    assert proc.returncode == 1


def test_pytest_prints_the_skips_the_check_reads() -> None:
    # Without -ra (or -rs) pytest prints no "SKIPPED [n] path:line: reason" lines.
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    addopts = tox["pytest"]["addopts"].split()
    assert any(opt.startswith("-r") and ("a" in opt or "s" in opt) for opt in addopts)


XFAIL = "XFAIL tests/unit/test_x.py::test_known - a known bug"
XPASS = "XPASS tests/unit/test_x.py::test_lucky - a known bug"


def test_an_xfail_or_xpass_counts_like_a_skip(tmp_path) -> None:
    output = f"{SUMMARY}\n{XFAIL}\n{XPASS}\n1 xfailed, 1 xpassed\n"
    proc = _check(tmp_path, "", output)
    assert proc.returncode == 1
    assert f"skip not on {tmp_path / 'allow'}: {XFAIL}" in proc.stderr
    assert f"skip not on {tmp_path / 'allow'}: {XPASS}" in proc.stderr
    allow = "tests/unit/test_x.py::test_known - *  # reason\n" \
            "tests/unit/test_x.py::test_lucky - *  # reason\n"
    assert _check(tmp_path, allow, output).returncode == 0


@pytest.mark.parametrize("pattern", ["*", "*: clone v1 *", "tests/*: clone v1 *",
                                     "tests/functional/*.py:*: *", "test_rbd_backend.py:*: *",
                                     "tests/functional/test_rbd_backend.py"])
def test_a_pattern_must_start_with_its_test_file(tmp_path, pattern: str) -> None:
    proc = _check(tmp_path, f"{pattern}  # reason\n", f"{SUMMARY}\n{ALLOWED}\n")
    assert proc.returncode == 1
    assert "starts with its test file" in proc.stderr


def _check_release(tmp_path: pathlib.Path, ruff: int, mypy: int) -> tuple[
        subprocess.CompletedProcess[str], list[str]]:
    # A stand-in python that logs each `-m MODULE` it is asked to run; ruff and
    # mypy exit as given, anything else (sphinx, first after them) fails, so
    # the run stops at the docs gate without building anything.
    log = tmp_path / "log"
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\necho "$2" >> "{log}"\n'
                      f'case "$2" in ruff) exit {ruff};; mypy) exit {mypy};; *) exit 1;; esac\n')
    python.chmod(0o755)
    proc = subprocess.run([str(ROOT / ".ci" / "check-release"), str(python)],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc, log.read_text().split()


@pytest.mark.parametrize("ruff, mypy", [(1, 0), (0, 1), (1, 1), (0, 0)])
def test_check_release_runs_ruff_and_mypy_first_and_both_always(tmp_path, ruff: int,
                                                                 mypy: int) -> None:
    proc, ran = _check_release(tmp_path, ruff, mypy)
    assert ran == ["ruff", "mypy", "sphinx"]  # a ruff finding does not hide mypy's
    assert proc.returncode == 1  # the stand-in's docs build failed
    assert ("ruff found style problems (tox -e pep8)" in proc.stderr) == bool(ruff)
    assert ("mypy found type errors (tox -e mypy)" in proc.stderr) == bool(mypy)
    assert ("ruff and mypy find nothing" in proc.stdout) == (not ruff and not mypy)


def test_run_sh_installs_what_check_release_runs() -> None:
    # CI on a fresh machine has only what ./run.sh installs.
    run_sh = (ROOT / "run.sh").read_text()
    extras = run_sh.split("pip install", 1)[1].split("'.[", 1)[1].split("]'", 1)[0].split(",")
    assert {"docs", "release", "lint"} <= set(extras)
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lint = setup["options.extras_require"]["lint"]
    assert "ruff" in lint and "mypy" in lint
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    assert tox["testenv:pep8"]["commands"].startswith("ruff check")
    assert tox["testenv:mypy"]["commands"].startswith("mypy")
    assert "lint" in tox["testenv:pep8"]["extras"] and "lint" in tox["testenv:mypy"]["extras"]
