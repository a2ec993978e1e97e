# SPDX-License-Identifier: Apache-2.0
"""Backups and restores against a real cluster, checked with Ceph's and QEMU's own tools.

The library runs as the non-admin user; ``rbd`` (as admin) and ``qemu-img``
are independent oracles: ``rbd export`` gives each snapshot's checksum,
``rbd import-diff`` restores our incremental files, ``rbd export-diff`` must
produce the very same bytes, and ``qemu-img compare`` checks QCOW2 backups.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.ops.backup import SNAPSHOT_PREFIX, BackupManager, BackupManifest
from rbd_driver.storage import convert
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.local_cluster import ClusterState

SIZE = 64 << 20
MIB = 1 << 20


@pytest.fixture
def driver(backend: imagebackend.Backend) -> RBDDriver:
    return backend.driver("rbd")


@pytest.fixture
def disks(driver: RBDDriver, unique_name: str) -> Iterator[Callable[[str], str]]:
    """Names of images in pool vms, each removed (with snapshots) after the test."""
    made: list[str] = []

    def name(suffix: str) -> str:
        made.append(f"{unique_name}-{suffix}")
        return made[-1]

    yield name
    for image in reversed(made):
        report = driver.remove_image(image)
        assert report.ok and not report.trashed, report


@pytest.fixture
def manager(driver: RBDDriver, tmp_path: Any) -> BackupManager:
    return BackupManager(driver, str(tmp_path / "backups"), retention=7)


def _rbd(state: ClusterState, *args: str, stdout: Any = subprocess.PIPE) -> bytes:
    proc = subprocess.run(["rbd", "-c", state.conf_path, "--no-progress", *args],
                          stdout=stdout, stderr=subprocess.PIPE, timeout=120, check=False)
    assert proc.returncode == 0, f"rbd {' '.join(args)}: {proc.stderr.decode()}"
    return proc.stdout or b""


def _sha(state: ClusterState, spec: str) -> str:
    """sha256 of ``rbd export spec -`` (the CLI as the oracle)."""
    return hashlib.sha256(_rbd(state, "export", spec, "-")).hexdigest()


def _write(driver: RBDDriver, name: str, writes: list[tuple[int, bytes]],
           discards: list[tuple[int, int]] = ()) -> None:
    with driver.client.open_image("vms", name) as image:
        for offset, data in writes:
            image.write(data, offset)
        for offset, length in discards:
            image.discard(offset, length)


def _source(driver: RBDDriver, disks: Callable[[str], str]) -> str:
    name = disks("src")
    driver.create(name, SIZE)
    _write(driver, name, [(0, os.urandom(MIB)), (9 * MIB, os.urandom(3 * MIB)),
                          (40 * MIB, b"x" * 4096)])
    return name


def test_full_plus_three_incrementals_restore_exactly(
        driver, manager, disks, ceph_cluster) -> None:
    src = _source(driver, disks)
    calls: list[tuple[int, int]] = []
    full = manager.full_backup(src, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (SIZE, SIZE)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    backups: list[BackupManifest] = [full]
    changes = [
        ([(5 * MIB, os.urandom(100_000)), (63 * MIB, os.urandom(MIB))], [(9 * MIB, MIB)]),
        ([(10 * MIB, bytes(64 * 1024)), (20 * MIB, os.urandom(7))], []),
        ([(0, os.urandom(2 * MIB)), (33 * MIB + 5, os.urandom(5000))], [(40 * MIB, 4096)]),
    ]
    for writes, discards in changes:
        _write(driver, src, writes, discards)
        backups.append(manager.incremental_backup(src))
    expected = {b.id: _sha(ceph_cluster, f"vms/{src}@{b.snapshot['name']}") for b in backups}

    # The chain restores to exactly each snapshot's content, as the CLI reads it.
    for index in (3, 1):
        target = disks(f"restored{index}")
        seen: list[tuple[int, int]] = []
        manager.restore(backups[index], target, progress=lambda d, t, seen=seen: seen.append((d, t)))
        assert _sha(ceph_cluster, f"vms/{target}") == expected[backups[index].id]
        assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert driver.list_snapshots(target) == []

    # Manifests describe the chain.
    assert full.kind == "full" and full.format == "raw" and full.parent is None
    for parent, child in itertools.pairwise(backups):
        assert child.kind == "incremental" and child.format == "rbd-diff-v1"
        assert child.parent == {"id": parent.id, "snapshot": parent.snapshot["name"]}
        assert child.file["size"] == os.path.getsize(child.data_path)
        assert child.file["checksum"]["algorithm"] == "crc32"
    assert backups[1].data_bytes < SIZE // 4  # what changed (librbd rounds), not the disk

    # Ceph's own import-diff restores our incremental files onto the full backup.
    cli = disks("cli")
    _rbd(ceph_cluster, "import", full.data_path, f"vms/{cli}")
    _rbd(ceph_cluster, "snap", "create", f"vms/{cli}@{full.snapshot['name']}")
    for incremental in backups[1:]:
        _rbd(ceph_cluster, "import-diff", incremental.data_path, f"vms/{cli}")
        assert _sha(ceph_cluster, f"vms/{cli}") == expected[incremental.id]
    _rbd(ceph_cluster, "snap", "purge", f"vms/{cli}")

    # ... and rbd export-diff writes the very same bytes as our incremental.
    cli_diff = os.path.join(os.path.dirname(full.data_path), "cli.diff-out")
    _rbd(ceph_cluster, "export-diff", "--from-snap", backups[2].snapshot["name"],
         f"vms/{src}@{backups[3].snapshot['name']}", cli_diff)
    with open(cli_diff, "rb") as ours_cli, open(backups[3].data_path, "rb") as ours:
        assert ours_cli.read() == ours.read()


def test_qcow2_backup_is_identical_and_restores_with_incrementals(
        driver, manager, disks, ceph_cluster) -> None:
    src = _source(driver, disks)
    full = manager.full_backup(src, fmt="qcow2")
    assert full.format == "qcow2" and full.data_path.endswith(".qcow2")
    spec = convert.rbd_spec("vms", f"{src}@{full.snapshot['name']}", ceph_cluster.user,
                            ceph_cluster.conf_path, ceph_cluster.user_keyring)
    proc = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", full.data_path,
                           spec], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert full.file["size"] < SIZE  # sparse: QCOW2 holds the data only
    _write(driver, src, [(30 * MIB, os.urandom(MIB))])
    incremental = manager.incremental_backup(src)
    target = disks("restored")
    manager.restore(incremental, target)
    assert _sha(ceph_cluster, f"vms/{target}") == _sha(
        ceph_cluster, f"vms/{src}@{incremental.snapshot['name']}")


def test_incremental_of_a_callers_snapshot(ceph_cluster, driver, disks, manager,
                                           tmp_path) -> None:
    """The caller snapshots (e.g. guest frozen); the backup extracts that snapshot."""
    src = _source(driver, disks)
    full = manager.full_backup(src)
    _write(driver, src, [(20 * MIB, os.urandom(2 * MIB))], discards=[(9 * MIB, MIB)])
    driver.create_snap(src, "frozen")
    _write(driver, src, [(50 * MIB, os.urandom(MIB))])  # after the snapshot: not backed up
    incremental = manager.incremental_backup(src, snapshot="frozen")
    assert incremental.snapshot["name"] == "frozen" and incremental.parent["id"] == full.id
    target = disks("restored")
    manager.restore(incremental, target)
    assert _sha(ceph_cluster, f"vms/{target}") == _sha(ceph_cluster, f"vms/{src}@frozen")
    # Ceph's own import-diff applies our stream onto the full backup's data too.
    replay = disks("replay")
    raw = tmp_path / "full.raw"
    _rbd(ceph_cluster, "export", f"vms/{src}@{full.snapshot['name']}", str(raw))
    _rbd(ceph_cluster, "import", str(raw), f"vms/{replay}")
    _rbd(ceph_cluster, "snap", "create", f"vms/{replay}@{full.snapshot['name']}")
    _rbd(ceph_cluster, "import-diff", incremental.data_path, f"vms/{replay}")
    assert _sha(ceph_cluster, f"vms/{replay}") == _sha(ceph_cluster, f"vms/{src}@frozen")


def test_retention_prunes_to_n(driver, disks, tmp_path, ceph_admin) -> None:
    manager = BackupManager(driver, str(tmp_path / "b"), retention=2)
    src = _source(driver, disks)
    made = [manager.full_backup(src)]
    made.append(manager.incremental_backup(src))
    made.append(manager.full_backup(src))
    for _ in range(2):
        _write(driver, src, [(0, os.urandom(4096))])
        made.append(manager.incremental_backup(src))
    snaps = [s["name"] for s in ceph_admin("rbd", "snap", "ls", f"vms/{src}")]
    assert snaps == [b.snapshot["name"] for b in made[-2:]]
    assert all(s.startswith(SNAPSHOT_PREFIX) for s in snaps)
    # The newest two are kept, with the full backup the newest chain needs.
    assert [b.id for b in manager.list_backups(src)] == [b.id for b in made[2:]]
    for gone in made[:2]:
        assert not os.path.exists(gone.path) and not os.path.exists(gone.data_path)
    assert sorted(os.listdir(manager.directory(src))) == sorted(
        name for b in made[2:] for name in (f"{b.id}.json", b.file["name"]))


@pytest.mark.parametrize("damage", ["flip-full", "truncate-incremental", "flip-incremental",
                                    "truncate-full"])
def test_damaged_backup_fails_restore_and_creates_no_image(
        driver, manager, disks, ceph_admin, damage) -> None:
    src = _source(driver, disks)
    full = manager.full_backup(src)
    _write(driver, src, [(9 * MIB, os.urandom(MIB))])
    incremental = manager.incremental_backup(src)
    victim = full if damage.endswith("full") else incremental
    with open(victim.data_path, "r+b") as f:
        if damage.startswith("truncate"):
            f.truncate(victim.file["size"] - 100)
        else:
            f.seek(9 * MIB + 12345 if victim is full else victim.file["size"] // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x40]))
    target = disks("restored")
    with pytest.raises(exception.BackupCorrupt) as info:
        manager.restore(incremental, target)
    message = str(info.value)
    assert victim.data_path in message
    assert ("truncated" in message) == damage.startswith("truncate")
    assert ("checksum" in message) == damage.startswith("flip")
    assert not [n for n in ceph_admin("rbd", "ls", "vms") if n.startswith(target)]


def test_incremental_without_its_base_snapshot_is_refused(driver, manager, disks) -> None:
    src = _source(driver, disks)
    with pytest.raises(exception.BackupChainBroken, match="no previous backup"):
        manager.incremental_backup(src)
    full = manager.full_backup(src)
    driver.remove_snap(src, full.snapshot["name"])
    with pytest.raises(exception.BackupChainBroken, match="take a full backup"):
        manager.incremental_backup(src)
    assert [s.name for s in driver.list_snapshots(src)] == []  # it made no snapshot
