# SPDX-License-Identifier: Apache-2.0
"""The Flat reference plugin (backends/flat.py): sparse local files, no clones."""

from __future__ import annotations

import os
import uuid

import pytest

from rbd_driver import exception, imagebackend
from rbd_driver.backends.flat import Flat, copy_sparse
from tests.unit.test_imagebackend import _conf


@pytest.fixture
def flat(tmp_path) -> Flat:
    conf = _conf(tmp_path)
    backend = imagebackend.Backend(conf)
    conf.set_override("instances_path", str(tmp_path / "instances"), group="flat")
    disk = backend.by_name(str(uuid.uuid4()), "disk", image_type="flat")
    assert isinstance(disk, Flat)
    return disk


def _base(tmp_path, size: int, chunks: dict[int, bytes]) -> str:
    path = tmp_path / "base.raw"
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
    return str(path)


def test_flat_copies_sparse_and_grows(flat, tmp_path) -> None:
    chunks = {0: b"boot" * 1024, 30 << 20: os.urandom(1 << 20)}
    base = _base(tmp_path, 64 << 20, chunks)
    seen = []
    flat.create_image(lambda target, **kw: seen.append(target), base, 96 << 20)
    assert seen == [base]
    assert flat.get_disk_size(flat.path) == 96 << 20
    with open(flat.path, "rb") as f:
        for offset, data in chunks.items():
            f.seek(offset)
            assert f.read(len(data)) == data
    # Allocated blocks: the data only, not 96 MiB.
    assert os.stat(flat.path).st_blocks * 512 < 4 << 20


def test_flat_refuses_to_shrink(flat, tmp_path) -> None:
    base = _base(tmp_path, 8 << 20, {0: b"x"})
    with pytest.raises(exception.DiskSizeTooSmall, match=flat.path):
        flat.create_image(lambda target, **kw: None, base, 4 << 20)
    assert not flat.exists()


def test_flat_cannot_clone(flat) -> None:
    with pytest.raises(exception.ImageUnacceptable, match="cannot clone"):
        flat.direct_fetch("img", {"disk_format": "raw"}, [{"url": "rbd://a/b/c/d"}])


def test_flat_snapshot_ops_are_not_supported(flat) -> None:
    with pytest.raises(exception.NotSupported, match="Flat"):
        flat.create_snap("s")


def test_flat_bulk_cleanup_and_direct_snapshot_are_refused(flat) -> None:
    # On the Image interface (the contract types them), refused by a backend without them.
    with pytest.raises(exception.NotSupported, match="cleanup_instances on Flat"):
        Flat.cleanup_instances(flat.conf, [flat.instance_uuid])
    with pytest.raises(exception.ImageUnacceptable, match="cannot make an image in place"):
        flat.direct_snapshot("s", "raw", "img", progress=lambda done, total: None)


def test_flat_cleanup_removes_only_that_instance(flat, tmp_path) -> None:
    base = _base(tmp_path, 1 << 20, {0: b"x"})
    flat.create_image(lambda target, **kw: None, base, None)
    report = Flat.cleanup_instance(flat.conf, flat.instance_uuid)
    assert report["removed"] == ["disk"] and not report["failed"]
    assert not flat.exists()


def test_copy_sparse_of_all_hole_file(tmp_path) -> None:
    src = _base(tmp_path, 16 << 20, {})
    dst = str(tmp_path / "copy")
    copy_sparse(src, dst)
    assert os.path.getsize(dst) == 16 << 20 and os.stat(dst).st_blocks == 0


def test_flat_xml_is_a_file_disk(flat) -> None:
    xml = flat.libvirt_info({"dev": "vdc"})
    assert f'<source file="{flat.path}" />' in xml and 'dev="vdc"' in xml
