# SPDX-License-Identifier: Apache-2.0
"""Stopping a throwaway cluster also stops an unrecorded daemon of that cluster, and
nothing else (no cluster needed: the "daemons" are sleeping Python processes)."""

from __future__ import annotations

import os
import subprocess
import sys

from rbd_driver.testing.local_cluster import _stop_pids

SLEEP = "import time; print('ready', flush=True); time.sleep(120)"


def _daemon(name: str, conf: str) -> subprocess.Popen[bytes]:
    # argv[0] names it as a Ceph daemon; -c <conf> as the cluster's daemons get.
    proc = subprocess.Popen([name, "-c", SLEEP, "-c", conf], executable=sys.executable,
                            stdout=subprocess.PIPE)
    # Its first line says it runs, so /proc shows the argv the scan reads (right after
    # Popen returns it can still be empty: the exec is not quite done).
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == name.encode()
    return proc


def test_an_unrecorded_daemon_of_the_cluster_is_stopped_too(tmp_path) -> None:
    directory = str(tmp_path / "cluster")
    os.makedirs(directory)
    recorded = _daemon("ceph-osd", os.path.join(directory, "ceph.conf"))
    stray = _daemon("ceph-osd", os.path.join(directory, "ceph.conf"))
    other_cluster = _daemon("ceph-osd", str(tmp_path / "other" / "ceph.conf"))
    not_a_daemon = _daemon("python-tool", os.path.join(directory, "ceph.conf"))
    try:
        _stop_pids(directory, {"osd.0": recorded.pid}, timeout=5)
        assert recorded.wait(5) is not None
        assert stray.wait(5) is not None
        assert other_cluster.poll() is None  # another cluster's daemon is left alone
        assert not_a_daemon.poll() is None   # so is anything that is not a ceph- daemon
    finally:
        for proc in (recorded, stray, other_cluster, not_a_daemon):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
