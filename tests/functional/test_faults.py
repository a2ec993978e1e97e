# SPDX-License-Identifier: Apache-2.0
"""Faults: a frozen monitor must never hang a caller (cf. Nova bug 1834048)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.ops import collector
from rbd_driver.testing.local_cluster import _pid_is_ours

TIMEOUT = 3


@pytest.fixture
def frozen_monitor(ceph_cluster):
    """SIGSTOP the cluster's monitor (ours: checked by PID and cmdline); SIGCONT after."""
    pid = ceph_cluster.pids["mon.a"]
    assert _pid_is_ours(pid, ceph_cluster.directory), "not our monitor: refusing to signal it"
    frozen = {"on": False}

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        frozen["on"] = True
        # Delivery is asynchronous: wait until every thread really is stopped,
        # or a request sent now may still be answered.
        deadline = time.monotonic() + 10
        while not all(_thread_state(pid, tid) == "T" for tid in os.listdir(f"/proc/{pid}/task")):
            assert time.monotonic() < deadline, "monitor did not stop"
            time.sleep(0.01)

    yield freeze
    if frozen["on"]:
        os.kill(pid, signal.SIGCONT)


def _thread_state(pid: int, tid: str) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "T"  # a thread that is gone does not answer either


def _fails_in_time(call, limit: float) -> exception.RbdDriverError:
    started = time.monotonic()
    with pytest.raises(exception.RbdDriverError) as info:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"{call} took {elapsed:.1f}s"
    return info.value


def test_frozen_monitor_fails_fast_and_the_driver_recovers(rbd_conf, frozen_monitor,
                                                           ceph_cluster) -> None:
    rbd_conf.set_override("op_timeout", TIMEOUT, group="rbd")
    rbd_conf.set_override("connect_timeout", TIMEOUT, group="rbd")
    with imagebackend.Backend(rbd_conf) as backend:
        driver = backend.driver("rbd")
        disk = backend.by_name(str(uuid.uuid4()), "disk")
        before = driver.get_pool_info()  # connected, warm
        threads_before = threading.active_count()
        frozen_monitor()

        err = _fails_in_time(driver.get_pool_info, TIMEOUT + 2)
        assert isinstance(err, exception.OperationTimeout) and "df" in str(err)
        err = _fails_in_time(disk.libvirt_info, TIMEOUT + 2)
        assert "mon dump" in str(err)
        # A new connection cannot even start: bounded by connect_timeout.
        with imagebackend.Backend(rbd_conf) as other:
            err = _fails_in_time(lambda: other.driver("rbd").get_pool_info(), TIMEOUT + 2)
            assert isinstance(err, exception.ClusterConnectionError)
        doc_started = time.monotonic()
        doc = collector.collect_from_conf(rbd_conf, pools=["vms"], time_bound=TIMEOUT)
        assert time.monotonic() - doc_started < TIMEOUT + 2
        assert not doc["complete"] and doc["errors"]

        os.kill(ceph_cluster.pids["mon.a"], signal.SIGCONT)
        # The same driver object works again, without a restart.
        deadline = time.monotonic() + 30
        while True:
            try:
                after = driver.get_pool_info()
                break
            except exception.RbdDriverError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert after["free"] == pytest.approx(before["free"], rel=0.1)
        assert disk.libvirt_info().startswith("<disk")
        time.sleep(TIMEOUT + 1)  # let abandoned collector threads time out
        assert threading.active_count() <= threads_before + 1


HOLDER = """
import sys, time, rados, rbd
conf, user, keyring, name = sys.argv[1:5]
c = rados.Rados(conffile=conf, rados_id=user)
c.conf_set("keyring", keyring)
c.connect()
image = rbd.Image(c.open_ioctx("vms"), name)
print("holding", flush=True)
time.sleep(300)
"""


def test_stale_watcher_disk_is_left_reported_busy_then_removed(backend, rbd_conf,
                                                              ceph_cluster, ceph_admin) -> None:
    import subprocess
    import sys

    inst = str(uuid.uuid4())
    name = f"{inst}_disk"
    driver = backend.driver("rbd")
    cls = backend.backend("rbd")
    driver.create(name, 8 << 20)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, ceph_cluster.conf_path,
                               ceph_cluster.user, ceph_cluster.user_keyring, name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        (watcher,) = ceph_admin("rbd", "status", f"vms/{name}")["watchers"]
        report = cls.cleanup_instance(rbd_conf, inst, driver=driver)
        # Left where it is, and said so with who holds it: never trashed.
        assert report.removed == [] and report.failed == {} and report.trashed == {}
        assert watcher["address"] in report.busy[name]
        assert name in ceph_admin("rbd", "ls", "vms")
        assert name not in [e["name"] for e in ceph_admin("rbd", "trash", "ls", "vms") or []]
    finally:
        holder.kill()  # SIGKILL: its watch stays behind until the OSD expires it
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # A dead client's watch still counts until it expires (osd_client_watch_timeout,
    # 30 s); then the same cleanup removes the disk.
    deadline = time.monotonic() + 90
    while True:
        report = cls.cleanup_instance(rbd_conf, inst, driver=driver)
        if report.removed == [name] or time.monotonic() > deadline:
            break
        assert list(report.busy) == [name] and not report.trashed, report
        time.sleep(2)
    assert report.removed == [name] and report.ok, report
    assert name not in ceph_admin("rbd", "ls", "vms")
    assert name not in [e["name"] for e in ceph_admin("rbd", "trash", "ls", "vms") or []]
