#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Draw the benchmarks' JSON results as SVG charts: ours against each peer.

Usage::

    .venv/bin/python benchmarks/charts.py [--results benchmarks/results] \\
        [--out doc/source/_static/charts] [--use BENCH=FILE ...]

Reads the latest result of each benchmark in ``--results``
(``bench_clone.json``, ``bench_datapath.json``, ``bench_backup.json``,
``bench_fleet.json``), or the run that ``--use`` names (the one a table of
the docs quotes, say), and writes one SVG per comparison into ``--out``: every
sample of each series as a dot, a box of its quartiles, its median marked and
written out, with the unit, what was measured, and the commit and date of the
run in the title. Runs nothing; a missing file, or one written by an older
version of its script that lacks a series, is skipped with a message on
stderr (exit status 0). Needs matplotlib: ``pip install -e '.[bench]'``.

The output depends only on the JSON and matplotlib's version: the SVG ids
are salted with a constant, the font is the one matplotlib ships (text is
kept as text, not glyph paths), and no date is written into the file, so
drawing the same JSON twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("svg")

from matplotlib.figure import Figure  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
OUT_DIR = os.path.join(ROOT, "doc", "source", "_static", "charts")

#: Everything that could make two drawings of the same data differ.
STYLE = {
    "svg.hashsalt": "rbd_driver benchmark charts",
    "svg.fonttype": "none",  # text stays text: smaller, searchable, no glyph outlines
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same metrics everywhere
    "font.size": 9,
    "axes.titlesize": 9,
    "figure.titlesize": 10,
    "path.simplify": False,
}
#: Written into every SVG instead of matplotlib's defaults (which carry the date).
METADATA = {"Date": None, "Creator": "benchmarks/charts.py (matplotlib)"}

#: A horizontal box plot: ``orientation`` since matplotlib 3.10, ``vert`` (deprecated) before.
HORIZONTAL: dict[str, Any] = (
    {"orientation": "horizontal"}
    if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False})

#: Colour by role: our library, a peer tool, a reference that is neither.
COLOURS = {"ours": "#1f6fb4", "peer": "#d9720b", "ref": "#6f6f6f"}


class Skip(Exception):
    """A chart that cannot be drawn from this document (said why, not raised further)."""


@dataclasses.dataclass
class Series:
    label: str
    role: str  # a key of COLOURS
    samples: list[float]  # in the chart's unit


@dataclasses.dataclass
class Panel:
    title: str | None
    series: list[Series]


@dataclasses.dataclass
class Chart:
    name: str  # file name without .svg
    title: str  # what was measured
    unit: str  # of the value axis
    panels: list[Panel]
    note: str = ""


# -- reading the documents -------------------------------------------------------------


def dig(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...``, or None when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def values(raw: Any, scale: float, field: str = "wall") -> list[float] | None:
    """Samples as numbers in the chart's unit: a list of numbers, or of dicts with ``field``."""
    if not isinstance(raw, list) or not raw:
        return None
    out = []
    for item in raw:
        if isinstance(item, dict):
            item = item.get(field)
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return None
        if math.isfinite(item):  # json.dump writes NaN for a sample that failed
            out.append(float(item) * scale)
    return out


def series(label: str, role: str, raw: Any, scale: float, field: str = "wall") -> Series | None:
    samples = values(raw, scale, field)
    return Series(label, role, samples) if samples else None


def panel(title: str | None, subject: Series | None, *others: Series | None) -> Panel | None:
    """A panel of the series present, or None without its subject (the first series, what
    the panel is about) or anything to compare it with."""
    present = [s for s in others if s is not None]
    return Panel(title, [subject, *present]) if subject is not None and present else None


def chart(name: str, title: str, unit: str, *panels: Panel | None, note: str = "") -> Chart:
    present = [p for p in panels if p is not None]
    if not present:
        raise Skip(f"{name}.svg: its series, or every peer to compare it with, have no samples "
                   "(written by an older version of the script?)")
    return Chart(name, title, unit, present, note)


def run_label(bench: str, doc: dict[str, Any]) -> str:
    """``bench_clone, commit cea497e, 2026-11-29 05:26 UTC`` (what the run recorded)."""
    git = dig(doc, "environment", "git")
    git = git if isinstance(git, dict) else {}
    commit = str(git.get("commit") or "unknown")
    if git.get("modified_since_commit"):
        commit += " (modified)"
    date = dig(doc, "environment", "date_utc")
    try:
        when = datetime.datetime.fromisoformat(str(date)).astimezone(
            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        when = "date unknown"
    return f"{bench}, commit {commit}, {when}"


# -- the charts of each benchmark --------------------------------------------------------


def clone_charts(doc: dict[str, Any]) -> list[Callable[[], Chart]]:
    ms = dig(doc, "samples_ms") or {}

    def cli() -> Series | None:
        return series("rbd clone CLI (a process per disk)", "peer", ms.get("rbd_clone_cli"), 1)

    return [
        lambda: chart(
            "clone_launch", "Launching a disk: a clone of a golden snapshot, wall time per launch",
            "ms",
            panel(None,
                  series("ours: direct_fetch (a librbd clone per launch)", "ours",
                         ms.get("direct_fetch"), 1),
                  cli(),
                  series("bare librbd RBD().clone() (floor, no checks)", "ref",
                         ms.get("librbd_clone"), 1))),
        lambda: chart(
            "clone_spares", "Launching a disk from a ready spare (clone_spares), wall time",
            "ms",
            panel(None,
                  series("ours: claim of a ready spare", "ours", ms.get("direct_fetch_spare"), 1),
                  series("ours: its refill afterwards (background)", "ours",
                         ms.get("spare_refill"), 1),
                  series("ours: claim + refill, all told", "ours", ms.get("spare_all_in"), 1),
                  series("ours: launches back to back (spares run out)", "ours",
                         ms.get("spare_burst"), 1),
                  series("ours: direct_fetch, a clone per launch", "ref",
                         ms.get("direct_fetch"), 1),
                  cli())),
        lambda: chart(
            "clone_size", "Launching a disk: clone time against the golden image's size",
            "ms",
            panel(None,
                  series("ours: direct_fetch, 1 GiB golden", "ours",
                         ms.get("direct_fetch_1g"), 1),
                  series("ours: direct_fetch, 100 GiB golden", "ours",
                         ms.get("direct_fetch_100g"), 1))),
    ]


def datapath_charts(doc: dict[str, Any]) -> list[Callable[[], Chart]]:
    s = dig(doc, "samples") or {}

    def copy_views(op: str, verb: str, rbd: str, what: str) -> Chart:
        rows = dig(s, op) or {}
        peers = (lambda: series(f"rbd {rbd}", "peer", rows.get("rbd"), 1),
                 lambda: series("qemu-img convert -W -m 16", "peer", rows.get("qemu"), 1))
        return chart(
            f"datapath_{op}", f"{verb}: {what}, wall time per copy", "s",
            panel("as a user meets them: ours on a warm connection, a tool starts anew",
                  series(f"ours: {op}_{'to' if op == 'import' else 'from'}_image(), "
                         "warm connection", "ours", rows.get("ours"), 1),
                  *(p() for p in peers)),
            panel("at equal terms: ours connects anew inside the timing too",
                  series(f"ours: {op}_{'to' if op == 'import' else 'from'}_image(), "
                         "new connection", "ours", rows.get("fresh"), 1),
                  *(p() for p in peers)),
            note=("ours fsyncs its output inside its time; the tools do not"
                  if op == "export" else ""))

    start = dig(s, "start_cost_s") or {}
    convert = dig(s, "convert") or {}
    return [
        lambda: copy_views("import", "Import", "import --image-format 2",
                           "2 GiB sparse raw file (512 MiB of data) into a new image"),
        lambda: copy_views("export", "Export", "export",
                           "a 2 GiB image (512 MiB of data) into a local sparse file"),
        lambda: chart(
            "datapath_start_cost",
            "Fixed start cost: connect, open a 4 MiB image, read its size, close", "ms",
            panel(None,
                  series("ours: open on the warm connection", "ours", start.get("ours"), 1000),
                  series("ours: a new RadosClient", "ours", start.get("fresh"), 1000),
                  series("rbd info (a process)", "peer", start.get("rbd"), 1000),
                  series("qemu-img info (a process)", "peer", start.get("qemu"), 1000))),
        lambda: chart(
            "datapath_convert", "Converting a qcow2 image into a new RBD image, wall time",
            "s",
            panel(None,
                  series("ours: direct (convert_via = direct)", "ours", convert.get("direct"), 1),
                  series("ours: local raw file, then import (convert_via = local)", "ours",
                         convert.get("local"), 1))),
    ]


def backup_charts(doc: dict[str, Any]) -> list[Callable[[], Chart]]:
    s = dig(doc, "samples_s") or {}
    return [
        lambda: chart(
            "backup_full", "Full RAW backup of a 2 GiB disk (all written) against rbd export",
            "s",
            panel("at equal durability: fsynced",
                  series("ours: full_backup() (default, fsynced)", "ours",
                         s.get("full_backup"), 1),
                  series("rbd export + fsync", "peer", s.get("rbd_export_fsync"), 1)),
            panel("without fsync",
                  series("ours: full_backup(), backup_fsync = false", "ours",
                         s.get("full_backup_no_fsync"), 1),
                  series("rbd export", "peer", s.get("rbd_export"), 1))),
        lambda: chart(
            "backup_incremental",
            "Incremental backup of a snapshot (1 % of the disk rewritten) against rbd export-diff",
            "ms",
            panel(None,
                  series("ours: incremental_backup(snapshot=...)", "ours",
                         s.get("incremental_backup"), 1000),
                  series("rbd export-diff + fsync", "peer", s.get("rbd_export_diff_fsync"), 1000))),
        lambda: chart(
            "backup_incremental_own_snapshot",
            "Incremental backup taking its own snapshot against the CLI doing the same", "s",
            panel(None,
                  series("ours: incremental_backup(), own snapshot + retention", "ours",
                         s.get("incremental_backup_own_snapshot"), 1),
                  series("rbd snap create, export-diff + fsync, snap rm", "peer",
                         s.get("rbd_snap_export_diff_cycle"), 1),
                  series("the monitor alone: librbd snapshot create + remove", "ref",
                         s.get("snapshot_create_remove"), 1)),
            note="each call after a pause of the monitor's commit cycle"),
    ]


def fleet_charts(doc: dict[str, Any]) -> list[Callable[[], Chart]]:
    res = dig(doc, "results") or {}
    bulk = dig(res, "bulk") or {}
    pool = dig(res, "pool") or {}
    pool_s = dig(pool, "samples_s") or {}
    return [
        lambda: chart(
            "fleet_bulk_cleanup",
            f"Bulk cleanup: removing {bulk.get('instances', '?')} one-disk instances, "
            "wall time per round", "s",
            panel(None,
                  series(f"ours: cleanup_instances(), concurrency {bulk.get('concurrency', '?')}",
                         "ours", bulk.get("ours_s"), 1),
                  series("rbd rm, one process per disk", "peer", bulk.get("cli_s"), 1))),
        lambda: chart(
            "fleet_pool_cleanup",
            f"cleanup_instance in a pool of {pool.get('pool_images', '?')} images "
            "against an empty pool", "ms",
            panel(None,
                  series("ours: cleanup_instance, empty pool", "ours", pool_s.get("small"), 1000),
                  series("ours: cleanup_instance, big pool", "ours", pool_s.get("big"), 1000),
                  series("a full listing of the big pool (what it no longer does)", "ref",
                         pool_s.get("big_full_list"), 1000))),
    ]


BENCHMARKS: dict[str, Callable[[dict[str, Any]], list[Callable[[], Chart]]]] = {
    "bench_clone": clone_charts,
    "bench_datapath": datapath_charts,
    "bench_backup": backup_charts,
    "bench_fleet": fleet_charts,
}


# -- drawing -----------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def draw(c: Chart, subtitle: str, path: str) -> None:
    """One SVG: per panel, a horizontal box and every sample of each series, first on top."""
    rows = sum(len(p.series) for p in c.panels)
    height = 1.1 + 0.5 * rows + 0.45 * len(c.panels) + (0.2 if c.note else 0)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8.5, height), layout="constrained")
        axes = fig.subplots(len(c.panels), 1, sharex=True, squeeze=False)[:, 0]
        top = max(max(s.samples) for p in c.panels for s in p.series)
        for ax, p in zip(axes, c.panels, strict=True):
            _draw_panel(ax, p, c.unit)
            ax.set_xlim(0, top * 1.3 or 1.0)
        fig.supxlabel(f"{c.unit}; dots: every sample (in run order, bottom to top), "
                      "box: quartiles, whiskers: min to max, black bar: median", fontsize=8)
        fig.suptitle("\n".join([c.title, subtitle] + ([c.note] if c.note else [])))
        fig.savefig(path, format="svg", metadata=METADATA)


def _draw_panel(ax: Any, p: Panel, unit: str) -> None:
    pos = list(range(len(p.series), 0, -1))  # first series on top
    colours = [COLOURS[s.role] for s in p.series]
    box = ax.boxplot([s.samples for s in p.series], positions=pos, widths=0.55, **HORIZONTAL,
                     whis=(0, 100), showfliers=False, patch_artist=True,
                     medianprops={"color": "black", "linewidth": 2.2})
    for patch, colour in zip(box["boxes"], colours, strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.25)
    for y, s, colour in zip(pos, p.series, colours, strict=True):
        n = len(s.samples)
        # Spread the dots over the box's height in the order they were taken: no random jitter.
        ys = [y + 0.36 * ((i / (n - 1)) - 0.5) if n > 1 else y for i in range(n)]
        ax.scatter(s.samples, ys, s=11, color=colour, alpha=0.85, linewidths=0, zorder=3)
        mid = statistics.median(s.samples)
        ax.annotate(f"median {_fmt(mid)} {unit}", (max(s.samples), y), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(pos, [f"{s.label} (n={len(s.samples)})" for s in p.series])
    for tick, colour in zip(ax.get_yticklabels(), colours, strict=True):
        tick.set_color(colour)
    ax.set_ylim(0.4, len(p.series) + 0.6)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if p.title:
        ax.set_title(p.title, loc="left")


# -- main ----------------------------------------------------------------------------------


def draw_benchmark(bench: str, results: str, out: str, run: str | None = None) -> list[str]:
    """Draw one benchmark's charts; return the files written (nothing if it is skipped).

    ``run`` names one result document in ``results`` (``bench_fleet-<when>-<commit>.json``)
    to draw instead of the latest, ``<bench>.json``.
    """
    path = os.path.join(results, run or f"{bench}.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        print(f"skipped {bench}: no {path}", file=sys.stderr)
        return []
    except (OSError, ValueError) as exc:
        print(f"skipped {bench}: cannot read {path}: {exc}", file=sys.stderr)
        return []
    if not isinstance(doc, dict):
        print(f"skipped {bench}: {path} is not a result document", file=sys.stderr)
        return []
    written = []
    subtitle = run_label(bench, doc)
    for build in BENCHMARKS[bench](doc):
        try:
            c = build()
        except Skip as exc:
            print(f"skipped {bench}: {exc}", file=sys.stderr)
            continue
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # an unforeseen shape
            print(f"skipped a chart of {bench}: unexpected document: {exc!r}", file=sys.stderr)
            continue
        target = os.path.join(out, f"{c.name}.svg")
        draw(c, subtitle, target)
        written.append(target)
        print(f"wrote {target}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS_DIR,
                        help="where the <bench>.json files are (default benchmarks/results)")
    parser.add_argument("--out", default=OUT_DIR,
                        help="where the SVGs go (default doc/source/_static/charts)")
    parser.add_argument("--use", action="append", default=[], metavar="BENCH=FILE",
                        help="draw BENCH (bench_fleet, ...) from FILE in --results, a run "
                             "other than the latest, e.g. the one a page's table quotes; "
                             "repeatable")
    args = parser.parse_args(argv)
    runs: dict[str, str] = {}
    for item in args.use:
        bench, sep, name = item.partition("=")
        if not sep or bench not in BENCHMARKS or not name:
            parser.error(f"--use {item!r}: expected BENCH=FILE with BENCH one of "
                         f"{', '.join(BENCHMARKS)}")
        runs[bench] = name
    os.makedirs(args.out, exist_ok=True)
    for bench in BENCHMARKS:
        draw_benchmark(bench, args.results, args.out, runs.get(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
