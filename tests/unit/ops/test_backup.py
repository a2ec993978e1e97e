# SPDX-License-Identifier: Apache-2.0
"""BackupManager on the fake librados/librbd: chains, restores, retention, failures."""

from __future__ import annotations

import datetime
import io
import json
import os
import threading
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.ops.backup import SNAPSHOT_PREFIX, BackupManager, BackupManifest
from rbd_driver.storage import backup_io, convert, diff_format
from rbd_driver.storage.diff_format import DiffReader, DiffWrite, DiffZero
from rbd_driver.testing import fakes
from rbd_driver.testing.fixtures import FakeEnv

MIB = 1 << 20
SIZE = 32 * MIB


class Env(FakeEnv):
    def __init__(self, tmp_path: Any, retention: int = 7) -> None:
        keyring = tmp_path / "keyring"
        keyring.write_text("")
        super().__init__(tmp_path, pools=("vms",), keyring=str(keyring))
        self.manager = BackupManager(self.driver, str(tmp_path / "backups"),
                                     retention=retention)
        self.disk = self.cluster.add_image("vms", "disk", SIZE, data=os.urandom(MIB))
        self.disk.write(b"tail" * 1000, 20 * MIB)

    def image(self, name: str) -> Any:
        return self.cluster.image("vms", name)

    def names(self) -> list[str]:
        return self.cluster.pool("vms").image_names()


def _json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _content(env: Env, name: str, snapshot: str | None = None) -> bytes:
    return env.image(name).read(snapshot=snapshot)


def test_full_and_incrementals_restore_each_snapshot_exactly(env) -> None:
    full = env.manager.full_backup("disk")
    chain = [full]
    env.disk.write(os.urandom(5000), 3 * MIB + 7)
    chain.append(env.manager.incremental_backup("disk"))
    with env.driver.client.open_image("vms", "disk") as image:
        image.discard(0, MIB)
        image.resize(SIZE + 4 * MIB)
        image.write(b"grown", SIZE + MIB)
    chain.append(env.manager.incremental_backup("disk"))
    for index, backup in enumerate(chain):
        env.manager.restore(backup, f"restored-{index}")
        assert _content(env, f"restored-{index}") == _content(
            env, "disk", backup.snapshot["name"])
    assert env.image("restored-2").size == SIZE + 4 * MIB
    assert sorted(env.names()) == ["disk", "restored-0", "restored-1", "restored-2"]
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_incremental_records_only_the_changes(env) -> None:
    env.manager.full_backup("disk")
    env.disk.write(b"new data", 9 * MIB)
    with env.driver.client.open_image("vms", "disk") as image:
        image.discard(20 * MIB, 4000)
    backup = env.manager.incremental_backup("disk")
    with open(backup.data_path, "rb") as f:
        reader = DiffReader(f, backup.data_path)
        records = list(reader.records())
    assert reader.header.from_snap == backup.parent["snapshot"]
    assert reader.header.to_snap == backup.snapshot["name"]
    assert DiffWrite(9 * MIB, b"new data") in records
    assert any(isinstance(r, DiffZero) and r.offset == 20 * MIB for r in records)
    assert backup.data_bytes == len(b"new data")
    assert backup.file["size"] == os.path.getsize(backup.data_path) < 200


def test_incremental_of_a_callers_snapshot_keeps_that_snapshot(env) -> None:
    env.manager.full_backup("disk")
    env.disk.write(b"frozen", 5 * MIB)
    env.driver.create_snap("disk", "app-consistent")
    env.disk.write(b"after the snapshot", 6 * MIB)  # not part of the backup
    backup = env.manager.incremental_backup("disk", snapshot="app-consistent")
    assert backup.snapshot["name"] == "app-consistent"
    assert backup.snapshot["created"] is False
    env.manager.restore(backup, "restored")
    assert _content(env, "restored") == _content(env, "disk", "app-consistent")
    for _ in range(env.manager.retention + 1):  # retention never removes the caller's snapshot
        env.manager.incremental_backup("disk")
    assert "app-consistent" in [s.name for s in env.driver.list_snapshots("disk")]


def test_incremental_refuses_a_missing_or_older_snapshot(env) -> None:
    env.driver.create_snap("disk", "older")
    env.manager.full_backup("disk")
    with pytest.raises(exception.SnapshotNotFound, match="nope"):
        env.manager.incremental_backup("disk", snapshot="nope")
    with pytest.raises(exception.InvalidArgument, match="newer than " + SNAPSHOT_PREFIX):
        env.manager.incremental_backup("disk", snapshot="older")
    assert len(env.manager.list_backups("disk")) == 1
    assert not [n for n in os.listdir(env.manager.directory("disk")) if ".part-" in n]


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_policy(env, monkeypatch, fsync) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    manager = BackupManager(env.driver, env.manager.backup_dir, fsync=fsync)
    full = manager.full_backup("disk")
    env.disk.write(b"more", 2 * MIB)
    incremental = manager.incremental_backup("disk")
    assert full.file["fsynced"] is incremental.file["fsynced"] is fsync
    if fsync:  # each data file and manifest, while still under its temporary name
        for backup in (full, incremental):
            for path in (backup.data_path, backup.path):
                assert any(s.startswith(path + ".part-") for s in synced), (path, synced)
        assert manager.directory("disk") in synced
    else:
        assert synced == []
    env.manager.restore(incremental, "restored")  # complete and verified either way
    assert _content(env, "restored") == _content(env, "disk", incremental.snapshot["name"])


def test_backup_of_a_missing_image_leaves_no_directory(env) -> None:
    with pytest.raises(exception.ImageNotFound):
        env.manager.full_backup("no-such-disk")
    assert not os.path.exists(env.manager.directory("no-such-disk"))


def test_prune_refuses_retention_zero(env) -> None:
    env.manager.full_backup("disk")
    with pytest.raises(exception.InvalidArgument, match="at least 1, not 0"):
        env.manager.prune("disk", retention=0)
    assert len(env.manager.list_backups("disk")) == 1


def test_manifest_fields_and_permissions(env) -> None:
    calls: list[tuple[int, int]] = []
    full = env.manager.full_backup("disk", progress=lambda d, t: calls.append((d, t)))
    doc = _json(full.path)
    assert doc["version"] == 1 and doc["kind"] == "full" and doc["format"] == "raw"
    assert doc["source"] == {"fsid": env.driver.fsid, "pool": "vms", "image": "disk",
                             "image_id": env.disk.id}
    assert doc["snapshot"]["name"].startswith(SNAPSHOT_PREFIX) and doc["snapshot"]["created"]
    assert doc["file"]["checksum"]["of"] == "content"
    assert doc["data_bytes"] == MIB + 64 * 1024 and doc["parent"] is None  # 64 KiB blocks
    assert doc["started_at"] <= doc["completed_at"]
    assert BackupManifest.load(full.path) == full
    assert os.stat(full.data_path).st_mode & 0o777 == 0o600
    assert os.stat(full.data_path).st_blocks * 512 < 4 * MIB  # sparse
    assert calls[-1] == (SIZE, SIZE) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert env.manager.get_backup("disk", full.id) == full
    with pytest.raises(exception.BackupNotFound, match="vms/disk"):
        env.manager.get_backup("disk", "nope")


def test_content_checksum_ignores_how_zeros_are_stored(tmp_path) -> None:
    holes, zeros = tmp_path / "holes", tmp_path / "zeros"
    with open(holes, "wb") as f:
        f.truncate(4 * MIB)
        f.seek(MIB)
        f.write(b"data")
    with open(zeros, "wb") as f:
        f.write(bytes(MIB) + b"data" + bytes(3 * MIB - 4))
    assert diff_format.raw_content_checksum(str(holes), "sha256") == \
        diff_format.raw_content_checksum(str(zeros), "sha256")
    with open(zeros, "r+b") as f:
        f.seek(3 * MIB)
        f.write(b"\x01")
    assert diff_format.raw_content_checksum(str(holes), "crc32") != \
        diff_format.raw_content_checksum(str(zeros), "crc32")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_damaged_backups_are_refused_before_any_image_exists(env, damage) -> None:
    full = env.manager.full_backup("disk")
    env.disk.write(b"x", 0)
    incremental = env.manager.incremental_backup("disk")
    if damage == "flip":
        with open(full.data_path, "r+b") as f:
            f.seek(100)
            f.write(b"\x00\x01")
    elif damage == "truncate":
        os.truncate(incremental.data_path, incremental.file["size"] - 1)
    elif damage == "delete":
        os.unlink(full.data_path)
    else:
        with open(full.path, "w") as f:
            f.write("{not json")
    error = exception.BackupChainBroken if damage == "manifest" else exception.BackupCorrupt
    with pytest.raises(error) as info:
        env.manager.restore(incremental, "restored")
    assert (full.path if damage == "manifest" else "") in str(info.value)
    assert env.names() == ["disk"]
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_a_diff_changed_during_restore_leaves_no_image(env, monkeypatch) -> None:
    env.manager.full_backup("disk")
    env.disk.write(b"y" * 100, 0)
    incremental = env.manager.incremental_backup("disk")
    monkeypatch.setattr(env.manager, "verify", lambda backup: None)  # the race: after verify
    with open(incremental.data_path, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"\x07")
    with pytest.raises(exception.BackupCorrupt):
        env.manager.restore(incremental, "restored")
    assert env.names() == ["disk"]


def test_restore_refuses_an_existing_target(env) -> None:
    full = env.manager.full_backup("disk")
    with pytest.raises(exception.ImageExists):
        env.manager.restore(full, "disk")


@pytest.mark.parametrize("incremental", [False, True])
def test_failed_backup_leaves_no_file_manifest_or_snapshot(env, incremental) -> None:
    if incremental:
        env.manager.full_backup("disk")
    before = sorted(os.listdir(env.manager.directory("disk"))) if incremental else []
    snaps = [s.name for s in env.driver.list_snapshots("disk")]
    env.cluster.fail_next("Image.aio_read", env.rbd.IOError, times=None)
    call = env.manager.incremental_backup if incremental else env.manager.full_backup
    env.disk.write(b"z", 5)
    with pytest.raises(exception.StorageError, match="vms/disk@" + SNAPSHOT_PREFIX):
        call("disk")
    env.cluster.clear_failures()
    directory = env.manager.directory("disk")
    assert (sorted(os.listdir(directory)) if os.path.isdir(directory) else []) == before
    assert [s.name for s in env.driver.list_snapshots("disk")] == snaps
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_cancel_stops_a_backup_cleanly(env) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        cancel.set()

    with pytest.raises(exception.OperationCancelled, match="vms/disk"):
        env.manager.full_backup("disk", progress=progress, cancel=cancel)
    assert os.listdir(env.manager.directory("disk")) == []
    assert env.driver.list_snapshots("disk") == []


def test_incremental_needs_a_base_snapshot_of_the_same_image(env) -> None:
    with pytest.raises(exception.BackupChainBroken, match="no previous backup"):
        env.manager.incremental_backup("disk")
    full = env.manager.full_backup("disk")
    env.driver.remove_snap("disk", full.snapshot["name"])
    with pytest.raises(exception.BackupChainBroken, match="no longer on the source"):
        env.manager.incremental_backup("disk")


def test_retention_keeps_n_snapshots_and_the_chains_they_need(tmp_path) -> None:
    env = Env(tmp_path, retention=2)
    made = [env.manager.full_backup("disk"), env.manager.incremental_backup("disk"),
            env.manager.full_backup("disk")]
    for _ in range(2):
        env.disk.write(os.urandom(10), 0)
        made.append(env.manager.incremental_backup("disk"))
    assert [s.name for s in env.driver.list_snapshots("disk")] == [
        b.snapshot["name"] for b in made[-2:]]
    assert [b.id for b in env.manager.list_backups("disk")] == [b.id for b in made[2:]]
    assert not os.path.exists(made[0].data_path) and not os.path.exists(made[1].path)
    # A user snapshot is never pruned; an orphan backup snapshot (a crash) is.
    env.driver.create_snap("disk", "user-snap")
    env.driver.create_snap("disk", SNAPSHOT_PREFIX + "orphan")
    env.disk.write(os.urandom(10), 0)
    newest = env.manager.incremental_backup("disk")
    names = [s.name for s in env.driver.list_snapshots("disk")]
    assert names == [made[-1].snapshot["name"], "user-snap", newest.snapshot["name"]]
    report = env.manager.prune("disk", retention=1)
    assert report.removed_snapshots == [made[-1].snapshot["name"]] and not report.failed


def test_chain_with_a_foreign_parent_is_refused(env) -> None:
    full = env.manager.full_backup("disk")
    env.disk.write(b"q", 0)
    incremental = env.manager.incremental_backup("disk")
    doc = _json(full.path)
    doc["snapshot"]["name"] = "something-else"
    with open(full.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(exception.BackupChainBroken, match="another source or snapshot"):
        env.manager.restore(incremental, "restored")


def test_qcow2_goes_through_qemu_img_with_paths_only(env, monkeypatch) -> None:
    seen: list[tuple[str, ...]] = []

    def fake_qemu_img(*args: str, timeout: int, limits: Any = None) -> str:
        seen.append(args)
        with open(args[-1], "wb") as f:
            f.write(b"QFI\xfb fake qcow2")
        return ""

    monkeypatch.setattr(convert, "_qemu_img", fake_qemu_img)
    backup = env.manager.full_backup("disk", fmt="qcow2")
    (args,) = seen
    assert args[:6] == ("convert", "-f", "raw", "-O", "qcow2", "-m")
    spec = args[-2]
    assert spec.startswith(f"rbd:vms/disk@{backup.snapshot['name']}:id=compute:conf=")
    assert spec.endswith(f":keyring={env.keyring}") and "key=" not in spec.replace("keyring=", "")
    assert backup.file["size"] == 15 and backup.file["checksum"]["of"] == "file"
    env.manager.verify(backup)
    with pytest.raises(exception.InvalidArgument):
        env.manager.full_backup("disk", fmt="vmdk")


def test_apply_diff_keeps_the_order_of_overlapping_records(env) -> None:
    from rbd_driver.storage.diff_format import DiffWriter
    out = io.BytesIO()
    writer = DiffWriter(out)
    writer.header(SIZE, "s")
    writer.write(0, b"a" * 100)
    writer.write(50, b"b" * 100)
    writer.zero(60, 10)
    writer.end()
    env.cluster.aio_mode = "thread"
    reader = DiffReader(io.BytesIO(out.getvalue()), "mem")
    assert backup_io.apply_diff(env.driver.client, "vms", "disk", reader, window=4) == 200
    assert env.disk.read(0, 150) == b"a" * 50 + b"b" * 10 + bytes(10) + b"b" * 80


def test_backups_keep_their_bytes_when_reads_complete_out_of_order(env, tmp_path,
                                                                    monkeypatch) -> None:
    """Later reads complete first; files, checksums and records stay those of in-order reads."""
    for offset in range(0, 24 * MIB, 3 * MIB):  # data in most 4 MiB chunks
        env.disk.write(os.urandom(MIB), offset)
    full = env.manager.full_backup("disk")
    for offset in range(MIB // 2, 24 * MIB, 2 * MIB):
        env.disk.write(os.urandom(4096), offset)
    with env.driver.client.open_image("vms", "disk") as image:
        image.discard(12 * MIB, MIB)
    env.driver.create_snap("disk", "later")
    real = fakes.Image.aio_read
    count = [0]

    def aio_read(image: Any, offset: int, length: int, oncomplete: Any, flags: int = 0) -> Any:
        delay = max(0.0, 0.02 - 0.004 * (count[0] % 6))
        count[0] += 1

        def late(*args: Any) -> Any:
            threading.Event().wait(delay)
            return oncomplete(*args)

        return real(image, offset, length, late, flags)

    def export_in_order(backup: BackupManifest, kind: str) -> str:
        """The same export with aio completing before each call returns: in order."""
        env.cluster.aio_mode = "sync"
        path = str(tmp_path / kind)
        snap = backup.snapshot["name"]
        if kind == "raw":
            backup_io.export_raw(env.driver.client, "vms", "disk", snap, path)
        else:
            backup_io.export_diff(env.driver.client, "vms", "disk", snap,
                                  backup.parent["snapshot"], path)
        env.cluster.aio_mode = "thread"
        return path

    monkeypatch.setattr(fakes.Image, "aio_read", aio_read)
    env.cluster.aio_mode = "thread"
    shuffled = env.manager.full_backup("disk", snapshot="later")
    for offset in range(0, 24 * MIB, 3 * MIB):  # changes in many chunks, a zeroed one
        env.disk.write(os.urandom(8192), offset + 4096)
    env.disk.write(bytes(MIB), 7 * MIB)
    incremental = env.manager.incremental_backup("disk")
    assert count[0] > 10
    raw = export_in_order(shuffled, "raw")
    assert shuffled.file["checksum"]["value"] == diff_format.raw_content_checksum(raw, "crc32")[0]
    with open(shuffled.data_path, "rb") as a, open(raw, "rb") as b:
        assert a.read() == b.read()
    with open(incremental.data_path, "rb") as a, open(export_in_order(incremental, "diff"),
                                                       "rb") as b:
        assert a.read() == b.read()
    with open(incremental.data_path, "rb") as f:
        offsets = [r.offset for r in DiffReader(f, incremental.data_path).records()]
    assert offsets == sorted(offsets) and len(offsets) > 5
    for index, backup in enumerate((full, shuffled, incremental)):
        env.manager.restore(backup, f"restored-{index}")
        assert _content(env, f"restored-{index}") == _content(env, "disk",
                                                              backup.snapshot["name"])


def test_list_snaps_carries_each_snapshots_time(env: Env) -> None:
    # Finding 5 of issue 26: the dicts behind ``rbd-driver snapshot ls`` had
    # no time; they carry the one list_snapshots reads (get_snap_timestamp).
    env.driver.create_snap("disk", "s1")
    stamps = {s.name: s.timestamp for s in env.driver.list_snapshots("disk")}
    listed = env.driver.list_snaps("disk")
    assert [s["name"] for s in listed] == ["s1"]
    assert datetime.datetime.fromisoformat(listed[0]["timestamp"]) == stamps["s1"].replace(
        microsecond=0)
