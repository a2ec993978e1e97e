# SPDX-License-Identifier: Apache-2.0
"""snapshot_extract, import_file and is_shared_block_storage on the fake librbd.

qemu-img cannot read the fake cluster, so the qcow2 path is checked by
replacing ``processutils.execute``: what command line it gets (paths, never
a key), and that a failure, ^C or SIGTERM kills it and leaves no file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from oslo_concurrency import processutils

from rbd_driver import exception, imagebackend
from rbd_driver.backends.flat import Flat
from rbd_driver.backends.rbd import Rbd
from rbd_driver.storage import cephx, convert
from rbd_driver.testing.fixtures import FakeEnv

MiB = 1 << 20
KEY = cephx.generate_key()


# The SIGTERM guard is opt-in (the rbd-driver command enables it); these tests need it.
pytestmark = pytest.mark.usefixtures("sigterm_guard")


class Env(FakeEnv):
    def __init__(self, tmp_path: Path) -> None:
        keyring = tmp_path / "ceph.client.compute.keyring"
        cephx.write_keyring(str(keyring), "client.compute", KEY)
        super().__init__(tmp_path, pools=("vms",), aio_mode="sync", keyring=str(keyring))
        self.out = tmp_path / "out"
        self.out.mkdir()

    def disk(self, name: str = "disk", inst: str | None = None) -> Rbd:
        return Rbd(inst or str(uuid.uuid4()), name, self.conf, driver=self.driver)

    def vms(self) -> list[str]:
        with self.driver.client.ioctx("vms") as ioctx:
            return sorted(self.rbd.RBD().list(ioctx))


def _content(size: int) -> bytes:
    data = bytearray(size)
    data[0:4096] = os.urandom(4096)
    data[5 * MiB:5 * MiB + 100] = b"x" * 100
    data[-10:] = b"0123456789"
    return bytes(data)


# -- is_shared_block_storage ---------------------------------------------------------------


def test_shared_block_storage_is_true_only_for_rbd(env, tmp_path) -> None:
    assert env.disk().is_shared_block_storage() is True
    flat_conf = env.conf
    assert Flat(str(uuid.uuid4()), "disk", flat_conf).is_shared_block_storage() is False

    class Local(Flat):  # any plugin that does not say otherwise keeps local disks
        pass

    assert imagebackend.Image.is_shared_block_storage(Local("i", "d", flat_conf)) is False


def test_a_backend_without_them_says_so(env, tmp_path) -> None:
    flat = Flat(str(uuid.uuid4()), "disk", env.conf)
    with pytest.raises(exception.NotSupported) as err:
        flat.snapshot_extract(str(tmp_path / "x"), "raw")
    assert "snapshot_extract" in str(err.value)
    with pytest.raises(exception.NotSupported) as err:
        flat.import_file(str(tmp_path / "x"))
    assert "import_file" in str(err.value) and not (tmp_path / "x").exists()


# -- snapshot_extract: raw -------------------------------------------------------------------


def test_extract_raw_is_the_disk_and_sparse(env) -> None:
    disk = env.disk()
    content = _content(16 * MiB)
    env.cluster.add_image("vms", disk.rbd_name, len(content), data=content)
    target = env.out / "disk.raw"
    seen: list[tuple[int, int]] = []
    disk.snapshot_extract(str(target), "raw", progress=lambda d, t: seen.append((d, t)))
    assert target.read_bytes() == content
    assert target.stat().st_blocks * 512 < 4 * MiB  # holes stayed holes
    assert seen[-1] == (len(content), len(content))
    assert os.listdir(env.out) == ["disk.raw"]


def test_extract_a_snapshot_gives_its_bytes_not_the_current_ones(env) -> None:
    disk = env.disk()
    image = env.cluster.add_image("vms", disk.rbd_name, 8 * MiB, data=b"before" * 100)
    disk.create_snap("s1")
    image.write(b"after!" * 100, 0)
    target = env.out / "snap.raw"
    disk.snapshot_extract(str(target), "raw", snapshot="s1")
    assert target.read_bytes()[:600] == b"before" * 100


def test_extract_of_a_missing_disk_leaves_no_file(env) -> None:
    target = env.out / "missing.raw"
    with pytest.raises(exception.ImageNotFound):
        env.disk().snapshot_extract(str(target), "raw")
    with pytest.raises(exception.SnapshotNotFound):
        disk = env.disk()
        env.cluster.add_image("vms", disk.rbd_name, MiB)
        disk.snapshot_extract(str(target), "qcow2", snapshot="nope")
    assert os.listdir(env.out) == []


def test_extract_raw_failure_keeps_the_old_target(env, monkeypatch) -> None:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, 4 * MiB, data=b"new")
    target = env.out / "disk.raw"
    target.write_bytes(b"old")

    def progress(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        disk.snapshot_extract(str(target), "raw", progress=progress)
    assert target.read_bytes() == b"old" and os.listdir(env.out) == ["disk.raw"]


@pytest.mark.parametrize("out_format", ["vmdk", "vdi", "qcow", "RAW", "", "ploop"])
def test_unsupported_format_is_refused_before_anything(env, out_format) -> None:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, MiB)
    with pytest.raises(exception.UnsupportedFormat) as err:
        disk.snapshot_extract(str(env.out / "x"), out_format)
    assert isinstance(err.value, exception.InvalidArgument)
    assert "raw, qcow2" in str(err.value) and str(env.out / "x") in str(err.value)
    assert os.listdir(env.out) == []


# -- snapshot_extract: qcow2 through qemu-img ---------------------------------------------------


class FakeQemuImg:
    """Replaces processutils.execute: records the command, writes or fails as told."""

    def __init__(self, fail: bool = False, interrupt: BaseException | None = None,
                 sigterm: bool = False) -> None:
        self.fail, self.interrupt, self.sigterm = fail, interrupt, sigterm
        self.calls: list[tuple[str, ...]] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def __call__(self, *cmd: str, on_execute: Any = None, **kwargs: Any) -> tuple[str, str]:
        self.calls.append(cmd)
        dest = cmd[-1]
        assert os.path.exists(dest) and (os.stat(dest).st_mode & 0o777) == 0o600
        with open(dest, "wb") as f:
            f.write(b"QFI\xfb partial")
        if self.interrupt is not None or self.sigterm:
            proc = subprocess.Popen(["sleep", "60"])
            self.procs.append(proc)
            if on_execute:
                on_execute(proc)
            if self.sigterm:
                signal.raise_signal(signal.SIGTERM)
            raise self.interrupt or AssertionError("the SIGTERM handler did not raise")
        if self.fail:
            raise processutils.ProcessExecutionError(stderr="qemu-img: Could not open", cmd=cmd,
                                                     exit_code=1)
        with open(dest, "ab") as f:
            f.write(b" complete")
        return "", ""


@pytest.fixture
def sigterm_recorder() -> Any:
    received: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, old)


def _disk_with_data(env: Env) -> Rbd:
    disk = env.disk()
    env.cluster.add_image("vms", disk.rbd_name, 8 * MiB, data=b"data")
    disk.create_snap("s1")
    return disk


def test_qcow2_runs_qemu_img_with_paths_never_a_key(env, monkeypatch) -> None:
    fake = FakeQemuImg()
    monkeypatch.setattr(processutils, "execute", fake)
    disk = _disk_with_data(env)
    target = env.out / "disk.qcow2"
    seen: list[tuple[int, int]] = []
    disk.snapshot_extract(str(target), "qcow2", snapshot="s1",
                          progress=lambda d, t: seen.append((d, t)))
    [cmd] = fake.calls
    assert cmd[:7] == ("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-m")
    spec = cmd[-2]
    assert spec == (f"rbd:vms/{disk.rbd_name}@s1:id=compute:conf={env.conf.rbd.ceph_conf}"
                    f":keyring={env.keyring}")
    assert KEY.reveal() not in " ".join(cmd)
    assert os.path.dirname(cmd[-1]) == str(env.out) and cmd[-1] != str(target)
    assert target.read_bytes() == b"QFI\xfb partial complete"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert os.listdir(env.out) == ["disk.qcow2"]
    assert seen == [(0, 8 * MiB), (8 * MiB, 8 * MiB)]


def test_qcow2_failure_removes_the_temporary_file_and_keeps_the_target(env, monkeypatch) -> None:
    monkeypatch.setattr(processutils, "execute", FakeQemuImg(fail=True))
    disk = _disk_with_data(env)
    target = env.out / "disk.qcow2"
    target.write_bytes(b"old")
    with pytest.raises(exception.ImageConversionFailed) as err:
        disk.snapshot_extract(str(target), "qcow2")
    assert "Could not open" in str(err.value) and "qcow2" in str(err.value)
    assert target.read_bytes() == b"old" and os.listdir(env.out) == ["disk.qcow2"]


def test_qcow2_interrupted_kills_qemu_img_and_cleans_up(env, monkeypatch) -> None:
    fake = FakeQemuImg(interrupt=KeyboardInterrupt())
    monkeypatch.setattr(processutils, "execute", fake)
    with pytest.raises(KeyboardInterrupt):
        _disk_with_data(env).snapshot_extract(str(env.out / "disk.qcow2"), "qcow2")
    [proc] = fake.procs
    assert proc.returncode == -signal.SIGKILL  # killed and reaped, not left running
    assert os.listdir(env.out) == []


def test_qcow2_sigterm_cancels_kills_and_cleans_up(env, monkeypatch, sigterm_recorder) -> None:
    fake = FakeQemuImg(sigterm=True)
    monkeypatch.setattr(processutils, "execute", fake)
    with pytest.raises(exception.OperationCancelled) as err:
        _disk_with_data(env).snapshot_extract(str(env.out / "disk.qcow2"), "qcow2")
    assert "disk.qcow2" in str(err.value) and str(8 * MiB) in str(err.value)
    assert fake.procs[0].returncode == -signal.SIGKILL
    assert os.listdir(env.out) == []
    assert sigterm_recorder == [signal.SIGTERM]  # handed on after the cleanup


def test_convert_from_rbd_refuses_formats_it_cannot_write(tmp_path) -> None:
    with pytest.raises(exception.UnsupportedFormat):
        convert.convert_from_rbd("rbd:vms/x:conf=/etc/ceph/ceph.conf", str(tmp_path / "x"), "raw")
    assert os.listdir(tmp_path) == []


# -- import_file ------------------------------------------------------------------------------


def _iso(path: Path, size: int = 2 * MiB) -> bytes:
    """An ISO9660-looking file: a primary volume descriptor at sector 16."""
    data = bytearray(size)
    data[16 * 2048:16 * 2048 + 6] = b"\x01CD001"
    data[17 * 2048:17 * 2048 + 6] = b"\xffCD001"
    data[40 * 2048:40 * 2048 + 11] = b"meta_data{}"
    path.write_bytes(bytes(data))
    return bytes(data)


def test_import_an_iso_as_the_config_drive(env, tmp_path) -> None:
    content = _iso(tmp_path / "config.iso")
    inst = str(uuid.uuid4())
    disk = env.disk("disk.config", inst)
    seen: list[tuple[int, int]] = []
    disk.import_file(str(tmp_path / "config.iso"), progress=lambda d, t: seen.append((d, t)))
    assert env.vms() == [f"{inst}_disk.config"]
    assert env.cluster.image("vms", f"{inst}_disk.config").read() == content
    assert seen[-1] == (len(content), len(content))
    report = Rbd.cleanup_instance(env.conf, inst, driver=env.driver)
    assert report.removed == [f"{inst}_disk.config"] and env.vms() == []


def test_import_refuses_an_existing_disk_and_leaves_it(env, tmp_path) -> None:
    _iso(tmp_path / "config.iso")
    disk = env.disk("disk.config")
    env.cluster.add_image("vms", disk.rbd_name, MiB, data=b"already here")
    with pytest.raises(exception.ImageExists) as err:
        disk.import_file(str(tmp_path / "config.iso"))
    assert f"vms/{disk.rbd_name}" in str(err.value)
    assert env.cluster.image("vms", disk.rbd_name).read(0, 12) == b"already here"
    assert env.vms() == [disk.rbd_name]


def test_import_of_a_missing_file_creates_nothing(env, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        env.disk("disk.rescue").import_file(str(tmp_path / "nope.iso"))
    assert env.vms() == []


def test_import_interrupted_leaves_no_disk(env, tmp_path) -> None:
    _iso(tmp_path / "config.iso", 8 * MiB)

    def progress(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        env.disk("disk.config").import_file(str(tmp_path / "config.iso"), progress=progress)
    assert env.vms() == []
