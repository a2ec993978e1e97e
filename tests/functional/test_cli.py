# SPDX-License-Identifier: Apache-2.0
"""Every rbd-driver subcommand against the real cluster, checked with the Ceph CLI."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest


@pytest.fixture
def cli(ceph_cluster, tmp_path):
    conf = tmp_path / "rbd-driver.conf"
    conf.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {ceph_cluster.user}\n"
                    f"keyring = {ceph_cluster.user_keyring}\npool = vms\n")

    def run(*args: str, expect: int = 0, as_json: bool = True) -> Any:
        cmd = [sys.executable, "-m", "rbd_driver.cli", "--config-file", str(conf)]
        proc = subprocess.run(cmd + (["--json"] if as_json else []) + list(args),
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == expect, (args, proc.returncode, proc.stderr)
        if expect != 0:
            assert "Traceback" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            return proc.stderr
        return json.loads(proc.stdout) if as_json else proc.stdout

    return run


def test_status_matches_ceph_status_and_df(cli, ceph_admin) -> None:
    doc = cli("status", "--pool", "vms")
    status = ceph_admin("ceph", "status")
    assert doc["cluster"]["fsid"] == status["fsid"]
    assert doc["cluster"]["health"]["status"] == status["health"]["status"]
    assert {p["name"] for p in doc["pools"]} == {p["name"] for p in ceph_admin("ceph", "df")["pools"]}


def test_pool_info_matches_ceph_df(cli, ceph_admin) -> None:
    info = cli("pool-info", "vms")
    df = {p["name"]: p["stats"] for p in ceph_admin("ceph", "df")["pools"]}["vms"]
    assert info["free"] == pytest.approx(df["max_avail"], rel=0.05)


def _assert_timestamps_match_rbd(ours: list[dict[str, Any]], rbd_snaps: list[dict[str, Any]]) -> None:
    """Each snapshot's time is the one ``rbd snap ls --format json`` shows (its ctime, local time)."""
    theirs = {s["name"]: datetime.datetime.strptime(s["timestamp"], "%a %b %d %H:%M:%S %Y")
              .astimezone(datetime.UTC) for s in rbd_snaps}
    assert {s["name"] for s in ours} == set(theirs)
    for snap in ours:
        stamp = datetime.datetime.fromisoformat(snap["timestamp"])
        assert stamp.tzinfo is not None, snap
        assert abs((stamp - theirs[snap["name"]]).total_seconds()) < 1, (snap, theirs)


def test_clone_ls_snapshot_cleanup(cli, ceph_admin, backend) -> None:
    driver = backend.driver("rbd")
    golden = f"cli-golden-{uuid.uuid4().hex[:6]}"
    driver.create(golden, 32 << 20, pool="images")
    driver.create_snap(golden, "snap", protect=True, pool="images")
    inst = str(uuid.uuid4())
    try:
        out = cli("clone", f"rbd://{driver.fsid}/images/{golden}/snap", inst)
        assert out["parent"] == ["images", golden, "snap"]
        listed = {d["name"]: d for d in cli("ls")}
        du = {i["name"]: i for i in ceph_admin("rbd", "du", "-p", "vms")["images"]}
        assert set(listed) == set(ceph_admin("rbd", "ls", "vms"))
        disk = f"{inst}_disk"
        assert listed[disk]["provisioned"] == du[disk]["provisioned_size"]
        assert listed[disk]["used"] == du[disk]["used_size"]
        assert listed[disk]["parent"] == f"images/{golden}@snap"
        made = cli("snapshot", "create", inst, "s1", "--protect")
        assert [s["name"] for s in made["snapshots"]] == ["s1"]
        assert [s["name"] for s in ceph_admin("rbd", "snap", "ls", f"vms/{disk}")] == ["s1"]
        _assert_timestamps_match_rbd(cli("snapshot", "ls", inst)["snapshots"],
                                     ceph_admin("rbd", "snap", "ls", f"vms/{disk}"))
        cli("snapshot", "rollback", inst, "s1")
        assert "protected" in cli("snapshot", "rm", inst, "s1", expect=1)
        assert cli("snapshot", "rm", inst, "s1", "--force")["snapshots"] == []
        assert cli("cleanup", inst, "--dry-run")["would_remove"] == [disk]
        assert disk in ceph_admin("rbd", "ls", "vms")
        report = cli("cleanup", inst)
        assert report["removed"] == [disk] and not report["failed"]
        assert disk not in ceph_admin("rbd", "ls", "vms")
    finally:
        backend.backend("rbd").cleanup_instance(backend.conf, inst, driver=driver)
        driver.remove_image(golden, pool="images")


def test_import_export_round_trip(cli, ceph_admin, tmp_path, backend) -> None:
    src = tmp_path / "src.raw"
    with open(src, "wb") as f:
        f.truncate(24 << 20)
        f.seek(8 << 20)
        f.write(os.urandom(1 << 20))
    name = f"cli-import-{uuid.uuid4().hex[:6]}"
    try:
        assert cli("import", str(src), name)["size"] == 24 << 20
        assert ceph_admin("rbd", "info", f"vms/{name}")["size"] == 24 << 20
        out = tmp_path / "out.raw"
        assert cli("export", name, str(out))["bytes"] == 24 << 20
        assert out.read_bytes() == src.read_bytes()
    finally:
        backend.driver("rbd").remove_image(name)


def test_errors_are_one_line(cli, tmp_path) -> None:
    assert "nosuchpool" in cli("ls", "--pool", "nosuchpool", expect=1)
    assert "does not exist" in cli("export", "no-such-image", str(tmp_path / "x"), expect=1)
    missing = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file",
                              "/nonexistent.conf", "pool-info"], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1 and "/nonexistent.conf" in missing.stderr
    assert "Traceback" not in missing.stderr
    usage = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "snapshot", "explode"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2


def test_text_output_reads_like_the_ceph_tools(cli, ceph_admin, ceph_cluster, backend) -> None:
    driver = backend.driver("rbd")
    sizes = {"a": 96 << 20, "b": 3 << 29, "c": (1 << 20) - 512, "d": 5 << 10,
             "e": 5 << 28, "f": 193 << 19}
    names = {key: f"cli-text-{key}-{uuid.uuid4().hex[:6]}" for key in sizes}
    for key, name in names.items():
        driver.create(name, sizes[key])
    try:
        # The oracle for sizes as people read them: rbd's own text (ls -l).
        rbd_ls = subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "ls", "-l", "-p", "vms"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
        theirs = {line.split()[0]: " ".join(line.split()[1:3])
                  for line in rbd_ls.splitlines()[1:] if "@" not in line.split()[0]}
        header, *rows = cli("ls", "--all", as_json=False).splitlines()
        assert header.split() == ["NAME", "SIZE", "USED", "PARENT"]
        ours = {row.split()[0]: " ".join(row.split()[1:3]) for row in rows}
        assert ours == theirs
        assert [ours[names[key]] for key in sorted(sizes)] == [
            "96 MiB", "1.5 GiB", "1024 KiB", "5 KiB", "1.2 GiB", "96 MiB"]
        size_column = {row.index(row.split()[2]) + len(row.split()[2]) for row in rows}
        assert len(size_column) == 1  # right-aligned under one edge

        lines = cli("status", "--pool", "vms", as_json=False).splitlines()
        status = ceph_admin("ceph", "status")
        assert lines[0] == f"health:   {status['health']['status']}"
        for check in status["health"]["checks"]:
            assert any(line.split()[0] == f"{check}:" for line in lines[1:1 + len(
                status["health"]["checks"])])
        osdmap = status["osdmap"].get("osdmap", status["osdmap"])
        assert (f"osd:      {osdmap['num_osds']} osds: {osdmap['num_up_osds']} up, "
                f"{osdmap['num_in_osds']} in") in lines
        pools = lines.index("POOLS:")
        table = lines[pools + 2:lines.index("", pools)]
        assert {row.split()[0] for row in table} == {
            p["name"] for p in ceph_admin("ceph", "df")["pools"]}
        assert not any("{" in line for line in lines)
    finally:
        for name in names.values():
            driver.remove_image(name)
