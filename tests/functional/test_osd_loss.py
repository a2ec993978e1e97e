# SPDX-License-Identifier: Apache-2.0
"""An OSD dies mid-operation on a 3-OSD cluster (size 3, min_size 2).

With one OSD of three down every placement group keeps two replicas, so the
cluster stays writable: operations must go on succeeding. Only an operation
in flight at the moment of the kill may fail, and then cleanly (nothing
left), and a retry succeeds. The Ceph CLI as admin is the oracle: ``ceph osd
dump`` proves the OSD went down, ``rbd ls``/``rbd children``/``rbd export``
what the library left behind. After the OSD restarts the cluster is HEALTH_OK.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.storage import datapath
from rbd_driver.testing.local_cluster import LocalCluster, _pid_alive, make_conf

THREADS = 8


@pytest.fixture(scope="module")
def three_osd_cluster():
    with LocalCluster(osds=3, pools=("vms", "images"), osd_size_gib=2) as cluster:
        yield cluster


@pytest.fixture
def osd_backend(three_osd_cluster):
    with imagebackend.Backend(make_conf(three_osd_cluster.state)) as backend:
        yield backend
    three_osd_cluster.wait_healthy(180)


def _admin(cluster: LocalCluster, tool: str, *args: str) -> Any:
    """The Ceph CLI as admin, JSON parsed: the oracle, independent of the library."""
    proc = subprocess.run([tool, "-c", cluster.conf_path, *args, "--format", "json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{tool} {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def _ls(cluster: LocalCluster, pool: str, prefix: str) -> list[str]:
    names = [n for n in _admin(cluster, "rbd", "ls", pool) or [] if n.startswith(prefix)]
    trashed = [e["name"] for e in _admin(cluster, "rbd", "trash", "ls", pool) or []
               if e["name"].startswith(prefix)]
    return sorted(names + trashed)


def _osd_up(cluster: LocalCluster, osd: int) -> bool:
    dump = _admin(cluster, "ceph", "osd", "dump")
    return bool(next(o for o in dump["osds"] if o["osd"] == osd)["up"])


def _kill_osd(cluster: LocalCluster, osd: int) -> None:
    """SIGKILL osd.N and fail unless its process is really gone (kill_daemon is
    silent when the recorded PID is not one of ours)."""
    assert cluster.state is not None
    pid = cluster.state.pids[f"osd.{osd}"]
    assert _pid_alive(pid), f"osd.{osd} (pid {pid}) was not running before the kill"
    cluster.kill_daemon(f"osd.{osd}", signal.SIGKILL)
    assert not _pid_alive(pid), f"kill_daemon left osd.{osd} (pid {pid}) running"


def _wait_marked_down(cluster: LocalCluster, osd: int, timeout: float = 90) -> float:
    """Wait until the monitors mark osd.N down (``ceph osd dump``); return the wait."""
    started = time.monotonic()
    while _osd_up(cluster, osd):
        assert time.monotonic() - started < timeout, f"osd.{osd} still up after {timeout}s"
        time.sleep(0.5)
    return time.monotonic() - started


def _restart(cluster: LocalCluster, osd: int) -> None:
    """Start osd.N again if it is not running (a failed kill leaves it running)."""
    assert cluster.state is not None
    if not _pid_alive(cluster.state.pids[f"osd.{osd}"]):
        cluster.restart_osd(osd)
    cluster.wait_healthy(180)
    assert _osd_up(cluster, osd)


def _export_sha256(cluster: LocalCluster, spec: str, out: Any) -> bytes:
    subprocess.run(["rbd", "-c", cluster.conf_path, "export", "--no-progress", spec, str(out)],
                   check=True, capture_output=True, timeout=300)
    digest = hashlib.sha256(out.read_bytes()).digest()
    out.unlink()
    return digest


def test_osd_killed_in_the_middle_of_an_import(three_osd_cluster, osd_backend, tmp_path) -> None:
    src = tmp_path / "src.raw"
    rng = random.Random(7)
    with open(src, "wb") as f:
        f.truncate(256 << 20)
        for offset in rng.sample(range(0, 256 << 20, 4 << 20), 24):
            f.seek(offset)
            f.write(os.urandom(4 << 20))
    expected = hashlib.sha256(src.read_bytes()).digest()
    killed = threading.Event()

    def kill_halfway(done: int, total: int) -> None:
        if done >= total // 2 and not killed.is_set():
            killed.set()
            _kill_osd(three_osd_cluster, 1)

    driver = osd_backend.driver("rbd")
    name = f"loss-{uuid.uuid4().hex[:6]}"
    try:
        try:
            datapath.import_to_image(driver.client, str(src), "vms", name,
                                     progress=kill_halfway)
            outcome = "completed"
        except exception.RbdDriverError as err:
            outcome = f"failed: {err}"
            # Failed cleanly: nothing left, not even in the trash...
            assert _ls(three_osd_cluster, "vms", name) == [], outcome
        assert killed.is_set(), "the import never reached half way"
        print(f"import with osd.1 killed half way: {outcome}; osd.1 marked down after "
              f"{_wait_marked_down(three_osd_cluster, 1):.1f}s")
        assert not _osd_up(three_osd_cluster, 1)
        if outcome != "completed":
            # ... and a retry, with osd.1 still down, succeeds: 2 of 3 replicas suffice.
            datapath.import_to_image(driver.client, str(src), "vms", name)
        assert _ls(three_osd_cluster, "vms", name) == [name]
        assert _export_sha256(three_osd_cluster, f"vms/{name}", tmp_path / "out.raw") == expected
    finally:
        if killed.is_set():
            _restart(three_osd_cluster, 1)
        driver.remove_image(name, "vms")
    assert _ls(three_osd_cluster, "vms", name) == []


def test_osd_killed_during_a_storm_of_50_clones(three_osd_cluster, osd_backend) -> None:
    driver = osd_backend.driver("rbd")
    golden = f"loss-golden-{uuid.uuid4().hex[:6]}"
    driver.create(golden, 64 << 20, pool="images")
    with driver.client.open_image("images", golden) as image:
        image.write(b"golden data", 0)
    driver.create_snap(golden, "snap", protect=True, pool="images")
    url = f"rbd://{driver.fsid}/images/{golden}/snap"
    prefix = f"storm{uuid.uuid4().hex[:6]}-"
    results: dict[int, str] = {}
    counter = iter(range(50))
    lock = threading.Lock()
    in_flight: set[int] = set()
    in_flight_at_kill: set[int] = set()
    killed = threading.Event()
    kill_errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
                if i == 10:
                    in_flight_at_kill.update(in_flight)
                    try:
                        _kill_osd(three_osd_cluster, 2)
                    except BaseException as err:  # reported by the main thread
                        kill_errors.append(err)
                    killed.set()
                if i is None:
                    return
                in_flight.add(i)
            disk = osd_backend.by_name(f"{prefix}{i}", "disk")
            try:
                disk.direct_fetch("img", {"disk_format": "raw"}, [{"url": url}])
                results[i] = "ok"
            except exception.RbdDriverError as err:
                results[i] = f"failed: {err}"
            finally:
                with lock:
                    in_flight.discard(i)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        assert killed.wait(300), "the storm never reached launch 10"
        assert not kill_errors, kill_errors
        down_after = _wait_marked_down(three_osd_cluster, 2)
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)
        assert len(results) == 50
        failed = {i: o for i, o in results.items() if o != "ok"}
        print(f"storm: {50 - len(failed)} of 50 ok; osd.2 marked down after {down_after:.1f}s; "
              f"in flight at the kill: {sorted(in_flight_at_kill)}; failed: {failed}")
        # Only a launch in flight when the OSD died may fail: at most one per other
        # thread. Every launch begun after the kill succeeds.
        assert len(in_flight_at_kill) <= THREADS - 1
        assert set(failed) <= in_flight_at_kill, failed
        assert not _osd_up(three_osd_cluster, 2)
        ok = {f"{prefix}{i}_disk" for i, o in results.items() if o == "ok"}
        assert set(_ls(three_osd_cluster, "vms", prefix)) == ok  # failed ones left nothing
        children = _admin(three_osd_cluster, "rbd", "children", f"images/{golden}@snap")
        assert {c["image"] for c in children if c["pool"] == "vms"} == ok
        for disk in ok:
            with driver.client.open_image("vms", disk, read_only=True) as image:
                assert image.read(0, 11) == b"golden data"
    finally:
        for t in threads:
            t.join(600)
        report = driver.cleanup_volumes(lambda n: n.startswith(prefix))
        assert report.ok, report
        if killed.is_set():
            _restart(three_osd_cluster, 2)
        assert driver.remove_image(golden, pool="images").removed == [golden]
    assert _ls(three_osd_cluster, "vms", prefix) == []
    assert _ls(three_osd_cluster, "images", golden) == []
