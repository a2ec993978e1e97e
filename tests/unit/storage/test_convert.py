# SPDX-License-Identifier: Apache-2.0
"""qemu-img conversion safety (storage/convert.py), with the real qemu-img."""

from __future__ import annotations

import os
import subprocess

import pytest

from rbd_driver import exception
from rbd_driver.storage import convert


def test_rbd_spec_names_paths_never_keys() -> None:
    spec = convert.rbd_spec("vms", "a:b", "compute", "/etc/ceph/ceph.conf", "/k/ring")
    assert spec == "rbd:vms/a\\:b:id=compute:conf=/etc/ceph/ceph.conf:keyring=/k/ring"
    assert "key=" not in spec


def _img(tmp_path, fmt: str, *opts: str) -> str:
    path = str(tmp_path / f"img.{fmt}")
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *opts, path, "16M"], check=True,
                   timeout=60)
    return path


def test_plain_qcow2_is_accepted(tmp_path) -> None:
    path = _img(tmp_path, "qcow2")
    assert convert.sniff_file(path) == "qcow2"
    assert convert.check_source(path, "qcow2")["virtual-size"] == 16 << 20


def test_backing_file_is_refused(tmp_path) -> None:
    path = _img(tmp_path, "qcow2", "-b", "/etc/passwd", "-F", "raw", "-u")
    with pytest.raises(exception.ImageConversionFailed, match="backing file '/etc/passwd'"):
        convert.check_source(path, "qcow2")


def test_external_data_file_is_refused(tmp_path) -> None:
    path = _img(tmp_path, "qcow2", "-o", f"data_file={tmp_path}/data.raw")
    with pytest.raises(exception.ImageConversionFailed, match="external data file"):
        convert.check_source(path, "qcow2")


def test_vmdk_with_external_extent_is_refused(tmp_path) -> None:
    path = _img(tmp_path, "vmdk", "-o", "subformat=monolithicFlat")
    assert convert.sniff_file(path) == "vmdk"
    with pytest.raises(exception.ImageConversionFailed, match="monolithicFlat"):
        convert.check_source(path, "vmdk")


def test_unknown_format_is_refused(tmp_path) -> None:
    with pytest.raises(exception.ImageConversionFailed, match="not a format"):
        convert.check_source(str(tmp_path / "x"), "luks")


def test_convert_to_raw_file_is_atomic(tmp_path, monkeypatch) -> None:
    src = _img(tmp_path, "qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 64k", src], check=True,
                   capture_output=True, timeout=60)
    dest = str(tmp_path / "out.raw")
    convert.convert_to_raw_file(src, dest, "qcow2")
    with open(dest, "rb") as f:
        f.seek(1 << 20)
        assert f.read(65536) == b"\x11" * 65536
    assert os.stat(dest).st_blocks * 512 < 1 << 20  # sparse
    # qemu-img dies half-way through the write: neither temp nor target is left.
    real = convert.processutils.execute

    def dies_half_way(*cmd: str, **kw: object) -> object:
        if cmd[1] == "convert":
            with open(cmd[-1], "wb") as f:
                f.write(b"half")
            raise convert.processutils.ProcessExecutionError(stderr="killed", cmd="qemu-img")
        return real(*cmd, **kw)

    monkeypatch.setattr(convert.processutils, "execute", dies_half_way)
    with pytest.raises(exception.ImageConversionFailed, match="killed"):
        convert.convert_to_raw_file(src, str(tmp_path / "never.raw"), "qcow2")
    assert sorted(os.listdir(tmp_path)) == ["img.qcow2", "out.raw"]
