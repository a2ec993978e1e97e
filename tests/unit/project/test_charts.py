# SPDX-License-Identifier: Apache-2.0
"""benchmarks/charts.py draws every benchmark's result document as SVG charts.

The script runs as its users run it (a process, on result documents in a
directory), here on small synthetic documents shaped as each benchmark script
writes them (``bench_clone.py``: ``samples_ms``; ``bench_datapath.py``:
``samples`` of dicts with ``wall``; ``bench_backup.py``: ``samples_s``;
``bench_fleet.py``: ``results``). The SVGs are judged by an XML parser: the
text a reader sees (titles, series labels, medians computed here) and one dot
per sample.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest

pytest.importorskip("matplotlib",
                    reason="the bench extra is not installed: pip install -e '.[bench]'")

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "charts.py"
SVG = "{http://www.w3.org/2000/svg}"


def _env(commit: str, date: str) -> dict[str, Any]:
    return {"date_utc": date, "git": {"commit": commit, "modified_since_commit": False},
            "cpus": 2}


def _runs(walls: list[float], **extra: float) -> list[dict[str, float]]:
    return [{"wall": w, "cpu": w / 3, **extra} for w in walls]


CLONE = {
    "environment": _env("c10ae01", "2026-11-29T05:26:47+00:00"),
    "series": {}, "ratios": {},
    "samples_ms": {
        "direct_fetch": [30.0, 35.0, 40.0, 31.0], "rbd_clone_cli": [120.0, 110.0, 130.0, 125.0],
        "librbd_clone": [38.0, 41.0, 45.0, 39.0], "direct_fetch_spare": [9.0, 10.0, 12.0, 11.0],
        "spare_refill": [50.0, 60.0, 58.0, 59.0], "spare_all_in": [70.0, 75.0, 72.0, 74.0],
        "spare_burst": [5.0, 20.0, 40.0], "direct_fetch_1g": [50.0, 52.0],
        "direct_fetch_100g": [38.0, 39.0, 40.0]},
}
DATAPATH = {
    "environment": _env("da7a0a7", "2026-11-29T05:41:00+00:00"),
    "import": {}, "export": {},
    "samples": {
        "import": {"ours": _runs([1.0, 1.1, 0.9]), "fresh": _runs([1.3, 1.4, 1.2]),
                   "rbd": _runs([1.8, 1.9, 1.7]), "qemu": _runs([1.4, 1.5, 1.3]),
                   "bench": _runs([2.6, 2.5, 2.7], mib_s=400.0)},
        "export": {"ours": _runs([2.1, 2.0, 2.2], fsync_after=0.0),
                   "fresh": _runs([1.5, 1.6, 1.55], fsync_after=0.0),
                   "rbd": _runs([1.9, 2.0, 1.95], fsync_after=0.2),
                   "qemu": _runs([1.7, 1.6, 1.75], fsync_after=0.2)},
        "convert": {"direct": _runs([2.4, 2.5, 2.6]), "local": _runs([5.0, 5.1, 4.9])},
        "sweep": {"import": {}, "export": {}}, "rss": {},
        "start_cost_s": {"ours": [0.004, 0.005, 0.0046], "fresh": [0.020, 0.021, 0.019],
                         "rbd": [0.064, 0.060, 0.070], "qemu": [0.058, 0.050, 0.060]}},
}
BACKUP = {
    "environment": _env("bac0b0b", "2026-11-29T05:28:02+00:00"),
    "samples_s": {
        "full_backup": [10.7, 17.0, 9.0], "full_backup_no_fsync": [8.4, 8.9, 11.5],
        "rbd_export": [14.9, 15.9, 10.2], "rbd_export_fsync": [15.7, 16.3, 10.5],
        "incremental_backup": [0.129, 0.121, 0.112],
        "rbd_export_diff_fsync": [0.195, 0.115, 0.156],
        "incremental_backup_own_snapshot": [1.66, 1.54, 1.55],
        "rbd_snap_export_diff_cycle": [1.52, 1.37, 2.19], "snapshot_create_remove": [1.51, 1.51, 1.53]},
}
FLEET = {
    "benchmark": "bench_fleet", "environment": _env("f1ee7ed", "2026-11-29T06:10:00+00:00"),
    "args": {}, "targets": [],
    "results": {
        "bulk": {"instances": 100, "concurrency": 8, "ours_s": [2.0, 2.2, 2.1],
                 "cli_s": [12.0, 13.0, 12.5]},
        "pool": {"pool_images": 10000, "samples_s": {"small": [0.020, 0.021, 0.022],
                                                     "big": [0.021, 0.022, 0.020],
                                                     "big_full_list": [0.30, 0.31, 0.29]}},
        "storm": {"one_thread": {"p50_ms": 30.0}}},
}
DOCS = {"bench_clone": CLONE, "bench_datapath": DATAPATH, "bench_backup": BACKUP,
        "bench_fleet": FLEET}

#: For each chart: the series labels (the samples they come from) it must show.
EXPECTED: dict[str, list[tuple[str, list[float]]]] = {
    "clone_launch": [
        ("ours: direct_fetch (a librbd clone per launch)", CLONE["samples_ms"]["direct_fetch"]),
        ("rbd clone CLI (a process per disk)", CLONE["samples_ms"]["rbd_clone_cli"]),
        ("bare librbd RBD().clone() (floor, no checks)", CLONE["samples_ms"]["librbd_clone"])],
    "clone_spares": [
        ("ours: claim of a ready spare", CLONE["samples_ms"]["direct_fetch_spare"]),
        ("ours: its refill afterwards (background)", CLONE["samples_ms"]["spare_refill"]),
        ("ours: claim + refill, all told", CLONE["samples_ms"]["spare_all_in"]),
        ("ours: launches back to back (spares run out)", CLONE["samples_ms"]["spare_burst"]),
        ("ours: direct_fetch, a clone per launch", CLONE["samples_ms"]["direct_fetch"]),
        ("rbd clone CLI (a process per disk)", CLONE["samples_ms"]["rbd_clone_cli"])],
    "clone_size": [
        ("ours: direct_fetch, 1 GiB golden", CLONE["samples_ms"]["direct_fetch_1g"]),
        ("ours: direct_fetch, 100 GiB golden", CLONE["samples_ms"]["direct_fetch_100g"])],
}
_s = DATAPATH["samples"]
for _op, _fn in (("import", "import_to_image()"), ("export", "export_from_image()")):
    _rbd = "rbd import --image-format 2" if _op == "import" else "rbd export"
    _peers = [(_rbd, [r["wall"] for r in _s[_op]["rbd"]]),
              ("qemu-img convert -W -m 16", [r["wall"] for r in _s[_op]["qemu"]])]
    EXPECTED[f"datapath_{_op}"] = [
        (f"ours: {_fn}, warm connection", [r["wall"] for r in _s[_op]["ours"]]), *_peers,
        (f"ours: {_fn}, new connection", [r["wall"] for r in _s[_op]["fresh"]]), *_peers]
EXPECTED["datapath_start_cost"] = [
    (label, [v * 1000 for v in _s["start_cost_s"][key]]) for label, key in (
        ("ours: open on the warm connection", "ours"), ("ours: a new RadosClient", "fresh"),
        ("rbd info (a process)", "rbd"), ("qemu-img info (a process)", "qemu"))]
EXPECTED["datapath_convert"] = [
    ("ours: direct (convert_via = direct)", [r["wall"] for r in _s["convert"]["direct"]]),
    ("ours: local raw file, then import (convert_via = local)",
     [r["wall"] for r in _s["convert"]["local"]])]
_b = BACKUP["samples_s"]
EXPECTED["backup_full"] = [
    ("ours: full_backup() (default, fsynced)", _b["full_backup"]),
    ("rbd export + fsync", _b["rbd_export_fsync"]),
    ("ours: full_backup(), backup_fsync = false", _b["full_backup_no_fsync"]),
    ("rbd export", _b["rbd_export"])]
EXPECTED["backup_incremental"] = [
    ("ours: incremental_backup(snapshot=...)", [v * 1000 for v in _b["incremental_backup"]]),
    ("rbd export-diff + fsync", [v * 1000 for v in _b["rbd_export_diff_fsync"]])]
EXPECTED["backup_incremental_own_snapshot"] = [
    ("ours: incremental_backup(), own snapshot + retention",
     _b["incremental_backup_own_snapshot"]),
    ("rbd snap create, export-diff + fsync, snap rm", _b["rbd_snap_export_diff_cycle"]),
    ("the monitor alone: librbd snapshot create + remove", _b["snapshot_create_remove"])]
_f = FLEET["results"]
EXPECTED["fleet_bulk_cleanup"] = [
    ("ours: cleanup_instances(), concurrency 8", _f["bulk"]["ours_s"]),
    ("rbd rm, one process per disk", _f["bulk"]["cli_s"])]
EXPECTED["fleet_pool_cleanup"] = [
    (label, [v * 1000 for v in _f["pool"]["samples_s"][key]]) for label, key in (
        ("ours: cleanup_instance, empty pool", "small"),
        ("ours: cleanup_instance, big pool", "big"),
        ("a full listing of the big pool (what it no longer does)", "big_full_list"))]

COMMITS = {"clone": "c10ae01", "datapath": "da7a0a7", "backup": "bac0b0b", "fleet": "f1ee7ed"}
UNITS = {"clone_launch": "ms", "clone_spares": "ms", "clone_size": "ms",
         "datapath_import": "s", "datapath_export": "s", "datapath_start_cost": "ms",
         "datapath_convert": "s", "backup_full": "s", "backup_incremental": "ms",
         "backup_incremental_own_snapshot": "s", "fleet_bulk_cleanup": "s",
         "fleet_pool_cleanup": "ms"}


def _write(results: pathlib.Path, docs: dict[str, Any]) -> pathlib.Path:
    results.mkdir(parents=True, exist_ok=True)
    for bench, doc in docs.items():
        (results / f"{bench}.json").write_text(json.dumps(doc), encoding="utf-8")
    return results


def _run(results: pathlib.Path, out: pathlib.Path, *extra: str,
         rc: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), "--results", str(results), "--out", str(out),
         *extra],
        capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == rc, proc.stderr
    return proc


def _texts(svg: pathlib.Path) -> list[str]:
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def _dots(svg: pathlib.Path) -> int:
    root = ET.parse(svg).getroot()
    return sum(len(list(g.iter(f"{SVG}use"))) for g in root.iter(f"{SVG}g")
               if g.get("id", "").startswith("PathCollection"))


def _median_text(samples: list[float], unit: str) -> str:
    mid = statistics.median(samples)
    return f"median {mid:.3g} {unit}" if mid < 100 else f"median {mid:.0f} {unit}"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    base = tmp_path_factory.mktemp("charts")
    results = _write(base / "results", DOCS)
    _run(results, base / "a")
    _run(results, base / "b")
    return base / "a", base / "b"


def test_every_comparison_is_drawn(drawn: tuple[pathlib.Path, pathlib.Path]) -> None:
    out, _ = drawn
    assert sorted(p.stem for p in out.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_chart_shows_every_series_and_sample(
        drawn: tuple[pathlib.Path, pathlib.Path], name: str) -> None:
    svg = drawn[0] / f"{name}.svg"
    texts = _texts(svg)
    unit = UNITS[name]
    for label, samples in EXPECTED[name]:
        assert f"{label} (n={len(samples)})" in texts, (label, texts)
        assert _median_text(samples, unit) in texts, (label, _median_text(samples, unit), texts)
    # One dot per sample of every series, in every panel.
    assert _dots(svg) == sum(len(samples) for _, samples in EXPECTED[name])
    # The title says what ran: the benchmark, the commit measured and the date.
    bench = name.split("_")[0]
    assert any(f"bench_{bench}, commit {COMMITS[bench]}, 2026-11-29" in t for t in texts), texts
    assert any(t.startswith(f"{unit}; dots: every sample") for t in texts), texts
    assert "<dc:date>" not in svg.read_text(encoding="utf-8")


def test_drawing_twice_gives_the_same_bytes(drawn: tuple[pathlib.Path, pathlib.Path]) -> None:
    a, b = drawn
    for svg in sorted(a.iterdir()):
        assert svg.read_bytes() == (b / svg.name).read_bytes(), svg.name


def test_missing_and_unreadable_documents_are_skipped(tmp_path: pathlib.Path) -> None:
    results = _write(tmp_path / "results", {"bench_clone": CLONE})
    (results / "bench_backup.json").write_text("{not json", encoding="utf-8")
    (results / "bench_fleet.json").write_text(json.dumps(
        {"environment": {"git": "f1ee7ed"}, "results": {"bulk": [1, 2], "pool": "big"}}),
        encoding="utf-8")
    proc = _run(results, tmp_path / "out")
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == [
        "clone_launch", "clone_size", "clone_spares"]
    assert f"skipped bench_datapath: no {results / 'bench_datapath.json'}" in proc.stderr
    assert "skipped bench_backup: cannot read" in proc.stderr
    assert proc.stderr.count("skipped a chart of bench_fleet: unexpected document") == 2
    assert "Traceback" not in proc.stderr


def test_older_schemas_draw_what_they_have(tmp_path: pathlib.Path) -> None:
    # As the first versions of the scripts wrote them: no git in the clone run, no
    # no-fsync full backup nor export-diff reference, no "fresh" series nor start cost.
    clone = {"environment": {"date_utc": "2026-11-21T19:01:00+00:00"},
             "samples_ms": {k: CLONE["samples_ms"][k] for k in
                            ("direct_fetch", "rbd_clone_cli", "librbd_clone")}}
    backup = {"environment": BACKUP["environment"],
              "samples_s": {k: _b[k] for k in ("full_backup", "rbd_export", "rbd_export_fsync",
                                                "incremental_backup",
                                                "rbd_snap_export_diff_cycle")}}
    datapath = {"environment": DATAPATH["environment"],
                "samples": {"import": {k: _s["import"][k] for k in ("ours", "rbd", "qemu")}}}
    fleet = {"environment": FLEET["environment"], "results": {"storm": {}}}
    results = _write(tmp_path / "results", {"bench_clone": clone, "bench_backup": backup,
                                           "bench_datapath": datapath, "bench_fleet": fleet})
    proc = _run(results, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.stem for p in out.iterdir()) == [
        "backup_full", "clone_launch", "datapath_import"]
    assert "bench_clone, commit unknown, 2026-11-21 19:01 UTC" in _texts(out / "clone_launch.svg")
    # Only the panels with both sides: the fsynced full backup, the import as met.
    assert _dots(out / "backup_full.svg") == 6
    assert "at equal terms: ours connects anew inside the timing too" not in _texts(
        out / "datapath_import.svg")
    assert "ours: incremental_backup(snapshot=...) (n=3)" not in "".join(
        t for p in out.iterdir() for t in _texts(p))  # old incremental_backup meant another thing
    for name in ("clone_spares", "clone_size", "backup_incremental", "datapath_export",
                 "fleet_bulk_cleanup"):
        assert f"skipped bench_{name.split('_')[0]}: {name}.svg: its series" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_use_draws_a_named_run_instead_of_the_latest(tmp_path: pathlib.Path) -> None:
    results = _write(tmp_path / "results", {"bench_fleet": FLEET})
    older = json.loads(json.dumps(FLEET))
    older["environment"]["git"]["commit"] = "0ld0ld0"
    (results / "bench_fleet-20261128T000000Z-0ld0ld0.json").write_text(json.dumps(older),
                                                                       encoding="utf-8")
    _run(results, tmp_path / "latest")
    _run(results, tmp_path / "named", "--use", "bench_fleet=bench_fleet-20261128T000000Z-0ld0ld0.json")
    latest = _texts(tmp_path / "latest" / "fleet_bulk_cleanup.svg")
    named = _texts(tmp_path / "named" / "fleet_bulk_cleanup.svg")
    assert any("commit f1ee7ed" in t for t in latest), latest
    assert any("commit 0ld0ld0" in t for t in named), named
    assert not any("commit f1ee7ed" in t for t in named), named


def test_use_without_a_known_benchmark_is_refused(tmp_path: pathlib.Path) -> None:
    results = _write(tmp_path / "results", {"bench_fleet": FLEET})
    proc = _run(results, tmp_path / "out", "--use", "bench_nothing=x.json", rc=2)
    assert "expected BENCH=FILE" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
