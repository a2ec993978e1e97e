# SPDX-License-Identifier: Apache-2.0
"""The compute-host install of doc/source/install.rst, done literally (issue 26).

A fresh ``--system-site-packages`` virtualenv in a temporary directory, a
plain (not editable) ``pip install`` of a copy of this source tree, then the
installed ``rbd-driver``: ``--version``, and a launch (a clone of a golden
image) against the test cluster as its non-admin user, checked with the
admin ``rbd`` CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import rbd_driver

ROOT = Path(__file__).resolve().parents[2]


def _source_copy(dest: Path) -> Path:
    """The tracked files of the checkout as they are now (so the build leaves it clean)."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                           check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_pip_install_into_a_fresh_venv_then_launch(ceph_cluster, ceph_admin, backend,
                                                   tmp_path) -> None:
    source = _source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300, env=env)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)], check=True,
                   timeout=600, env=env, cwd=tmp_path)
    command = str(venv / "bin" / "rbd-driver")
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import rbd_driver; print(rbd_driver.__file__)"],
                           capture_output=True, text=True, check=True, env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # not this checkout
    version = subprocess.run([command, "--version"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == (
        f"rbd-driver {rbd_driver.__version__}")

    conf = tmp_path / "rbd_driver.conf"
    conf.write_text(f"[rbd]\nceph_conf = {ceph_cluster.conf_path}\nuser = {ceph_cluster.user}\n"
                    f"keyring = {ceph_cluster.user_keyring}\npool = vms\n")
    driver = backend.driver("rbd")
    golden = f"install-golden-{uuid.uuid4().hex[:6]}"
    driver.create(golden, 16 << 20, pool="images")
    driver.create_snap(golden, "snap", protect=True, pool="images")
    instance = str(uuid.uuid4())
    try:
        launched = subprocess.run(
            [command, "--config-file", str(conf), "clone",
             f"rbd://{driver.fsid}/images/{golden}/snap", instance, "--json"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
        assert launched.returncode == 0, launched.stderr
        info = ceph_admin("rbd", "info", f"vms/{instance}_disk")
        assert info["parent"]["pool"] == "images" and info["parent"]["image"] == golden
    finally:
        backend.backend("rbd").cleanup_instance(backend.conf, instance, driver=driver)
        driver.remove_image(golden, pool="images")
