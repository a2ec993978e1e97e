# SPDX-License-Identifier: Apache-2.0
"""A new operator's first hour, step by step as the docs say (issue 26, "Must show").

Only the ``rbd-driver`` command, run as a separate process with the config
file of doc/source/provisioning.rst step 1 (``etc/rbd_driver/rbd_driver.conf``,
pointed at the test cluster), and only one admin step (provisioning):

1. the config to start from; 2. ``provision from-conf`` as admin (pools,
user, keyring where ``[rbd] keyring`` says); 3. ``secret define`` as the new
user, into a libvirtd; 4. ``golden register`` of a qcow2 file; 5. ``clone``;
6. a guest (QEMU under libvirt) reads the disk with the key from that secret;
7. ``backup create``/``ls``; 8. ``snapshot ls`` with the times ``rbd snap ls``
shows; 9. ``cleanup`` and ``golden rm``.

The oracles are outside the library: the admin ``ceph``/``rbd`` CLI, libvirt,
and a real guest that prints what it reads from its disk.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def _documented_conf(tmp: Path, ceph_conf: str, user: str, secret_uuid: str) -> Path:
    """etc/rbd_driver/rbd_driver.conf with this cluster's paths: an operator's only edits."""
    text = (ROOT / "etc" / "rbd_driver" / "rbd_driver.conf").read_text(encoding="utf-8")
    edits = {"ceph_conf": ceph_conf, "user": user,
             "keyring": str(tmp / f"ceph.client.{user}.keyring"),
             "secret_uuid": secret_uuid, "pool": "vms"}
    for option, value in edits.items():
        text, count = re.subn(rf"(?m)^{option} = .*$", f"{option} = {value}", text)
        assert count == 1, option  # the documented config has each of them
    conf = tmp / "rbd_driver.conf"
    conf.write_text(text + f"backup_dir = {tmp / 'backups'}\n")
    return conf


class Operator:
    def __init__(self, conf: Path) -> None:
        self.conf = conf

    def __call__(self, *args: str) -> Any:
        proc = subprocess.run([sys.executable, "-m", "rbd_driver.cli", "--config-file",
                               str(self.conf), *args, "--json"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "warning" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_first_hour(ceph_cluster, ceph_admin, hypervisor, guest_image, tmp_path) -> None:
    user = f"walk-{uuid.uuid4().hex[:6]}"
    secret_uuid = str(uuid.uuid4())
    conf = _documented_conf(tmp_path, ceph_cluster.conf_path, user, secret_uuid)
    run = Operator(conf)
    golden = f"walk-golden-{uuid.uuid4().hex[:6]}"
    instance = str(uuid.uuid4())
    keyring = tmp_path / f"ceph.client.{user}.keyring"
    try:
        # 2. As admin: pools, user, and its keyring where [rbd] keyring says.
        made = run("provision", "from-conf", "--admin-keyring", ceph_cluster.admin_keyring,
                   "--allow-snapshots")
        assert made["user"]["entity"] == f"client.{user}" and keyring.exists()
        assert keyring.stat().st_mode & 0o077 == 0
        caps = ceph_admin("ceph", "auth", "get", f"client.{user}")[0]["caps"]
        assert "profile rbd pool=vms" in caps["osd"] and "allow *" not in json.dumps(caps)

        # 3. On the compute host, as the new user: the libvirt secret.
        hypervisor.secret_users.append(user)  # undefined when the test ends
        defined = run("secret", "define", "--uri", hypervisor.uri)
        assert defined["secret_uuid"] == secret_uuid
        secret = hypervisor.conn.secretLookupByUUIDString(secret_uuid)
        assert secret.usageID() == f"client.{user} secret"

        # 4. A golden image from a qcow2 file (converted on the way in).
        raw = tmp_path / "golden.raw"
        marker = f"WALK-{uuid.uuid4().hex[:8]}"
        with open(raw, "wb") as f:
            f.write(marker.encode().ljust(512, b"\0"))
            f.truncate(16 * MIB)
        qcow2 = tmp_path / "golden.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True,
                       timeout=120)
        registered = run("golden", "register", golden, str(qcow2))
        assert registered["location"] == f"rbd://{ceph_cluster.fsid}/images/{golden}/snap"

        # 5. A disk for an instance, cloned from it.
        cloned = run("clone", registered["location"], instance)
        disk = f"{instance}_disk"
        assert ceph_admin("rbd", "info", f"vms/{disk}")["parent"]["image"] == golden
        assert cloned["existed"] is False

        # 6. QEMU, started by libvirt with the disk XML the library writes,
        # opens the disk as the user with the key from that secret (the
        # secret is private: only QEMU gets its value), and reads the golden.
        from rbd_driver import imagebackend
        from rbd_driver.cli.config import load_conf

        with imagebackend.Backend(load_conf([str(conf)])) as backend:
            disk_xml = backend.by_name(instance, "disk", image_type="rbd").libvirt_info()
        assert f"uuid='{secret_uuid}'" in disk_xml or f'uuid="{secret_uuid}"' in disk_xml
        vm = hypervisor.boot(guest_image, [disk_xml], ["report"])
        seen = vm.wait_for(r"^disk vda sectors=(\d+) data=(.*)$")
        assert seen[2] == marker and int(seen[1]) * 512 == 16 * MIB
        vm.wait_shutoff()
        hypervisor.destroy_guests()

        # 7. A backup of the disk, listed.
        backup = run("backup", "create", disk)
        assert [b["id"] for b in run("backup", "ls", disk)] == [backup["id"]]

        # 8. Its snapshots, with the times rbd shows.
        run("snapshot", "create", instance, "before-upgrade")
        listed = run("snapshot", "ls", instance)["snapshots"]
        theirs = {s["name"]: s["timestamp"] for s in ceph_admin("rbd", "snap", "ls", f"vms/{disk}")}
        assert {s["name"] for s in listed} == set(theirs) and "before-upgrade" in theirs
        for snap in listed:
            ours = datetime.datetime.fromisoformat(snap["timestamp"])
            rbd_time = datetime.datetime.strptime(theirs[snap["name"]], "%a %b %d %H:%M:%S %Y")
            assert abs((ours - rbd_time.astimezone(datetime.UTC)).total_seconds()) < 1

        # 9. Cleanup: the disk, then the golden image.
        run("snapshot", "rm", instance, "before-upgrade")
        removed = run("cleanup", instance)
        assert disk not in ceph_admin("rbd", "ls", "vms"), removed
        run("golden", "rm", golden)
        assert golden not in ceph_admin("rbd", "ls", "images")
    finally:
        subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "snap", "purge",
                        f"vms/{instance}_disk"], capture_output=True, timeout=120)
        for image in (f"vms/{instance}_disk", f"images/{golden}"):
            subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "snap", "unprotect",
                            f"{image}@snap"], capture_output=True, timeout=120)
            subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "snap", "purge", image],
                           capture_output=True, timeout=120)
            subprocess.run(["rbd", "-c", ceph_cluster.conf_path, "rm", image],
                           capture_output=True, timeout=120)
        subprocess.run(["ceph", "-c", ceph_cluster.conf_path, "auth", "del", f"client.{user}"],
                       capture_output=True, timeout=60)
