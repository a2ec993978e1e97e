# SPDX-License-Identifier: Apache-2.0
"""The copy engine (storage/datapath.py) on the fake librados/librbd."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.storage import datapath
from rbd_driver.testing import fakes
from rbd_driver.testing.fixtures import FakeEnv

MiB = 1 << 20
OBJ = 4 * MiB


# The SIGTERM guard is opt-in (the rbd-driver command enables it); these tests need it.
pytestmark = pytest.mark.usefixtures("sigterm_guard")


class Env(FakeEnv):
    """A fake cluster with pools vms/images and a client on it."""

    def __init__(self, tmp_path: Path, aio_mode: str = "sync") -> None:
        super().__init__(tmp_path, aio_mode=aio_mode)
        self.client = self.new_client()

    def images(self, pool: str = "vms") -> list[str]:
        return self.cluster.pool(pool).image_names()

    def image(self, name: str, pool: str = "vms") -> fakes.FakeImage:
        return self.cluster.image(pool, name)

    def assert_clean(self, pool: str = "vms") -> None:
        """No image left in ``pool`` and no image handle left open."""
        assert self.images(pool) == []
        assert self.cluster.open_handles()["images"] == []


@pytest.fixture(params=["sync", "thread"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    e = Env(tmp_path, request.param)
    yield e
    e.client.close()


@pytest.fixture
def sync_env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.client.close()


def sparse_file(path: Path, size: int, writes: list[tuple[int, bytes]]) -> bytes:
    """Create a sparse file of ``size`` with ``writes``; return its content."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
    return path.read_bytes()


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) % 251 + 1 for i in range(256)) * (n // 256) + b"\x01" * (n % 256)


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    """40 MiB + 1000 bytes: two data objects, a zero object written out, holes, a ragged tail."""
    path = tmp_path / "disk.raw"
    content = sparse_file(path, 40 * MiB + 1000, [
        (OBJ, pattern(OBJ)),                 # object 1: full
        (3 * OBJ, bytes(OBJ)),               # object 3: written, but zeros
        (5 * OBJ + 4096, pattern(10000, 3)),  # object 5: small, unaligned length
        (40 * MiB, pattern(1000, 5)),         # the ragged tail
    ])
    return path, content


# -- import --------------------------------------------------------------------


def test_import_round_trip_is_sparse(env: Env, source: tuple[Path, bytes]) -> None:
    path, content = source
    stats = datapath.import_to_image(env.client, path, "vms", "disk")
    assert env.images() == ["disk"]
    image = env.image("disk")
    assert image.size == len(content)
    assert image.read() == content
    # Only the three objects with non-zero data exist.
    assert image.object_count == 3
    assert image.stored_bytes <= OBJ + 16384 + 1000  # the fake stores from the object start
    assert stats.total_bytes == len(content)
    assert stats.data_bytes == OBJ + 12288 + 1000  # whole 4 KiB pages of the small write
    assert stats.zero_bytes == OBJ  # read (it is not a hole) but not written
    assert stats.hole_bytes == len(content) - stats.data_bytes - stats.zero_bytes
    assert stats.seconds > 0 and stats.throughput_mib_s > 0
    assert env.cluster.open_handles()["images"] == []


def test_import_without_seek_data_reads_everything(sync_env: Env, source: tuple[Path, bytes],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path, content = source
    real_lseek = os.lseek

    def no_seek_data(fd: int, pos: int, how: int) -> int:
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(22, "Invalid argument")
        return real_lseek(fd, pos, how)

    monkeypatch.setattr(os, "lseek", no_seek_data)
    stats = datapath.import_to_image(sync_env.client, path, "vms", "disk")
    assert sync_env.image("disk").read() == content
    assert sync_env.image("disk").object_count == 3
    assert stats.hole_bytes == 0  # nothing is known to be a hole: zeros are read and skipped
    assert stats.zero_bytes == len(content) - stats.data_bytes


def test_import_progress_rises_to_the_total(env: Env, source: tuple[Path, bytes]) -> None:
    path, content = source
    calls: list[tuple[int, int]] = []
    datapath.import_to_image(env.client, path, "vms", "disk", chunk_size=MiB,
                             progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 5
    assert all(total == len(content) for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones)
    assert calls[-1] == (len(content), len(content))


def test_import_of_an_empty_file_reports_zero_of_zero(sync_env: Env, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    calls: list[tuple[int, int]] = []
    stats = datapath.import_to_image(sync_env.client, path, "vms", "disk",
                                     progress=lambda *a: calls.append(a))
    assert calls == [(0, 0)]
    assert stats.total_bytes == 0 and sync_env.image("disk").size == 0


def test_import_into_a_larger_image(sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, content = source
    stats = datapath.import_to_image(sync_env.client, path, "vms", "disk", size=64 * MiB)
    assert sync_env.image("disk").read() == content + bytes(64 * MiB - len(content))
    assert stats.total_bytes == 64 * MiB
    with pytest.raises(exception.InvalidArgument):
        datapath.import_to_image(sync_env.client, path, "vms", "small", size=MiB)
    assert sync_env.images() == ["disk"]


class InFlight:
    """Counts the aio requests in flight (issued, callback not yet run)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.total = 0

    def wrap(self, oncomplete: Any) -> Any:
        with self.lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)

        def done(*args: Any) -> Any:
            time.sleep(0.002)  # hold the slot a moment, so that the window fills up
            with self.lock:
                self.now -= 1
            return oncomplete(*args)

        return done


def test_import_keeps_at_most_window_writes_in_flight(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env = Env(tmp_path, "thread")
    path = tmp_path / "full.raw"
    content = sparse_file(path, 8 * MiB, [(0, pattern(8 * MiB))])
    counter = InFlight()
    real = fakes.Image.aio_write

    def counting(self: Any, data: bytes, offset: int, oncomplete: Any, fadvise_flags: int = 0) -> Any:
        return real(self, data, offset, counter.wrap(oncomplete), fadvise_flags)

    monkeypatch.setattr(fakes.Image, "aio_write", counting)
    datapath.import_to_image(env.client, path, "vms", "disk", chunk_size=64 << 10, window=4)
    assert counter.total == 128
    assert 1 < counter.peak <= 4
    assert env.image("disk").read() == content
    env.client.close()


def test_cancel_removes_the_temporary_image(env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > total // 4:
            cancel.set()

    with pytest.raises(exception.OperationCancelled) as info:
        datapath.import_to_image(env.client, path, "vms", "disk", chunk_size=MiB,
                                 progress=progress, cancel=cancel)
    assert "import of vms/disk was cancelled" in str(info.value)
    env.assert_clean()
    assert "RBD.create" in env.cluster.calls and "RBD.remove" in env.cluster.calls


@pytest.mark.parametrize(("injected", "expected"), [
    ("IOError", exception.StorageError),
    ("NoSpace", exception.NoSpace),
])
def test_failed_write_removes_the_temporary_image(env: Env, source: tuple[Path, bytes],
                                                  injected: str, expected: type) -> None:
    path, _ = source
    env.cluster.fail_next("Image.aio_write", getattr(env.rbd, injected), after=1)
    with pytest.raises(expected) as info:
        datapath.import_to_image(env.client, path, "vms", "disk", chunk_size=MiB)
    assert isinstance(info.value.__cause__, getattr(env.rbd, injected))
    assert "disk.importing-" in str(info.value)
    env.assert_clean()


def test_failed_rename_removes_the_temporary_image(sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    sync_env.cluster.fail_next("RBD.rename", sync_env.rbd.ImageExists)
    with pytest.raises(exception.ImageExists):
        datapath.import_to_image(sync_env.client, path, "vms", "disk")
    sync_env.assert_clean()


def test_failed_cleanup_is_reported_on_the_error(sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    sync_env.cluster.fail_next("Image.aio_write", sync_env.rbd.IOError)
    sync_env.cluster.fail_next("RBD.remove", sync_env.rbd.PermissionError)
    with pytest.raises(exception.StorageError) as info:
        datapath.import_to_image(sync_env.client, path, "vms", "disk")
    leftover = sync_env.images()
    assert len(leftover) == 1 and leftover[0].startswith("disk.importing-")
    assert any(leftover[0] in note for note in info.value.__notes__)


def test_keyboard_interrupt_from_progress_leaves_no_image(env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source

    def progress(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        datapath.import_to_image(env.client, path, "vms", "disk", chunk_size=MiB, progress=progress)
    env.assert_clean()


def test_existing_target_is_refused_before_anything(sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    sync_env.cluster.add_image("vms", "disk", MiB, data=b"keep me")
    with pytest.raises(exception.ImageExists):
        datapath.import_to_image(sync_env.client, path, "vms", "disk")
    assert "RBD.create" not in sync_env.cluster.calls
    assert sync_env.images() == ["disk"]
    assert sync_env.image("disk").read(0, 7) == b"keep me"


def test_sigterm_in_the_main_thread_cleans_up_then_reaches_the_old_handler(
        sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    received: list[int] = []

    def previous(signum: int, frame: Any) -> None:
        received.append(signum)

    def progress(done: int, total: int) -> None:
        assert signal.getsignal(signal.SIGTERM) is not previous  # ours is installed
        if done > total // 2:
            signal.raise_signal(signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(exception.OperationCancelled):
            datapath.import_to_image(sync_env.client, path, "vms", "disk", chunk_size=MiB,
                                     progress=progress)
        assert signal.getsignal(signal.SIGTERM) is previous
        assert received == [signal.SIGTERM]  # delivered once, after the cleanup
    finally:
        signal.signal(signal.SIGTERM, old)
    sync_env.assert_clean()


@pytest.fixture
def sigterm_recorder() -> Any:
    """Install a Python SIGTERM handler that records; yield the list of signals it got."""
    received: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, old)


def test_a_second_sigterm_does_not_break_the_cleanup(sync_env: Env, source: tuple[Path, bytes],
                                                     sigterm_recorder: list[int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = source
    real_remove = fakes.RBD.remove

    def remove(self: Any, ioctx: Any, name: str, on_progress: Any = None) -> None:
        signal.raise_signal(signal.SIGTERM)
        real_remove(self, ioctx, name, on_progress)

    monkeypatch.setattr(fakes.RBD, "remove", remove)
    with pytest.raises(exception.OperationCancelled):
        datapath.import_to_image(sync_env.client, path, "vms", "disk",
                                 progress=lambda *a: signal.raise_signal(signal.SIGTERM))
    assert sigterm_recorder == [signal.SIGTERM]
    sync_env.assert_clean()


def test_sigterm_after_the_commit_point_lets_the_import_finish(
        sync_env: Env, source: tuple[Path, bytes], sigterm_recorder: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, content = source
    real_rename = fakes.RBD.rename

    def rename(self: Any, ioctx: Any, src: str, dest: str) -> None:
        real_rename(self, ioctx, src, dest)
        signal.raise_signal(signal.SIGTERM)  # handled as the rename returns

    monkeypatch.setattr(fakes.RBD, "rename", rename)
    stats = datapath.import_to_image(sync_env.client, path, "vms", "disk")
    assert stats.total_bytes == len(content)
    assert sync_env.images() == ["disk"] and sync_env.image("disk").read() == content
    assert sigterm_recorder == [signal.SIGTERM]  # delivered once the import returned


def test_other_threads_leave_signal_handlers_alone(sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    before = signal.getsignal(signal.SIGTERM)
    seen: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            datapath.import_to_image(sync_env.client, path, "vms", "disk",
                                     progress=lambda *a: seen.append(signal.getsignal(signal.SIGTERM)))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not errors
    assert seen and all(handler is before for handler in seen)


def test_import_from_a_stream(env: Env, source: tuple[Path, bytes]) -> None:
    _, content = source
    stream = io.BufferedReader(io.BytesIO(content))  # type: ignore[arg-type]
    stats = datapath.import_to_image(env.client, stream, "vms", "disk", size=len(content))
    assert env.image("disk").read() == content
    assert env.image("disk").object_count == 3
    assert stats.hole_bytes == 0 and stats.zero_bytes > 0


def test_import_from_a_pipe(sync_env: Env) -> None:
    content = pattern(3 * MiB) + bytes(5 * MiB) + pattern(MiB + 17, 9)
    rfd, wfd = os.pipe()

    def feed() -> None:
        with os.fdopen(wfd, "wb") as w:
            for pos in range(0, len(content), 100000):  # short writes: reads come back short
                w.write(content[pos:pos + 100000])

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(rfd, "rb", buffering=0) as pipe:
        datapath.import_to_image(sync_env.client, pipe, "vms", "disk", size=len(content))
    writer.join()
    assert sync_env.image("disk").read() == content


def test_stream_needs_a_size_and_enough_bytes(sync_env: Env) -> None:
    with pytest.raises(exception.InvalidArgument, match="size is required"):
        datapath.import_to_image(sync_env.client, io.BytesIO(b"x"), "vms", "disk")
    with pytest.raises(exception.InvalidArgument, match="ended at 5 of"):
        datapath.import_to_image(sync_env.client, io.BytesIO(b"hello"), "vms", "disk", size=MiB)
    sync_env.assert_clean()


def test_bad_tuning_is_refused(sync_env: Env, source: tuple[Path, bytes]) -> None:
    path, _ = source
    with pytest.raises(exception.InvalidArgument):
        datapath.import_to_image(sync_env.client, path, "vms", "disk", window=0)
    with pytest.raises(exception.InvalidArgument):
        datapath.export_from_image(sync_env.client, "vms", "disk", path, chunk_size=0)


def test_missing_source_creates_nothing(sync_env: Env, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        datapath.import_to_image(sync_env.client, tmp_path / "nope", "vms", "disk")
    sync_env.assert_clean()


# -- export --------------------------------------------------------------------


def exported_image(env: Env, content: bytes) -> None:
    """Put ``content`` into vms/disk the way the import does (zero objects absent)."""
    image = env.cluster.add_image("vms", "disk", len(content))
    for pos in range(0, len(content), OBJ):
        piece = content[pos:pos + OBJ]
        if piece.count(0) != len(piece):
            image.write(piece, pos)


def test_export_is_sparse_and_identical(env: Env, source: tuple[Path, bytes], tmp_path: Path) -> None:
    _, content = source
    exported_image(env, content)
    dest = tmp_path / "out.raw"
    calls: list[tuple[int, int]] = []
    stats = datapath.export_from_image(env.client, "vms", "disk", dest,
                                       progress=lambda *a: calls.append(a))
    assert dest.read_bytes() == content
    assert os.stat(dest).st_blocks * 512 <= 2 * OBJ  # 4 MiB + 64 KiB + 64 KiB of data
    assert stats.total_bytes == len(content)
    assert stats.data_bytes <= OBJ + 2 * datapath.SPARSE_BLOCK
    assert stats.data_bytes + stats.zero_bytes + stats.hole_bytes == len(content)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (len(content), len(content))
    assert os.stat(dest).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ceph.conf", "disk.raw", "out.raw"]
    assert env.cluster.open_handles()["images"] == []


def test_export_keeps_at_most_window_reads_in_flight(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    env = Env(tmp_path, "thread")
    content = pattern(8 * MiB)
    exported_image(env, content)
    counter = InFlight()
    real = fakes.Image.aio_read

    def counting(self: Any, offset: int, length: int, oncomplete: Any, fadvise_flags: int = 0) -> Any:
        return real(self, offset, length, counter.wrap(oncomplete), fadvise_flags)

    monkeypatch.setattr(fakes.Image, "aio_read", counting)
    datapath.export_from_image(env.client, "vms", "disk", tmp_path / "out", chunk_size=64 << 10,
                               window=3)
    assert counter.total == 128
    assert 1 < counter.peak <= 3
    assert (tmp_path / "out").read_bytes() == content
    env.client.close()


def test_export_of_a_snapshot(env: Env, tmp_path: Path) -> None:
    image = env.cluster.add_image("vms", "disk", 12 * MiB, data=pattern(MiB))
    image.create_snap("before")
    image.write(pattern(MiB, 7), 0)
    image.write(pattern(MiB, 8), 8 * MiB)
    datapath.export_from_image(env.client, "vms", "disk", tmp_path / "snap.raw", snapshot="before")
    assert (tmp_path / "snap.raw").read_bytes() == pattern(MiB) + bytes(11 * MiB)
    datapath.export_from_image(env.client, "vms", "disk", tmp_path / "head.raw")
    assert (tmp_path / "head.raw").read_bytes() == image.read()
    with pytest.raises(exception.SnapshotNotFound):
        datapath.export_from_image(env.client, "vms", "disk", tmp_path / "x", snapshot="nope")
    assert not (tmp_path / "x").exists()


def test_export_of_a_clone_includes_the_parent(env: Env, tmp_path: Path) -> None:
    parent = env.cluster.add_image("images", "golden", 16 * MiB, data=pattern(2 * MiB))
    parent.write(pattern(MiB, 4), 12 * MiB)
    parent.create_snap("snap", protect=True)
    with env.client.ioctx("images") as p_ioctx, env.client.ioctx("vms") as c_ioctx:
        env.rbd.RBD().clone(p_ioctx, "golden", "snap", c_ioctx, "clone")
    env.image("clone").write(b"child", 5 * MiB)
    dest = tmp_path / "clone.raw"
    datapath.export_from_image(env.client, "vms", "clone", dest)
    expected = bytearray(parent.read(snapshot="snap"))
    expected[5 * MiB:5 * MiB + 5] = b"child"
    assert dest.read_bytes() == bytes(expected)


def test_failed_export_leaves_no_file(env: Env, source: tuple[Path, bytes], tmp_path: Path) -> None:
    _, content = source
    exported_image(env, content)
    dest = tmp_path / "out.raw"
    dest.write_bytes(b"previous export")
    env.cluster.fail_next("Image.aio_read", env.rbd.IOError, after=1)
    with pytest.raises(exception.StorageError):
        datapath.export_from_image(env.client, "vms", "disk", dest, chunk_size=MiB)
    assert dest.read_bytes() == b"previous export"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ceph.conf", "disk.raw", "out.raw"]
    assert env.cluster.open_handles()["images"] == []


def test_cancelled_export_leaves_no_file(sync_env: Env, source: tuple[Path, bytes],
                                         tmp_path: Path) -> None:
    _, content = source
    exported_image(sync_env, content)
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > total // 2:
            cancel.set()

    with pytest.raises(exception.OperationCancelled):
        datapath.export_from_image(sync_env.client, "vms", "disk", tmp_path / "out",
                                   chunk_size=MiB, progress=progress, cancel=cancel)
    with pytest.raises(KeyboardInterrupt):
        datapath.export_from_image(sync_env.client, "vms", "disk", tmp_path / "out",
                                   progress=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ceph.conf", "disk.raw"]


def test_export_of_a_missing_image(sync_env: Env, tmp_path: Path) -> None:
    with pytest.raises(exception.ImageNotFound):
        datapath.export_from_image(sync_env.client, "vms", "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- the engine (CopyEngine), as backup_io uses it -------------------------------


class SlowReads:
    """Wraps the fake's ``aio_read`` so that later requests complete first, and samples
    the fake image's own count of requests in flight (``Image._pending``) at each one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.peak = self.total = 0
        real = fakes.Image.aio_read

        def aio_read(image: Any, offset: int, length: int, oncomplete: Any,
                     fadvise_flags: int = 0) -> Any:
            delay = max(0.0, 0.02 - 0.002 * (self.total % 8))  # the 8th of a run lands first

            def late(*args: Any) -> Any:
                time.sleep(delay)
                return oncomplete(*args)

            completion = real(image, offset, length, late, fadvise_flags)
            self.total += 1
            self.peak = max(self.peak, len(image._pending))
            return completion

        monkeypatch.setattr(fakes.Image, "aio_read", aio_read)


def engine_pieces(size: int, chunk: int) -> list[tuple[int, int, bool]]:
    """Every eighth chunk a hole, the rest to read."""
    return [(off, min(chunk, size - off), (off // chunk) % 8 != 7) for off in range(0, size, chunk)]


@pytest.mark.parametrize("in_order", [True, False])
def test_engine_window_progress_and_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          in_order: bool) -> None:
    env = Env(tmp_path, "thread")
    content = pattern(3 * MiB + 5000)
    env.cluster.add_image("vms", "disk", len(content), data=content)
    slow = SlowReads(monkeypatch)
    calls: list[tuple[int, int]] = []
    got: list[tuple[int, int, bytes | None]] = []
    copy = datapath.CopyEngine("test", "vms/disk", 64 << 10, 5,
                               lambda d, t: calls.append((d, t)), None)
    copy.total = len(content)
    pieces = engine_pieces(len(content), 64 << 10)
    with env.client.open_image("vms", "disk", read_only=True) as image:

        def submit(offset: int, length: int, _: Any) -> bool:
            image.aio_read(offset, length, copy.callback(offset, length))
            return True

        def deliver(offset: int, length: int, result: datapath.Result | None) -> None:
            data = None if result is None else result[3]
            got.append((offset, length, data))
            copy.add(length, "holes" if result is None else "data")

        if in_order:
            copy.run_in_order(pieces, submit, deliver)
        else:
            copy.run(pieces, submit, lambda r: deliver(r[0], r[1], r))
        assert in_flight(env) == 0
    reads = [p for p in pieces if p[2]]
    assert slow.total == len(reads)
    assert 1 < slow.peak <= 5  # the fake's own count, sampled as each request went out
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # monotonic
    assert calls[-1] == (len(content), len(content)) and len(calls) == len(pieces)
    if in_order:
        assert [(o, n) for o, n, _ in got] == [(o, n) for o, n, _ in pieces]
    else:
        assert sorted(o for o, _, d in got if d is not None) == [o for o, _, _ in reads]
        assert [o for o, _, d in got if d is not None] != [o for o, _, _ in reads]  # out of order
    for offset, length, data in got:
        if data is not None:
            assert data == content[offset:offset + length]
    env.client.close()


def in_flight(env: Env) -> int:
    """The aio requests in flight on the open image handles, as the fake itself keeps them."""
    return sum(len(handle._pending) for handle in env.cluster._images.values())


@pytest.mark.parametrize("in_order", [True, False])
def test_engine_cancel_leaves_no_request_in_flight(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   in_order: bool) -> None:
    env = Env(tmp_path, "thread")
    content = pattern(2 * MiB)
    env.cluster.add_image("vms", "disk", len(content), data=content)
    slow = SlowReads(monkeypatch)
    cancel = threading.Event()
    copy = datapath.CopyEngine("test", "vms/disk", 64 << 10, 4, None, cancel)
    copy.total = len(content)
    left: list[int] = []
    with env.client.open_image("vms", "disk", read_only=True) as image:

        def submit(offset: int, length: int, _: Any) -> bool:
            image.aio_read(offset, length, copy.callback(offset, length))
            return True

        def deliver(*_: Any) -> None:
            cancel.set()  # from the first result on

        with pytest.raises(exception.OperationCancelled, match="vms/disk"):
            if in_order:
                copy.run_in_order([(o, 64 << 10, True) for o in range(0, len(content), 64 << 10)],
                                  submit, deliver)
            else:
                copy.run([(o, 64 << 10, True) for o in range(0, len(content), 64 << 10)],
                         submit, deliver)
        left.append(in_flight(env))  # before the image closes
    assert left == [0]
    assert 1 < slow.total < 32  # it stopped early, with more than one request out
    assert env.cluster.open_handles()["images"] == []
    env.client.close()


def test_engine_refuses_bad_tuning() -> None:
    for chunk, window in ((0, 1), (1, 0), (100, 1)):
        with pytest.raises(exception.InvalidArgument):
            datapath.CopyEngine("test", "x", chunk, window, None, None, align=64)


def test_the_sigterm_guard_is_opt_in_for_library_callers() -> None:
    # Inside a service, oslo.service owns the signals: unless enabled, the
    # guard leaves the handler as it is.
    from rbd_driver.storage import sigterm

    sigterm.enable(False)
    before = signal.getsignal(signal.SIGTERM)
    with sigterm.SigtermGuard(lambda: exception.OperationCancelled(detail="x")) as guard:
        assert not guard.armed
        assert signal.getsignal(signal.SIGTERM) is before
