"""An OSD dies mid-operation on a 3-OSD cluster (size 3, min_size 2).

Every operation either completes with correct content or fails cleanly,
leaving nothing behind; after the OSD restarts the cluster is HEALTH_OK.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import uuid

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.storage import datapath
from rbd_driver.testing.cluster import LocalCluster, make_conf


@pytest.fixture(scope="module")
def three_osd_cluster():
    with LocalCluster(osds=3, pools=("vms", "images"), osd_size_gib=2) as cluster:
        yield cluster


@pytest.fixture
def osd_backend(three_osd_cluster):
    with imagebackend.Backend(make_conf(three_osd_cluster.state)) as backend:
        yield backend
    three_osd_cluster.wait_healthy(180)


def _restart(cluster: LocalCluster, osd: int) -> None:
    cluster.restart_osd(osd)
    cluster.wait_healthy(180)


def test_osd_killed_in_the_middle_of_an_import(three_osd_cluster, osd_backend, tmp_path) -> None:
    src = tmp_path / "src.raw"
    rng = random.Random(7)
    with open(src, "wb") as f:
        f.truncate(256 << 20)
        for offset in rng.sample(range(0, 256 << 20, 4 << 20), 24):
            f.seek(offset)
            f.write(os.urandom(4 << 20))
    killed = threading.Event()

    def kill_halfway(done: int, total: int) -> None:
        if done >= total // 2 and not killed.is_set():
            killed.set()
            three_osd_cluster.kill_daemon("osd.1", signal.SIGKILL)

    driver = osd_backend.driver("rbd")
    name = f"loss-{uuid.uuid4().hex[:6]}"
    try:
        datapath.import_to_image(driver.client, str(src), "vms", name, progress=kill_halfway)
    except exception.RbdDriverError:
        assert not [n for n in driver.list_images("vms") if n.startswith(name)]
    else:
        out = tmp_path / "out.raw"
        driver.export_file(name, str(out), "vms")
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
        assert [n for n in driver.list_images("vms") if n.startswith(name)] == [name]
        driver.remove_image(name, "vms")
    assert killed.is_set()
    _restart(three_osd_cluster, 1)


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

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
                if i == 10:
                    three_osd_cluster.kill_daemon("osd.2", signal.SIGKILL)
            if i is None:
                return
            disk = osd_backend.by_name(f"{prefix}{i}", "disk")
            try:
                disk.direct_fetch("img", {"disk_format": "raw"}, [{"url": url}])
                results[i] = "ok"
            except exception.RbdDriverError as err:
                results[i] = f"failed: {err}"

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    try:
        assert len(results) == 50
        names = set(driver.list_images("vms"))
        for i, outcome in results.items():
            disk = f"{prefix}{i}_disk"
            if outcome == "ok":
                assert disk in names
                with driver.client.open_image("vms", disk, read_only=True) as image:
                    assert image.read(0, 11) == b"golden data"
            else:
                assert disk not in names, outcome  # failed cleanly: nothing left
        print("storm outcomes:", sum(o == "ok" for o in results.values()), "ok of 50")
    finally:
        report = driver.cleanup_volumes(lambda n: n.startswith(prefix))
        assert report.ok, report
        _restart(three_osd_cluster, 2)
        assert driver.remove_image(golden, pool="images").removed == [golden]
