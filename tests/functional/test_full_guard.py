# SPDX-License-Identifier: Apache-2.0
"""The test plugin stops a run at once when the cluster is full.

A full cluster blocks writes instead of failing them. The plugin
(rbd_driver.testing.fixtures) must stop the run before a test's fixtures,
session-scoped ones included, write to it; otherwise each test hangs until
its timeout. Judged on a throwaway cluster made full by the monitor's own
ratios, with inner pytest runs pointed at it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

from rbd_driver.testing.local_cluster import LocalCluster

INNER_CONFTEST = 'pytest_plugins = ["rbd_driver.testing.fixtures"]\n'

# The first test makes the cluster full, as a runaway test might; the second
# needs a session fixture that writes, as the suite's clone_pools does.
INNER_TEST = textwrap.dedent('''
    import json
    import time

    import pytest
    import rados


    def _admin(ceph_cluster):
        client = rados.Rados(conffile=ceph_cluster.conf_path, rados_id="admin")
        client.connect()
        return client


    def _mon(client, prefix, **args):
        ret, out, err = client.mon_command(
            json.dumps({"prefix": prefix, "format": "json", **args}), b"")
        assert ret == 0, err
        return json.loads(out) if out.strip() else None


    @pytest.fixture(scope="session")
    def written(ceph_cluster):
        client = _admin(ceph_cluster)
        try:
            with client.open_ioctx("vms") as ioctx:
                ioctx.write_full("guard-probe", b"x")
        finally:
            client.shutdown()


    def test_first_fills_the_cluster(ceph_cluster):
        client = _admin(ceph_cluster)
        try:
            # 1 MiB used is far past a full ratio of 0.00001 (43 KB of 4 GiB).
            with client.open_ioctx("vms") as ioctx:
                ioctx.write_full("filler", b"f" * (1 << 20))
            for cmd, ratio in (("osd set-nearfull-ratio", 0.000001),
                               ("osd set-backfillfull-ratio", 0.000005),
                               ("osd set-full-ratio", 0.00001)):
                _mon(client, cmd, ratio=ratio)
            deadline = time.monotonic() + 60
            while not any("full" in o["state"] for o in _mon(client, "osd dump")["osds"]):
                assert time.monotonic() < deadline, "the OSD was never marked full"
                time.sleep(0.5)
        finally:
            client.shutdown()


    def test_second_needs_a_fixture_that_writes(written):
        pass
''')


def _inner_run(directory: pathlib.Path, conf: str) -> tuple[str, int]:
    directory.mkdir()
    (directory / "conftest.py").write_text(INNER_CONFTEST)
    (directory / "test_inner.py").write_text(INNER_TEST)
    proc = subprocess.run(
        # A blocked write would hang: pytest-timeout ends a broken guard's run.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-o", "timeout=60",
         str(directory)],
        cwd=directory, env={**os.environ, "RBD_DRIVER_TEST_CEPH_CONF": conf},
        capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    # Stopped by the guard, not by pytest-timeout after a blocked write.
    assert "Timeout" not in out, out
    return out, proc.returncode


def test_a_full_cluster_stops_the_run_before_any_fixture_writes(tmp_path) -> None:
    with LocalCluster(osds=1, pools=("vms",)) as cluster:
        assert cluster.state is not None
        conf = cluster.state.conf_path
        # Filled during the run: stopped before the session fixture that writes.
        during, rc_during = _inner_run(tmp_path / "during", conf)
        # Full from the start (a reused dev cluster): stopped before any test.
        before, rc_before = _inner_run(tmp_path / "before", conf)
    assert rc_during == 3, during
    assert "test_first_fills_the_cluster PASSED" in during, during
    # The second test was started (-v names it) but neither ran nor errored.
    assert "1 passed in" in during, during
    assert "test_second_needs_a_fixture_that_writes PASSED" not in during, during
    assert "ERROR" not in during and "FAILED" not in during, during
    assert "the test cluster is full (osd.0, pool vms" in during, during
    assert "OSD_FULL" in during, during
    assert rc_before == 3, before
    assert "PASSED" not in before, before
    assert "the test cluster is full (osd.0" in before, before
