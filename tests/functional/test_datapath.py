# SPDX-License-Identifier: Apache-2.0
"""The copy engine against a real cluster, as the non-admin cephx user.

The Ceph CLI (as admin, through ``ceph_admin``) is only the independent
oracle of what is stored.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import exception
from rbd_driver.storage import datapath
from rbd_driver.storage.location import RbdLocation
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState, make_conf

MiB = 1 << 20
OBJ = 4 * MiB
SIZE = 2 << 30
DATA_CHUNKS = 128  # x 4 MiB = 512 MiB of data


class Source:
    """A sparse 2 GiB file: 128 random 4 MiB chunks at aligned offsets, plus small unaligned writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        rng = random.Random(0x5EED)
        objects: set[int] = set()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SIZE)
            for idx in rng.sample(range(SIZE // OBJ), DATA_CHUNKS):
                os.pwrite(fd, rng.randbytes(OBJ), idx * OBJ)
                objects.add(idx)
            for _ in range(16):
                offset, length = rng.randrange(SIZE - 10000), rng.randrange(1, 10000)
                os.pwrite(fd, rng.randbytes(length), offset)
                objects.update(range(offset // OBJ, (offset + length - 1) // OBJ + 1))
        finally:
            os.close(fd)
        self.objects = objects
        self.sha256 = sha256(path)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return Source(tmp_path_factory.mktemp("datapath") / "sparse.raw")


@pytest.fixture(scope="module")
def module_client(ceph_cluster: ClusterState) -> Iterator[RadosClient]:
    with RadosClient.from_conf(make_conf(ceph_cluster)) as client:
        yield client


def remove(client: RadosClient, name: str, pool: str = "vms") -> None:
    report = RBDDriver(client, pool).remove_image(name)
    assert report.removed == [name], report


def images(ceph_admin: Callable[..., Any], prefix: str, pool: str = "vms") -> list[str]:
    return [n for n in ceph_admin("rbd", "ls", pool) if n.startswith(prefix)]


@pytest.fixture(scope="module")
def imported(module_client: RadosClient, source: Source) -> Iterator[dict[str, Any]]:
    """The source imported once (with its progress calls), shared by the tests that read it."""
    name = f"t-datapath-{uuid.uuid4().hex[:8]}"
    calls: list[tuple[int, int]] = []
    stats = datapath.import_to_image(module_client, source.path, "vms", name,
                                     progress=lambda done, total: calls.append((done, total)))
    print(f"\nimport 2 GiB / 512 MiB: {stats}")
    yield {"name": name, "stats": stats, "calls": calls}
    remove(module_client, name)


def test_import_then_export_is_identical(imported: dict[str, Any], source: Source,
                                         module_client: RadosClient, tmp_path: Path) -> None:
    dest = tmp_path / "back.raw"
    stats = datapath.export_from_image(module_client, "vms", imported["name"], dest)
    print(f"\nexport 2 GiB / 512 MiB: {stats}")
    assert os.path.getsize(dest) == SIZE
    assert sha256(dest) == source.sha256
    assert stats.total_bytes == SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.raw"]


def test_import_is_sparse(imported: dict[str, Any], source: Source,
                          ceph_admin: Callable[..., Any]) -> None:
    stats = imported["stats"]
    assert stats.total_bytes == SIZE
    assert DATA_CHUNKS * OBJ <= stats.data_bytes <= len(source.objects) * OBJ
    assert stats.hole_bytes >= SIZE - len(source.objects) * OBJ
    used = ceph_admin("rbd", "du", f"vms/{imported['name']}")["images"][0]["used_size"]
    assert used <= len(source.objects) * OBJ
    info = ceph_admin("rbd", "info", f"vms/{imported['name']}")
    assert info["size"] == SIZE and info["object_size"] == OBJ


def test_import_progress_rises_to_the_total(imported: dict[str, Any]) -> None:
    calls = imported["calls"]
    assert len(calls) >= DATA_CHUNKS
    assert all(total == SIZE for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones)
    assert calls[-1] == (SIZE, SIZE)


def test_export_is_sparse(imported: dict[str, Any], source: Source, module_client: RadosClient,
                          tmp_path: Path) -> None:
    dest = tmp_path / "sparse-out.raw"
    stats = datapath.export_from_image(module_client, "vms", imported["name"], dest)
    allocated = os.stat(dest).st_blocks * 512
    assert allocated <= len(source.objects) * OBJ
    assert allocated < SIZE // 3
    assert stats.data_bytes <= len(source.objects) * OBJ
    du = subprocess.run(["du", "-B1", str(dest)], capture_output=True, text=True, check=True)
    assert int(du.stdout.split()[0]) < SIZE // 3


def test_exception_halfway_leaves_no_image(module_client: RadosClient, source: Source,
                                           unique_name: str, ceph_admin: Callable[..., Any]) -> None:
    def progress(done: int, total: int) -> None:
        if done > total // 2:
            raise RuntimeError("injected halfway")

    with pytest.raises(RuntimeError, match="injected halfway"):
        datapath.import_to_image(module_client, source.path, "vms", unique_name, progress=progress)
    assert images(ceph_admin, unique_name) == []


def test_existing_image_is_refused(module_client: RadosClient, imported: dict[str, Any],
                                   source: Source, ceph_admin: Callable[..., Any]) -> None:
    with pytest.raises(exception.ImageExists):
        datapath.import_to_image(module_client, source.path, "vms", imported["name"])
    assert images(ceph_admin, imported["name"]) == [imported["name"]]


SIGTERM_SCRIPT = r"""
import sys, time
from rbd_driver.storage import datapath, sigterm
from rbd_driver.storage.rados_client import RadosClient

sigterm.enable()  # opt-in, as rbd-driver does
conf, user, keyring, path, name = sys.argv[1:]

def progress(done, total):
    print(done, total, flush=True)
    if 2 * done > total:
        time.sleep(0.05)  # keep the copy running until the signal arrives

with RadosClient(conf, user=user, keyring=keyring) as client:
    datapath.import_to_image(client, path, "vms", name, progress=progress)
print("finished", flush=True)
"""


def test_sigterm_halfway_leaves_no_image(ceph_cluster: ClusterState, source: Source,
                                         unique_name: str, ceph_admin: Callable[..., Any]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, ceph_cluster.conf_path, ceph_cluster.user,
         ceph_cluster.user_keyring, str(source.path), unique_name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            done, total = map(int, line.split())
            if 2 * done > total:
                proc.send_signal(signal.SIGTERM)
                break
        else:
            pytest.fail(f"no progress past half: {proc.stderr.read() if proc.stderr else ''}")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The engine cleaned up, then let the default SIGTERM disposition end the process.
    assert proc.returncode == -signal.SIGTERM, err
    assert "finished" not in out
    assert images(ceph_admin, unique_name) == []


def test_import_from_a_pipe(module_client: RadosClient, unique_name: str) -> None:
    content = random.Random(7).randbytes(6 * MiB) + bytes(8 * MiB) + b"tail"
    rfd, wfd = os.pipe()

    def feed() -> None:
        with os.fdopen(wfd, "wb") as pipe_in:
            pipe_in.write(content)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with os.fdopen(rfd, "rb") as pipe:
            # Whole-object chunks, so the zero accounting below is per object.
            stats = datapath.import_to_image(module_client, pipe, "vms", unique_name,
                                             size=len(content), chunk_size=OBJ)
    finally:
        writer.join(timeout=30)
    try:
        assert stats.zero_bytes == OBJ  # only object 2 is all zeros: 1 has data, 3 the tail
        with module_client.open_image("vms", unique_name, read_only=True) as image:
            assert image.read(0, len(content)) == content
    finally:
        remove(module_client, unique_name)


def test_export_of_a_clone_gives_the_parent_data(rados_client: RadosClient, unique_name: str,
                                                 tmp_path: Path) -> None:
    driver = RBDDriver(rados_client, "vms")
    golden, clone = f"{unique_name}-golden", f"{unique_name}-clone"
    parent_data = random.Random(3).randbytes(3 * MiB)
    driver.create(golden, 64 * MiB, pool="images")
    try:
        with rados_client.open_image("images", golden) as image:
            image.write(parent_data, 0)
            image.write(parent_data, 40 * MiB + 512)
        driver.create_snap(golden, "snap", protect=True, pool="images")
        driver.clone(RbdLocation(driver.fsid, "images", golden, "snap"), clone)
        try:
            with rados_client.open_image("vms", clone) as image:
                image.write(b"child", 20 * MiB)
            out = tmp_path / "clone.raw"
            stats = datapath.export_from_image(rados_client, "vms", clone, out)
            expected = bytearray(64 * MiB)
            expected[:3 * MiB] = parent_data
            expected[40 * MiB + 512:43 * MiB + 512] = parent_data
            expected[20 * MiB:20 * MiB + 5] = b"child"
            assert out.read_bytes() == bytes(expected)
            assert stats.data_bytes < 16 * MiB
            assert os.stat(out).st_blocks * 512 < 16 * MiB
            snap_out = tmp_path / "golden.raw"
            datapath.export_from_image(rados_client, "images", golden, snap_out, snapshot="snap")
            assert snap_out.read_bytes()[:3 * MiB] == parent_data
        finally:
            remove(rados_client, clone)
    finally:
        remove(rados_client, golden, pool="images")
