# SPDX-License-Identifier: Apache-2.0
"""A second monitor for a running throwaway cluster: the monitor addresses change.

:func:`extra_monitor` adds monitor ``b`` on new loopback ports to a cluster of
:mod:`rbd_driver.testing.local_cluster` the way an operator adds one by hand (the
current monmap and the mon. keyring, ``ceph-mon --mkfs``, then the daemon
started with its public address, which asks the quorum to add it), waits
until both monitors are in quorum, and on exit removes it from the monmap
(``ceph mon remove``), stops it by its PID and deletes its data, also when
the test failed. Clients connected before see the new monmap by themselves;
what a test can check is who hands out the addresses (disk XML).

Why not move monitor ``a`` instead: a one-monitor cluster cannot change its
only monitor's address while running (the monmap must be rewritten with the
monitor stopped), and every client, the test's admin CLI included, reads
``mon host`` from the ceph.conf; a second monitor changes the list of
addresses without breaking either.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from rbd_driver.testing.local_cluster import ClusterState

__all__ = ["extra_monitor"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ceph(state: ClusterState, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(["ceph", "-c", state.conf_path, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ceph {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _quorum(state: ClusterState) -> list[str]:
    try:
        out = _ceph(state, "quorum_status", "--format", "json", "--connect-timeout", "10",
                    timeout=30)
    except (RuntimeError, subprocess.TimeoutExpired):
        return []
    return list(json.loads(out).get("quorum_names", []))


@contextlib.contextmanager
def extra_monitor(state: ClusterState, name: str = "b",
                  timeout: float = 120) -> Iterator[dict[str, str]]:
    """Run monitor ``name`` beside the cluster's; yield its ``{'v1': addr, 'v2': addr}``."""
    v1, v2 = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    data = os.path.join(state.directory, "mon", f"ceph-{name}")
    work = tempfile.mkdtemp(prefix="extra-mon-", dir=state.directory)
    proc: subprocess.Popen[bytes] | None = None
    try:
        monmap = os.path.join(work, "monmap")
        _ceph(state, "mon", "getmap", "-o", monmap)
        subprocess.run(["ceph-mon", "-c", state.conf_path, "--mkfs", "-i", name,
                        "--monmap", monmap, "--keyring",
                        os.path.join(state.directory, "mon.keyring")],
                       check=True, capture_output=True, timeout=60)
        with open(os.path.join(state.directory, "log", f"mon.{name}.out"), "ab") as log:
            proc = subprocess.Popen(
                ["ceph-mon", "-f", "-c", state.conf_path, "-i", name,
                 "--public-addrv", f"[v2:{v2},v1:{v1}]"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while name not in _quorum(state):
            if proc.poll() is not None:
                raise RuntimeError(f"mon.{name} exited with {proc.returncode}; see "
                                   f"{state.directory}/log/mon.{name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mon.{name} not in quorum after {timeout} s")
            time.sleep(1)
        yield {"v1": v1, "v2": v2}
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                _ceph(state, "mon", "remove", name, timeout=120)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
