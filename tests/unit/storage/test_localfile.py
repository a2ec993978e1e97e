# SPDX-License-Identifier: Apache-2.0
"""atomic_file: a local file appears whole, or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from rbd_driver.storage import localfile


def test_the_file_appears_whole_with_mode_0600(tmp_path) -> None:
    dest = tmp_path / "out"
    calls: list[str] = []
    with localfile.atomic_file(str(dest), before_rename=lambda: calls.append("disarm")) \
            as (fd, temp):
        assert temp.startswith(f"{dest}.part-")
        os.write(fd, b"data")
        assert not dest.exists()
    assert dest.read_bytes() == b"data" and calls == ["disarm"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failure_removes_the_temporary_file_and_keeps_the_old_one(tmp_path, error) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    with pytest.raises(type(error)):
        with localfile.atomic_file(str(dest)) as (fd, _):
            os.write(fd, b"half")
            raise error
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


def test_a_failure_before_the_rename_removes_the_file(tmp_path) -> None:
    def refuse() -> None:
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        with localfile.atomic_file(str(tmp_path / "out"), before_rename=refuse) as (fd, _):
            os.write(fd, b"whole")
    assert os.listdir(tmp_path) == []


def test_another_writers_temporary_file_is_never_touched(tmp_path, monkeypatch) -> None:
    dest = tmp_path / "out"
    theirs = tmp_path / "out.part-cafe"
    theirs.write_bytes(b"theirs")
    monkeypatch.setattr(localfile, "temp_name", lambda d: f"{d}.part-cafe")
    with pytest.raises(FileExistsError):
        with localfile.atomic_file(str(dest)):
            pass
    assert theirs.read_bytes() == b"theirs"
