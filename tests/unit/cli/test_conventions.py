# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver`` follows the conventions of ``rbd`` and ``openstack`` (issue 26).

Global options before or after the subcommand, ``-f json|table|value``,
``--version``, ``--no-progress``, one line and exit 130/143 on ^C/SIGTERM,
and refusals in the command's words: through ``cli.main`` on the fake cluster.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

import pytest

from rbd_driver import __version__, cli, exception
from rbd_driver.cli import disks, errors, options, output
from tests.unit.cli.test_admin import MIB, Env


def _main(env: Env, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["--config-file", str(env.conf), *args])
    except SystemExit as err:
        code = int(err.code or 0)
    out, err = env.capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, front", [
    (["ls", "--json"], ["--json"]),
    (["ls", "-f", "value"], ["-f", "value"]),
    (["ls", "--format=json", "--pool", "p"], ["--format=json"]),
    (["ls", "-fjson"], ["-fjson"]),
    (["import", "f", "n", "--no-progress", "--debug"], ["--no-progress", "--debug"]),
    (["ls", "--config-file", "x.conf"], ["--config-file", "x.conf"]),
])
def test_global_options_are_moved_before_the_subcommand(argv, front) -> None:
    hoisted = options.hoist(argv)
    assert hoisted[:len(front)] == front
    assert [a for a in hoisted if a not in front] == [a for a in argv if a not in front]


def test_a_subcommand_format_that_is_no_output_format_stays() -> None:
    argv = ["backup", "create", "disk", "--format", "qcow2"]
    assert options.hoist(argv) == argv
    assert options.hoist(["x", "--", "--json"]) == ["x", "--", "--json"]


def test_json_after_the_subcommand(env) -> None:
    env.cluster.add_image("vms", "inst-1_disk", 4 * MIB)
    code, out, _ = _main(env, "ls", "--json")
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["inst-1_disk"]
    code, out2, _ = _main(env, "ls", "-f", "json")
    assert code == 0 and out2 == out
    code, out3, _ = _main(env, "--format", "json", "ls")
    assert code == 0 and out3 == out


def test_value_format_prints_bare_values_one_record_a_line(env) -> None:
    env.cluster.add_image("vms", "a_disk", 4 * MIB)
    env.cluster.add_image("vms", "b_disk", 8 * MIB)
    code, out, _ = _main(env, "ls", "-f", "value")
    assert code == 0
    assert out.splitlines() == [f"vms a_disk {4 * MIB} 0 -", f"vms b_disk {8 * MIB} 0 -"]
    assert options.values({"a": 1, "b": None, "c": [1, 2]}) == ["1", "-", "[1,2]"]


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rbd-driver {__version__}"


def test_no_progress_silences_the_bar_even_on_a_terminal(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    try:
        assert output.progress_bar(True, Tty()) is not None
        output.set_progress(False)
        assert output.progress_bar(True, Tty()) is None
    finally:
        output.set_progress(True)


@pytest.mark.parametrize("raised, code, line", [
    (KeyboardInterrupt(), 130, "rbd-driver: interrupted (^C)"),
    (options.Terminated(), 143, "rbd-driver: terminated (SIGTERM)"),
])
def test_interrupt_ends_with_one_line(env, monkeypatch, raised, code, line) -> None:
    def handler(args: Any, conf: Any) -> Any:
        raise raised

    monkeypatch.setitem(disks.HANDLERS, "ls", handler)
    got, out, err = _main(env, "ls")
    assert got == code and out == ""
    assert err.strip() == line


def test_export_refuses_to_overwrite_without_force(env) -> None:
    env.cluster.add_image("vms", "img", 4 * MIB, data=b"x" * MIB)
    target = env.tmp / "out.raw"
    target.write_bytes(b"mine")
    code, _, err = _main(env, "export", "img", str(target))
    assert code == 1 and err.strip() == (
        f"rbd-driver: error: {target} exists; next: pass --force to overwrite it")
    assert target.read_bytes() == b"mine"
    code, _, _ = _main(env, "export", "img", str(target), "--force")
    assert code == 0 and os.path.getsize(target) == 4 * MIB


def test_export_into_a_missing_directory_names_it_not_a_temporary_file(env) -> None:
    env.cluster.add_image("vms", "img", 4 * MIB)
    missing = env.tmp / "no" / "such"
    code, _, err = _main(env, "export", "img", str(missing / "out.raw"))
    assert code == 1 and f"directory {missing} of " in err and ".part" not in err


def test_backup_ls_of_an_unknown_disk_is_an_error(env) -> None:
    code, _, err = _main(env, "backup", "ls", "nope")
    assert code == 1 and "no image vms/nope and no backups of it" in err
    env.cluster.add_image("vms", "known", 4 * MIB)
    code, out, _ = _main(env, "--json", "backup", "ls", "known")
    assert code == 0 and json.loads(out) == []


def test_clone_into_an_existing_disk_says_so(env) -> None:
    first = env.run("golden", "register", "one", env.raw_file("one.raw"))["location"]
    second = env.run("golden", "register", "two", env.raw_file("two.raw"))["location"]
    made = env.run("clone", first, "inst-1")
    assert made["existed"] is False
    again = env.run("clone", first, "inst-1")
    assert again["existed"] is True and again["parent"] == ["images", "one", "snap"]
    code, _, err = _main(env, "clone", second, "inst-1")
    assert code == 1
    assert ("disk vms/inst-1_disk already exists, with images/one@snap, not images/two@snap; "
            "next: rbd-driver cleanup inst-1 first") in err
    parent = env.cluster.image("vms", "inst-1_disk").parent
    assert parent is not None and "one" in str(parent)


def test_protected_snapshot_rm_speaks_in_flags(env) -> None:
    env.cluster.add_image("vms", "inst-1_disk", 4 * MIB)
    env.run("snapshot", "create", "inst-1", "s1", "--protect")
    err = env.run("snapshot", "rm", "inst-1", "s1", expect=1)
    assert "--force" in err and "force=True" not in err


@pytest.mark.parametrize("err, line", [
    (exception.ImageHasSnapshots(pool="p", image="i", detail="pass force=True to unprotect"),
     "pass --force to unprotect"),
    (exception.StorageError(op="export", target="x",
                            detail="cannot open /srv/out.raw.part-1a2b3c4d: gone"),
     "cannot open /srv/out.raw: gone"),
    (exception.PermissionDenied(op="create image", target="images/new.restoring-808d9a54"
                                ".importing-c5826457", detail="x", user="client.c"),
     "create image on images/new (x)"),
    (FileNotFoundError(2, "No such file or directory", "/no/such/dir"),
     "/no/such/dir: No such file or directory"),
    (OSError(2, "No such file or directory"), "No such file or directory"),
])
def test_errors_are_translated_into_the_commands_words(err, line) -> None:
    assert line in errors.one_line(err)


def test_qemu_img_permission_words_name_the_caps() -> None:
    err = exception.ImageConversionFailed(
        path="/backups/b1.qcow2", source_format="qcow2",
        detail="qemu-img: error rbd create: Operation not permitted")
    line = errors.one_line(err, user="compute")
    assert line.startswith("client.compute lacks cephx caps to create images in the target "
                           "pool (qemu-img: Operation not permitted); next: "), line
    err = exception.ImageConversionFailed(
        path="rbd:images/new.restoring-7d482ee6:id=compute:conf=/c", source_format="qcow2",
        detail="qemu-img: rbd:images/new.restoring-7d482ee6: error rbd create: "
               "Operation not permitted")
    line = errors.one_line(err, user="compute")
    assert "lacks cephx caps to create images in pool images" in line and "restoring" not in line


def test_throwaway_start_with_a_missing_base_dir_names_it(capsys, tmp_path) -> None:
    missing = tmp_path / "no" / "such"
    assert cli.main(["throwaway", "start", "--base-dir", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"rbd-driver: error: --base-dir {missing} is not a directory; next: "
                   "create it, or leave --base-dir out")


def test_throwaway_status_without_a_cluster_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    from rbd_driver.testing import local_cluster as dev_cluster

    monkeypatch.setattr(dev_cluster, "POINTER", tmp_path / "none")
    assert cli.main(["throwaway", "status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("next: rbd-driver throwaway start"), err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bulk_cleanup_draws_a_disk_count_on_a_terminal(env, monkeypatch) -> None:
    for inst in ("i1", "i2", "i3"):
        env.cluster.add_image("vms", f"{inst}_disk", 4 * MIB)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["--config-file", str(env.conf), "cleanup", "i1", "i2", "i3"]) == 0
    assert "3 of 3 disks" in tty.getvalue()
    assert env.cluster.pool("vms").image_names() == []
    quiet = _Tty()
    monkeypatch.setattr(sys, "stderr", quiet)
    env.cluster.add_image("vms", "i4_disk", 4 * MIB)
    env.cluster.add_image("vms", "i5_disk", 4 * MIB)
    try:
        assert cli.main(["--config-file", str(env.conf), "cleanup", "i4", "i5",
                         "--no-progress"]) == 0
    finally:
        output.set_progress(True)
    assert "disks" not in quiet.getvalue()


def test_flatten_before_golden_rm_reports_progress(env) -> None:
    seen: list[tuple[int, int]] = []
    env.cluster.add_image("vms", "base", 4 * MIB, data=b"b" * MIB)
    driver = None
    from rbd_driver import imagebackend
    from rbd_driver.cli.config import load_conf
    from rbd_driver.storage.location import RbdLocation

    with imagebackend.Backend(load_conf([str(env.conf)])) as backend:
        driver = backend.driver("rbd")
        driver.create_snap("base", "snap", protect=True)
        driver.clone(RbdLocation(driver.fsid, "vms", "base", "snap"), "child", "vms")
        driver.flatten("child", "vms", progress=lambda done, total: seen.append((done, total)))
        assert driver.parent_info("child", "vms") is None
    assert seen and seen[-1][0] == seen[-1][1]
