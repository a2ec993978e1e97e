# SPDX-License-Identifier: Apache-2.0
"""RadosClient and the error translation, on the fake librados/librbd."""

from __future__ import annotations

import errno
import inspect
import threading
from types import ModuleType

import pytest

from rbd_driver import exception
from rbd_driver.storage import rados_client
from rbd_driver.storage.rados_client import RADOS_ERRORS, RBD_ERRORS, RadosClient
from rbd_driver.testing import fakes
from rbd_driver.testing.fixtures import FakeEnv


def _exception_names(module: ModuleType) -> set[str]:
    return {name for name, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseException)}


def test_every_real_binding_exception_is_mapped() -> None:
    # The one place the real bindings are imported in unit tests: a new
    # exception class in a Ceph release must fail here, not leak to callers.
    import rados
    import rbd

    assert _exception_names(rbd) - set(RBD_ERRORS) == set()
    assert _exception_names(rados) - set(RADOS_ERRORS) == set()


def test_fakes_have_the_real_exception_names() -> None:
    import rados
    import rbd

    fake_rados, fake_rbd = fakes.make_modules()
    assert _exception_names(fake_rbd) == _exception_names(rbd)
    assert _exception_names(fake_rados) == _exception_names(rados)


KIND_TO_CLASS = {
    "not_found": exception.ImageNotFound,
    "exists": exception.ImageExists,
    "busy": exception.ImageBusy,
    "has_snapshots": exception.ImageHasSnapshots,
    "read_only": exception.ReadOnlyImage,
    "permission": exception.PermissionDenied,
    "invalid": exception.InvalidArgument,
    "no_space": exception.NoSpace,
    "timeout": exception.OperationTimeout,
    "not_supported": exception.NotSupported,
    "storage": exception.StorageError,
}


@pytest.mark.parametrize("module_name,table", [("rbd", RBD_ERRORS), ("rados", RADOS_ERRORS)])
def test_each_binding_exception_becomes_the_mapped_class(module_name, table) -> None:
    fake_rados, fake_rbd = fakes.make_modules()
    module = fake_rbd if module_name == "rbd" else fake_rados
    for name, kind in table.items():
        cls = getattr(module, name)
        # ExtendMismatch takes (message, errno, offset), like the real one.
        original = cls("boom", 5, 0) if name == "ExtendMismatch" else cls("boom")
        with pytest.raises(exception.RbdDriverError) as info:
            with rados_client.translate_errors("op", rados=fake_rados, rbd=fake_rbd,
                                               pool="p", image="i"):
                raise original
        assert type(info.value) is KIND_TO_CLASS[kind], (name, type(info.value))
        assert info.value.__cause__ is original
        assert "p" in str(info.value)


def test_not_found_names_the_right_thing() -> None:
    fake_rados, fake_rbd = fakes.make_modules()

    def raised(**where: str | None) -> exception.RbdDriverError:
        with pytest.raises(exception.RbdDriverError) as info:
            with rados_client.translate_errors("op", rados=fake_rados, rbd=fake_rbd, **where):
                raise fake_rbd.ImageNotFound("gone")
        return info.value

    snap = raised(pool="vms", image="disk", snapshot="s1")
    assert isinstance(snap, exception.SnapshotNotFound) and "vms/disk@s1" in str(snap)
    image = raised(pool="vms", image="disk")
    assert isinstance(image, exception.ImageNotFound) and "vms/disk" in str(image)
    pool = raised(pool="vms")
    assert isinstance(pool, exception.PoolNotFound) and "vms" in str(pool)


def test_other_exceptions_pass_through() -> None:
    fake_rados, fake_rbd = fakes.make_modules()
    with pytest.raises(KeyError):
        with rados_client.translate_errors("op", rados=fake_rados, rbd=fake_rbd):
            raise KeyError("not ours")


@pytest.fixture
def env(tmp_path):
    fake = FakeEnv(tmp_path, pools=("vms",))
    cluster = fake.cluster
    client = fake.new_client(connect_timeout=7, op_timeout=11)
    yield client, cluster, fake.rados, fake.rbd
    client.close()
    cluster.assert_no_open_handles()


def test_connection_is_lazy_and_shared_by_threads(env) -> None:
    client, cluster, *_ = env
    assert cluster.connect_count == 0
    ioctxs = []
    threads = [threading.Thread(target=lambda: ioctxs.append(client.get_ioctx("vms")))
               for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cluster.connect_count == 1
    assert len({id(i) for i in ioctxs}) == 1


def test_timeouts_are_set_before_connecting(env) -> None:
    client, *_ = env
    handle = client.connect()
    assert handle.conf_get("client_mount_timeout") == "7"
    assert handle.conf_get("rados_osd_op_timeout") == "11"
    assert handle.conf_get("rados_mon_op_timeout") == "11"


def test_failed_connect_leaves_nothing_and_can_be_retried(env) -> None:
    client, cluster, fake_rados, _ = env
    cluster.fail_next("Rados.connect", fake_rados.TimedOut)
    with pytest.raises(exception.ClusterConnectionError) as info:
        client.get_ioctx("vms")
    assert isinstance(info.value.__cause__, fake_rados.TimedOut)
    assert isinstance(info.value, exception.MonitorTimeout)
    assert str(info.value).startswith("no monitor answered within 7 s (client.compute,"), info.value
    assert not client.connected
    assert cluster.open_handles()["connections"] == []
    assert client.get_ioctx("vms") is not None


@pytest.mark.parametrize("error, cls, words", [
    ("ObjectNotFound", exception.KeyringNotFound, "no keyring for client.compute at "),
    ("PermissionDeniedError", exception.KeyRejected, "key rejected for client.compute"),
    ("PermissionError", exception.KeyRejected, "key rejected for client.compute"),
    ("TimedOut", exception.MonitorTimeout, "no monitor answered within 7 s (client.compute,"),
])
def test_connect_errors_name_their_cause(env, error, cls, words) -> None:
    client, cluster, fake_rados, _ = env
    cluster.fail_next("Rados.connect", getattr(fake_rados, error))
    with pytest.raises(cls) as info:
        client.connect()
    assert str(info.value).startswith(words), info.value
    assert "; next: " in str(info.value)
    assert isinstance(info.value, exception.ClusterConnectionError)
    assert not client.connected


def test_connect_error_of_another_kind_stays_generic(env) -> None:
    client, cluster, fake_rados, _ = env
    cluster.fail_next("Rados.connect", fake_rados.IOError)
    with pytest.raises(exception.ClusterConnectionError) as info:
        client.connect()
    assert type(info.value) is exception.ClusterConnectionError


def test_missing_pool(env) -> None:
    client, *_ = env
    with pytest.raises(exception.PoolNotFound, match="nope"):
        client.get_ioctx("nope")


def test_close_releases_every_handle(env) -> None:
    client, cluster, *_ = env
    cluster.add_pool("images")
    client.get_ioctx("vms")
    client.get_ioctx("images")
    assert len(cluster.open_handles()["ioctxs"]) == 2
    client.close()
    client.close()  # twice is fine
    assert cluster.open_handles() == {"connections": [], "ioctxs": [], "images": []}


def test_open_image_always_closes(env) -> None:
    client, cluster, *_ = env
    cluster.add_image("vms", "disk", 1 << 20)
    with pytest.raises(ValueError):
        with client.open_image("vms", "disk"):
            assert len(cluster.open_handles()["images"]) == 1
            raise ValueError("in the block")
    assert cluster.open_handles()["images"] == []


def test_close_never_shuts_the_connection_down_under_an_open_image(env) -> None:
    """Another thread's close() while an image is open: the connection is detached,
    the next use connects anew, and the old one is shut down only after the
    image closes (librados shut down under an open librbd image frees memory
    the image still uses)."""
    client, cluster, *_ = env
    cluster.add_image("vms", "disk", 1 << 20)
    closer = threading.Thread(target=client.close)
    with client.open_image("vms", "disk") as image:
        closer.start()
        closer.join(30)
        assert not closer.is_alive()
        assert "Rados.shutdown" not in cluster.calls  # the image still reads
        assert image.read(0, 4) == bytes(4)
        with client.open_image("vms", "disk", read_only=True):  # a new connection
            assert len(cluster.open_handles()["connections"]) == 2
        assert len(cluster.open_handles()["connections"]) == 2  # still open: not retired
    calls = cluster.calls
    assert calls.count("Rados.shutdown") == 1
    assert calls.index("Rados.shutdown") > max(i for i, c in enumerate(calls) if c == "Image.close")
    assert len(cluster.open_handles()["connections"]) == 1  # the new one, until close()
    client.close()
    assert cluster.open_handles() == {"connections": [], "ioctxs": [], "images": []}


def test_errors_inside_open_image_name_the_image(env) -> None:
    client, cluster, _, fake_rbd = env
    cluster.add_image("vms", "disk", 1 << 20)
    with pytest.raises(exception.ReadOnlyImage, match="vms/disk"):
        with client.open_image("vms", "disk", read_only=True) as image:
            image.write(b"x", 0)


def test_missing_conf_is_named_before_librados_is_touched(tmp_path) -> None:
    fake_rados, fake_rbd = fakes.make_modules()
    path = str(tmp_path / "absent.conf")
    client = RadosClient(path, rados=fake_rados, rbd=fake_rbd)
    with pytest.raises(exception.CephConfNotFound, match="absent.conf"):
        client.connect()
    assert fake_rados._cluster.connect_count == 0


@pytest.mark.parametrize("code,cls", [
    (errno.EACCES, exception.PermissionDenied),
    (errno.ETIMEDOUT, exception.OperationTimeout),
    (errno.EINVAL, exception.InvalidArgument),
    (errno.EIO, exception.StorageError),
])
def test_mon_command_errno_is_translated(env, code, cls) -> None:
    client, cluster, *_ = env
    cluster.mon_commands["osd pool stats"] = lambda cmd, inbuf: (-code, b"", "monitor says no")
    with pytest.raises(cls, match="monitor says no"):
        client.mon_command("osd pool stats")


def test_permission_denied_names_the_user_whose_caps_to_check(env) -> None:
    client, cluster, *_ = env
    cluster.mon_commands["auth ls"] = lambda cmd, inbuf: (-errno.EACCES, b"", "access denied")
    with pytest.raises(exception.PermissionDenied, match=r"^client\.compute lacks cephx caps for "):
        client.mon_command("auth ls")
    with pytest.raises(exception.PermissionDenied, match=r"^client\.compute lacks cephx caps for "):
        with client.translate("open image", pool="vms", image="disk"):
            raise client.rbd.PermissionError("denied")


def test_mon_command_returns_parsed_json(env) -> None:
    client, cluster, *_ = env
    assert client.mon_command("fsid")["fsid"] == client.get_fsid()


def test_a_generic_binding_error_with_eacces_is_a_permission_error(env) -> None:
    # Finding 4 of issue 26: "rbd pool init" as a user without caps raised
    # rbd.OSError(errno 13), which read "failed: [errno 13]".
    client, *_ = env
    with pytest.raises(exception.PermissionDenied, match=r"^client\.compute lacks cephx caps"):
        with client.translate("rbd pool init", pool="vms"):
            raise client.rbd.OSError("pool init", errno=errno.EACCES)
