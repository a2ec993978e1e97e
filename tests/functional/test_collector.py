# SPDX-License-Identifier: Apache-2.0
"""The health and capacity collector against real clusters, checked with the Ceph CLI."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from rbd_driver.ops import collector
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.testing.local_cluster import LocalCluster, make_conf


def test_document_matches_the_cli_view(backend, rbd_conf, ceph_admin) -> None:
    driver = backend.driver("rbd")
    name = f"coll-{uuid.uuid4().hex[:8]}"
    driver.create(name, 64 << 20)
    try:
        with driver.client.open_image("vms", name) as image:
            image.write(b"\x01" * (6 << 20), 0)  # two 4 MiB objects
        doc = collector.collect_from_conf(rbd_conf, pools=["vms"], time_bound=10)
        assert doc["version"] == collector.SCHEMA_VERSION and doc["complete"], doc["errors"]
        status = ceph_admin("ceph", "status")
        assert doc["cluster"]["fsid"] == status["fsid"]
        assert doc["cluster"]["health"]["status"] == status["health"]["status"]
        assert doc["cluster"]["osds"]["up"] == status["osdmap"]["num_up_osds"]
        assert doc["cluster"]["pgs"]["total"] == status["pgmap"]["num_pgs"]
        df = {p["name"]: p["stats"] for p in ceph_admin("ceph", "df")["pools"]}
        ours = {p["name"]: p for p in doc["pools"]}
        assert set(ours) == set(df)
        assert ours["vms"]["max_avail"] == pytest.approx(df["vms"]["max_avail"], rel=0.05)
        du = {i["name"]: i for i in ceph_admin("rbd", "du", "-p", "vms")["images"]}
        mine = {i["name"]: i for i in doc["images"]}
        assert set(mine) == set(du)
        assert mine[name]["provisioned"] == du[name]["provisioned_size"] == 64 << 20
        assert mine[name]["used"] == du[name]["used_size"] == 8 << 20
    finally:
        driver.remove_image(name)


def test_unreachable_cluster_gives_a_partial_document_in_time(rbd_conf, tmp_path) -> None:
    conf_file = tmp_path / "ceph.conf"
    conf_file.write_text("[global]\nmon host = 127.0.0.1:1\n")
    rbd_conf.set_override("ceph_conf", str(conf_file), group="rbd")
    rbd_conf.set_override("keyring", None, group="rbd")
    started = time.monotonic()
    doc = collector.collect_from_conf(rbd_conf, time_bound=3)
    assert time.monotonic() - started < 3 + 2
    assert not doc["complete"] and doc["cluster"] is None
    assert any("no monitor answered within 3 s" in e for e in doc["errors"]), doc["errors"]


@pytest.fixture(scope="module")
def three_osds():
    with LocalCluster(osds=3, pools=("vms",)) as cluster:
        yield cluster


def test_one_osd_down_is_reported_within_the_bound(three_osds) -> None:
    state = three_osds.state
    conf = make_conf(state)
    with RadosClient.from_conf(conf) as client:
        with client.ioctx("vms") as ioctx:
            client.rbd.RBD().create(ioctx, "data", 16 << 20)
        with client.open_image("vms", "data") as image:
            image.write(b"x" * (4 << 20), 0)
    three_osds.kill_daemon("osd.2", signal.SIGKILL)
    # Wait until the monitors have noticed, as an operator would see it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = three_osds.health()
        clean = sum(s["count"] for s in status["pgmap"]["pgs_by_state"]
                    if s["state_name"] == "active+clean")
        if status["osdmap"]["num_up_osds"] == 2 and clean < status["pgmap"]["num_pgs"]:
            break
        time.sleep(1)
    started = time.monotonic()
    doc = collector.collect_from_conf(conf, pools=["vms"], time_bound=10)
    elapsed = time.monotonic() - started
    assert elapsed < 10 + 2, elapsed
    assert doc["cluster"]["health"]["status"] == "HEALTH_WARN"
    assert doc["cluster"]["osds"] == {"total": 3, "up": 2, "in": 3}
    assert "OSD_DOWN" in doc["cluster"]["health"]["checks"]
    assert not doc["cluster"]["pgs"]["all_active_clean"]
    assert [i["name"] for i in doc["images"]] == ["data"]
