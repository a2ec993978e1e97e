# SPDX-License-Identifier: Apache-2.0
"""Tests of the fake rados/rbd modules in rbd_driver.testing.fakes.

This is the one test module that imports the real ``rados``/``rbd``
bindings: to check the fakes export the same exception classes.
"""

from __future__ import annotations

import errno
import inspect
import json
import pickle
import threading
import time
import tracemalloc
import types
from collections.abc import Iterator
from typing import Any

import pytest

from rbd_driver.testing import fakes

MiB = 1 << 20
GiB = 1 << 30


class Env(types.SimpleNamespace):
    rados: Any
    rbd: Any
    cluster: fakes.FakeCluster
    client: Any
    ioctx: Any


@pytest.fixture
def env() -> Iterator[Env]:
    rados, rbd = fakes.make_modules(fsid="11111111-2222-3333-4444-555555555555")
    cluster = rados._cluster
    cluster.add_pool("vms")
    client = rados.Rados(rados_id="nova")
    client.connect()
    ioctx = client.open_ioctx("vms")
    yield Env(rados=rados, rbd=rbd, cluster=cluster, client=client, ioctx=ioctx)
    ioctx.close()
    client.shutdown()
    cluster.assert_no_open_handles()


def diff(image: Any, from_snap: str | None = None, **kwargs: Any) -> list[tuple[int, int, bool]]:
    extents: list[tuple[int, int, bool]] = []
    image.diff_iterate(0, image.size(), from_snap, lambda o, n, e: extents.append((o, n, e)), **kwargs)
    return extents


def exception_classes(module: Any) -> dict[str, type]:
    return {
        name: value
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }


# -- exceptions and constants, against the real bindings ---------------------------


@pytest.mark.parametrize("name", ["rados", "rbd"])
def test_exception_classes_match_real_module(name: str) -> None:
    real = pytest.importorskip(name)
    fake = fakes.make_modules()[0 if name == "rados" else 1]
    real_classes, fake_classes = exception_classes(real), exception_classes(fake)
    assert sorted(fake_classes) == sorted(real_classes)
    for cls_name, real_cls in real_classes.items():
        fake_cls = fake_classes[cls_name]
        assert fake_cls.__name__ == cls_name
        real_bases = [(b.__module__, b.__name__) for b in real_cls.__bases__]
        fake_bases = []
        for base in fake_cls.__bases__:
            if base is Exception:
                fake_bases.append(("builtins", "Exception"))
            else:  # a base must be the fake module's own class of that name
                assert base is fake_classes[base.__name__], (cls_name, base)
                fake_bases.append((name, base.__name__))
        assert fake_bases == real_bases, cls_name
        for base_name in ("Error", "OSError"):
            assert issubclass(fake_cls, fake_classes[base_name]) == issubclass(
                real_cls, real_classes[base_name]
            ), (cls_name, base_name)


@pytest.mark.parametrize("name", ["rados", "rbd"])
def test_exception_messages_and_errno_match_real_module(name: str) -> None:
    real = pytest.importorskip(name)
    fake = fakes.make_modules()[0 if name == "rados" else 1]
    for cls_name, real_cls in exception_classes(real).items():
        fake_cls = getattr(fake, cls_name)
        if cls_name == "ExtendMismatch":
            real_exc, fake_exc = real_cls("m", 5, 7), fake_cls("m", 5, 7)
            assert fake_exc.offset == real_exc.offset == 7
        elif cls_name == "Error" and name == "rbd":
            real_exc, fake_exc = real_cls("m"), fake_cls("m")
        else:
            real_exc, fake_exc = real_cls("m", errno=5), fake_cls("m", errno=5)
            assert fake_exc.errno == real_exc.errno == 5
            assert str(fake_cls("m")) == str(real_cls("m"))
        assert str(fake_exc) == str(real_exc)
        assert fake_exc.args == real_exc.args


def test_rados_and_rbd_exceptions_are_distinct_real_classes() -> None:
    rados, rbd = fakes.make_modules()
    assert rbd.Error is not rados.Error
    assert not issubclass(rbd.ImageNotFound, rados.Error)
    assert not issubclass(rados.ObjectNotFound, rbd.Error)
    with pytest.raises(rbd.OSError):
        raise rbd.ImageNotFound("gone", errno=errno.ENOENT)
    # A second cluster shares the classes, so `except rbd.X` works across fakes.
    assert fakes.make_modules()[1].ImageNotFound is rbd.ImageNotFound


def test_exceptions_pickle_round_trip() -> None:
    rados, rbd = fakes.make_modules()
    for exc in (rbd.ImageBusy("busy", errno=16), rados.TimedOut("slow", errno=110)):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc)
        assert (str(copy), copy.errno) == (str(exc), exc.errno)


def test_feature_constants_match_real_module() -> None:
    real = pytest.importorskip("rbd")
    _, fake = fakes.make_modules()
    for name in dir(real):
        if name.startswith(("RBD_FEATURE_", "RBD_FEATURES_")):
            assert getattr(fake, name) == getattr(real, name), name


# -- rados --------------------------------------------------------------------------


def test_make_modules_gives_independent_clusters() -> None:
    rados1, rbd1 = fakes.make_modules(fsid="aaaa")
    rados2, _ = fakes.make_modules()
    assert rados1._cluster is rbd1._cluster
    assert rados1._cluster is not rados2._cluster
    rados1._cluster.add_pool("only-here")
    with rados2.Rados() as client:
        assert not client.pool_exists("only-here")
    with rados1.Rados() as client:
        assert client.get_fsid() == "aaaa"
        assert client.list_pools() == ["only-here"]


def test_rados_state_machine(env: Env) -> None:
    rados = env.rados
    client = rados.Rados(name="client.glance")
    assert client.state == "configuring"
    with pytest.raises(rados.RadosStateError):
        client.get_fsid()
    client.connect()
    assert client.state == "connected"
    with pytest.raises(rados.RadosStateError):
        client.connect()
    client.shutdown()
    client.shutdown()
    assert client.state == "shutdown"
    with pytest.raises(rados.RadosStateError):
        client.list_pools()
    with pytest.raises(rados.Error, match="can't supply both"):
        rados.Rados(rados_id="a", name="client.b")
    assert env.cluster.connect_count == 2


def test_rados_conf(env: Env, tmp_path: Any) -> None:
    rados = env.rados
    client = rados.Rados(conf={"rados_osd_op_timeout": "30"})
    assert client.conf_get("rados_osd_op_timeout") == "30"
    assert client.conf_get("rbd_default_features") == "61"
    assert client.conf_get("no_such_option") is None
    client.conf_set("client mount timeout", "5")
    assert client.conf_get("client_mount_timeout") == "5"
    with pytest.raises(TypeError):
        client.conf_set("client_mount_timeout", 5)
    with pytest.raises(rados.ObjectNotFound) as info:
        client.conf_read_file(str(tmp_path / "missing.conf"))
    assert info.value.errno == errno.ENOENT
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n\tmon host = 10.0.0.1\n\tfsid = abc\n[client.nova]\n\tkeyring = /k\n")
    configured = rados.Rados(rados_id="nova", conffile=str(conf))
    assert configured.conf_get("mon_host") == "10.0.0.1"
    assert configured.conf_get("keyring") == "/k"


def test_pools_and_ioctx(env: Env) -> None:
    rados, client = env.rados, env.client
    with pytest.raises(rados.ObjectNotFound):
        client.open_ioctx("nope")
    client.create_pool("images")
    with pytest.raises(rados.ObjectExists):
        client.create_pool("images")
    assert client.pool_exists("images")
    with client.open_ioctx("images") as ioctx:
        assert ioctx.get_pool_name() == "images"
    assert ioctx.state == "closed"
    with pytest.raises(rados.IoctxStateError):
        ioctx.read("x")
    client.delete_pool("images")
    with pytest.raises(rados.ObjectNotFound):
        client.delete_pool("images")
    env.cluster.allow_pool_delete = False
    with pytest.raises(rados.PermissionError):
        client.delete_pool("vms")


def test_mon_command(env: Env) -> None:
    client = env.client
    ret, out, _ = client.mon_command(json.dumps({"prefix": "status", "format": "json"}), b"")
    assert ret == 0
    status = json.loads(out)
    assert status["fsid"] == "11111111-2222-3333-4444-555555555555"
    assert status["health"]["status"] == "HEALTH_OK"
    env.cluster.health = "HEALTH_WARN"
    ret, out, _ = client.mon_command(json.dumps({"prefix": "health"}), b"")
    assert (ret, out) == (0, b"HEALTH_WARN")
    ret, out, _ = client.mon_command(json.dumps({"prefix": "fsid", "format": "json"}), b"")
    assert json.loads(out) == {"fsid": "11111111-2222-3333-4444-555555555555"}
    ret, out, outs = client.mon_command(json.dumps({"prefix": "osd destroy"}), b"")
    assert ret == -errno.EINVAL and out == b"" and outs
    assert client.mon_command("not json", b"")[0] == -errno.EINVAL


def test_mon_df_dump_cluster_stats_and_custom_commands(env: Env) -> None:
    client, cluster = env.client, env.cluster
    cluster.add_image("vms", "disk", 8 * MiB, data=b"x" * MiB)
    env.ioctx.write_full("obj", b"12345")
    ret, out, _ = client.mon_command(json.dumps({"prefix": "df", "format": "json"}), b"")
    df = json.loads(out)
    assert ret == 0 and df["stats"]["total_bytes"] == cluster.total_bytes
    [vms] = df["pools"]
    assert (vms["name"], vms["stats"]["stored"], vms["stats"]["objects"]) == ("vms", MiB + 5, 2)
    assert client.get_cluster_stats() == {
        "kb": cluster.total_bytes // 1024,
        "kb_used": (MiB + 5 + 1023) // 1024,
        "kb_avail": (cluster.total_bytes - MiB - 5) // 1024,
        "num_objects": 2,
    }
    ret, out, _ = client.mon_command(json.dumps({"prefix": "mon dump", "format": "json"}), b"")
    [mon] = json.loads(out)["mons"]
    assert {a["type"] for a in mon["public_addrs"]["addrvec"]} == {"v1", "v2"}
    cluster.mon_commands["osd pool get"] = lambda cmd, inbuf: (0, json.dumps(cmd).encode(), "")
    ret, out, _ = client.mon_command(json.dumps({"prefix": "osd pool get", "pool": "vms"}), b"")
    assert (ret, json.loads(out)["pool"]) == (0, "vms")


def test_object_io_and_locks(env: Env) -> None:
    rados, ioctx = env.rados, env.ioctx
    ioctx.write_full("obj", b"hello world")
    ioctx.write("obj", b"W", 6)
    assert ioctx.read("obj") == b"hello World"
    assert ioctx.read("obj", 5, 6) == b"World"
    assert ioctx.stat("obj")[0] == 11
    with pytest.raises(rados.ObjectNotFound):
        ioctx.read("missing")
    with pytest.raises(TypeError):
        ioctx.write_full("obj", "text")

    ioctx.lock_exclusive("lk", "driver", "cookie-1", desc="mine")
    with pytest.raises(rados.ObjectExists):
        ioctx.lock_exclusive("lk", "driver", "cookie-1")
    with env.rados.Rados() as other_client, other_client.open_ioctx("vms") as other:
        with pytest.raises(rados.ObjectBusy):
            other.lock_exclusive("lk", "driver", "cookie-2")
        with pytest.raises(rados.ObjectNotFound):
            other.unlock("lk", "driver", "cookie-1")
    [locker] = env.cluster.lockers("vms", "lk")
    assert locker["entity"] == f"client.{env.client.get_instance_id()}"
    assert locker["cookie"] == "cookie-1"
    ioctx.unlock("lk", "driver", "cookie-1")
    assert env.cluster.lockers("vms", "lk") == []
    assert ioctx.remove_object("obj") is True
    with pytest.raises(rados.ObjectNotFound):
        ioctx.remove_object("obj")


# -- rbd basics ---------------------------------------------------------------------


def test_create_write_read_stat(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    rbd.RBD().create(ioctx, "disk", 8 * MiB)
    with pytest.raises(rbd.ImageExists):
        rbd.RBD().create(ioctx, "disk", MiB)
    assert rbd.RBD().list(ioctx) == ["disk"]
    with rbd.Image(ioctx, "disk") as image:
        assert image.write(b"abc", 4 * MiB - 1) == 3
        assert image.read(4 * MiB - 2, 5) == b"\0abc\0"
        assert image.size() == 8 * MiB
        stat = image.stat()
        assert (stat["order"], stat["obj_size"], stat["num_objs"]) == (22, 4 * MiB, 2)
        assert image.features() == 61
        assert image.get_name() == "disk"
        assert image.id() == env.cluster.image("vms", "disk").id
        assert image.read(8 * MiB - 2, 100) == b"\0\0"  # clipped at the end
        with pytest.raises(rbd.InvalidArgument):
            image.read(8 * MiB, 1)
        with pytest.raises(rbd.InvalidArgument):
            image.write(b"x", 8 * MiB)
        with pytest.raises(rbd.IncompleteWriteError):
            image.write(b"yz", 8 * MiB - 1)
        assert image.read(8 * MiB - 1, 1) == b"y"
        with pytest.raises(TypeError):
            image.write(bytearray(b"x"), 0)
    with pytest.raises(rbd.InvalidArgument, match="closed"):
        image.read(0, 1)


def test_create_validation(env: Env) -> None:
    rbd, ioctx, api = env.rbd, env.ioctx, env.rbd.RBD()
    with pytest.raises(rbd.ArgumentOutOfRange):
        api.create(ioctx, "a", MiB, order=26)
    with pytest.raises(rbd.FunctionNotSupported):
        api.create(ioctx, "a", MiB, features=1 << 20)
    with pytest.raises(rbd.InvalidArgument):
        api.create(ioctx, "a", MiB, features=rbd.RBD_FEATURE_OBJECT_MAP)
    with pytest.raises(rbd.InvalidArgument):
        api.create(ioctx, "a", MiB, old_format=True, features=rbd.RBD_FEATURE_LAYERING)
    api.create(ioctx, "small-objects", MiB, order=12, features=rbd.RBD_FEATURE_LAYERING)
    image = env.cluster.image("vms", "small-objects")
    assert (image.order, image.features) == (12, rbd.RBD_FEATURE_LAYERING)


def test_open_errors(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    with pytest.raises(rbd.ImageNotFound) as info:
        rbd.Image(ioctx, "missing")
    assert info.value.errno == errno.ENOENT
    env.cluster.add_image("vms", "disk", MiB)
    with pytest.raises(rbd.ImageNotFound):
        rbd.Image(ioctx, "disk", snapshot="nosnap")
    with pytest.raises(rbd.InvalidArgument):
        rbd.Image(ioctx)
    with pytest.raises(TypeError):
        rbd.Image(object(), "disk")
    with rbd.Image(ioctx, image_id=env.cluster.image("vms", "disk").id) as image:
        assert image.get_name() == "disk"


def test_read_only_image(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    env.cluster.add_image("vms", "disk", MiB, data=b"base")
    with rbd.Image(ioctx, "disk", read_only=True) as image:
        assert image.read(0, 4) == b"base"
        with pytest.raises(rbd.ReadOnlyImage) as info:
            image.write(b"x", 0)
        assert info.value.errno == errno.EROFS
        with pytest.raises(rbd.ReadOnlyImage):
            image.resize(2 * MiB)
        with pytest.raises(rbd.ReadOnlyImage):
            image.create_snap("s")
    with rbd.Image(ioctx, "disk") as image:
        image.create_snap("s")
        image.write(b"head", 0)
    with rbd.Image(ioctx, "disk", snapshot="s") as image:
        assert image.read(0, 4) == b"base"
        with pytest.raises(rbd.ReadOnlyImage):
            image.write(b"x", 0)
        with pytest.raises(rbd.ReadOnlyImage):
            image.discard(0, 4)
        image.set_snap(None)
        assert image.read(0, 4) == b"head"
        image.write(b"HEAD", 0)  # writable again at the head
    assert env.cluster.image("vms", "disk").read(0, 4) == b"HEAD"


def test_resize_and_discard(env: Env) -> None:
    rbd = env.rbd
    env.cluster.add_image("vms", "disk", 8 * MiB, data=b"\x01" * (8 * MiB))
    with rbd.Image(env.ioctx, "disk") as image:
        image.discard(MiB, MiB)
        assert image.read(MiB - 1, 3) == b"\x01\0\0"
        image.resize(5 * MiB)
        image.resize(8 * MiB)
        assert image.read(5 * MiB - 1, 2) == b"\x01\0"
        assert image.read(7 * MiB, 4) == bytes(4)
        with pytest.raises(rbd.InvalidArgument):
            image.resize(MiB, allow_shrink=False)
        assert image.size() == 8 * MiB


# -- snapshots, clones, flatten -----------------------------------------------------


def test_snapshots(env: Env) -> None:
    rbd = env.rbd
    env.cluster.add_image("vms", "disk", 4 * MiB, data=b"v1")
    with rbd.Image(env.ioctx, "disk") as image:
        image.create_snap("s1")
        with pytest.raises(rbd.ImageExists):
            image.create_snap("s1")
        image.write(b"v2", 0)
        image.resize(8 * MiB)
        image.create_snap("s2")
        snaps = list(image.list_snaps())
        assert [(s["name"], s["size"]) for s in snaps] == [("s1", 4 * MiB), ("s2", 8 * MiB)]
        assert set(snaps[0]) == {"id", "size", "name", "namespace"}
        assert snaps[0]["id"] < snaps[1]["id"]
        assert image.get_snap_timestamp(snaps[0]["id"]).year >= 2024
        image.set_snap("s1")
        assert (image.read(0, 2), image.size()) == (b"v1", 4 * MiB)
        image.set_snap(None)
        assert image.read(0, 2) == b"v2"
        image.rollback_to_snap("s1")
        assert (image.read(0, 2), image.size()) == (b"v1", 4 * MiB)
        with pytest.raises(rbd.ImageNotFound):
            image.rollback_to_snap("nope")
        with pytest.raises(rbd.ImageNotFound):
            image.is_protected_snap("nope")
        with pytest.raises(rbd.ImageNotFound):
            image.remove_snap("nope")
        image.protect_snap("s1")
        assert image.is_protected_snap("s1")
        with pytest.raises(rbd.ImageBusy):
            image.protect_snap("s1")
        with pytest.raises(rbd.ImageBusy):
            image.remove_snap("s1")
        image.unprotect_snap("s1")
        with pytest.raises(rbd.InvalidArgument):
            image.unprotect_snap("s1")
        image.remove_snap("s1")
        image.remove_snap("s2")
        assert list(image.list_snaps()) == []


def test_clone_reads_through_and_copies_up(env: Env) -> None:
    rbd, ioctx, cluster = env.rbd, env.ioctx, env.cluster
    parent = cluster.add_image("vms", "base", 8 * MiB, data=b"P" * 8 * MiB)
    snap = parent.create_snap("snap")
    with pytest.raises(rbd.InvalidArgument, match="protected"):
        rbd.RBD().clone(ioctx, "base", "snap", ioctx, "child")
    with pytest.raises(rbd.ImageNotFound):
        rbd.RBD().clone(ioctx, "base", "nosnap", ioctx, "child")
    snap.protected = True
    rbd.RBD().clone(ioctx, "base", "snap", ioctx, "child")
    with pytest.raises(rbd.ImageExists):
        rbd.RBD().clone(ioctx, "base", "snap", ioctx, "child")

    with rbd.Image(ioctx, "child") as child:
        assert child.parent_info() == ("vms", "base", "snap")
        assert child.size() == 8 * MiB
        assert child.features() == parent.features
        assert cluster.image("vms", "child").object_count == 0  # nothing copied yet
        assert child.read(MiB, 2) == b"PP"
        child.write(b"cc", MiB)
        assert child.read(MiB - 1, 4) == b"PccP"  # the rest of the object was copied up
        assert child.read(5 * MiB, 1) == b"P"  # other objects still read through
    with rbd.Image(ioctx, "base") as base:
        assert base.read(MiB, 2) == b"PP"  # the parent is untouched
        with pytest.raises(rbd.ImageNotFound):
            base.parent_info()
        assert base.list_children() == [("vms", "child")]
        [info] = base.list_children2()
        assert info == {
            "pool": "vms",
            "pool_namespace": "",
            "image": "child",
            "id": cluster.image("vms", "child").id,
            "trash": False,
        }
        with pytest.raises(rbd.ImageBusy):
            base.unprotect_snap("snap")
    with pytest.raises(rbd.ImageHasSnapshots):
        rbd.RBD().remove(ioctx, "base")


def test_clone_needs_layering(env: Env) -> None:
    rbd = env.rbd
    parent = env.cluster.add_image("vms", "flat", MiB, features=rbd.RBD_FEATURE_EXCLUSIVE_LOCK)
    parent.create_snap("s", protect=True)
    with pytest.raises(rbd.FunctionNotSupported):
        rbd.RBD().clone(env.ioctx, "flat", "s", env.ioctx, "child")
    with rbd.Image(env.ioctx, "flat") as image, pytest.raises(rbd.FunctionNotSupported):
        image.protect_snap("s")


def test_clone_format_2(env: Env) -> None:
    """What pacific's librbd did on a real cluster with clone format 2 (see
    tests/functional/test_rbd_backend.py): an unprotected snapshot clones; a
    protected one with clones cannot be unprotected; removing an unprotected
    one with clones moves it to the trash namespace under a new name; it goes
    with its last clone."""
    rbd, ioctx, cluster = env.rbd, env.ioctx, env.cluster
    cluster.clone_format = 2
    base = cluster.add_image("vms", "base", 8 * MiB, data=b"B" * MiB)
    base.create_snap("s")
    base.create_snap("p", protect=True)
    rbd.RBD().clone(ioctx, "base", "s", ioctx, "c1")  # unprotected: fine on v2
    rbd.RBD().clone(ioctx, "base", "p", ioctx, "c2")
    cluster.image("vms", "c1").create_snap("cs")
    rbd.RBD().clone(ioctx, "c1", "cs", ioctx, "grandchild")
    with rbd.Image(ioctx, "base") as image:
        with pytest.raises(rbd.ImageBusy):
            image.unprotect_snap("p")
        with pytest.raises(rbd.ImageBusy):  # protected: refused before anything else
            image.remove_snap("p")
        image.remove_snap("s")
        trashed, kept = image.list_snaps()
        assert trashed["namespace"] == 2 and trashed["trash"] == {"original_name": "s"}
        assert trashed["name"] != "s" and trashed["id"] == base.trashed_snaps()[0].id
        assert kept == {"id": kept["id"], "size": 8 * MiB, "name": "p", "namespace": 0}
        with pytest.raises(rbd.ImageNotFound):
            image.set_snap("s")  # the old name no longer finds it
        image.create_snap("s")  # and is free again
        image.remove_snap("s")
        assert [d["image"] for d in image.list_descendants()] == ["c1", "c2", "grandchild"]
    assert cluster.image("vms", "c1").read(0, 2) == b"BB"  # the clone still reads through
    with pytest.raises(rbd.ImageHasSnapshots):
        rbd.RBD().remove(ioctx, "base")
    rbd.RBD().trash_move(ioctx, "c1")  # a trashed clone still holds the snapshot
    assert len(base.trashed_snaps()) == 1
    with rbd.Image(ioctx, "grandchild") as grandchild:
        grandchild.flatten()
    [entry] = rbd.RBD().trash_list(ioctx)
    with rbd.Image(ioctx, image_id=entry["id"]) as c1:
        c1.remove_snap("cs")
    rbd.RBD().trash_remove(ioctx, entry["id"])
    assert base.trashed_snaps() == []  # went with its last clone
    with rbd.Image(ioctx, "base", read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == ["p"]


def test_clone_format_1_refuses_what_2_allows(env: Env) -> None:
    rbd, ioctx, cluster = env.rbd, env.ioctx, env.cluster
    assert cluster.clone_format == 1  # the default, as pacific's auto under luminous
    base = cluster.add_image("vms", "base", MiB)
    base.create_snap("s")
    with pytest.raises(rbd.InvalidArgument, match="protected"):
        rbd.RBD().clone(ioctx, "base", "s", ioctx, "c")
    cluster.clone_format = 2
    rbd.RBD().clone(ioctx, "base", "s", ioctx, "c")
    cluster.clone_format = 1
    with rbd.Image(ioctx, "base") as image, pytest.raises(rbd.ImageBusy):
        image.remove_snap("s")  # v1 semantics: a snapshot with clones stays


def test_flatten(env: Env) -> None:
    rbd, ioctx, cluster = env.rbd, env.ioctx, env.cluster
    cluster.add_image("vms", "base", 8 * MiB, data=b"B" * MiB).create_snap("snap", protect=True)
    rbd.RBD().clone(ioctx, "base", "snap", ioctx, "child")
    with rbd.Image(ioctx, "child") as child:
        child.write(b"c", 0)
        child.create_snap("child-snap")
        child.flatten()
        with pytest.raises(rbd.ImageNotFound):
            child.parent_info()
        with pytest.raises(rbd.InvalidArgument):
            child.flatten()
        assert child.read(0, 3) == b"cBB"
        assert child.read(MiB - 1, 2) == b"B\0"
        child.set_snap("child-snap")
        with pytest.raises(rbd.ImageNotFound):  # deep-flatten detached the snapshot too
            child.parent_info()
    assert cluster.image("vms", "child").object_count == 1
    with rbd.Image(ioctx, "base") as base:
        assert base.list_children() == []
        base.unprotect_snap("snap")
        base.remove_snap("snap")
    rbd.RBD().remove(ioctx, "base")
    assert cluster.image("vms", "child").read(0, 3) == b"cBB"


def test_remove(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    with pytest.raises(rbd.ImageNotFound):
        rbd.RBD().remove(ioctx, "missing")
    env.cluster.add_image("vms", "disk", MiB)
    image = rbd.Image(ioctx, "disk")
    with pytest.raises(rbd.ImageBusy):
        rbd.RBD().remove(ioctx, "disk")
    image.close()
    with rbd.Image(ioctx, "disk") as image:
        image.create_snap("s")
    with pytest.raises(rbd.ImageHasSnapshots):
        rbd.RBD().remove(ioctx, "disk")
    with rbd.Image(ioctx, "disk") as image:
        image.remove_snap("s")
    reader = rbd.Image(ioctx, "disk", read_only=True)  # read-only handles take no watch
    rbd.RBD().remove(ioctx, "disk")
    with pytest.raises(rbd.ImageNotFound):
        reader.read(0, 1)
    reader.close()
    assert rbd.RBD().list(ioctx) == []


def test_rename(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    env.cluster.add_image("vms", "a", MiB)
    env.cluster.add_image("vms", "b", MiB)
    with pytest.raises(rbd.ImageExists):
        rbd.RBD().rename(ioctx, "a", "b")
    rbd.RBD().rename(ioctx, "a", "c")
    assert rbd.RBD().list(ioctx) == ["b", "c"]
    with pytest.raises(rbd.ImageNotFound):
        rbd.RBD().rename(ioctx, "a", "d")


def test_trash(env: Env) -> None:
    rbd, ioctx, api = env.rbd, env.ioctx, env.rbd.RBD()
    image_id = env.cluster.add_image("vms", "disk", MiB, data=b"keep").id
    api.trash_move(ioctx, "disk", delay=3600)
    assert api.list(ioctx) == []
    [entry] = api.trash_list(ioctx)
    assert (entry["id"], entry["name"], entry["source"]) == (image_id, "disk", "USER")
    assert entry["deferment_end_time"] > entry["deletion_time"]
    with pytest.raises(rbd.ImageNotFound):
        rbd.Image(ioctx, "disk")
    with pytest.raises(rbd.PermissionError):
        api.trash_remove(ioctx, image_id)
    env.cluster.add_image("vms", "disk", MiB)
    with pytest.raises(rbd.ImageExists):
        api.trash_restore(ioctx, image_id, "disk")
    api.trash_restore(ioctx, image_id, "restored")
    with rbd.Image(ioctx, "restored") as image:
        assert image.read(0, 4) == b"keep"
    api.trash_move(ioctx, "restored")
    api.trash_remove(ioctx, image_id)
    assert list(api.trash_list(ioctx)) == []
    with pytest.raises(rbd.ImageNotFound):
        api.trash_remove(ioctx, image_id)
    api.trash_move(ioctx, "disk", delay=3600)
    [entry] = api.trash_list(ioctx)
    api.trash_remove(ioctx, entry["id"], force=True)


def test_trash_move_of_open_image_moves_it_as_librbd_does(env: Env) -> None:
    # Measured on Ceph 16.2.15: trash_move ignores watchers, so a running
    # guest's disk can be trashed; the library has to look first.
    rbd = env.rbd
    env.cluster.add_image("vms", "disk", MiB)
    with rbd.Image(env.ioctx, "disk") as image:
        assert list(image.watchers_list())
        rbd.RBD().trash_move(env.ioctx, "disk")
    assert [e["name"] for e in rbd.RBD().trash_list(env.ioctx)] == ["disk"]


def test_pool_init(env: Env) -> None:
    env.rbd.RBD().pool_init(env.ioctx, True)
    assert env.cluster.pool("vms").applications == {"rbd"}


# -- diff_iterate ---------------------------------------------------------------------


def test_diff_iterate_allocated_and_since_snapshot(env: Env) -> None:
    rbd = env.rbd
    env.cluster.add_image("vms", "disk", 12 * MiB)
    with rbd.Image(env.ioctx, "disk") as image:
        assert diff(image) == []
        image.write(b"a" * 4096, 0)
        image.write(b"b" * 4096, 4 * MiB - 4096)
        image.write(b"c" * 8192, 4 * MiB + 4096)
        assert diff(image) == [(0, 4096, True), (4 * MiB - 4096, 4096, True), (4 * MiB + 4096, 8192, True)]
        image.create_snap("s1")
        image.write(b"d" * 10, 100)
        image.discard(4 * MiB + 4096, 8192)
        image.write(b"e", 9 * MiB)
        assert diff(image, "s1") == [(100, 10, True), (4 * MiB + 4096, 8192, False), (9 * MiB, 1, True)]
        assert diff(image, "s1", whole_object=True) == [
            (0, 4 * MiB, True),
            (4 * MiB, 4 * MiB, False),
            (8 * MiB, 4 * MiB, True),
        ]
        image.create_snap("s2")
        assert diff(image, "s2") == []
        image.set_snap("s1")
        with pytest.raises(rbd.InvalidArgument):
            diff(image, "s2")
        with pytest.raises(rbd.ImageNotFound):
            diff(image, "nope")
        image.set_snap(None)
        image.rollback_to_snap("s1")
        assert diff(image, "s2") == [(100, 10, True), (4 * MiB + 4096, 8192, True), (9 * MiB, 1, False)]


def test_diff_iterate_of_clone(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    parent = env.cluster.add_image("vms", "base", 8 * MiB, data=b"p" * 4096)
    parent.create_snap("snap", protect=True)
    rbd.RBD().clone(ioctx, "base", "snap", ioctx, "child")
    with rbd.Image(ioctx, "child") as child:
        child.create_snap("before")
        child.write(b"x" * 10, 5 * MiB)
        child.write(b"y", 8192)  # copies up object 0, parent data included
        assert diff(child, include_parent=False) == [(0, 4096, True), (8192, 1, True), (5 * MiB, 10, True)]
        assert diff(child) == [(0, 4096, True), (8192, 1, True), (5 * MiB, 10, True)]
        assert diff(child, "before") == [(8192, 1, True), (5 * MiB, 10, True)]
    with rbd.Image(ioctx, "child") as child:
        child.discard(0, 4 * MiB)
        assert diff(child) == [(5 * MiB, 10, True)]
        assert child.read(0, 4) == bytes(4)  # the parent no longer shows through


def test_diff_iterate_callback_exception_propagates(env: Env) -> None:
    env.cluster.add_image("vms", "disk", MiB, data=b"x")

    def fail(offset: int, length: int, exists: bool) -> None:
        raise RuntimeError("stop")

    with env.rbd.Image(env.ioctx, "disk") as image, pytest.raises(RuntimeError):
        image.diff_iterate(0, MiB, None, fail)


def test_diff_iterate_callback_may_wait_for_aio(env: Env) -> None:
    env.cluster.aio_mode = "thread"
    env.cluster.add_image("vms", "disk", MiB, data=b"abc")
    got: list[bytes | None] = []
    with env.rbd.Image(env.ioctx, "disk") as image:

        def on_extent(offset: int, length: int, exists: bool) -> None:
            done = threading.Event()

            def on_read(completion: Any, data: bytes | None) -> None:
                got.append(data)
                done.set()

            image.aio_read(offset, length, on_read)
            assert done.wait(5), "aio could not run while diff_iterate was iterating"

        image.diff_iterate(0, MiB, None, on_extent)
    assert got == [b"abc"]


# -- aio ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "thread"])
def test_aio_write_and_read(env: Env, mode: str) -> None:
    rbd = env.rbd
    env.cluster.aio_mode = mode
    env.cluster.add_image("vms", "disk", MiB)
    results: list[tuple[Any, ...]] = []
    done = threading.Event()
    with rbd.Image(env.ioctx, "disk") as image:
        comp = image.aio_write(b"async", 10, lambda c: results.append(("w", c.get_return_value())))
        comp.wait_for_complete_and_cb()
        assert comp.is_complete()

        def on_read(c: Any, data: bytes | None) -> None:
            results.append(("r", c.get_return_value(), data))
            done.set()

        image.aio_read(10, 5, on_read)
        assert done.wait(5)
    assert results == [("w", 0), ("r", 5, b"async")]


def test_aio_errors_arrive_through_the_completion(env: Env) -> None:
    rbd = env.rbd
    env.cluster.add_image("vms", "disk", MiB)
    seen: list[Any] = []
    with rbd.Image(env.ioctx, "disk", read_only=True) as image:
        comp = image.aio_write(b"x", 0, lambda c: seen.append(c.get_return_value()))
        comp.wait_for_complete_and_cb()
        comp = image.aio_read(MiB, 1, lambda c, data: seen.append((c.get_return_value(), data)))
        comp.wait_for_complete_and_cb()
        comp = image.aio_read(0, 1, lambda c, data: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            comp.wait_for_complete_and_cb()
    assert seen == [-errno.EROFS, (-errno.EINVAL, None)]


# -- failure injection and handle tracking ------------------------------------------


def test_fail_next_connect(env: Env) -> None:
    rados, cluster = env.rados, env.cluster
    cluster.fail_next("Rados.connect", rados.TimedOut)
    client = rados.Rados()
    with pytest.raises(rados.TimedOut) as info:
        client.connect()
    assert info.value.errno == errno.ETIMEDOUT
    assert client.state == "configuring"
    client.connect()  # only the next call failed
    client.shutdown()


def test_fail_next_after_and_forever(env: Env) -> None:
    rbd, cluster = env.rbd, env.cluster
    cluster.add_image("vms", "disk", MiB)
    boom = rbd.IOError("disk on fire", errno=errno.EIO)
    cluster.fail_next("Image.write", boom, after=2, times=None)
    with rbd.Image(env.ioctx, "disk") as image:
        image.write(b"1", 0)
        image.write(b"2", 1)
        for _ in range(3):
            with pytest.raises(rbd.IOError) as info:
                image.write(b"3", 2)
            assert info.value is boom
        assert image.read(0, 3) == b"12\0"  # failed writes had no effect
        cluster.clear_failures()
        image.write(b"3", 2)
        cluster.fail_next("read", rbd.Timeout)  # bare name: any class's read
        with pytest.raises(rbd.Timeout):
            image.read(0, 1)
        cluster.fail_next("Image.aio_write", rbd.NoSpace)
        comp = image.aio_write(b"x", 0, None)
        comp.wait_for_complete_and_cb()
        assert comp.get_return_value() == -errno.ENOSPC
    assert cluster.calls.count("Image.write") == 6


def test_fail_next_rbd_call(env: Env) -> None:
    rbd = env.rbd
    env.cluster.fail_next("RBD.create", rbd.PermissionError)
    with pytest.raises(rbd.PermissionError) as info:
        rbd.RBD().create(env.ioctx, "disk", MiB)
    assert info.value.errno == errno.EPERM
    assert rbd.RBD().list(env.ioctx) == []
    env.cluster.add_image("vms", "disk", MiB)
    env.cluster.fail_next("Image.__init__", rbd.ImageBusy)
    with pytest.raises(rbd.ImageBusy):
        rbd.Image(env.ioctx, "disk")
    assert env.cluster.open_handles()["images"] == []


def test_open_handles_report_leaks(env: Env) -> None:
    rados, rbd, cluster = env.rados, env.rbd, env.cluster
    cluster.add_image("vms", "disk", MiB)
    client = rados.Rados(rados_id="leaky")
    client.connect()
    ioctx = client.open_ioctx("vms")
    image = rbd.Image(ioctx, "disk", read_only=True)
    handles = cluster.open_handles()
    assert any("client.leaky" in c for c in handles["connections"])
    assert handles["ioctxs"].count("vms") == 2
    assert handles["images"] == ["vms/disk (read-only)"]
    with pytest.raises(AssertionError, match="vms/disk"):
        cluster.assert_no_open_handles()
    image.close()
    ioctx.close()
    client.shutdown()
    assert cluster.open_handles() == {
        "connections": [f"client.nova (client.{env.client.get_instance_id()})"],
        "ioctxs": ["vms"],
        "images": [],
    }


def test_watchers_list(env: Env) -> None:
    env.cluster.add_image("vms", "disk", MiB)
    with env.rbd.Image(env.ioctx, "disk") as writer, env.rbd.Image(env.ioctx, "disk", read_only=True):
        [watcher] = writer.watchers_list()
        assert watcher["id"] == env.client.get_instance_id()


# -- sparse storage -------------------------------------------------------------------


def test_big_image_is_stored_sparsely(env: Env) -> None:
    rbd = env.rbd
    tracemalloc.start()
    try:
        rbd.RBD().create(env.ioctx, "big", 10 * GiB)
        with rbd.Image(env.ioctx, "big") as image:
            image.write(b"start", 0)
            image.write(b"end", 10 * GiB - 3)
            image.write(b"m" * 8192, 5 * GiB - 4096)  # spans two objects
            image.create_snap("s")
            assert image.read(10 * GiB - 5, 5) == b"\0\0end"
            assert image.read(3 * GiB, 4096) == bytes(4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB
    stored = env.cluster.image("vms", "big")
    assert stored.object_count == 4
    assert stored.stored_bytes < 9 * MiB


# -- librbd metadata objects (rbd_id, rbd_header omap) ---------------------------------


def _decode_string(raw: bytes, pos: int) -> tuple[str, int]:
    length = int.from_bytes(raw[pos : pos + 4], "little")
    return raw[pos + 4 : pos + 4 + length].decode(), pos + 4 + length


def _decode_cls_rbd_snap(value: bytes) -> dict[str, Any]:
    """Decode a whole cls_rbd_snap record (struct_v 8), checking the length covers it exactly."""
    version, compat = value[0], value[1]
    end = 6 + int.from_bytes(value[2:6], "little")
    assert end == len(value)
    u64 = lambda p: (int.from_bytes(value[p : p + 8], "little"), p + 8)  # noqa: E731
    snap_id, pos = u64(6)
    name, pos = _decode_string(value, pos)
    size, pos = u64(pos)
    record: dict[str, Any] = {"v": version, "compat": compat, "id": snap_id, "name": name, "size": size}
    if compat < 8:
        record["features"], pos = u64(pos)
        assert value[pos : pos + 2] == b"\x01\x01"  # cls_rbd_parent v1
        pos += 6 + int.from_bytes(value[pos + 2 : pos + 6], "little")
    record["protection"] = value[pos]
    record["flags"], pos = u64(pos + 1)
    assert value[pos : pos + 10] == b"\x01\x01\x04\x00\x00\x00" + bytes(4)  # user snapshot namespace
    record["timestamp"] = int.from_bytes(value[pos + 10 : pos + 14], "little")
    pos += 18
    record["child_count"] = int.from_bytes(value[pos : pos + 4], "little")
    pos += 4
    if value[pos]:
        record["parent_overlap"], pos = u64(pos + 1)
    else:
        pos += 1
    assert pos == end
    return record


def _header_omap(env: Env, image_id: str, prefix: str = "snapshot_",
                 **kwargs: Any) -> list[tuple[str, bytes]]:
    with env.rados.ReadOpCtx() as op:
        it, ret = env.ioctx.get_omap_vals(op, kwargs.get("start_after", ""), prefix,
                                          kwargs.get("max_return", 1000))
        assert ret == 0
        env.ioctx.operate_read_op(op, "rbd_header." + image_id)
        return list(it)


def test_rbd_id_object_holds_the_image_id(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    rbd.RBD().create(ioctx, "disk", MiB)
    env.cluster.add_image("vms", "other", MiB)
    for name in ("disk", "other"):
        with rbd.Image(ioctx, name, read_only=True) as image:
            image_id = image.id()
        raw = ioctx.read(f"rbd_id.{name}", length=8192, offset=0)
        assert raw == len(image_id).to_bytes(4, "little") + image_id.encode()
        assert _decode_string(raw, 0) == (image_id, len(raw))
        size, mtime = ioctx.stat(f"rbd_id.{name}")
        assert size == 4 + len(image_id) == 16
        assert isinstance(mtime, time.struct_time)
        with rbd.Image(ioctx, image_id=image_id) as image:
            assert image.get_name() == name
    assert ioctx.read("rbd_id.disk", 4, 4) == raw[4:8]

    rbd.RBD().rename(ioctx, "disk", "renamed")
    with pytest.raises(env.rados.ObjectNotFound):
        ioctx.stat("rbd_id.disk")
    assert ioctx.read("rbd_id.renamed")[4:].decode() == env.cluster.image("vms", "renamed").id


def test_rbd_id_of_missing_trashed_or_format1_image_is_not_found(env: Env) -> None:
    rados, rbd, ioctx = env.rados, env.rbd, env.ioctx
    for call in (lambda: ioctx.stat("rbd_id.nope"), lambda: ioctx.read("rbd_id.nope", 8192, 0)):
        with pytest.raises(rados.ObjectNotFound) as info:
            call()
        assert info.value.errno == errno.ENOENT
    image_id = env.cluster.add_image("vms", "disk", MiB).id
    rbd.RBD().trash_move(ioctx, "disk")
    for call in (lambda: ioctx.stat("rbd_id.disk"), lambda: ioctx.read("rbd_id.disk")):
        with pytest.raises(rados.ObjectNotFound) as info:
            call()
        assert info.value.errno == errno.ENOENT
    assert [k for k, _ in _header_omap(env, image_id, prefix="")]  # the header stays in the trash
    rbd.RBD().trash_restore(ioctx, image_id, "back")
    assert ioctx.read("rbd_id.back")[4:].decode() == image_id
    rbd.RBD().remove(ioctx, "back")
    with pytest.raises(rados.ObjectNotFound):
        ioctx.stat("rbd_id.back")
    with pytest.raises(rados.ObjectNotFound):
        _header_omap(env, image_id)

    # Format 1 images have no id object; their header is <name>.rbd.
    env.cluster.add_image("vms", "old", 3 * MiB, old_format=True)
    with pytest.raises(rados.ObjectNotFound):
        ioctx.stat("rbd_id.old")
    header = ioctx.read("old.rbd")
    assert header.startswith(b"<<< Rados Block Device Image >>>\n")
    assert header[64:68] == b"RBD\0" and header[68:75] == b"001.005"
    assert int.from_bytes(header[80:88], "little") == 3 * MiB
    assert ioctx.stat("old.rbd")[0] == len(header) == 112


def test_header_omap_has_the_snapshot_records(env: Env) -> None:
    rbd, ioctx = env.rbd, env.ioctx
    rbd.RBD().create(ioctx, "disk", 8 * MiB)
    with rbd.Image(ioctx, "disk") as image:
        image_id = image.id()
        assert _header_omap(env, image_id) == []
        image.create_snap("first")
        image.resize(12 * MiB)
        image.create_snap("sécond")
        image.protect_snap("sécond")
        snaps = list(image.list_snaps())
    assert [s["name"] for s in snaps] == ["first", "sécond"]

    pairs = _header_omap(env, image_id)
    assert [key for key, _ in pairs] == [f"snapshot_{s['id']:016x}" for s in snaps]
    records = [_decode_cls_rbd_snap(value) for _, value in pairs]
    assert ([(r["id"], r["name"], r["size"]) for r in records]
            == [(s["id"], s["name"], s["size"]) for s in snaps])
    assert [(r["v"], r["compat"]) for r in records] == [(8, 8), (8, 8)]  # what pacific's cls_rbd writes
    assert [r["protection"] for r in records] == [0, 2]
    assert all(abs(r["timestamp"] - time.time()) < 60 for r in records)

    everything = dict(_header_omap(env, image_id, prefix=""))
    assert everything["size"] == (12 * MiB).to_bytes(8, "little")
    assert everything["order"] == bytes([22])
    assert everything["snap_seq"] == snaps[-1]["id"].to_bytes(8, "little")
    assert _decode_string(everything["object_prefix"], 0)[0] == f"rbd_data.{image_id}"
    assert [k for k, _ in _header_omap(env, image_id, start_after=pairs[0][0])] == [pairs[1][0]]
    assert [k for k, _ in _header_omap(env, image_id, max_return=1)] == [pairs[0][0]]
    assert ioctx.stat(f"rbd_header.{image_id}")[0] == 0

    with rbd.Image(ioctx, "disk") as image:
        image.remove_snap("first")
    assert [_decode_cls_rbd_snap(v)["name"] for _, v in _header_omap(env, image_id)] == ["sécond"]

    # Before require_osd_release nautilus, cls_rbd writes compat 1 with the legacy fields.
    env.cluster.require_osd_release = "mimic"
    [(_, legacy)] = _header_omap(env, image_id)
    record = _decode_cls_rbd_snap(legacy)
    assert (record["v"], record["compat"], record["features"]) == (8, 1, 0)
    assert (record["id"], record["name"], record["size"]) == (snaps[1]["id"], "sécond", 12 * MiB)


def test_read_op_follows_the_real_binding(env: Env) -> None:
    rados, ioctx = env.rados, env.ioctx
    real = pytest.importorskip("rados")
    for method in ("get_omap_vals", "operate_read_op", "stat", "read"):
        fake_params = list(inspect.signature(getattr(rados.Ioctx, method)).parameters)
        assert fake_params == list(inspect.signature(getattr(real.Ioctx, method)).parameters)
    assert [c.__name__ for c in rados.ReadOpCtx.__mro__] == [c.__name__ for c in real.ReadOpCtx.__mro__]

    image_id = env.cluster.add_image("vms", "disk", MiB).id
    env.cluster.image("vms", "disk").create_snap("s")
    with rados.ReadOpCtx() as op:
        it, _ = ioctx.get_omap_vals(op, "", "snapshot_", 10)
        with pytest.raises(RuntimeError):  # not filled before the op ran
            next(it)
        with pytest.raises(TypeError):
            ioctx.get_omap_vals(op, b"", "", 10)
        with pytest.raises(TypeError):
            ioctx.get_omap_vals("op", "", "", 10)
        with pytest.raises(TypeError):
            ioctx.operate_read_op(op, b"rbd_header." + image_id.encode())
        ioctx.operate_read_op(op, "rbd_header." + image_id)
        assert [key for key, _ in it] == ["snapshot_0000000000000004"]

    with rados.ReadOpCtx() as op:
        it, _ = ioctx.get_omap_vals(op, "", "", 10)
        with pytest.raises(rados.ObjectNotFound) as info:
            ioctx.operate_read_op(op, "rbd_header.0123456789ab")
        assert info.value.errno == errno.ENOENT
        assert list(it) == []
    with pytest.raises(RuntimeError):  # released
        ioctx.get_omap_vals(op, "", "", 10)


def test_failure_injection_on_metadata_reads(env: Env) -> None:
    rados, ioctx, cluster = env.rados, env.ioctx, env.cluster
    image_id = cluster.add_image("vms", "disk", MiB).id
    cluster.image("vms", "disk").create_snap("s")
    cluster.fail_next("Ioctx.stat", rados.PermissionError)
    with pytest.raises(rados.PermissionError) as info:
        ioctx.stat("rbd_id.disk")
    assert info.value.errno == errno.EPERM
    assert ioctx.stat("rbd_id.disk")[0] == 16

    cluster.fail_next("Ioctx.read", rados.PermissionDeniedError)
    with pytest.raises(rados.PermissionDeniedError):
        ioctx.read("rbd_id.disk")
    assert ioctx.read("rbd_id.disk")[4:].decode() == image_id

    cluster.fail_next("Ioctx.operate_read_op", rados.PermissionError)
    with rados.ReadOpCtx() as op:
        ioctx.get_omap_vals(op, "", "snapshot_", 1000)
        with pytest.raises(rados.PermissionError):
            ioctx.operate_read_op(op, "rbd_header." + image_id)
    assert len(_header_omap(env, image_id)) == 1
    assert cluster.calls.count("Ioctx.operate_read_op") == 2
