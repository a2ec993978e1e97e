# SPDX-License-Identifier: Apache-2.0
"""``rbd-driver`` by convention, against the real cluster (issue 26).

^C and SIGTERM in the middle of an import end with one line, exit 130 and
143, and leave no image (the admin ``rbd ls`` is the oracle); options after
the subcommand, ``--version``, and a bad ``--pool`` for ``status``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rbd_driver import __version__

# The real command (its main() with no argv installs the signal handlers); the
# progress callback of the import sends the signal once a quarter is copied.
_SIGNAL_ITSELF = r"""
import os, sys
from rbd_driver.cli import disks
sig = int(sys.argv[1])
def bar(enabled, stream=None):
    def show(done, total):
        if 4 * done >= total:
            os.kill(os.getpid(), sig)
    return show
disks.progress_bar = bar
from rbd_driver import cli
sys.argv = ["rbd-driver"] + sys.argv[2:]
sys.exit(cli.main())
"""


def _as_from_a_terminal() -> None:
    """SIGINT as a command typed in a terminal has it: delivered.

    A job started in the background by a shell without job control (``cmd &``
    in a script, as CI may run this suite) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: ^C does not reach such a
    job by design, and the command rightly keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def conf_file(ceph_cluster, tmp_path) -> Path:
    conf = tmp_path / "rbd-driver.conf"
    conf.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {ceph_cluster.user}\n"
                    f"keyring = {ceph_cluster.user_keyring}\npool = vms\n")
    return conf


def _cli(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file", str(conf),
                           *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("sig, code, line", [
    (signal.SIGINT, 130, "rbd-driver: interrupted (^C)"),
    (signal.SIGTERM, 143, "rbd-driver: terminated (SIGTERM)"),
], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_import_ends_with_one_line_and_leaves_nothing(
        conf_file, ceph_admin, tmp_path, sig, code, line) -> None:
    source = tmp_path / "big.raw"
    with open(source, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    name = f"conv-sig-{uuid.uuid4().hex[:6]}"
    before = set(ceph_admin("rbd", "ls", "vms"))
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_ITSELF, str(int(sig)), "--config-file",
                           str(conf_file), "import", str(source), name],
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=_as_from_a_terminal)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == line, proc.stderr
    assert set(ceph_admin("rbd", "ls", "vms")) == before  # no image, no temporary one


def test_options_after_the_subcommand_and_version(conf_file, ceph_admin) -> None:
    proc = _cli(conf_file, "ls", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {d["name"] for d in json.loads(proc.stdout)} == set(ceph_admin("rbd", "ls", "vms"))
    proc = _cli(conf_file, "pool-info", "-f", "value")
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "vms", proc
    version = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"rbd-driver {__version__}"


def test_status_with_a_bad_pool_exits_1_naming_it(conf_file) -> None:
    proc = _cli(conf_file, "status", "--pool", "vmss", "--no-images")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pool vmss does not exist" in lines[0], proc.stderr
    assert "vms" in lines[0].split("pools:")[1]


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_restore_without_write_caps_names_the_caps(conf_file, ceph_cluster, ceph_admin, backend,
                                                   tmp_path, fmt) -> None:
    # Finding 8: qemu-img's "error rbd create: Operation not permitted" (qcow2
    # backups are restored through qemu-img) now reads as the missing caps.
    user = f"conv-ro-{uuid.uuid4().hex[:6]}"  # as provisioned: images read-only
    keyring = tmp_path / "ro.keyring"
    subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "get-or-create",
                    f"client.{user}", "mon", "profile rbd", "osd",
                    "profile rbd pool=vms, profile rbd-read-only pool=images",
                    "-o", str(keyring)], check=True, capture_output=True, timeout=60)
    keyring.chmod(0o600)
    conf_file.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {user}\n"
                         f"keyring = {keyring}\npool = vms\n"
                         f"backup_dir = {tmp_path / 'backups'}\n")
    driver = backend.driver("rbd")
    name = f"conv-restore-{uuid.uuid4().hex[:6]}"
    driver.create(name, 8 << 20)
    try:
        made = _cli(conf_file, "backup", "create", name, "--format", fmt, "--json")
        assert made.returncode == 0, made.stderr
        backup_id = json.loads(made.stdout)["id"]
        proc = _cli(conf_file, "restore", name, backup_id, f"{name}-back", "--to-pool", "images")
        assert proc.returncode == 1, proc.stderr
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert f"client.{user} lacks cephx caps" in line and "images" in line, line
        assert not re.search(r"\.(restoring|importing|part)-", line), line  # no temporary name
        assert f"{name}-back" not in ceph_admin("rbd", "ls", "images")
    finally:
        for snap in ceph_admin("rbd", "snap", "ls", f"vms/{name}"):
            subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "snap", "rm",
                            f"vms/{name}@{snap['name']}"], capture_output=True, timeout=60)
        driver.remove_image(name)
        subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "rm", f"images/{name}-back"],
                       capture_output=True, timeout=60)
        subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "del", f"client.{user}"],
                       capture_output=True, timeout=60)
