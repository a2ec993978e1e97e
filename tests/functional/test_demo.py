# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver --json demo``: the whole demo on its own throwaway cluster.

The demo starts and stops its own cluster (and its own libvirtd), so the
checks are on its report and on what it leaves: no daemon of that cluster,
and not its directory. The guest's line is what the guest read from its disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rbd_driver.testing.hypervisor import qemu_unavailable_reason

pytestmark = pytest.mark.functional


def _daemons_of(directory: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if directory.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_demo_json_report() -> None:
    proc = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--json", "throwaway", "demo",
                           "--instances", "3"],
                          capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    launches = report["launches"]
    assert len(launches) == 3 and len({item["disk"] for item in launches}) == 3
    for item in launches:
        assert item["parent"] == "images/golden-raw@snap", item
        assert item["ms"] > 0
    assert report["median_clone_ms"] == sorted(i["ms"] for i in launches)[1]
    assert "qcow2" in report["refusal"]
    assert report["fallback_copy"]["size"] > 0
    assert "protocol='rbd'" in report["libvirt_xml"] or 'protocol="rbd"' in report["libvirt_xml"]
    guest = report["guest"]
    if qemu_unavailable_reason() is None:
        # The guest read the golden's boot sector from its clone, through QEMU's librbd.
        assert guest["line"].endswith("data=rbd-driver demo golden image"), guest
        assert guest["line"].startswith(f"RG disk vda sectors={(1 << 30) // 512} "), guest
        assert guest["s"] > 0
    else:
        assert "skipped" in guest
    assert report["cleanup"]["failed"] == {} and report["cleanup"]["busy"] == {}
    assert report["left_in_vms"] == 0
    directory = os.path.dirname(report["cluster_conf"])
    assert not os.path.exists(directory), "the demo left its cluster directory"
    assert _daemons_of(directory) == [], "the demo left daemons running"
