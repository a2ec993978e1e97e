# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver golden|backup|restore|provision`` against the real cluster.

Each subcommand runs as a separate process with ``--json``, as an operator
would run it; its output is checked against the Ceph CLI's own view, as
admin (``rbd``, ``ceph``). Disk-level commands run as the test cluster's
non-admin user; ``provision`` connects as ``client.admin``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rbd_driver.storage import cephx
from rbd_driver.testing.local_cluster import ClusterState

MIB = 1 << 20
Cli = Callable[..., Any]


def _write_conf(path: Path, state: ClusterState, **options: str) -> Path:
    settings = {"ceph_conf": state.conf_path, "user": state.user,
                "keyring": state.user_keyring, "pool": "vms", **options}
    path.write_text("[rbd]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return path


def _runner(conf: Path) -> Cli:
    def run(*args: str, expect: int = 0, as_json: bool = True,
            output: dict[str, str] | None = None) -> Any:
        cmd = [sys.executable, "-m", "rbd_driver.cli", "--config-file", str(conf)]
        proc = subprocess.run(cmd + (["--json"] if as_json else []) + list(args),
                              capture_output=True, text=True, timeout=300)
        if output is not None:
            output.update(stdout=proc.stdout, stderr=proc.stderr)
        assert proc.returncode == expect, (args, proc.returncode, proc.stderr)
        if expect == 1:
            assert "Traceback" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert proc.stderr.startswith("rbd-driver: error: ")
            return proc.stderr
        if expect == 2:
            assert "Traceback" not in proc.stderr
            return proc.stderr
        return json.loads(proc.stdout) if as_json else proc.stdout

    return run


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def cli(ceph_cluster: ClusterState, tmp_path: Path, backup_dir: Path) -> Cli:
    return _runner(_write_conf(tmp_path / "rbd-driver.conf", ceph_cluster,
                               backup_dir=str(backup_dir)))


@pytest.fixture
def ceph_raw(ceph_cluster: ClusterState) -> Callable[..., str]:
    """Run the Ceph CLI as admin without ``--format json`` (``rbd export``...)."""

    def run(tool: str, *args: str) -> str:
        proc = subprocess.run([tool, "-c", ceph_cluster.conf_path, *args],
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"{tool} {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    return run


@pytest.fixture
def rbd_sha256(ceph_raw: Callable[..., str], tmp_path: Path) -> Callable[[str], str]:
    """sha256 of ``pool/image[@snap]`` as ``rbd export`` writes it."""

    def digest(spec: str) -> str:
        out = tmp_path / f"export-{uuid.uuid4().hex[:8]}.raw"
        ceph_raw("rbd", "export", "--no-progress", spec, str(out))
        try:
            return _sha256(out)
        finally:
            out.unlink()

    return digest


def _sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def _random_raw(path: Path, size: int, extents: list[int]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in extents:
            f.seek(offset)
            f.write(os.urandom(MIB))
    return path


def _snaps(ceph_admin: Callable[..., Any], spec: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in ceph_admin("rbd", "snap", "ls", spec)}


# -- golden images ------------------------------------------------------------------


def test_golden_register_ls_children_rm(cli, ceph_admin, rbd_sha256, tmp_path,
                                        backend) -> None:
    source = _random_raw(tmp_path / "golden.raw", 24 * MIB, [0, 9 * MIB, 23 * MIB])
    name = f"cli-golden-{uuid.uuid4().hex[:6]}"
    inst = str(uuid.uuid4())
    try:
        made = cli("golden", "register", name, str(source))
        fsid = ceph_admin("ceph", "fsid")["fsid"]
        assert made["location"] == f"rbd://{fsid}/images/{name}/snap"
        assert (made["pool"], made["name"], made["snapshot"]) == ("images", name, "snap")
        info = ceph_admin("rbd", "info", f"images/{name}")
        assert made["size"] == info["size"] == 24 * MIB
        snap = _snaps(ceph_admin, f"images/{name}")["snap"]
        assert snap["protected"] == "true"
        assert rbd_sha256(f"images/{name}@snap") == _sha256(source)
        assert not [n for n in ceph_admin("rbd", "ls", "images") if ".registering-" in n]

        listed = {g["name"]: g for g in cli("golden", "ls")}
        assert listed[name] == {k: v for k, v in made.items() if k != "seconds"}
        assert set(listed) <= set(ceph_admin("rbd", "ls", "images"))

        assert cli("golden", "children", name)["children"] == []
        cli("clone", made["location"], inst)
        children = cli("golden", "children", name)
        assert children["golden"] == f"images/{name}@snap"
        oracle = ceph_admin("rbd", "children", f"images/{name}@snap")
        assert children["children"] == [f"{c['pool']}/{c['image']}" for c in oracle] \
            == [f"vms/{inst}_disk"]

        assert f"vms/{inst}_disk" in cli("golden", "rm", name, expect=1)
        assert name in ceph_admin("rbd", "ls", "images")
        backend.backend("rbd").cleanup_instance(backend.conf, inst)
        assert cli("golden", "rm", name)["outcome"] == "removed"
        assert name not in ceph_admin("rbd", "ls", "images")
    finally:
        backend.backend("rbd").cleanup_instance(backend.conf, inst)
        backend.driver("rbd").remove_image(name, pool="images")


def test_golden_errors(cli, tmp_path) -> None:
    assert "images/no-such-golden" in cli("golden", "children", "no-such-golden", expect=1)
    assert "no-such-file" in cli("golden", "register", "x", str(tmp_path / "no-such-file"),
                                 expect=1)
    assert "nosuchpool" in cli("golden", "ls", "--pool", "nosuchpool", expect=1)
    assert "usage:" in cli("golden", "register", "only-a-name", expect=2)


# -- backups and restores --------------------------------------------------------------


def _manifests(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def test_backup_full_incremental_qcow2_restore_verify_prune(
        cli, ceph_admin, rbd_sha256, backup_dir, backend, tmp_path) -> None:
    driver = backend.driver("rbd")
    name = f"cli-backup-{uuid.uuid4().hex[:6]}"
    restored = [f"{name}-r1", f"{name}-r2"]
    driver.create(name, 32 * MIB)
    try:
        with driver.client.open_image("vms", name) as image:
            image.write(os.urandom(2 * MIB), 0)
            image.write(os.urandom(MIB), 20 * MIB)
        full = cli("backup", "create", name)
        directory = backup_dir / "vms" / name
        assert (full["kind"], full["format"], full["image"]) == ("full", "raw", f"vms/{name}")
        assert full["manifest"] == str(directory / f"{full['id']}.json")
        assert full["snapshot"] in _snaps(ceph_admin, f"vms/{name}")

        with driver.client.open_image("vms", name) as image:
            image.write(os.urandom(MIB), 8 * MIB)
            image.discard(0, MIB)
        inc = cli("backup", "create", name, "--incremental")
        assert (inc["kind"], inc["format"], inc["parent"]) == ("incremental", "rbd-diff-v1",
                                                              full["id"])
        assert inc["file_size"] < 4 * MIB  # only what changed
        qcow = cli("backup", "create", name, "--format", "qcow2")
        assert qcow["format"] == "qcow2" and qcow["file"].endswith(".qcow2")

        manifests = _manifests(directory)
        assert set(manifests) == {full["id"], inc["id"], qcow["id"]}
        listed = cli("backup", "ls", name)
        assert [b["id"] for b in listed] == [full["id"], inc["id"], qcow["id"]]
        for entry in listed:
            manifest = manifests[entry["id"]]
            assert entry["snapshot"] == manifest["snapshot"]["name"]
            assert entry["file"] == str(directory / manifest["file"]["name"])
            assert entry["file_size"] == manifest["file"]["size"] == os.stat(entry["file"]).st_size
            assert entry["checksum"] == (f"{manifest['file']['checksum']['algorithm']}:"
                                         f"{manifest['file']['checksum']['value']}")
            assert entry["kind"] == manifest["kind"] and entry["format"] == manifest["format"]
        snaps = _snaps(ceph_admin, f"vms/{name}")
        assert {b["snapshot"] for b in listed} <= set(snaps)

        assert cli("backup", "verify", name, inc["id"])["verified"] == [full["id"], inc["id"]]

        out = cli("restore", name, inc["id"], restored[0])
        assert out["image"] == f"vms/{restored[0]}" and out["chain"] == [full["id"], inc["id"]]
        assert ceph_admin("rbd", "info", f"vms/{restored[0]}")["size"] == out["size"] == 32 * MIB
        assert rbd_sha256(f"vms/{restored[0]}") == rbd_sha256(f"vms/{name}@{inc['snapshot']}")
        assert rbd_sha256(f"vms/{name}@{inc['snapshot']}") != \
            rbd_sha256(f"vms/{name}@{full['snapshot']}")

        out = cli("restore", name, qcow["id"], restored[1], "--to-pool", "images")
        assert out["image"] == f"images/{restored[1]}"
        assert restored[1] in ceph_admin("rbd", "ls", "images")
        assert rbd_sha256(f"images/{restored[1]}") == rbd_sha256(f"vms/{name}@{qcow['snapshot']}")

        pruned = cli("backup", "prune", name, "--keep", "1")
        assert pruned["failed"] == {}
        assert sorted(pruned["removed_backups"]) == sorted([full["id"], inc["id"]])
        assert sorted(pruned["removed_snapshots"]) == sorted([full["snapshot"], inc["snapshot"]])
        assert set(_manifests(directory)) == {qcow["id"]}
        assert [b["id"] for b in cli("backup", "ls", name)] == [qcow["id"]]
        left = [s for s in _snaps(ceph_admin, f"vms/{name}") if s.startswith("rbd-driver-backup.")]
        assert left == [qcow["snapshot"]]
    finally:
        driver.remove_image(restored[0])
        driver.remove_image(restored[1], pool="images")
        report = driver.remove_image(name)
        assert report.ok, report


def test_backup_of_a_given_snapshot_to_another_dir(cli, ceph_admin, rbd_sha256, backend,
                                                   tmp_path) -> None:
    driver = backend.driver("rbd")
    name = f"cli-backup-snap-{uuid.uuid4().hex[:6]}"
    other = tmp_path / "other-backups"
    driver.create(name, 8 * MIB)
    try:
        with driver.client.open_image("vms", name) as image:
            image.write(os.urandom(MIB), 3 * MIB)
        driver.create_snap(name, "mine")
        made = cli("backup", "create", name, "--snapshot", "mine", "--backup-dir", str(other))
        assert made["snapshot"] == "mine"
        assert made["file"] == str(other / "vms" / name / f"{made['id']}.raw")
        assert _sha256(made["file"]) == rbd_sha256(f"vms/{name}@mine")
        assert cli("backup", "ls", name) == []  # not in [rbd] backup_dir
        assert [b["id"] for b in cli("backup", "ls", name, "--backup-dir", str(other))] \
            == [made["id"]]
        assert list(_snaps(ceph_admin, f"vms/{name}")) == ["mine"]  # no backup snapshot made

        with driver.client.open_image("vms", name) as image:
            image.write(os.urandom(MIB), 6 * MIB)
        driver.create_snap(name, "mine2")
        inc = cli("backup", "create", name, "--incremental", "--snapshot", "mine2",
                  "--backup-dir", str(other))
        assert (inc["snapshot"], inc["parent"], inc["kind"]) == ("mine2", made["id"],
                                                                 "incremental")
        assert list(_snaps(ceph_admin, f"vms/{name}")) == ["mine", "mine2"]
        out = cli("restore", name, inc["id"], f"{name}-r", "--backup-dir", str(other))
        assert out["chain"] == [made["id"], inc["id"]]
        assert rbd_sha256(f"vms/{name}-r") == rbd_sha256(f"vms/{name}@mine2")
    finally:
        driver.remove_image(f"{name}-r")
        report = driver.remove_image(name)
        assert report.ok, report


def test_backup_errors(cli, backend, tmp_path) -> None:
    missing = f"cli-no-such-{uuid.uuid4().hex[:6]}"
    assert f"vms/{missing}" in cli("backup", "create", missing, expect=1)
    err = cli("restore", "some-disk", "20990101T000000000000Z-abcdef", "new", expect=1)
    assert "20990101T000000000000Z-abcdef" in err and "vms/some-disk" in err
    assert "20990101T000000000000Z-abcdef" in cli("backup", "verify", "some-disk",
                                                  "20990101T000000000000Z-abcdef", expect=1)
    driver = backend.driver("rbd")
    name = f"cli-backup-err-{uuid.uuid4().hex[:6]}"
    driver.create(name, 4 * MIB)
    try:
        assert "take a full one" in cli("backup", "create", name, "--incremental", expect=1)
        made = cli("backup", "create", name)
        assert f"vms/{name} already exists" in cli("restore", name, made["id"], name, expect=1)
    finally:
        report = driver.remove_image(name)
        assert report.ok, report
    assert "--incremental" in cli("backup", "create", name, "--incremental", "--format",
                                  "qcow2", expect=2)
    assert "usage:" in cli("restore", name, expect=2)


# -- provisioning ----------------------------------------------------------------------


@pytest.fixture
def scratch(ceph_admin: Callable[..., Any]) -> Iterator[dict[str, str]]:
    """A pool name and a user name no one uses; both removed afterwards if they exist."""
    tag = uuid.uuid4().hex[:6]
    names = {"pool": f"cli-prov-{tag}", "user": f"cli-prov-{tag}"}
    yield names
    ceph_admin("ceph", "auth", "del", f"client.{names['user']}", check=False)
    if names["pool"] in ceph_admin("ceph", "osd", "pool", "ls"):
        ceph_admin("ceph", "osd", "pool", "rm", names["pool"], names["pool"],
                   "--yes-i-really-really-mean-it")


def _pool_detail(ceph_admin: Callable[..., Any], pool: str) -> dict[str, Any]:
    return next(p for p in ceph_admin("ceph", "osd", "pool", "ls", "detail")
                if p["pool_name"] == pool)


def test_provision_pool_and_user(cli, ceph_admin, ceph_cluster, scratch, tmp_path,
                                 secret_scanner) -> None:
    pool, user = scratch["pool"], scratch["user"]
    made = cli("provision", "pool", pool, "--pg-num", "8",
               "--admin-keyring", ceph_cluster.admin_keyring)
    assert made == {"name": pool, "created": True, "pg_num": 8}
    detail = _pool_detail(ceph_admin, pool)
    assert detail["pg_num"] == 8
    assert "rbd" in detail["application_metadata"]
    assert "rbd" in ceph_admin("ceph", "osd", "pool", "application", "get", pool)
    assert cli("provision", "pool", pool, "--pg-num", "16") == {
        "name": pool, "created": False, "pg_num": 8}
    assert _pool_detail(ceph_admin, pool)["pg_num"] == 8

    keyring = tmp_path / "keys" / f"ceph.client.{user}.keyring"
    keyring.parent.mkdir()
    output: dict[str, str] = {}
    out = cli("provision", "user", user, "--writable", pool, "--read-only", "images",
              "--keyring", str(keyring), output=output)
    entry = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
    key = cephx.CephxKey(entry["key"], source="test")
    secret_scanner.watch(key, f"key of client.{user}")
    assert out == {"entity": f"client.{user}", "caps": entry["caps"], "keyring": str(keyring)}
    assert entry["caps"] == {"mon": "profile rbd",
                             "osd": f"profile rbd pool={pool}, profile rbd-read-only pool=images",
                             "mgr": f"profile rbd pool={pool}"}
    assert stat.S_IMODE(os.stat(keyring).st_mode) == 0o600
    assert f"key = {entry['key']}" in keyring.read_text()
    assert entry["key"] not in output["stdout"] + output["stderr"]

    # The new user works, with exactly those rights.
    as_user = _runner(_write_conf(tmp_path / "as-user.conf", ceph_cluster, user=user,
                                  keyring=str(keyring), pool=pool))
    src = _random_raw(tmp_path / "u.raw", 4 * MIB, [MIB])
    assert as_user("import", str(src), "disk")["image"] == f"{pool}/disk"
    assert "disk" in ceph_admin("rbd", "ls", pool)
    assert isinstance(as_user("ls", "--pool", "images"), list)
    assert "images" in as_user("import", str(src), "nope", "--pool", "images", expect=1)

    # Narrowing: the caps become exactly the new ones, the key stays.
    out = cli("provision", "user", user, "--writable", pool, output=output)
    again = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
    assert again["key"] == entry["key"] and out["keyring"] is None
    assert again["caps"]["osd"] == f"profile rbd pool={pool}" == out["caps"]["osd"]
    assert entry["key"] not in output["stdout"] + output["stderr"]


def test_provision_from_conf(ceph_cluster, ceph_admin, scratch, tmp_path) -> None:
    pool, user = scratch["pool"], scratch["user"]
    keyring = tmp_path / f"ceph.client.{user}.keyring"
    conf = _write_conf(tmp_path / "prov.conf", ceph_cluster, user=user, keyring=str(keyring),
                       pool=pool, image_pools="images", libvirt_uri="test:///default")
    cli = _runner(conf)
    out = cli("provision", "from-conf", "--pg-num", "8")
    assert out["pools"] == [{"name": pool, "created": True, "pg_num": 8}]
    assert out["user"]["keyring"] == str(keyring) and out["secret_uuid"] is None
    entry = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]
    assert out["user"]["caps"] == entry["caps"]
    assert entry["caps"]["osd"] == f"profile rbd pool={pool}, profile rbd-read-only pool=images"
    assert _pool_detail(ceph_admin, pool)["pg_num"] == 8
    assert stat.S_IMODE(os.stat(keyring).st_mode) == 0o600
    assert entry["key"] in keyring.read_text()
    # Idempotent.
    assert cli("provision", "from-conf")["pools"][0]["created"] is False
    # libvirt's test driver has no secrets: one line naming the user (libvirt's
    # own printout to stderr is silenced), exit 1.
    err = cli("provision", "from-conf", "--define-secret", expect=1)
    assert f"client.{user}" in err and "libvirt" in err


def test_provision_errors(cli, ceph_cluster, ceph_admin, scratch, tmp_path) -> None:
    pool, user = scratch["pool"], scratch["user"]
    err = cli("provision", "pool", pool, "--admin-id", ceph_cluster.user,
              "--admin-keyring", ceph_cluster.user_keyring, expect=1)
    assert f"client.{ceph_cluster.user} lacks cephx caps for " in err, err
    assert pool not in ceph_admin("ceph", "osd", "pool", "ls")
    # Finding 4 of issue 26: from-conf as a non-admin on an existing pool said
    # "rbd pool init on pool vms failed: [errno 13]".
    err = cli("provision", "from-conf", "--admin-id", ceph_cluster.user,
              "--admin-keyring", ceph_cluster.user_keyring, expect=1)
    assert f"client.{ceph_cluster.user} lacks cephx caps for " in err, err
    err = cli("provision", "pool", pool, "--admin-keyring", str(tmp_path / "none"), expect=1)
    assert str(tmp_path / "none") in err
    err = cli("provision", "user", user, "--writable", "vms",
              "--keyring", str(tmp_path / "no-dir" / "k"), expect=1)
    assert "no-dir" in err
    assert ceph_admin("ceph", "auth", "get", f"client.{user}", check=False) is None
    assert "unsafe" in cli("provision", "user", user, "--writable", "vms, osd allow *", expect=1)
    assert "admin" in cli("provision", "user", "admin", "--writable", "vms", expect=1)
    assert "--writable" in cli("provision", "user", user, expect=2)
