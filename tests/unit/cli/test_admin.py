# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver backup|restore|golden|provision`` through ``cli.main`` on the fake cluster.

The fake ``rados``/``rbd`` modules replace the real ones in ``sys.modules``,
so the CLI runs its real code path (config file, Backend, RadosClient) down
to the fake librbd; the fake monitor of ``test_provision`` answers the
provisioning commands.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any

import pytest

from rbd_driver import cli
from rbd_driver.storage import cephx
from rbd_driver.testing.fixtures import FakeEnv
from tests.unit.libvirt.test_secret import FakeLibvirt
from tests.unit.ops.test_provision import FakeMon

MIB = 1 << 20


class Env(FakeEnv):
    """The fake cluster in ``sys.modules``; ``conf`` here is the CLI's config file."""

    def __init__(self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
        super().__init__(tmp_path)
        monkeypatch.setitem(sys.modules, "rados", self.rados)
        monkeypatch.setitem(sys.modules, "rbd", self.rbd)
        self.admin_keyring = tmp_path / "admin.keyring"
        self.admin_keyring.write_text("")
        self.backups = tmp_path / "backups"
        self.conf = tmp_path / "rbd-driver.conf"  # type: ignore[assignment]
        self.conf.write_text(f"[rbd]\nceph_conf = {self.ceph_conf}\npool = vms\nuser = compute\n"
                             f"backup_dir = {self.backups}\n")
        self.capsys = capsys

    def run(self, *args: str, expect: int = 0, as_json: bool = True) -> Any:
        argv = ["--config-file", str(self.conf)] + (["--json"] if as_json else []) + list(args)
        try:
            code = cli.main(argv)
        except SystemExit as err:  # argparse
            code = int(err.code or 0)
        out, err = self.capsys.readouterr()
        assert code == expect, (args, code, err)
        if expect != 0:
            assert "Traceback" not in err
            assert len(err.strip().splitlines()) == 1 or expect == 2, err
            return err
        return json.loads(out) if as_json else out

    def raw_file(self, name: str, size: int = 8 * MIB) -> str:
        path = self.tmp / name
        with open(path, "wb") as f:
            f.truncate(size)
            f.write(b"golden bytes" * 100)
        return str(path)


# -- usage ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["backup"],
    ["backup", "create"],
    ["backup", "prune", "disk", "--keep", "0"],
    ["backup", "create", "disk", "--format", "vmdk"],
    ["restore", "disk", "some-id"],
    ["golden", "register", "name-only"],
    ["golden", "explode"],
    ["provision", "user", "compute"],  # --writable is required
    ["provision", "pool", "p", "--pg-num", "none"],
    ["provision", "from-conf", "--pg-num", "-1"],
])
def test_usage_errors_exit_2(env, argv) -> None:
    assert "usage:" in env.run(*argv, expect=2)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_incremental_takes_no_format(env, fmt) -> None:
    err = env.run("backup", "create", "disk", "--incremental", "--format", fmt, expect=2)
    assert err.startswith("rbd-driver: usage error:") and "--incremental" in err


def test_every_new_subcommand_has_help(env) -> None:
    for argv in (["backup", "create"], ["backup", "ls"], ["backup", "verify"],
                 ["backup", "prune"], ["restore"], ["golden", "register"], ["golden", "ls"],
                 ["golden", "children"], ["golden", "rm"], ["provision", "pool"],
                 ["provision", "user"], ["provision", "from-conf"]):
        assert "usage: rbd-driver" in env.run(*argv, "--help", as_json=False)


# -- golden images --------------------------------------------------------------


def test_golden_register_ls_children_rm(env) -> None:
    made = env.run("golden", "register", "ubuntu", env.raw_file("u.raw"))
    assert made["pool"] == "images" and made["name"] == "ubuntu" and made["snapshot"] == "snap"
    assert made["size"] == 8 * MIB
    assert made["location"] == f"rbd://{env.cluster.fsid}/images/ubuntu/snap"
    assert env.cluster.image("images", "ubuntu").snap_by_name("snap").protected
    listed = env.run("golden", "ls")
    assert [(g["name"], g["location"]) for g in listed] == [("ubuntu", made["location"])]
    assert env.run("golden", "children", "ubuntu")["children"] == []
    env.run("clone", made["location"], "inst-1")
    assert env.run("golden", "children", "ubuntu") == {
        "golden": "images/ubuntu@snap", "children": ["vms/inst-1_disk"]}
    assert "inst-1_disk" in env.run("golden", "rm", "ubuntu", expect=1)
    assert env.run("golden", "rm", "ubuntu", "--force")["outcome"] == "trashed"
    assert env.run("golden", "ls") == []


def test_golden_pool_override_and_errors(env) -> None:
    env.cluster.add_pool("gold")
    env.run("golden", "register", "deb", env.raw_file("d.raw"), "--pool", "gold")
    assert [g["name"] for g in env.run("golden", "ls", "--pool", "gold")] == ["deb"]
    assert env.run("golden", "ls") == []
    assert "images/deb" in env.run("golden", "register", "deb", env.raw_file("e.raw"),
                                   "--pool", "images", expect=0)["location"]
    assert "already exists" in env.run("golden", "register", "deb", env.raw_file("f.raw"),
                                       expect=1)
    assert "no-such-file" in env.run("golden", "register", "x", str(env.tmp / "no-such-file"),
                                     expect=1)
    assert "images/missing" in env.run("golden", "children", "missing", expect=1)
    assert "nosuchpool" in env.run("golden", "ls", "--pool", "nosuchpool", expect=1)
    header, row = env.run("golden", "ls", as_json=False).splitlines()
    assert header.split() == ["NAME", "SIZE", "LOCATION"]
    assert row.split() == ["deb", "8", "MiB", f"rbd://{env.cluster.fsid}/images/deb/snap"]


# -- backups ----------------------------------------------------------------------


def test_backup_create_ls_verify_restore_prune(env) -> None:
    disk = env.cluster.add_image("vms", "disk", 16 * MIB, data=os.urandom(MIB))
    full = env.run("backup", "create", "disk")
    assert (full["kind"], full["format"], full["image"]) == ("full", "raw", "vms/disk")
    assert os.path.isfile(full["manifest"]) and os.path.isfile(full["file"])
    assert full["file"].startswith(str(env.backups / "vms" / "disk"))
    disk.write(b"changed" * 1000, 5 * MIB)
    inc = env.run("backup", "create", "disk", "--incremental")
    assert (inc["kind"], inc["format"], inc["parent"]) == ("incremental", "rbd-diff-v1",
                                                          full["id"])
    listed = env.run("backup", "ls", "disk")
    assert [b["id"] for b in listed] == [full["id"], inc["id"]]
    assert listed[1] == {k: v for k, v in inc.items() if k not in ("manifest", "seconds")}
    assert env.run("backup", "verify", "disk", inc["id"])["verified"] == [full["id"], inc["id"]]
    out = env.run("restore", "disk", inc["id"], "back")
    assert out == {**out, "image": "vms/back", "size": 16 * MIB,
                   "chain": [full["id"], inc["id"]]}
    assert env.cluster.image("vms", "back").read() == disk.read(snapshot=inc["snapshot"])
    env.run("restore", "disk", full["id"], "older", "--to-pool", "images")
    assert env.cluster.image("images", "older").read() == disk.read(snapshot=full["snapshot"])
    pruned = env.run("backup", "prune", "disk", "--keep", "1")
    assert pruned["removed_snapshots"] == [full["snapshot"]] and pruned["failed"] == {}
    assert pruned["removed_backups"] == []  # the kept incremental needs its full backup
    header, *rows = env.run("backup", "ls", "disk", as_json=False).splitlines()
    assert header.split()[:3] == ["ID", "KIND", "FORMAT"]
    assert [r.split()[:3] for r in rows] == [[full["id"], "full", "raw"],
                                            [inc["id"], "incremental", "rbd-diff-v1"]]


def test_backup_options_and_errors(env) -> None:
    disk = env.cluster.add_image("images", "base", 4 * MIB, data=b"x" * MIB)
    disk.create_snap("mine")
    other = env.tmp / "elsewhere"
    made = env.run("backup", "create", "base", "--pool", "images", "--snapshot", "mine",
                   "--backup-dir", str(other))
    assert made["snapshot"] == "mine" and made["file"].startswith(str(other / "images" / "base"))
    disk.write(b"y" * 5000, 2 * MIB)
    disk.create_snap("mine2")
    inc = env.run("backup", "create", "base", "--pool", "images", "--incremental",
                  "--snapshot", "mine2", "--backup-dir", str(other))
    assert (inc["snapshot"], inc["parent"]) == ("mine2", made["id"])
    assert [s.name for s in disk.snaps.values()] == ["mine", "mine2"]  # no backup snapshot
    assert env.run("backup", "ls", "base", "--pool", "images") == []  # [rbd] backup_dir
    assert [b["id"] for b in env.run("backup", "ls", "base", "--pool", "images",
                                     "--backup-dir", str(other))] == [made["id"], inc["id"]]
    env.run("restore", "base", inc["id"], "again", "--pool", "images", "--backup-dir", str(other))
    assert env.cluster.image("images", "again").read() == disk.read(snapshot="mine2")
    assert "vms/nosuch" in env.run("backup", "create", "nosuch", expect=1)
    err = env.run("restore", "base", "20990101T000000000000Z-abcdef", "new", "--pool", "images",
                  "--backup-dir", str(other), expect=1)
    assert "20990101T000000000000Z-abcdef" in err and "images/base" in err
    assert "take a full one" in env.run("backup", "create", "base", "--pool", "images",
                                        "--incremental", expect=1)
    err = env.run("restore", "base", made["id"], "base", "--pool", "images",
                  "--backup-dir", str(other), expect=1)
    assert "images/base already exists" in err
    with open(made["file"], "r+b") as f:
        f.write(b"rot")
    assert "corrupt" in env.run("backup", "verify", "base", made["id"], "--pool", "images",
                                "--backup-dir", str(other), expect=1)


# -- provisioning -----------------------------------------------------------------


@pytest.fixture
def mon(env: Env) -> FakeMon:
    return FakeMon(env.cluster)


def _admin(env: Env) -> list[str]:
    return ["--admin-keyring", str(env.admin_keyring)]


def test_provision_pool_and_user(env, mon) -> None:
    assert env.run("provision", "pool", "fresh", "--pg-num", "16", *_admin(env)) == {
        "name": "fresh", "created": True, "pg_num": 16}
    assert "rbd" in env.cluster.pools["fresh"].applications
    assert env.run("provision", "pool", "fresh", *_admin(env))["created"] is False
    keyring = env.tmp / "ceph.client.compute.keyring"
    out = env.run("provision", "user", "compute", "--writable", "fresh", "--writable", "vms",
                  "--read-only", "images", "--keyring", str(keyring), *_admin(env))
    assert out == {"entity": "client.compute", "keyring": str(keyring), "caps": {
        "mon": "profile rbd",
        "osd": "profile rbd pool=fresh, profile rbd pool=vms, profile rbd-read-only pool=images",
        "mgr": "profile rbd pool=fresh, profile rbd pool=vms"}}
    key = mon.users["client.compute"]["key"]
    assert key in keyring.read_text()
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert key not in json.dumps(out)
    again = env.run("provision", "user", "compute", "--writable", "vms", as_json=False)
    assert key not in again and "keyring" in again
    assert mon.users["client.compute"]["key"] == key  # the key is kept


def test_provision_from_conf(env, mon) -> None:
    keyring = env.tmp / "compute.keyring"
    out = env.run("provision", "from-conf", "--pg-num", "8", "--keyring", str(keyring))
    assert out["pools"] == [{"name": "vms", "created": False, "pg_num": 8}]
    assert out["user"]["entity"] == "client.compute" and out["secret_uuid"] is None
    assert out["user"]["caps"]["osd"] == "profile rbd pool=vms, profile rbd-read-only pool=images"
    assert mon.users["client.compute"]["key"] in keyring.read_text()


def test_provision_from_conf_defines_the_libvirt_secret(env, mon, monkeypatch) -> None:
    fake = FakeLibvirt()
    fake.module.registerErrorHandler = lambda handler, ctx: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "libvirt", fake.module)
    out = env.run("provision", "from-conf", "--keyring", str(env.tmp / "k"), "--define-secret")
    secret = fake.conn.secrets[out["secret_uuid"]]
    assert secret.usage == "client.compute secret"
    assert secret.value == cephx.CephxKey(mon.users["client.compute"]["key"], source="t").raw()
    assert fake.opened == ["qemu:///system"]


def test_provision_errors_are_one_line_and_change_nothing(env, mon) -> None:
    err = env.run("provision", "pool", "x", "--admin-keyring", str(env.tmp / "nope"), expect=1)
    assert "nope" in err and "--admin-keyring" in err
    err = env.run("provision", "user", "compute", "--writable", "vms",
                  "--keyring", str(env.tmp / "no-dir" / "k"), expect=1)
    assert "no-dir" in err and "client.compute" not in mon.users
    assert "unsafe" in env.run("provision", "pool", "bad pool", expect=1)
    assert "admin" in env.run("provision", "user", "admin", "--writable", "vms", expect=1)
    mon.deny.add("osd pool create")
    assert "denied" in env.run("provision", "pool", "y", expect=1).lower()
    env.conf.write_text(env.conf.read_text().replace("user = compute\n", ""))
    assert "[rbd] user" in env.run("provision", "from-conf", expect=1)


def test_ls_hides_spare_clones_unless_all(env) -> None:
    env.cluster.add_image("vms", "inst-1_disk", 4 * MIB)
    spare = "rbd-driver-spare.1.abc123.4.0123abcd"
    env.cluster.add_image("vms", spare, 4 * MIB)
    from rbd_driver.storage.spares import is_spare_name
    assert is_spare_name(spare)
    assert [d["name"] for d in env.run("ls")] == ["inst-1_disk"]
    assert sorted(d["name"] for d in env.run("ls", "--all")) == sorted(["inst-1_disk", spare])



def test_ls_text_is_a_table_and_json_stays_as_it_was(env) -> None:
    env.cluster.add_image("vms", "inst-1_disk", 4 * MIB, data=b"x" * MIB)
    assert env.run("ls", as_json=False).splitlines() == [
        "NAME          SIZE   USED  PARENT",
        "inst-1_disk  4 MiB  4 MiB  -",
    ]
    env.run("ls")
    env.capsys.readouterr()
    assert cli.main(["--config-file", str(env.conf), "--json", "ls"]) == 0
    assert env.capsys.readouterr().out == (
        '[\n  {\n    "pool": "vms",\n    "name": "inst-1_disk",\n    "provisioned": 4194304,\n'
        '    "used": 4194304,\n    "parent": null\n  }\n]\n')


def test_snapshot_without_a_name_is_a_usage_error_before_any_config(env) -> None:
    env.conf.write_text("not an ini file\n")  # never read: "pool-info" would fail on it
    err = env.run("snapshot", "create", "inst-1", expect=2)
    # Nested subcommands (issue 26): argparse itself names what is missing.
    assert "rbd-driver snapshot create: error: the following arguments are required: name" in err
    assert "Failed to parse" in env.run("pool-info", expect=1)
