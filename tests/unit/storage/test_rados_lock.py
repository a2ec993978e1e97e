"""The cluster-wide lock (on the fake) and qemu-img conversion safety (real qemu-img)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from rbd_driver import exception
from rbd_driver.storage import convert
from rbd_driver.storage.rados_client import RadosClient
from rbd_driver.storage.rados_lock import LOCK_NAME, cluster_lock
from rbd_driver.testing import fakes


@pytest.fixture
def clients(tmp_path):
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n")
    rados, rbd = fakes.make_modules()
    rados._cluster.add_pool("cache")
    made = [RadosClient(str(conf), user=u, rados=rados, rbd=rbd) for u in ("a", "b")]
    yield made, rados._cluster
    for c in made:
        c.close()


def test_lock_is_held_in_the_block_and_released_after(clients) -> None:
    (a, _), cluster = clients
    with cluster_lock(a, "cache", "obj", timeout=1):
        assert len(cluster.lockers("cache", "obj", LOCK_NAME)) == 1
    assert cluster.lockers("cache", "obj", LOCK_NAME) == []


def test_lock_is_released_when_the_block_raises(clients) -> None:
    (a, b), cluster = clients
    with pytest.raises(RuntimeError):
        with cluster_lock(a, "cache", "obj", timeout=1):
            raise RuntimeError("import failed")
    with cluster_lock(b, "cache", "obj", timeout=1):
        pass


def test_second_holder_waits_then_times_out(clients) -> None:
    (a, b), _ = clients
    with cluster_lock(a, "cache", "obj", timeout=1):
        started = time.monotonic()
        with pytest.raises(exception.OperationTimeout, match="cache/obj"):
            with cluster_lock(b, "cache", "obj", timeout=0.5, poll=0.1):
                pass
        assert 0.4 < time.monotonic() - started < 3


def test_waiter_gets_the_lock_when_released(clients) -> None:
    (a, b), _ = clients
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with cluster_lock(a, "cache", "obj", timeout=1):
            held.set()
            time.sleep(0.3)
            order.append("a")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with cluster_lock(b, "cache", "obj", timeout=5, poll=0.05):
        order.append("b")
    t.join()
    assert order == ["a", "b"]


def test_lease_is_renewed_while_held(clients) -> None:
    (a, b), cluster = clients
    with cluster_lock(a, "cache", "obj", timeout=1, lease=3):
        time.sleep(3.5)  # past the first lease: renewals must have kept it
        with pytest.raises(exception.OperationTimeout):
            with cluster_lock(b, "cache", "obj", timeout=0.2, poll=0.05):
                pass


def test_expired_lease_of_a_dead_holder_is_taken_over(clients) -> None:
    (a, b), _ = clients
    a.get_ioctx("cache").lock_exclusive("obj", LOCK_NAME, "dead", "", 1, 0)
    started = time.monotonic()
    with cluster_lock(b, "cache", "obj", timeout=5, poll=0.1):
        assert time.monotonic() - started >= 0.9


# -- conversion ---------------------------------------------------------------------------


def test_rbd_spec_names_paths_never_keys() -> None:
    spec = convert.rbd_spec("vms", "a:b", "compute", "/etc/ceph/ceph.conf", "/k/ring")
    assert spec == "rbd:vms/a\\:b:id=compute:conf=/etc/ceph/ceph.conf:keyring=/k/ring"
    assert "key=" not in spec


def _img(tmp_path, fmt: str, *opts: str) -> str:
    path = str(tmp_path / f"img.{fmt}")
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *opts, path, "16M"], check=True,
                   timeout=60)
    return path


def test_plain_qcow2_is_accepted(tmp_path) -> None:
    path = _img(tmp_path, "qcow2")
    assert convert.sniff_file(path) == "qcow2"
    assert convert.check_source(path, "qcow2")["virtual-size"] == 16 << 20


def test_backing_file_is_refused(tmp_path) -> None:
    path = _img(tmp_path, "qcow2", "-b", "/etc/passwd", "-F", "raw", "-u")
    with pytest.raises(exception.ImageConversionFailed, match="backing file '/etc/passwd'"):
        convert.check_source(path, "qcow2")


def test_external_data_file_is_refused(tmp_path) -> None:
    path = _img(tmp_path, "qcow2", "-o", f"data_file={tmp_path}/data.raw")
    with pytest.raises(exception.ImageConversionFailed, match="external data file"):
        convert.check_source(path, "qcow2")


def test_vmdk_with_external_extent_is_refused(tmp_path) -> None:
    path = _img(tmp_path, "vmdk", "-o", "subformat=monolithicFlat")
    assert convert.sniff_file(path) == "vmdk"
    with pytest.raises(exception.ImageConversionFailed, match="monolithicFlat"):
        convert.check_source(path, "vmdk")


def test_unknown_format_is_refused(tmp_path) -> None:
    with pytest.raises(exception.ImageConversionFailed, match="not a format"):
        convert.check_source(str(tmp_path / "x"), "luks")


def test_convert_to_raw_file_is_atomic(tmp_path, monkeypatch) -> None:
    src = _img(tmp_path, "qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 64k", src], check=True,
                   capture_output=True, timeout=60)
    dest = str(tmp_path / "out.raw")
    convert.convert_to_raw_file(src, dest, "qcow2")
    with open(dest, "rb") as f:
        f.seek(1 << 20)
        assert f.read(65536) == b"\x11" * 65536
    assert os.stat(dest).st_blocks * 512 < 1 << 20  # sparse
    # qemu-img dies half-way through the write: neither temp nor target is left.
    real = convert.processutils.execute

    def dies_half_way(*cmd: str, **kw: object) -> object:
        if cmd[1] == "convert":
            with open(cmd[-1], "wb") as f:
                f.write(b"half")
            raise convert.processutils.ProcessExecutionError(stderr="killed", cmd="qemu-img")
        return real(*cmd, **kw)

    monkeypatch.setattr(convert.processutils, "execute", dies_half_way)
    with pytest.raises(exception.ImageConversionFailed, match="killed"):
        convert.convert_to_raw_file(src, str(tmp_path / "never.raw"), "qcow2")
    assert sorted(os.listdir(tmp_path)) == ["img.qcow2", "out.raw"]
