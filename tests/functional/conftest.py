from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import imagebackend
from rbd_driver.testing.cluster import ClusterState

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
