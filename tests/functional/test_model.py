# SPDX-License-Identifier: Apache-2.0
"""Randomized model test: random operation sequences, checked against the Ceph CLI.

After every step the library's view (images, snapshots, protection, sizes,
parents) must equal what ``rbd ls``, ``rbd snap ls`` and ``rbd info`` say, and
after the final cleanup nothing of the run may remain (images, snapshots,
trash entries).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rbd_driver import exception
from rbd_driver.ops.backup import BackupManager

INSTANCES = ["i0", "i1", "i2"]
SNAPS = ["s0", "s1"]


@pytest.fixture
def model_env(backend, ceph_admin, pools):
    """Runs once per clone format; on format 2 the golden's snapshot is not protected."""
    driver = backend.driver("rbd")
    golden = f"model-golden-{uuid.uuid4().hex[:6]}"
    driver.create(golden, 16 << 20, pool=pools.images)
    with driver.client.open_image(pools.images, golden) as image:
        image.write(b"golden", 0)
    driver.create_snap(golden, "snap", protect=pools.format == 1, pool=pools.images)
    yield backend, ceph_admin, f"rbd://{driver.fsid}/{pools.images}/{golden}/snap", golden, pools
    assert driver.remove_image(golden, pool=pools.images).removed == [golden]


def test_random_sequences_match_the_ceph_cli(model_env, tmp_path) -> None:
    backend, ceph_admin, url, golden, pools = model_env
    run = uuid.uuid4().hex[:6]
    backups = BackupManager(backend.driver("rbd"), str(tmp_path / "backups"), retention=100)

    class Model(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = f"m{run}{uuid.uuid4().hex[:4]}"
            self.disks: dict[str, dict[str, Any]] = {}  # instance -> expected state
            self.last_backup: dict[str, str] = {}  # instance -> snapshot of its latest backup

        def disk(self, inst: str) -> Any:
            return backend.by_name(f"{self.prefix}{inst}", "disk")

        @rule(inst=st.sampled_from(INSTANCES))
        def launch(self, inst: str) -> None:
            self.disk(inst).direct_fetch("img", {"disk_format": "raw"}, [{"url": url}])
            self.disks.setdefault(inst, {"size": 16 << 20, "snaps": {}, "parent": True})

        @precondition(lambda self: self.disks)
        @rule(data=st.data(), snap=st.sampled_from(SNAPS), protect=st.booleans())
        def snapshot(self, data: Any, snap: str, protect: bool) -> None:
            inst = data.draw(st.sampled_from(sorted(self.disks)))
            if snap in self.disks[inst]["snaps"]:
                with pytest.raises(exception.ImageExists):
                    self.disk(inst).create_snap(snap, protect=protect)
                return
            self.disk(inst).create_snap(snap, protect=protect)
            self.disks[inst]["snaps"][snap] = protect

        @precondition(lambda self: any(d["snaps"] for d in self.disks.values()))
        @rule(data=st.data(), force=st.booleans())
        def remove_snapshot(self, data: Any, force: bool) -> None:
            inst = data.draw(st.sampled_from(sorted(i for i, d in self.disks.items() if d["snaps"])))
            snap = data.draw(st.sampled_from(sorted(self.disks[inst]["snaps"])))
            if self.disks[inst]["snaps"][snap] and not force:
                with pytest.raises(exception.ImageBusy, match="protected"):
                    self.disk(inst).remove_snap(snap)
                return
            self.disk(inst).remove_snap(snap, force=force)
            del self.disks[inst]["snaps"][snap]

        @precondition(lambda self: self.disks)
        @rule(data=st.data(), grow=st.integers(min_value=0, max_value=3))
        def resize(self, data: Any, grow: int) -> None:
            inst = data.draw(st.sampled_from(sorted(self.disks)))
            size = self.disks[inst]["size"] + grow * (4 << 20)
            self.disk(inst).resize_image(size)
            self.disks[inst]["size"] = size

        @precondition(lambda self: self.disks)
        @rule(data=st.data(), incremental=st.booleans())
        def backup(self, data: Any, incremental: bool) -> None:
            inst = data.draw(st.sampled_from(sorted(self.disks)))
            name = f"{self.prefix}{inst}_disk"
            if incremental and self.last_backup.get(inst) not in self.disks[inst]["snaps"]:
                with pytest.raises(exception.BackupChainBroken):
                    backups.incremental_backup(name)
                return
            made = backups.incremental_backup(name) if incremental else backups.full_backup(name)
            snap = made.snapshot["name"]
            protected = {s["name"]: s["protected"]
                         for s in backend.driver("rbd").list_snaps(name)}[snap]
            self.disks[inst]["snaps"][snap] = protected
            self.last_backup[inst] = snap

        @precondition(lambda self: self.disks)
        @rule(data=st.data())
        def flatten(self, data: Any) -> None:
            inst = data.draw(st.sampled_from(sorted(self.disks)))
            self.disk(inst).flatten()
            self.disks[inst]["parent"] = False

        @precondition(lambda self: self.disks)
        @rule(data=st.data())
        def cleanup(self, data: Any) -> None:
            inst = data.draw(st.sampled_from(sorted(self.disks)))
            report = backend.backend("rbd").cleanup_instance(
                backend.conf, f"{self.prefix}{inst}", driver=backend.driver("rbd"))
            assert report.removed == [f"{self.prefix}{inst}_disk"] and report.ok
            del self.disks[inst]

        @invariant()
        def library_equals_cli(self) -> None:
            ours = sorted(n for n in backend.driver("rbd").list_images() if n.startswith(self.prefix))
            cli = sorted(n for n in ceph_admin("rbd", "ls", pools.vms) if n.startswith(self.prefix))
            assert ours == cli == sorted(f"{self.prefix}{i}_disk" for i in self.disks)
            for inst, expected in self.disks.items():
                name = f"{self.prefix}{inst}_disk"
                snaps = {s["name"]: s["protected"] for s in backend.driver("rbd").list_snaps(name)}
                cli_snaps = {s["name"]: s["protected"] == "true"
                             for s in ceph_admin("rbd", "snap", "ls", f"{pools.vms}/{name}")}
                assert snaps == cli_snaps == expected["snaps"]
                info = ceph_admin("rbd", "info", f"{pools.vms}/{name}")
                assert info["size"] == self.disk(inst).get_disk_size() == expected["size"]
                assert ("parent" in info) == (self.disk(inst).parent_info() is not None) \
                    == expected["parent"]

        def teardown(self) -> None:
            for inst in list(self.disks):
                backend.backend("rbd").cleanup_instance(backend.conf, f"{self.prefix}{inst}",
                                                        driver=backend.driver("rbd"))
            left = [n for n in ceph_admin("rbd", "ls", pools.vms) if n.startswith(self.prefix)]
            trash = [e for e in ceph_admin("rbd", "trash", "ls", pools.vms) or []
                     if e["name"].startswith(self.prefix)]
            assert left == [] and trash == []

    Model.TestCase.settings = settings(max_examples=3, stateful_step_count=8, deadline=None,
                                       suppress_health_check=list(HealthCheck))
    Model.TestCase().runTest()
    # Nothing of the run remains, and the golden has no children left.
    assert not [n for n in ceph_admin("rbd", "ls", pools.vms) if n.startswith(f"m{run}")]
    assert ceph_admin("rbd", "children", f"{pools.images}/{golden}@snap") == []
