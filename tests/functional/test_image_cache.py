# SPDX-License-Identifier: Apache-2.0
"""Copy once, then clone; and non-raw sources converted with qemu-img."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rados_lock import LOCK_NAME, cluster_lock

CACHE_POOL = "rbd"
PATTERN = b"cached image data"


def _raw_base(path: str, size: int = 64 << 20) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(PATTERN)
        f.seek(32 << 20)
        f.write(PATTERN)


@pytest.fixture
def cache_backend(rbd_conf) -> Any:
    rbd_conf.set_override("image_cache_pool", CACHE_POOL, group="rbd")
    rbd_conf.set_override("image_cache_lock_lease", 6, group="rbd")
    with imagebackend.Backend(rbd_conf) as backend:
        yield backend


def _left(ceph_admin: Any, pool: str, part: str) -> list[str]:
    """Images of ``pool`` whose name holds ``part``, listed or in the trash (rbd CLI as admin)."""
    listed = [n for n in ceph_admin("rbd", "ls", pool) or [] if part in n]
    trashed = [e["name"] for e in ceph_admin("rbd", "trash", "ls", pool) or [] if part in e["name"]]
    return sorted(listed + trashed)


@pytest.fixture
def image_id(cache_backend, ceph_admin) -> Any:
    """A fresh image id; its cached golden and all clones are removed afterwards."""
    ident = f"img-{uuid.uuid4().hex[:8]}"
    made: list[str] = []
    yield ident, made
    driver = cache_backend.driver("rbd")
    for inst in made:
        report = cache_backend.backend("rbd").cleanup_instance(cache_backend.conf, inst,
                                                               driver=driver)
        assert report.ok and not report.trashed, report
    report = driver.remove_image(f"cached-{ident}", pool=CACHE_POOL)
    assert report.removed, report
    assert _left(ceph_admin, CACHE_POOL, ident) == []
    for inst in made:
        assert _left(ceph_admin, "vms", inst) == []


WORKER = textwrap.dedent("""
    import json, os, sys, time
    from rbd_driver import imagebackend
    from rbd_driver.testing.local_cluster import load_state, make_conf
    state = load_state(sys.argv[1])
    conf = make_conf(state)
    conf.set_override("image_cache_pool", sys.argv[2], group="rbd")
    conf.set_override("image_cache_lock_lease", 6, group="rbd")
    image_id, instance, counter, base = sys.argv[3:7]

    def download(target, image_id):
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1)  # a slow image service widens the race
        with open(target, "wb") as f:
            f.truncate(64 << 20)
            f.write(b"cached image data")
            f.seek(32 << 20)
            f.write(b"cached image data")

    with imagebackend.Backend(conf) as backend:
        disk = backend.by_name(instance, "disk")
        disk.create_image(download, base, None, image_id=image_id)
        print(json.dumps(disk.parent_info()))
""")


def test_eight_processes_import_once_then_clone(cache_backend, image_id, ceph_cluster,
                                                tmp_path, ceph_admin) -> None:
    ident, made = image_id
    counter = tmp_path / "downloads"
    counter.touch()
    instances = [str(uuid.uuid4()) for _ in range(8)]
    made.extend(instances)
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, ceph_cluster.conf_path, CACHE_POOL,
                          ident, inst, str(counter), str(tmp_path / f"base-{i}")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, inst in enumerate(instances)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == [CACHE_POOL, f"cached-{ident}", "snap"]
    assert len(counter.read_text().split()) == 1  # exactly one download and import
    for inst in instances:
        info = ceph_admin("rbd", "info", f"vms/{inst}_disk")
        assert info["parent"]["image"] == f"cached-{ident}"
    snaps = ceph_admin("rbd", "snap", "ls", f"{CACHE_POOL}/cached-{ident}")
    assert [(s["name"], s["protected"]) for s in snaps] == [("snap", "true")]
    assert not [n for n in ceph_admin("rbd", "ls", CACHE_POOL) if ".caching-" in n]


def test_later_launch_clones_from_cache_without_download(cache_backend, image_id,
                                                         tmp_path) -> None:
    ident, made = image_id
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    made.extend([first, second])
    downloads: list[str] = []

    def download(target: str, image_id: str) -> None:
        downloads.append(target)
        _raw_base(target)

    cache_backend.by_name(first, "disk").create_image(download, str(tmp_path / "b1"), None,
                                                      image_id=ident)
    # A non-cloneable location plus the cache: direct_fetch clones, no download.
    disk = cache_backend.by_name(second, "disk")
    disk.direct_fetch(ident, {"disk_format": "qcow2"}, [{"url": "http://elsewhere/x"}])
    assert downloads == [str(tmp_path / "b1")]
    assert disk.parent_info() == (CACHE_POOL, f"cached-{ident}", "snap")
    with cache_backend.driver("rbd").client.open_image("vms", disk.rbd_name,
                                                       read_only=True) as image:
        assert image.read(32 << 20, len(PATTERN)) == PATTERN


def test_stale_lock_of_a_dead_host_expires(cache_backend, image_id, tmp_path,
                                           ceph_cluster) -> None:
    ident, made = image_id
    inst = str(uuid.uuid4())
    made.append(inst)
    # A "dead host": takes the lock with a 3 s lease and never renews or unlocks.
    dead = RadosClient(ceph_cluster.conf_path, user=ceph_cluster.user,
                       keyring=ceph_cluster.user_keyring)
    ioctx = dead.get_ioctx(CACHE_POOL)
    ioctx.lock_exclusive(f"rbd_driver_lock.cached-{ident}", LOCK_NAME, "dead-host", "", 3, 0)
    started = time.monotonic()
    cache_backend.by_name(inst, "disk").create_image(
        lambda target, image_id: _raw_base(target), str(tmp_path / "b"), None, image_id=ident)
    waited = time.monotonic() - started
    dead.close()
    assert 1.5 < waited < 30, waited


def test_lock_wait_times_out_with_a_clear_error(cache_backend, ceph_cluster) -> None:
    client = cache_backend.driver("rbd").client
    with cluster_lock(client, CACHE_POOL, "rbd_driver_lock.timeout-test", timeout=5):
        other = RadosClient(ceph_cluster.conf_path, user=ceph_cluster.user,
                            keyring=ceph_cluster.user_keyring)
        try:
            with pytest.raises(exception.OperationTimeout, match="timeout-test"):
                with cluster_lock(other, CACHE_POOL, "rbd_driver_lock.timeout-test",
                                  timeout=1, poll=0.2):
                    pass
        finally:
            other.close()


def _qcow2(path: str, backing: str | None = None) -> None:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        cmd += ["-b", backing, "-F", "raw"]
    subprocess.run([*cmd, path, "64M"], check=True, timeout=60)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 16M 1M", path],
                   check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("via", ["direct", "local"])
def test_qcow2_download_is_converted_without_keys_on_command_lines(
        backend, rbd_conf, tmp_path, via, spawned, ceph_cluster, ceph_admin) -> None:
    rbd_conf.set_override("convert_via", via, group="rbd")
    inst = str(uuid.uuid4())
    disk = backend.by_name(inst, "disk")
    calls = spawned()
    try:
        disk.create_image(lambda target: _qcow2(target), str(tmp_path / "base"), None)
        spawned_now = spawned()[len(calls):]
        with backend.driver("rbd").client.open_image("vms", disk.rbd_name,
                                                     read_only=True) as image:
            assert image.size() == 64 << 20
            assert image.read(16 << 20, 4096) == b"\x5a" * 4096
            assert image.read(0, 4096) == bytes(4096)
        key = Path(ceph_cluster.user_keyring).read_text().split("key = ")[1].split()[0]
        qemu = [c for c in spawned_now if "qemu-img" in c]
        assert qemu and not any(key in c for c in spawned_now)
        if via == "direct":
            assert any(f"conf={ceph_cluster.conf_path}" in c for c in qemu)
        assert _left(ceph_admin, "vms", inst) == [disk.rbd_name]  # no temporary left
    finally:
        backend.backend("rbd").cleanup_instance(rbd_conf, inst, driver=backend.driver("rbd"))
    assert _left(ceph_admin, "vms", inst) == []


def test_qcow2_with_backing_file_is_refused_and_nothing_created(backend, rbd_conf,
                                                                tmp_path, ceph_admin) -> None:
    inst = str(uuid.uuid4())
    disk = backend.by_name(inst, "disk")
    with pytest.raises(exception.ImageConversionFailed, match="backing file '/etc/hostname'"):
        disk.create_image(lambda target: _qcow2(target, backing="/etc/hostname"),
                          str(tmp_path / "base"), None)
    assert _left(ceph_admin, "vms", inst) == []
