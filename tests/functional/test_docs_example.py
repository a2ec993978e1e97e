# SPDX-License-Identifier: Apache-2.0
"""The user guide's example really runs against a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "doc/source/examples/compute_driver.py"


def _run(ceph_cluster, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), ceph_cluster.conf_path, ceph_cluster.user,
         ceph_cluster.user_keyring, url],
        capture_output=True, text=True, timeout=120)


def test_example_clones_and_cleans_up(ceph_cluster, backend) -> None:
    driver = backend.driver("rbd")
    driver.create("docs-golden", 16 << 20, pool="images")
    driver.create_snap("docs-golden", "snap", protect=True, pool="images")
    try:
        out = _run(ceph_cluster, f"rbd://{driver.fsid}/images/docs-golden/snap")
        assert out.returncode == 0, out.stderr
        assert "cloned rbd:vms/" in out.stdout and "('images', 'docs-golden', 'snap')" in out.stdout
        assert "failed {}" in out.stdout and "<disk type=\"network\"" in out.stdout
    finally:
        assert driver.remove_image("docs-golden", pool="images").removed == ["docs-golden"]


def test_example_falls_back_to_a_copy(ceph_cluster, backend) -> None:
    out = _run(ceph_cluster, "rbd://not-a-location")
    assert out.returncode == 0, out.stderr
    assert "cannot clone:" in out.stdout and "copied rbd:vms/" in out.stdout
    assert "parent None" in out.stdout
