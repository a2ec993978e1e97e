# SPDX-License-Identifier: Apache-2.0
"""Tests for rbd_driver.storage.formats, against images made by qemu-img."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from rbd_driver.storage import formats
from rbd_driver.storage.formats import (
    FORMATS,
    HEADER_BYTES,
    TAIL_BYTES,
    detect_format,
    is_raw,
    qcow2_backing_file,
)

needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None, reason="qemu-img is not installed")

# (file name, qemu-img create arguments, expected format)
QEMU_IMAGES = [
    ("plain.raw", ["-f", "raw"], "raw"),
    ("plain.qcow2", ["-f", "qcow2"], "qcow2"),
    ("compat.qcow2", ["-f", "qcow2", "-o", "compat=0.10"], "qcow2"),
    ("plain.qcow", ["-f", "qcow"], "qcow"),
    ("sparse.vmdk", ["-f", "vmdk"], "vmdk"),
    ("stream.vmdk", ["-f", "vmdk", "-o", "subformat=streamOptimized"],
     "vmdk"),
    ("flat.vmdk", ["-f", "vmdk", "-o", "subformat=monolithicFlat"], "vmdk"),
    ("dynamic.vhd", ["-f", "vpc"], "vhd"),
    ("plain.vhdx", ["-f", "vhdx"], "vhdx"),
    ("plain.vdi", ["-f", "vdi"], "vdi"),
    ("plain.qed", ["-f", "qed"], "qed"),
    ("plain.parallels", ["-f", "parallels"], "parallels"),
]
# Samples not made by qemu-img create (see write_luks1), and what they are.
OTHER_IMAGES = [("plain.luks", "luks")]
SAMPLES = [(name, expected) for name, _, expected in QEMU_IMAGES] + OTHER_IMAGES
# qemu-img's names for the formats whose names differ from ours.
QEMU_NAMES = {"vpc": "vhd"}


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, text=True,
                          capture_output=True).stdout


def create(path: Path, args: list[str], size: str = "1M") -> Path:
    qemu_img("create", "-q", *args, str(path), size)
    return path


LUKS_SECTOR = 512
LUKS_STRIPES = 4000
LUKS_KEY_BYTES = 64  # aes-256-xts: two 256-bit keys
LUKS_ITERATIONS = 1000  # fixed, where cryptsetup and qemu-img time them


def write_luks1(path: Path, size: int = 1 << 20) -> Path:
    """Write a LUKS1 volume laid out as ``qemu-img create -f luks`` does.

    ``qemu-img`` always times its PBKDF2 to pick the iteration counts (its
    ``iter-time`` sets only the target), and the timing fails with "Unable to
    get accurate CPU usage" when a busy machine gives it no measurable CPU.
    Here the counts are fixed and nothing is derived: the key material is
    zeros, which no reader of the header needs. ``qemu-img info`` parses
    every field of this header (it refuses a corrupt one), so it stays the
    judge of whether the file is LUKS.
    """
    slot_sectors = -(-LUKS_KEY_BYTES * LUKS_STRIPES // LUKS_SECTOR)  # 500
    slot_sectors = -(-slot_sectors // 8) * 8  # 4 KiB aligned, as qemu does
    first = 4096 // LUKS_SECTOR  # key material starts after the 4 KiB header
    payload = first + 8 * slot_sectors
    header = bytearray(payload * LUKS_SECTOR)
    header[0:8] = b"LUKS\xba\xbe" + (1).to_bytes(2, "big")
    header[8:40] = b"aes".ljust(32, b"\0")
    header[40:72] = b"xts-plain64".ljust(32, b"\0")
    header[72:104] = b"sha256".ljust(32, b"\0")
    header[104:112] = struct.pack(">II", payload, LUKS_KEY_BYTES)
    # mk_digest (20 bytes) and its salt (32) stay zero.
    header[164:168] = LUKS_ITERATIONS.to_bytes(4, "big")
    header[168:208] = b"8b1f0c1e-6a3d-4c6e-9f0a-2d5b7e4c3a10".ljust(40, b"\0")
    for slot in range(8):
        active = 0x00AC71F3 if slot == 0 else 0x0000DEAD
        iterations = LUKS_ITERATIONS if slot == 0 else 0
        offset = 208 + 48 * slot
        header[offset:offset + 48] = (
            struct.pack(">II", active, iterations) + bytes(32)
            + struct.pack(">II", first + slot * slot_sectors, LUKS_STRIPES))
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + size)
    return path


class Samples:
    """The sample images, each made the first time a test asks for it.

    One sample that cannot be made fails only the tests that use it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made: set[str] = set()
        self._args = {name: args for name, args, _ in QEMU_IMAGES}

    def __getitem__(self, name: str) -> Path:
        path = self.directory / name
        if name not in self._made:
            if name == "plain.luks":
                write_luks1(path)
            else:
                create(path, self._args[name])
            self._made.add(name)
        return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    return Samples(tmp_path_factory.mktemp("images"))


def read_ends(path: Path) -> tuple[bytes, bytes]:
    with path.open("rb") as f:
        header = f.read(HEADER_BYTES)
        f.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
        return header, f.read()


def test_constants() -> None:
    assert HEADER_BYTES >= 0x9001 + 5
    assert HEADER_BYTES % (64 * 1024) == 0
    assert TAIL_BYTES == 512
    assert set(formats.__all__) == {
        "FORMATS", "HEADER_BYTES", "TAIL_BYTES", "detect_format", "is_raw",
        "qcow2_backing_file"}
    assert {"raw", "qcow", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "luks",
            "iso", "qed", "parallels", "cloop", "dmg", "bochs"} == FORMATS


@needs_qemu_img
@pytest.mark.parametrize("name, expected", SAMPLES)
def test_detects_sample_images(samples: Samples, name: str,
                                expected: str) -> None:
    header, tail = read_ends(samples[name])
    assert detect_format(header, tail) == expected
    assert detect_format(header) == expected
    assert is_raw(header, tail) is (expected == "raw")


@needs_qemu_img
@pytest.mark.parametrize("name", [n for n, _ in SAMPLES])
def test_agrees_with_qemu_probe(samples: Samples, name: str) -> None:
    # Without -f, qemu-img probes the format the way an attacker hopes.
    info = json.loads(qemu_img("info", "--output=json", str(samples[name])))
    header, tail = read_ends(samples[name])
    probed = info["format"]
    assert detect_format(header, tail) == QEMU_NAMES.get(probed, probed)


@needs_qemu_img
def test_luks_sample_is_read_by_qemu_as_written(samples: Samples) -> None:
    # qemu-img parses and checks the whole LUKS header (without the key).
    info = json.loads(qemu_img("info", "--output=json",
                               str(samples["plain.luks"])))
    assert info["format"] == "luks" and info["encrypted"] is True
    assert info["virtual-size"] == 1 << 20
    data = info["format-specific"]["data"]
    assert data["cipher-alg"] == "aes-256" and data["cipher-mode"] == "xts"
    assert data["master-key-iters"] == LUKS_ITERATIONS
    assert [s["active"] for s in data["slots"]] == [True] + [False] * 7
    assert data["slots"][0]["iters"] == LUKS_ITERATIONS
    assert data["payload-offset"] == 2068480  # where qemu-img puts it


@needs_qemu_img
def test_fixed_vhd_needs_the_tail(tmp_path: Path) -> None:
    path = create(tmp_path / "fixed.vhd", ["-f", "vpc", "-o",
                                           "subformat=fixed"])
    header, tail = read_ends(path)
    assert detect_format(header) == "raw"
    assert detect_format(header, tail) == "vhd"
    assert not is_raw(header, tail)
    # Longer tails are cut to their last TAIL_BYTES.
    assert detect_format(header, path.read_bytes()[-4096:]) == "vhd"


def test_vhd_footer_of_511_bytes() -> None:
    footer = b"conectix" + bytes(503)
    assert detect_format(bytes(4096), bytes(1) + footer) == "vhd"
    assert detect_format(bytes(4096), footer) == "vhd"
    assert detect_format(bytes(4096), footer[:-1]) == "raw"


@needs_qemu_img
def test_qcow2_backing_file(tmp_path: Path) -> None:
    backing = create(tmp_path / "base.raw", ["-f", "raw"])
    path = create(tmp_path / "child.qcow2",
                  ["-f", "qcow2", "-b", str(backing), "-F", "raw"])
    header, tail = read_ends(path)
    assert detect_format(header, tail) == "qcow2"
    assert qcow2_backing_file(header) == str(backing)


@needs_qemu_img
def test_qcow2_backing_file_outside_the_image(tmp_path: Path) -> None:
    # The attack: a qcow2 labelled raw, pointing at a host file.
    path = create(tmp_path / "evil.img",
                  ["-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw"])
    header, tail = read_ends(path)
    assert not is_raw(header, tail)
    assert qcow2_backing_file(header) == "/etc/passwd"


@needs_qemu_img
def test_qcow_v1_backing_file(tmp_path: Path) -> None:
    backing = create(tmp_path / "base.raw", ["-f", "raw"])
    path = create(tmp_path / "child.qcow",
                  ["-f", "qcow", "-b", str(backing), "-F", "raw"])
    header, _ = read_ends(path)
    assert detect_format(header) == "qcow"
    assert qcow2_backing_file(header) == str(backing)


@needs_qemu_img
def test_no_backing_file(samples: Samples) -> None:
    for name in ("plain.qcow2", "plain.qcow", "plain.raw", "sparse.vmdk"):
        header, _ = read_ends(samples[name])
        assert qcow2_backing_file(header) is None, name


@needs_qemu_img
def test_truncated_qcow2_headers(tmp_path: Path) -> None:
    path = create(tmp_path / "evil.qcow2",
                  ["-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw"])
    full, _ = read_ends(path)
    offset = int.from_bytes(full[8:16], "big")
    for length in range(offset + 16):
        header = full[:length]
        expected = "qcow2" if length >= 4 else "raw"
        assert detect_format(header) == expected
        found = qcow2_backing_file(header)
        assert found == ("/etc/passwd" if length >= offset + 11 else None)


def qcow2_header(offset: int, name: bytes, version: int = 3) -> bytes:
    head = bytearray(max(offset + len(name), 104))
    head[0:8] = b"QFI\xfb" + version.to_bytes(4, "big")
    head[8:16] = offset.to_bytes(8, "big")
    head[16:20] = len(name).to_bytes(4, "big")
    head[offset:offset + len(name)] = name
    return bytes(head)


def test_backing_file_name_that_is_not_utf8() -> None:
    header = qcow2_header(0x100, b"/tmp/\xff\xfe")
    assert qcow2_backing_file(header) == "/tmp/\\xff\\xfe"


def test_backing_file_beyond_the_header() -> None:
    header = qcow2_header(0x100, b"/etc/passwd")
    assert qcow2_backing_file(header[:0x100 + 10]) is None
    header = bytearray(header)
    header[8:16] = (2**64 - 1).to_bytes(8, "big")
    assert qcow2_backing_file(bytes(header)) is None


def test_backing_file_offset_zero_means_none() -> None:
    # Offset 0 is "no backing file", whatever the size field says.
    header = bytearray(qcow2_header(0x100, b"/etc/passwd"))
    header[8:16] = bytes(8)
    assert qcow2_backing_file(bytes(header)) is None


@pytest.mark.parametrize("version, expected", [
    (0, "qcow2"), (1, "qcow"), (2, "qcow2"), (3, "qcow2"), (99, "qcow2")])
def test_qcow_versions(version: int, expected: str) -> None:
    assert detect_format(qcow2_header(0, b"", version)) == expected


def iso_header(offset: int) -> bytes:
    header = bytearray(HEADER_BYTES)
    header[offset - 1:offset + 5] = b"\x01CD001"
    return bytes(header)


@pytest.mark.parametrize("offset", [0x8001, 0x8801, 0x9001])
def test_iso(offset: int) -> None:
    header = iso_header(offset)
    assert detect_format(header) == "iso"
    assert not is_raw(header)
    # Reading less than HEADER_BYTES can miss it.
    assert detect_format(header[:offset + 4]) == "raw"


def test_container_formats_win_over_iso() -> None:
    header = bytearray(iso_header(0x8001))
    header[:4] = b"QFI\xfb"
    assert detect_format(bytes(header)) == "qcow2"


@pytest.mark.parametrize("header, expected", [
    (b"KDMV\x01\x00\x00\x00", "vmdk"),
    (b"COWD\x01\x00\x00\x00", "vmdk"),
    (b"# Disk DescriptorFile\nversion=1\n", "vmdk"),
    (b"QED\x00\x00\x10\x00\x00", "qed"),
    (b"QFI\xfb", "qcow2"),
    (b"conectix\x00\x00\x00\x02", "vhd"),
    (b"vhdxfile", "vhdx"),
    (b"LUKS\xba\xbe\x00\x02", "luks"),
    (b"WithoutFreeSpace\x02\x00\x00\x00", "parallels"),
    (b"WithouFreSpacExt\x02\x00\x00\x00", "parallels"),
    (b"Bochs Virtual HD Image\x00Redolog", "bochs"),
    (b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t "
     b"iso9660 /dev/cloop $1\n", "cloop"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(0x40, b"\0")
     + b"\x7f\x10\xda\xbe\x01\x00\x01\x00", "vdi"),
    # QEMU probes VDI by the signature alone.
    (bytes(0x40) + b"\x7f\x10\xda\xbe", "vdi"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>\n", "raw"),
    (b"QFI", "raw"),
    (b"KDM", "raw"),
    (b"conecti", "raw"),
    (b"xQFI\xfb", "raw"),
])
def test_magics(header: bytes, expected: str) -> None:
    assert detect_format(header) == expected
    assert detect_format(header + bytes(HEADER_BYTES)) == expected


@pytest.mark.parametrize("descriptor, expected", [
    (b"version=1\n", "vmdk"),
    (b"version=3\r\n", "vmdk"),
    (b"# comment\n   \n\t\r\n# another\nversion=2\nCID=fffffffe\n", "vmdk"),
    (b"  version = 1 \n", "vmdk"),
    (b"# comment\nCID=1\nversion=1\n", "raw"),
    (b"version=1", "raw"),  # QEMU wants the whole line
    (b"# only a comment\n", "raw"),
    (b"\n" * 70_000, "raw"),
])
def test_vmdk_descriptor_without_header_line(descriptor: bytes,
                                             expected: str) -> None:
    assert detect_format(descriptor) == expected


@needs_qemu_img
def test_vmdk_descriptor_probe_matches_qemu(tmp_path: Path) -> None:
    # A descriptor with no "# Disk DescriptorFile" line, whose extent is a
    # host file: QEMU still probes it as VMDK.
    path = tmp_path / "evil.img"
    path.write_bytes(b"version=1\nCID=12345678\nparentCID=ffffffff\n"
                     b'createType="monolithicFlat"\n'
                     b'RW 1 FLAT "/etc/hostname" 0\n')
    info = json.loads(qemu_img("info", "--output=json", str(path)))
    assert info["format"] == "vmdk"
    assert detect_format(path.read_bytes()) == "vmdk"


def test_dmg_trailer() -> None:
    trailer = b"koly" + (4).to_bytes(4, "big") + (512).to_bytes(4, "big")
    trailer = trailer.ljust(TAIL_BYTES, b"\0")
    assert detect_format(bytes(HEADER_BYTES), trailer) == "dmg"
    assert detect_format(bytes(HEADER_BYTES)) == "raw"
    assert detect_format(bytes(HEADER_BYTES), trailer[:-1]) == "raw"
    assert detect_format(bytes(HEADER_BYTES), bytes(100) + trailer) == "dmg"


def test_zeros_are_raw() -> None:
    assert detect_format(bytes(HEADER_BYTES), bytes(TAIL_BYTES)) == "raw"
    assert is_raw(bytes(HEADER_BYTES), bytes(TAIL_BYTES))
    assert is_raw(b"")
    assert is_raw(b"", b"")


def test_random_data_is_raw() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        header = rng.randbytes(HEADER_BYTES)
        tail = rng.randbytes(TAIL_BYTES)
        assert detect_format(header, tail) == "raw", seed
        assert qcow2_backing_file(header) is None


def test_accepts_bytes_like() -> None:
    header = b"QFI\xfb\x00\x00\x00\x01" + bytes(100)
    assert detect_format(bytearray(header)) == "qcow"
    assert detect_format(memoryview(header), memoryview(bytes(512))) == "qcow"
    assert qcow2_backing_file(bytearray(header)) is None


MAGICS = [b"QFI\xfb", b"QFI\xfb\x00\x00\x00\x01", b"KDMV", b"conectix",
          b"# Disk DescriptorFile", b"#", b"version=1\n", b"koly", b"CD001"]


def test_arbitrary_bytes_never_raise() -> None:
    rng = random.Random(20240601)
    for i in range(3000):
        length = rng.choice([0, 1, 3, 4, 7, 8, 19, 20, 21, 64, 512,
                             rng.randrange(HEADER_BYTES * 2)])
        header = rng.randbytes(length)
        if i % 3 == 0:
            # Start with a magic so the format-specific parsing runs.
            header = rng.choice(MAGICS) + header
        tail = rng.choice([None, b"", rng.randbytes(rng.randrange(1024))])
        if tail and i % 5 == 0:
            tail = b"koly" + tail
        assert detect_format(header, tail) in FORMATS
        assert isinstance(is_raw(header, tail), bool)
        found = qcow2_backing_file(header)
        assert found is None or isinstance(found, str)


def test_qcow2_fields_at_extremes_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(500):
        header = bytearray(rng.randbytes(rng.randrange(20, 600)))
        header[:4] = b"QFI\xfb"
        offset = rng.choice([0, 1, 19, 20, len(header) - 1, len(header),
                             2**63, 2**64 - 1, rng.randrange(2**64)])
        header[8:16] = offset.to_bytes(8, "big")
        header[16:20] = rng.choice(
            [0, 1, 2**32 - 1, rng.randrange(2**32)]).to_bytes(4, "big")
        found = qcow2_backing_file(bytes(header))
        assert found is None or isinstance(found, str)
        assert detect_format(bytes(header)) in {"qcow", "qcow2"}
