# SPDX-License-Identifier: Apache-2.0
"""The rbd export-diff v1 stream: exact bytes written, and everything the reader refuses."""

from __future__ import annotations

import hashlib
import io
import zlib

import pytest

from rbd_driver import exception
from rbd_driver.storage.diff_format import Checksum, DiffHeader, DiffReader, DiffWrite, DiffWriter, DiffZero


def _le(value: int, width: int) -> bytes:
    return value.to_bytes(width, "little")


# What Ceph's doc/dev/rbd-diff.rst specifies, built by hand.
SPEC = (b"rbd diff v1\n"
        + b"f" + _le(2, 4) + b"s1"
        + b"t" + _le(2, 4) + b"s2"
        + b"s" + _le(1 << 20, 8)
        + b"w" + _le(4096, 8) + _le(3, 8) + b"abc"
        + b"z" + _le(8192, 8) + _le(512, 8)
        + b"e")


def _write(from_snap: str | None = "s1", checksum: str = "crc32") -> tuple[bytes, DiffWriter]:
    out = io.BytesIO()
    writer = DiffWriter(out, checksum)
    writer.header(1 << 20, "s2", from_snap)
    writer.write(4096, b"abc")
    writer.zero(8192, 512)
    writer.end()
    return out.getvalue(), writer


def test_writer_emits_the_documented_bytes_and_checksums_them() -> None:
    data, writer = _write()
    assert data == SPEC
    assert writer.bytes_written == len(SPEC)
    assert writer.checksum.hexdigest() == f"{zlib.crc32(SPEC):08x}"
    _, sha = _write(checksum="sha256")
    assert sha.checksum.hexdigest() == hashlib.sha256(SPEC).hexdigest()


def test_a_diff_from_the_beginning_has_no_from_record() -> None:
    data, _ = _write(from_snap=None)
    assert data == SPEC.replace(b"f" + _le(2, 4) + b"s1", b"")


def test_reader_round_trip() -> None:
    reader = DiffReader(io.BytesIO(SPEC), "x.diff")
    assert reader.header == DiffHeader(size=1 << 20, to_snap="s2", from_snap="s1")
    assert list(reader.records()) == [DiffWrite(4096, b"abc"), DiffZero(8192, 512)]
    assert reader.position == len(SPEC)
    assert reader.checksum.hexdigest() == f"{zlib.crc32(SPEC):08x}"


def test_long_write_records_come_in_bounded_pieces() -> None:
    out = io.BytesIO()
    writer = DiffWriter(out)
    writer.header(1 << 20, "s")
    writer.write(100, bytes(range(256)) * 40)
    writer.end()
    reader = DiffReader(io.BytesIO(out.getvalue()), "x.diff", max_piece=4000)
    pieces = list(reader.records())
    assert [(p.offset, len(p.data)) for p in pieces] == [(100, 4000), (4100, 4000), (8100, 2240)]
    assert b"".join(p.data for p in pieces) == bytes(range(256)) * 40


def test_writer_refuses_misuse() -> None:
    writer = DiffWriter(io.BytesIO())
    with pytest.raises(ValueError):
        writer.write(0, b"x")
    writer.header(10, "s")
    with pytest.raises(ValueError):
        writer.header(10, "s")
    writer.end()
    with pytest.raises(ValueError):
        writer.zero(0, 1)
    with pytest.raises(ValueError):
        DiffWriter(io.BytesIO()).header(10, "")


@pytest.mark.parametrize("stream,detail", [
    (b"rbd diff v2\n" + SPEC[12:], "not an rbd diff v1 stream"),
    (b"", "not an rbd diff v1 stream"),
    (SPEC[:14], "truncated: the stream ends inside the from-snapshot"),
    (SPEC[:-1], "truncated: the stream ends inside a record tag"),
    (SPEC[:-5], "truncated: the stream ends inside a 'z' record"),
    (SPEC[:40], "truncated"),
    (SPEC + b"x", "bytes follow the end record"),
    (SPEC.replace(b"z" + _le(8192, 8), b"q" + _le(8192, 8)), "unexpected tag b'q'"),
    (SPEC[:-1] + b"s" + _le(5, 8) + b"e", "metadata record after data"),
    (SPEC.replace(b"t" + _le(2, 4) + b"s2", b"f" + _le(2, 4) + b"s2"), "duplicate 'f'"),
    (SPEC.replace(b"s" + _le(1 << 20, 8), b""), "no size record"),
    (SPEC.replace(_le(8192, 8) + _le(512, 8), _le((1 << 20) - 10, 8) + _le(512, 8)),
     "past the image size"),
    (SPEC.replace(_le(2, 4) + b"s1", _le(1 << 30, 4) + b"s1"), "impossible length"),
    (SPEC.replace(b"s1", b"\xff\xfe"), "not UTF-8"),
])
def test_reader_refuses_corrupt_streams(stream: bytes, detail: str) -> None:
    with pytest.raises(exception.BackupCorrupt) as info:
        reader = DiffReader(io.BytesIO(stream), "/backups/x.diff")
        list(reader.records())
    assert "/backups/x.diff" in str(info.value) and detail in str(info.value)


def test_truncated_data_says_where() -> None:
    with pytest.raises(exception.BackupCorrupt, match=r"inside a 'w' record's data, 2 more "
                       r"bytes expected \(at byte \d+\)"):
        list(DiffReader(io.BytesIO(SPEC[:SPEC.index(b"abc") + 1]), "x").records())


def test_checksum_algorithms() -> None:
    with pytest.raises(ValueError, match="unknown checksum"):
        Checksum("md5")
    crc = Checksum("crc32")
    crc.update(b"ab")
    crc.update(memoryview(b"c"))
    assert crc.hexdigest() == f"{zlib.crc32(b'abc'):08x}"
