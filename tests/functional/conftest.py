# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.testing.local_cluster import ClusterState, make_conf

# Records every process-spawning event while `spawned` is armed. Audit hooks
# cannot be removed, so one hook is installed for the whole session.
_SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork",
                 "os.forkpty", "pty.spawn")
_spawn_log: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _spawn_log is not None and event in _SPAWN_EVENTS:
        _spawn_log.append(f"{event} {args[:2]!r}")


sys.addaudithook(_audit)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/functional talks to a real cluster.
    for item in items:
        if "tests/functional/" in str(item.fspath):
            item.add_marker(pytest.mark.functional)


@pytest.fixture
def spawned() -> Iterator[Callable[[], list[str]]]:
    """Arm the audit hook; the callable returns what was spawned since."""
    global _spawn_log
    _spawn_log = []
    log = _spawn_log
    try:
        yield lambda: list(log)
    finally:
        _spawn_log = None


@pytest.fixture(scope="session")
def ceph_admin(ceph_cluster: ClusterState) -> Callable[..., Any]:
    """Run the Ceph CLI as admin, the independent oracle; JSON output is parsed."""

    def run(tool: str, *args: str, check: bool = True) -> Any:
        proc = subprocess.run(
            [tool, "-c", ceph_cluster.conf_path, *args, "--format", "json"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)}: {proc.stderr}")
        out = proc.stdout.strip()
        return json.loads(out) if out else None

    return run


@pytest.fixture
def backend(rbd_conf: cfg.ConfigOpts) -> Iterator[imagebackend.Backend]:
    with imagebackend.Backend(rbd_conf) as backend:
        yield backend


@pytest.fixture
def instance_uuid() -> str:
    return str(uuid.uuid4())


# -- clone formats ---------------------------------------------------------------


@dataclass(frozen=True)
class ClonePools:
    """A pool pair whose clones have one format: goldens in ``images``, disks in ``vms``."""

    format: int
    vms: str
    images: str


CLONE_POOLS = {1: ClonePools(1, "vms", "images"), 2: ClonePools(2, "vms-v2", "images-v2")}


def _admin(ceph_cluster: ClusterState, tool: str, *args: str) -> None:
    """Run a Ceph CLI command as admin that prints nothing worth parsing."""
    proc = subprocess.run([tool, "-c", ceph_cluster.conf_path, *args],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)}: {proc.stderr}")


def _clone_format_seen(ceph_cluster: ClusterState, ceph_admin: Callable[..., Any],
                       pools: ClonePools) -> int:
    """Clone a throwaway snapshot from ``pools.images`` into ``pools.vms`` with the
    rbd CLI and return the format ``rbd info`` shows (``clone-child``: format 2)."""
    name = f"format-probe-{uuid.uuid4().hex[:8]}"
    parent = f"{pools.images}/{name}"
    _admin(ceph_cluster, "rbd", "create", "--size", "4M", parent)
    _admin(ceph_cluster, "rbd", "snap", "create", f"{parent}@s")
    _admin(ceph_cluster, "rbd", "snap", "protect", f"{parent}@s")
    try:
        _admin(ceph_cluster, "rbd", "clone", f"{parent}@s", f"{pools.vms}/{name}")
        info = ceph_admin("rbd", "info", f"{pools.vms}/{name}")
        _admin(ceph_cluster, "rbd", "rm", f"{pools.vms}/{name}")
    finally:
        _admin(ceph_cluster, "rbd", "snap", "unprotect", f"{parent}@s")
        _admin(ceph_cluster, "rbd", "snap", "purge", parent)
        _admin(ceph_cluster, "rbd", "rm", parent)
    return 2 if "clone-child" in info.get("op_features", []) else 1


@pytest.fixture(scope="session")
def clone_pools(ceph_cluster: ClusterState, ceph_admin: Callable[..., Any]) -> dict[int, ClonePools]:
    """Pool pairs for clone format 1 and 2 on the session cluster, checked by a probe clone.

    The cluster is set to ``require_min_compat_client = mimic``, as real
    clusters are, so ``rbd_default_clone_format = auto`` would give format 2
    everywhere; each pool pins its format in its own config (pool metadata
    ``conf_rbd_default_clone_format``, which librbd reads from the pool a clone
    is created in). ``rbd`` (the image cache) stays with ``vms`` on format 1.
    """
    existing = {p["poolname"] for p in ceph_admin("ceph", "osd", "lspools")}
    for pools in CLONE_POOLS.values():
        for pool in (pools.vms, pools.images):
            if pool not in existing:
                _admin(ceph_cluster, "ceph", "osd", "pool", "create", pool, "8", "8")
                _admin(ceph_cluster, "ceph", "osd", "pool", "application", "enable", pool, "rbd")
                _admin(ceph_cluster, "rbd", "pool", "init", pool)
    pins = {"vms": 1, "images": 1, "rbd": 1, CLONE_POOLS[2].vms: 2, CLONE_POOLS[2].images: 2}
    for pool, fmt in pins.items():
        if pool in existing or pool in (CLONE_POOLS[2].vms, CLONE_POOLS[2].images):
            _admin(ceph_cluster, "rbd", "config", "pool", "set", pool,
                   "rbd_default_clone_format", str(fmt))
    _admin(ceph_cluster, "ceph", "osd", "set-require-min-compat-client", "mimic")
    for fmt, pools in CLONE_POOLS.items():
        seen = _clone_format_seen(ceph_cluster, ceph_admin, pools)
        assert seen == fmt, f"{pools} clones with format {seen}, not {fmt}"
    return CLONE_POOLS


@pytest.fixture(params=[1, 2], ids=["clone-v1", "clone-v2"])
def clone_format(request: pytest.FixtureRequest) -> int:
    """Run the test once per clone format; ``rbd_conf`` then uses that format's pools."""
    return int(request.param)


@pytest.fixture
def pools(clone_format: int, clone_pools: dict[int, ClonePools]) -> ClonePools:
    """The pool pair of this run's clone format."""
    return clone_pools[clone_format]


@pytest.fixture
def rbd_conf(rbd_conf: cfg.ConfigOpts, request: pytest.FixtureRequest) -> cfg.ConfigOpts:
    """The plugin's conf; in a test run per clone format, pointing at that format's vms pool."""
    if "clone_format" in request.fixturenames:
        pools = request.getfixturevalue("pools")
        rbd_conf.set_override("pool", pools.vms, group="rbd")
    return rbd_conf


def conf_for(ceph_cluster: ClusterState, pools: ClonePools) -> cfg.ConfigOpts:
    """A fresh conf as the non-admin user with ``pools.vms`` as its pool."""
    return make_conf(ceph_cluster, pool=pools.vms)
