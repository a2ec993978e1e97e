# SPDX-License-Identifier: Apache-2.0
"""snapshot_extract and import_file against a real cluster, as the non-admin user.

Oracles: ``rbd export`` as admin and ``qemu-img compare`` for what was
extracted; ``rbd ls`` and ``rbd export`` as admin, and ``isoinfo``, for what
was imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage import cephx
from rbd_driver.testing.local_cluster import ClusterState

MiB = 1 << 20
GOLDEN_SIZE = 64 * MiB
EXAMPLE = Path(__file__).resolve().parents[2] / "doc/source/examples/disk_files.py"


def _run(*cmd: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return proc


def _admin_export(ceph_cluster: ClusterState, spec: str, dest: Path) -> Path:
    _run("rbd", "-c", ceph_cluster.conf_path, "export", "--no-progress", spec, str(dest))
    return dest


def _admin_ls(ceph_cluster: ClusterState, pool: str = "vms") -> list[str]:
    out = _run("rbd", "-c", ceph_cluster.conf_path, "ls", pool).stdout
    return out.split()


def _compare(a: Path, a_format: str, b: Path, b_format: str) -> None:
    _run("qemu-img", "compare", "-f", a_format, "-F", b_format, str(a), str(b))


@pytest.fixture
def instance(backend: imagebackend.Backend, ceph_cluster: ClusterState) -> Iterator[str]:
    inst = str(uuid.uuid4())
    yield inst
    report = Rbd.cleanup_instance(backend.conf, inst, driver=backend.driver("rbd"))
    assert report.ok, report
    assert not [n for n in _admin_ls(ceph_cluster) if n.startswith(inst)]


@pytest.fixture
def golden(backend: imagebackend.Backend) -> Iterator[str]:
    """A golden image with data in its first and last MiB; yields its location."""
    driver = backend.driver("rbd")
    name = f"golden-{uuid.uuid4().hex[:8]}"
    driver.create(name, GOLDEN_SIZE, pool="images")
    with driver.client.open_image("images", name) as image:
        image.write(b"golden data\n" * 80000, 0)
        image.write(b"tail" * 1024, GOLDEN_SIZE - 4096)
    driver.create_snap(name, "snap", protect=True, pool="images")
    yield f"rbd://{driver.fsid}/images/{name}/snap"
    assert driver.remove_image(name, pool="images").removed == [name]


@pytest.fixture
def launched(backend: imagebackend.Backend, golden: str, instance: str) -> Rbd:
    """A disk cloned from the golden, with data written since the launch."""
    disk = backend.by_name(instance, "disk", image_type="rbd")
    assert isinstance(disk, Rbd)
    disk.direct_fetch("img", {"disk_format": "raw"}, [{"url": golden}])
    with disk.driver.client.open_image(disk.pool, disk.rbd_name) as image:
        image.write(os.urandom(MiB), 20 * MiB)
        image.write(b"overwritten" * 100, 0)
    return disk


@pytest.mark.parametrize("out_format", ["raw", "qcow2"])
def test_extract_equals_the_disk(launched, out_format, ceph_cluster, tmp_path, spawned) -> None:
    target = tmp_path / f"disk.{out_format}"
    calls = spawned()
    launched.snapshot_extract(str(target), out_format)
    commands = spawned()[len(calls):]
    exported = _admin_export(ceph_cluster, f"vms/{launched.rbd_name}", tmp_path / "admin.raw")
    _compare(exported, "raw", target, out_format)
    # The disk itself, read by QEMU as the non-admin user, is the same too.
    _compare(target, out_format, Path(launched.path), "raw")
    info = _run("qemu-img", "info", "--output=json", str(target)).stdout
    assert f'"format": "{out_format}"' in info
    assert sorted(os.listdir(tmp_path)) == sorted([f"disk.{out_format}", "admin.raw"])
    assert target.stat().st_blocks * 512 < 8 * MiB  # 64 MiB disk, ~2 MiB of data: sparse
    assert (target.stat().st_mode & 0o777) == 0o600
    key = cephx.read_key(ceph_cluster.user_keyring, f"client.{ceph_cluster.user}").reveal()
    if out_format == "raw":
        assert commands == []  # librbd in-process, nothing spawned
    else:
        assert len(commands) == 1 and "qemu-img" in commands[0]
        assert key not in commands[0] and ceph_cluster.user_keyring in commands[0]


@pytest.mark.parametrize("out_format", ["raw", "qcow2"])
def test_extract_a_snapshot_is_the_snapshot_not_later_writes(launched, out_format,
                                                              ceph_cluster, tmp_path) -> None:
    launched.create_snap("upload")
    try:
        with launched.driver.client.open_image(launched.pool, launched.rbd_name) as image:
            image.write(b"after the snapshot" * 1000, 30 * MiB)
        target = tmp_path / f"snap.{out_format}"
        launched.snapshot_extract(str(target), out_format, snapshot="upload")
        at_snap = _admin_export(ceph_cluster, f"vms/{launched.rbd_name}@upload",
                                tmp_path / "snap-admin.raw")
        now = _admin_export(ceph_cluster, f"vms/{launched.rbd_name}", tmp_path / "now.raw")
        _compare(at_snap, "raw", target, out_format)
        proc = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", out_format, str(now),
                               str(target)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr  # the later write differs
    finally:
        launched.remove_snap("upload")


@pytest.mark.parametrize("out_format", ["raw", "qcow2"])
def test_failed_extract_leaves_no_file(backend, instance, out_format, tmp_path) -> None:
    disk = backend.by_name(instance, "disk", image_type="rbd")
    with pytest.raises(exception.ImageNotFound):
        disk.snapshot_extract(str(tmp_path / "x"), out_format)
    assert os.listdir(tmp_path) == []


def test_unsupported_format_writes_nothing(launched, tmp_path) -> None:
    with pytest.raises(exception.UnsupportedFormat):
        launched.snapshot_extract(str(tmp_path / "disk.vmdk"), "vmdk")
    assert os.listdir(tmp_path) == []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _make_iso(tmp_path: Path) -> Path:
    """A real ISO9660 config drive made by genisoimage. Without it: in CI (``CI=true``,
    set by .ci/run) the test fails, since run.sh installs it; elsewhere an
    ISO-looking file stands in."""
    iso = tmp_path / "config.iso"
    tool = shutil.which("genisoimage") or shutil.which("mkisofs") or shutil.which("xorrisofs")
    if tool is None or (_in_ci() and not shutil.which("isoinfo")):
        if _in_ci():
            pytest.fail("genisoimage (and its isoinfo) is missing: './run.sh setup' installs it")
        data = bytearray(4 * MiB)
        data[16 * 2048:16 * 2048 + 6] = b"\x01CD001"
        data[17 * 2048:17 * 2048 + 6] = b"\xffCD001"
        iso.write_bytes(bytes(data))
        return iso
    root = tmp_path / "config"
    (root / "openstack" / "latest").mkdir(parents=True)
    (root / "openstack" / "latest" / "meta_data.json").write_text('{"uuid": "x"}\n')
    (root / "openstack" / "latest" / "user_data").write_bytes(os.urandom(300000))
    _run(tool, "-o", str(iso), "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
         "-quiet", "-J", "-r", "-V", "config-2", str(root))
    return iso


def test_import_an_iso_config_drive_then_cleanup(backend, instance, ceph_cluster,
                                                 tmp_path) -> None:
    iso = _make_iso(tmp_path)
    config = backend.by_name(instance, "disk.config", image_type="rbd")
    config.import_file(str(iso))
    name = f"{instance}_disk.config"
    assert name in _admin_ls(ceph_cluster)
    exported = _admin_export(ceph_cluster, f"vms/{name}", tmp_path / "exported.iso")
    assert exported.read_bytes() == iso.read_bytes()
    if _in_ci() or (shutil.which("isoinfo") and shutil.which("genisoimage")):
        listing = _run("isoinfo", "-R", "-f", "-i", str(exported)).stdout
        assert "/openstack/latest/meta_data.json" in listing
    # Never overwritten.
    with pytest.raises(exception.ImageExists) as err:
        config.import_file(str(iso))
    assert f"vms/{name}" in str(err.value)
    # The instance's cleanup takes the config drive with its other disks.
    disk = backend.by_name(instance, "disk", image_type="rbd")
    disk.import_file(str(iso))
    report = Rbd.cleanup_instance(backend.conf, instance, driver=backend.driver("rbd"))
    assert sorted(report.removed) == sorted([name, f"{instance}_disk"]) and report.ok
    assert not [n for n in _admin_ls(ceph_cluster) if n.startswith(instance)]


def test_import_a_qcow2_rescue_image_stores_raw(backend, instance, ceph_cluster,
                                                tmp_path) -> None:
    raw = tmp_path / "rescue.raw"
    with open(raw, "wb") as f:
        f.truncate(32 * MiB)
        f.write(b"rescue me\n" * 5000)
    qcow2 = tmp_path / "rescue.qcow2"
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
    rescue = backend.by_name(instance, "disk.rescue", image_type="rbd")
    rescue.import_file(str(qcow2))
    exported = _admin_export(ceph_cluster, f"vms/{instance}_disk.rescue",
                             tmp_path / "exported.raw")
    assert exported.read_bytes() == raw.read_bytes()


def test_docs_example_runs(ceph_cluster, backend, tmp_path) -> None:
    iso = _make_iso(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    before = set(_admin_ls(ceph_cluster))
    proc = subprocess.run([sys.executable, str(EXAMPLE), ceph_cluster.conf_path,
                           ceph_cluster.user, ceph_cluster.user_keyring, str(iso), str(work)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "shared block storage: True" in out
    assert "extracted raw:" in out and "extracted qcow2:" in out
    assert "refused: Cannot write" in out and "already exists" in out
    assert "failed {}" in out
    _compare(work / "upload.raw", "raw", work / "upload.qcow2", "qcow2")
    assert set(_admin_ls(ceph_cluster)) == before


def test_a_missing_genisoimage_fails_in_ci_rather_than_faking_an_iso(tmp_path,
                                                                      monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="genisoimage"):
        _make_iso(tmp_path)
    assert not (tmp_path / "config.iso").exists()
    monkeypatch.delenv("CI")
    assert _make_iso(tmp_path).read_bytes()[16 * 2048 + 1:16 * 2048 + 6] == b"CD001"
