# SPDX-License-Identifier: Apache-2.0
"""The throwaway cluster itself: its keyrings, and the throwaway command."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from rbd_driver.testing.local_cluster import _pid_alive


def test_keyrings_are_private(ceph_cluster) -> None:
    for path in (ceph_cluster.user_keyring, ceph_cluster.admin_keyring):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_user_has_profile_rbd_caps_only(ceph_cluster) -> None:
    out = subprocess.run(
        ["ceph", "-c", ceph_cluster.conf_path, "auth", "get", f"client.{ceph_cluster.user}",
         "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    caps = json.loads(out)[0]["caps"]
    assert caps == {"mon": "profile rbd", "osd": "profile rbd", "mgr": "profile rbd"}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rbd_driver.cli", "throwaway", *args],
        capture_output=True, text=True, timeout=240, env=env,
    )


def test_dev_cluster_command_start_status_stop(tmp_path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    started = _cli("start", env=env)
    assert started.returncode == 0, started.stderr
    conf = started.stdout.strip().splitlines()[-1]
    directory = Path(conf).parent
    state = json.loads((directory / "cluster.json").read_text())
    pids = list(state["pids"].values())
    try:
        assert len(pids) == 3 and all(_pid_alive(p) for p in pids)
        health = subprocess.run(["ceph", "-c", conf, "-s", "--format", "json"],
                                capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(health.stdout)["health"]["status"] == "HEALTH_OK"
        status = _cli("status", "--json", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["health"] == "HEALTH_OK"
    finally:
        stopped = _cli("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not directory.exists()
    assert not any(_pid_alive(p) for p in pids)
    # Status of a stopped cluster is an error, not a crash.
    after = _cli("status", conf, env=env)
    assert after.returncode == 1 and "no dev cluster" in after.stderr


def test_status_without_any_cluster_is_a_clear_error(tmp_path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "empty"))
    result = _cli("status", env=env)
    assert result.returncode == 1
    assert "no dev cluster has been started" in result.stderr
    assert "Traceback" not in result.stderr


def test_session_cluster_is_stopped_when_pytest_gets_sigterm(tmp_path) -> None:
    """A CI job killed with SIGTERM must not leave the session's daemons running."""
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["rbd_driver.testing.fixtures"]\n')
    marker = tmp_path / "cluster-dir"
    (tmp_path / "test_inner.py").write_text(
        "import time\n\n"
        "def test_wait(ceph_cluster):\n"
        f"    open({str(marker)!r}, 'w').write(ceph_cluster.directory)\n"
        "    time.sleep(120)\n")
    env = {k: v for k, v in os.environ.items() if k != "RBD_DRIVER_TEST_CEPH_CONF"}
    log = tmp_path / "inner.log"
    with open(log, "wb") as out:
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "/dev/null",
             "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() or not marker.read_text():
            assert inner.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the inner session never got its cluster"
            time.sleep(0.5)
        directory = marker.read_text()
        state = json.loads((Path(directory) / "cluster.json").read_text())
        pids = list(state["pids"].values())
        assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
        inner.send_signal(signal.SIGTERM)
        inner.wait(timeout=60)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    assert not Path(directory).exists(), "the cluster directory was left behind"
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")
                and directory.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
