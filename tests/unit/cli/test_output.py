# SPDX-License-Identifier: Apache-2.0
"""Text for people: human sizes, tables, key/value lines, the status summary.

The status summary is checked on a document recorded from a real cluster
(``rbd-driver --json status`` on a dev cluster with two disks in ``vms``,
``data/collector-status.json``), and on that document made sick.
"""

from __future__ import annotations

import copy
import io
import json
import pathlib
from typing import Any

import pytest

from rbd_driver.cli.disks import cleanup_text, ls_text
from rbd_driver.cli.health import status_text
from rbd_driver.cli.output import fields, human_size, progress_bar, table

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
RECORDED = json.loads((pathlib.Path(__file__).parents[1] / "data" / "collector-status.json")
                      .read_text())


@pytest.mark.parametrize("value, text", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1 KiB"),
    (1536, "1.5 KiB"),
    (10239, "10 KiB"),  # 9.999 KiB: "10.00 KiB" and "10.0 KiB" are too wide, as in Ceph
    (MIB - 1, "1024 KiB"),  # one byte short of 1 MiB stays in KiB, as rbd ls -l shows it
    (MIB - 512, "1024 KiB"),
    (64 * MIB, "64 MiB"),
    (96 * MIB + MIB // 2, "96 MiB"),  # 96.5: no room for a decimal; ties to even
    (int(1.2 * GIB), "1.2 GiB"),
    (GIB + GIB // 2, "1.5 GiB"),
    (GIB + GIB // 4, "1.2 GiB"),  # 1.25: two decimals are too wide
    (GIB - 1, "1024 MiB"),
    (5 * (1 << 40), "5 TiB"),
    (1 << 70, "1024 EiB"),  # no unit above EiB
    (None, "-"),
])
def test_human_size_at_unit_boundaries(value: int | None, text: str) -> None:
    assert human_size(value) == text


def test_table_aligns_columns_under_their_header() -> None:
    lines = table(["NAME", "SIZE", "PARENT"],
                  [["a-long-disk-name", "64 MiB", None], ["b", "1.2 GiB", "images/g@snap"]],
                  right=(1,))
    assert lines == [
        "NAME                 SIZE  PARENT",
        "a-long-disk-name   64 MiB  -",
        "b                 1.2 GiB  images/g@snap",
    ]
    assert all(line == line.rstrip() for line in lines)


def test_fields_never_print_a_json_dict() -> None:
    lines = fields({"entity": "client.compute", "caps": {"mon": "profile rbd"},
                    "pools": [{"name": "vms", "created": False}], "chain": ["a", "b"],
                    "size": 3 * GIB, "data_bytes": 1023, "keyring": None, "seconds": 1.5})
    assert lines == [
        "entity:     client.compute",
        "caps:",
        "  mon: profile rbd",
        "pools:",
        "  - name:    vms",
        "    created: no",
        "chain:      a, b",
        "size:       3 GiB",
        "data bytes: 1023 B",
        "keyring:    -",
        "seconds:    1.5 s",
    ]
    assert not any("{" in line for line in lines)


def test_status_summary_of_a_recorded_document() -> None:
    assert status_text(RECORDED) == [
        "health:   HEALTH_OK",
        "cluster:  75df1d3a-ce14-43cb-b911-71b25d591324",
        "mon:      1 daemons, 1 in quorum (a)",
        "osd:      1 osds: 1 up, 1 in",
        "pgs:      25 pgs: 25 active+clean",
        "",
        "POOLS:",
        "  NAME                    STORED     USED  MAX AVAIL  OBJECTS",
        "  rbd                       19 B     19 B    3.8 GiB        1",
        "  vms                    4.1 KiB  4.1 KiB    3.8 GiB       10",
        "  device_health_metrics      0 B      0 B    3.8 GiB        0",
        "  images                 4.1 KiB  4.1 KiB    3.8 GiB        7",
        "",
        "IMAGES:",
        "  POOL  IMAGES  PROVISIONED   USED",
        "  vms        2      200 MiB  4 MiB",
        "",
        "collected 2026-11-29T06:11:41.557711+00:00 in 0.044 s",
    ]


def test_status_summary_puts_health_checks_first_and_lists_errors() -> None:
    doc: dict[str, Any] = copy.deepcopy(RECORDED)
    cluster = doc["cluster"]
    cluster["health"] = {"status": "HEALTH_WARN", "checks": {
        "POOL_NO_REDUNDANCY": {"severity": "HEALTH_WARN",
                               "summary": "3 pool(s) have no replicas configured"},
        "OSD_DOWN": {"severity": "HEALTH_WARN", "summary": "1 osds down"}}}
    cluster["osds"] = {"total": 3, "up": 2, "in": 3}
    cluster["pgs"] = {"total": 32, "by_state": {"active+clean": 20, "active+undersized": 12},
                      "all_active_clean": False}
    doc["images"] = []
    doc["errors"] = ["images: time bound reached after 3 of 9 images in pool vms"]
    doc["complete"] = False
    lines = status_text(doc)
    assert lines[:5] == [
        "health:   HEALTH_WARN",
        "          OSD_DOWN: 1 osds down (HEALTH_WARN)",
        "          POOL_NO_REDUNDANCY: 3 pool(s) have no replicas configured (HEALTH_WARN)",
        "cluster:  75df1d3a-ce14-43cb-b911-71b25d591324",
        "mon:      1 daemons, 1 in quorum (a)",
    ]
    assert "osd:      3 osds: 2 up, 3 in" in lines
    assert "pgs:      32 pgs: 20 active+clean, 12 active+undersized" in lines
    assert "IMAGES:" not in lines
    assert lines[-4:] == ["ERRORS:", "  images: time bound reached after 3 of 9 images in pool vms",
                          "", "collected 2026-11-29T06:11:41.557711+00:00 in 0.044 s "
                              "(incomplete)"]


def test_status_summary_without_a_cluster_says_so() -> None:
    doc = {"timestamp": "t", "elapsed_s": 10.0, "complete": False, "cluster": None,
           "pools": [], "images": [], "errors": ["cluster: timed out"]}
    assert status_text(doc) == ["health:   unknown (the cluster did not answer)", "",
                                "ERRORS:", "  cluster: timed out", "",
                                "collected t in 10.0 s (incomplete)"]


def test_ls_is_a_table_with_human_sizes() -> None:
    disks = [{"pool": "vms", "name": "inst-1_disk", "provisioned": 10 * GIB, "used": 64 * MIB,
              "parent": "images/ubuntu@snap"},
             {"pool": "vms", "name": "b", "provisioned": 1023, "used": 0, "parent": None}]
    assert ls_text(disks) == [
        "NAME           SIZE    USED  PARENT",
        "inst-1_disk  10 GiB  64 MiB  images/ubuntu@snap",
        "b            1023 B     0 B  -",
    ]
    assert ls_text([]) == []


def test_cleanup_says_what_stayed_and_why_one_report_per_instance() -> None:
    one = {"removed": ["u1_disk"], "trashed": {"u1_disk.config": "has clones: vms/x"},
           "failed": {"u1_swap": "permission denied"},
           "busy": {"u1_eph": "client.4123 at 10.0.0.1:0/99"}}
    assert cleanup_text(one) == [
        "removed  u1_disk",
        "trashed  u1_disk.config  (why: has clones: vms/x)",
        "busy     u1_eph  (held by: client.4123 at 10.0.0.1:0/99)",
        "failed   u1_swap  (why: permission denied)",
    ]
    empty = {"removed": [], "trashed": {}, "failed": {}, "busy": {}}
    several = {"ok": False, "instances": {"u1": one, "u2": empty}}
    assert cleanup_text(several) == [
        "instance u1: disks left behind",
        *["  " + line for line in cleanup_text(one)],
        "instance u2: ok",
        "  nothing to remove",
    ]
    assert cleanup_text({"would_remove": ["u1_disk"], "pool": "vms"}) == [
        "would remove  vms/u1_disk"]
    assert cleanup_text({"would_remove": {"u1": [], "u2": ["u2_disk"]}, "pool": "vms"}) == [
        "instance u1:", "  nothing to remove", "instance u2:", "  would remove  vms/u2_disk"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    assert progress_bar(True, io.StringIO()) is None
    assert progress_bar(False, _Tty()) is None
    out = _Tty()
    show = progress_bar(True, out)
    assert show is not None
    show(32 * MIB, 64 * MIB)
    show(64 * MIB, 64 * MIB)
    text = out.getvalue()
    assert " 50.0%    32 MiB of 64 MiB" in text and "100.0%    64 MiB of 64 MiB" in text
    assert text.endswith("\n") and text.count("\n") == 1
