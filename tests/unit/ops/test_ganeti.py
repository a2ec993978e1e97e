# SPDX-License-Identifier: Apache-2.0
"""The Ganeti ExtStorage provider (ops/ganeti.py, cli/extstorage.py, cli/ganeti.py) on fakes.

Each script's logic runs against the fake librbd; the oracle is the fake
cluster's state (images, parents, sizes, snapshots, metadata), read around
the library.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from typing import Any

import pytest
from oslo_config import cfg

from rbd_driver import exception
from rbd_driver.cli import extstorage
from rbd_driver.cli import main as cli_main
from rbd_driver.ops.ganeti import ACTIONS, METADATA_KEY, MIB, ExtStorage
from rbd_driver.ops.ganeti_install import install_provider
from rbd_driver.storage.rbd_utils import RBDDriver
from rbd_driver.testing.fixtures import FakeEnv

GOLDEN = 64 * MIB
QCOW2_HEAD = b"QFI\xfb" + (3).to_bytes(4, "big") + bytes(64)


class Env(FakeEnv):
    """A fake cluster with pools vms/images, the provider on it, and a golden image."""

    def __init__(self, tmp_path: Any) -> None:
        keyring = tmp_path / "ceph.client.compute.keyring"
        keyring.write_text("[client.compute]\n\tkey = AQBSECRETSECRETSECRETSECRET==\n")
        super().__init__(tmp_path, keyring=str(keyring), options={"pool": "vms"},
                         driver_options={"destroy_retries": 1})
        self.fsid = self.driver.fsid
        self.es = ExtStorage(self.conf, self.driver)

    def golden(self, name: str = "golden", data: bytes = b"golden marker",
               size: int = GOLDEN) -> str:
        image = self.cluster.add_image("images", name, size, data=data)
        image.create_snap("snap", protect=True)
        return f"rbd://{self.fsid}/images/{name}/snap"

    def run(self, action: str, **env: str) -> str:
        return self.es.run(action, env)

    def vms(self) -> list[str]:
        return sorted(self.cluster.pool("vms").image_names())


# -- create ------------------------------------------------------------------------


def test_create_blank_makes_an_image_of_vol_size(env) -> None:
    assert env.run("create", VOL_NAME="uuid.ext.disk0", VOL_SIZE="1024") == ""
    image = env.cluster.image("vms", "uuid.ext.disk0")
    assert image.size == 1024 * MIB and image.parent is None


@pytest.mark.parametrize("by", ["url", "golden name"])
def test_create_clones_origin_and_grows_it_to_vol_size(env, by) -> None:
    url = env.golden()
    env.run("create", VOL_NAME="d0", VOL_SIZE="1024", EXTP_ORIGIN=url if by == "url" else "golden")
    image = env.cluster.image("vms", "d0")
    assert image.parent == ("images", "golden", "snap")
    assert image.size == 1024 * MIB
    assert image.read(0, 13) == b"golden marker"
    assert env.cluster.image("images", "golden").size == GOLDEN


def test_create_of_the_golden_size_is_a_plain_clone(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="64", EXTP_ORIGIN=env.golden())
    assert env.cluster.image("vms", "d0").size == GOLDEN


def test_create_in_the_pool_of_extp_pool(env) -> None:
    env.cluster.add_pool("other")
    env.conf.set_override("pool", "other", group="rbd")
    driver = RBDDriver(env.driver.client, pool="other")
    ExtStorage(env.conf, driver).run("create", {"VOL_NAME": "d0", "VOL_SIZE": "8"})
    assert env.cluster.pool("other").image_names() == ["d0"] and env.vms() == []


def _refused(env: Env, **variables: str) -> str:
    with pytest.raises(exception.RbdDriverError) as info:
        env.run("create", VOL_NAME="d0", **variables)
    assert env.vms() == []  # nothing left behind
    return str(info.value)


def test_create_refuses_a_vol_size_below_the_golden_naming_both(env) -> None:
    message = _refused(env, VOL_SIZE="32", EXTP_ORIGIN=env.golden())
    assert "32 MiB" in message and "64 MiB" in message and "at least 64 MiB" in message


def test_create_refuses_a_missing_golden_naming_it(env) -> None:
    message = _refused(env, VOL_SIZE="1024", EXTP_ORIGIN="missing")
    assert "images/missing@snap" in message and "does not exist" in message


def test_create_refuses_a_golden_of_another_cluster(env) -> None:
    env.golden()
    other = "rbd://00000000-0000-4000-8000-000000000000/images/golden/snap"
    message = _refused(env, VOL_SIZE="1024", EXTP_ORIGIN=other)
    assert "not in this cluster" in message and env.fsid in message


@pytest.mark.parametrize("origin,reason", [
    ("rbd://only/two", "malformed location"),
    ("images/golden", "neither an rbd://"),
    ("-x", "neither an rbd://"),
])
def test_create_refuses_a_malformed_origin(env, origin, reason) -> None:
    env.golden()
    assert reason in _refused(env, VOL_SIZE="1024", EXTP_ORIGIN=origin)


def test_create_refuses_a_golden_whose_bytes_are_not_raw(env) -> None:
    message = _refused(env, VOL_SIZE="1024", EXTP_ORIGIN=env.golden(data=QCOW2_HEAD))
    assert "the data is qcow2" in message


def test_create_refuses_an_unreadable_golden(env) -> None:
    url = env.golden()
    env.cluster.fail_next("Image.__init__", env.rbd.PermissionError("denied"), times=None)
    message = _refused(env, VOL_SIZE="1024", EXTP_ORIGIN=url)
    assert "cannot be opened read-only as client.compute" in message


def test_a_failed_grow_after_the_clone_leaves_nothing(env) -> None:
    url = env.golden()
    env.cluster.fail_next("Image.resize", env.rbd.IOError("disk on fire"))
    assert "disk on fire" in _refused(env, VOL_SIZE="1024", EXTP_ORIGIN=url)


def test_create_never_touches_an_existing_volume(env) -> None:
    env.cluster.add_image("vms", "d0", MIB, data=b"keep me")
    with pytest.raises(exception.ImageExists):
        env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    assert env.cluster.image("vms", "d0").read(0, 7) == b"keep me"


@pytest.mark.parametrize("size", ["", "0", "-5", "1.5", "ten"])
def test_create_refuses_a_bad_vol_size(env, size) -> None:
    assert "VOL_SIZE" in _refused(env, VOL_SIZE=size)


def test_create_follows_the_clone_depth_policy(env) -> None:
    env.conf.set_override("max_clone_depth", 1, group="rbd")
    env.conf.set_override("clone_depth_soft_limit", 1, group="rbd")
    env.golden()
    env.run("create", VOL_NAME="d1", VOL_SIZE="64", EXTP_ORIGIN="golden")
    env.driver.create_snap("d1", "snap", protect=True)
    url = f"rbd://{env.fsid}/vms/d1/snap"
    env.run("create", VOL_NAME="d2", VOL_SIZE="64", EXTP_ORIGIN=url)
    assert env.cluster.image("vms", "d2").parent is None  # depth 2 > 1: flattened
    assert env.cluster.image("vms", "d2").read(0, 13) == b"golden marker"


# -- attach / detach ---------------------------------------------------------------


def test_attach_prints_an_empty_device_line_and_the_kvm_uri_without_a_key(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    out = env.run("attach", VOL_NAME="d0")
    assert out == (f"\nkvm:rbd:vms/d0:id=compute:conf={env.ceph_conf}"
                   f":keyring={env.keyring}\n")
    assert "SECRET" not in out and "key=" not in out and "," not in out


def test_attach_of_a_missing_volume_fails(env) -> None:
    with pytest.raises(exception.ImageNotFound, match="vms/d0"):
        env.run("attach", VOL_NAME="d0")


def test_attach_refuses_a_uri_with_a_comma(env) -> None:
    env.cluster.add_image("vms", "d,0", MIB)
    with pytest.raises(exception.InvalidArgument, match="QEMU's -drive"):
        env.run("attach", VOL_NAME="d,0")


def test_kernelspace_attach_maps_through_krbd(env, monkeypatch) -> None:
    from rbd_driver.storage import krbd

    mapped: list[tuple[str, str]] = []

    class Kernel:
        def map(self, pool: str, image: str) -> str:
            mapped.append((pool, image))
            return "/dev/rbd7"

    monkeypatch.setattr(krbd.KernelRbd, "from_conf", classmethod(lambda cls, *a, **k: Kernel()))
    env.conf.set_override("access", "kernelspace", group="rbd")
    env.cluster.add_image("vms", "d0", MIB)
    assert env.run("attach", VOL_NAME="d0").split("\n")[0] == "/dev/rbd7"
    assert mapped == [("vms", "d0")]


def test_kernelspace_detach_unmaps_a_mapped_volume_only(env, monkeypatch) -> None:
    from rbd_driver.storage import krbd

    unmapped: list[tuple[str, str]] = []

    class Kernel:
        def find(self, pool: str, image: str) -> Any:
            return object() if image == "d0" else None

        def unmap(self, pool: str, image: str) -> None:
            unmapped.append((pool, image))

    monkeypatch.setattr(krbd.KernelRbd, "from_conf", classmethod(lambda cls, *a, **k: Kernel()))
    env.conf.set_override("access", "kernelspace", group="rbd")
    env.run("detach", VOL_NAME="d0")
    env.run("detach", VOL_NAME="other")
    assert unmapped == [("vms", "d0")]


def test_detach_in_userspace_has_nothing_to_undo(env) -> None:
    env.cluster.add_image("vms", "d0", MIB)
    assert env.run("detach", VOL_NAME="d0") == ""
    assert env.vms() == ["d0"]


# -- remove ------------------------------------------------------------------------


def test_remove_removes_the_image_and_a_missing_one_is_removed(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="64", EXTP_ORIGIN=env.golden())
    env.run("remove", VOL_NAME="d0")
    assert env.vms() == []
    env.run("remove", VOL_NAME="d0")
    env.driver.close()
    env.cluster.assert_no_open_handles()


def test_remove_of_an_open_disk_fails_naming_the_watcher_and_leaves_it(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    ioctx = env.driver.client.get_ioctx("vms")
    guest = env.rbd.Image(ioctx, "d0")  # a client with the disk open: a watcher
    try:
        with pytest.raises(exception.ImageInUse) as info:
            env.run("remove", VOL_NAME="d0")
        assert "client." in str(info.value) and "192.0.2.1" in str(info.value)
        assert env.vms() == ["d0"]
        with env.driver.client.ioctx("vms") as io:
            assert list(env.rbd.RBD().trash_list(io)) == []
    finally:
        guest.close()


# -- grow, setinfo, verify -------------------------------------------------------------


def test_grow_resizes_to_vol_new_size_and_never_shrinks(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    env.run("grow", VOL_NAME="d0", VOL_SIZE="8", VOL_NEW_SIZE="20")
    assert env.cluster.image("vms", "d0").size == 20 * MIB
    with pytest.raises(exception.DiskSizeTooSmall):
        env.run("grow", VOL_NAME="d0", VOL_SIZE="20", VOL_NEW_SIZE="10")
    assert env.cluster.image("vms", "d0").size == 20 * MIB


def test_setinfo_keeps_vol_metadata_as_image_metadata(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    env.run("setinfo", VOL_NAME="d0", VOL_METADATA="originstname+inst1.example.test")
    assert env.cluster.image("vms", "d0").metadata == {
        METADATA_KEY: "originstname+inst1.example.test"}


def test_verify_names_a_missing_pool_or_golden(env) -> None:
    env.golden()
    assert env.run("verify", EXTP_ORIGIN="golden") == ""
    with pytest.raises(exception.ImageUnacceptable, match="images/gone@snap"):
        env.run("verify", EXTP_ORIGIN="gone")
    driver = RBDDriver(env.driver.client, pool="nopool")
    with pytest.raises(exception.PoolNotFound, match="nopool"):
        ExtStorage(env.conf, driver).run("verify", {})


# -- snapshot (gnt-backup export) -----------------------------------------------------


def test_snapshot_makes_a_point_in_time_volume_that_remove_takes_away(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    disk = env.cluster.image("vms", "d0")
    disk.write(b"before")
    env.run("snapshot", VOL_NAME="d0", VOL_SNAPSHOT_NAME="d0.snap", VOL_SNAPSHOT_SIZE="8")
    disk.write(b"AFTER!")
    snap = env.cluster.image("vms", "d0.snap")
    assert snap.read(0, 6) == b"before" and snap.parent == ("vms", "d0", "d0.snap")
    env.run("remove", VOL_NAME="d0.snap")
    assert env.vms() == ["d0"] and disk.snap_by_name("d0.snap") is None
    env.run("remove", VOL_NAME="d0")
    assert env.vms() == []


def test_a_failed_snapshot_leaves_nothing(env) -> None:
    env.run("create", VOL_NAME="d0", VOL_SIZE="8")
    env.cluster.fail_next("RBD.clone", env.rbd.IOError("no"))
    with pytest.raises(exception.RbdDriverError):
        env.run("snapshot", VOL_NAME="d0", VOL_SNAPSHOT_NAME="d0.snap")
    assert env.vms() == ["d0"] and env.cluster.image("vms", "d0").snaps == {}


def test_an_unknown_action_is_refused(env) -> None:
    with pytest.raises(exception.InvalidArgument, match="unknown action"):
        env.run("open", VOL_NAME="d0")


# -- the entry point and the installer ------------------------------------------------


def test_entry_point_prints_the_librarys_reason_on_stderr_and_exits_1(monkeypatch,
                                                                     capsys) -> None:
    def refuse(action: str, files: list[str], env: Any) -> str:
        raise exception.ImageInUse(pool="vms", image="d0", watchers="client.4170 at 10.0.0.1:0/1")

    monkeypatch.setattr(extstorage, "run", refuse)
    monkeypatch.setenv("VOL_NAME", "d0")
    assert extstorage.main(["remove", "--config-file", "/nonexistent.conf"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("rbd_driver remove d0: RBD image vms/d0 is in use by client.4170")


def test_entry_point_writes_attachs_lines_to_stdout(monkeypatch, capsys) -> None:
    monkeypatch.setattr(extstorage, "run", lambda *a: "\nkvm:rbd:vms/d0:id=u:conf=/c\n")
    assert extstorage.main(["attach"]) == 0
    assert capsys.readouterr().out == "\nkvm:rbd:vms/d0:id=u:conf=/c\n"


def test_entry_point_takes_the_pool_from_extp_pool(monkeypatch, tmp_path) -> None:
    seen: dict[str, str] = {}

    class Backend:
        def __init__(self, conf: cfg.ConfigOpts) -> None:
            seen["pool"] = conf.rbd.pool

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def driver(self, name: str) -> Any:
            return None

    monkeypatch.setattr(extstorage.imagebackend, "Backend", Backend)
    monkeypatch.setattr(extstorage.ExtStorage, "run", lambda self, action, env: "")
    extstorage.run("verify", [], {"EXTP_POOL": "ganeti"})
    assert seen["pool"] == "ganeti"


def test_install_writes_every_script_and_parameters_list(tmp_path, capsys) -> None:
    target = tmp_path / "rbd_driver"
    assert cli_main(["ganeti", "install", "--dir", str(target),
                     "--config-file", "/etc/x/rbd.conf"]) == 0
    assert "rbd_driver" in capsys.readouterr().out
    assert sorted(os.listdir(target)) == sorted([*ACTIONS, "parameters.list"])
    for action in ACTIONS:
        path = target / action
        assert os.stat(path).st_mode & stat.S_IXUSR
        text = path.read_text()
        assert f"-m rbd_driver.cli.extstorage {action} --config-file /etc/x/rbd.conf" in text
        assert sys.executable in text and "key" not in text.lower()
    params = [line.split()[0] for line in (target / "parameters.list").read_text().splitlines()]
    assert params == ["origin", "pool"]


def test_an_installed_script_runs_the_entry_point(tmp_path) -> None:
    """The script Ganeti runs reaches the library: a bad action variable is refused
    in the library's words before any cluster is needed."""
    install_provider(str(tmp_path), str(tmp_path / "missing.conf"))
    result = subprocess.run([str(tmp_path / "create")], env={"VOL_NAME": "d0", "VOL_SIZE": "1"},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("rbd_driver create d0: ")
