# SPDX-License-Identifier: Apache-2.0
"""The test guest's build (initramfs, modules, cache) and the domain XML, without QEMU."""

from __future__ import annotations

import lzma
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rbd_driver.testing import guest
from rbd_driver.testing.hypervisor import domain_xml

VERSION = "6.1.0-99-amd64"


def _read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """Parse a newc archive: name -> (mode, data, (rdevmajor, rdevminor))."""
    entries = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        content = data[body:body + size]
        pos = body + size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, content, (rmaj, rmin))


@pytest.fixture
def host(tmp_path: Path) -> dict[str, Path]:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / f"vmlinuz-{VERSION}").write_bytes(b"MZ not a real bzImage")
    (boot / "vmlinuz-5.10.0-1-amd64").write_bytes(b"older, without modules")
    modules = tmp_path / "modules"
    kernel = modules / VERSION / "kernel" / "drivers"
    (kernel / "virtio").mkdir(parents=True)
    (kernel / "block").mkdir(parents=True)
    for name in guest.MODULES[:-1]:
        (kernel / "virtio" / f"{name}.ko").write_bytes(f"module {name}".encode())
    # One compressed, as some kernels ship them.
    (kernel / "block" / "virtio_blk.ko.xz").write_bytes(lzma.compress(b"module virtio_blk"))
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    return {"boot": boot, "modules": modules, "busybox": busybox, "cache": tmp_path / "cache"}


def _build(host: dict[str, Path]) -> guest.GuestImage:
    return guest.build_guest(host["cache"], boot=str(host["boot"]),
                             modules_root=str(host["modules"]), busybox=str(host["busybox"]))


def test_initramfs_holds_init_busybox_console_and_decompressed_modules(host) -> None:
    image = _build(host)
    assert image.version == VERSION
    assert Path(image.kernel).read_bytes() == b"MZ not a real bzImage"  # no PVH payload: as is
    entries = _read_cpio(Path(image.initramfs).read_bytes())
    mode, init, _ = entries["init"]
    assert stat.S_ISREG(mode) and mode & 0o111 and init.decode() == guest.INIT
    assert "insmod" in guest.INIT and " ".join(guest.MODULES) in guest.INIT
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)
    assert entries["bin/busybox"][1] == b"\x7fELF static busybox"
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"
    for name in guest.MODULES:
        assert entries[f"lib/modules/{name}.ko"][1] == f"module {name}".encode()


def test_guest_is_cached_and_rebuilt_when_its_inputs_change(host) -> None:
    first = _build(host)
    built = os.stat(first.initramfs).st_mtime_ns
    assert _build(host) == first and os.stat(first.initramfs).st_mtime_ns == built
    host["busybox"].write_bytes(b"\x7fELF another static busybox")
    second = _build(host)
    assert second.initramfs != first.initramfs
    assert _read_cpio(Path(second.initramfs).read_bytes())["bin/busybox"][1].endswith(
        b"another static busybox")


def test_half_built_cache_is_replaced(host) -> None:
    image = _build(host)
    os.unlink(image.kernel)
    assert os.path.exists(_build(host).kernel)


def test_builtin_module_is_skipped(host) -> None:
    (host["modules"] / VERSION / "kernel/drivers/virtio/virtio_ring.ko").unlink()
    (host["modules"] / VERSION / "modules.builtin").write_text(
        "kernel/drivers/virtio/virtio_ring.ko\n")
    entries = _read_cpio(Path(_build(host).initramfs).read_bytes())
    assert "lib/modules/virtio_ring.ko" not in entries
    assert "lib/modules/virtio_blk.ko" in entries


@pytest.mark.parametrize("breakage, says", [
    ("no-kernel", "linux-image-amd64"),
    ("no-module", "virtio_pci"),
    ("dynamic-busybox", "busybox-static"),
    ("no-busybox", "busybox-static"),
])
def test_missing_parts_say_what_to_install(host, breakage, says) -> None:
    if breakage == "no-kernel":
        for path in host["boot"].iterdir():
            path.unlink()
    elif breakage == "no-module":
        (host["modules"] / VERSION / "kernel/drivers/virtio/virtio_pci.ko").unlink()
    elif breakage == "dynamic-busybox":
        host["busybox"].write_bytes(b"\x7fELF\0\0/lib64/ld-linux-x86-64.so.2")
    else:
        host["busybox"].unlink()
    with pytest.raises(guest.GuestUnavailable, match=says):
        _build(host)


def test_kernel_cmdline_and_console_lines() -> None:
    line = guest.kernel_cmdline(["report", "write:vda:8:HELLO", "grow:vda:196608"])
    assert line.split()[0] == "console=ttyS0"
    assert line.endswith("rg.do=report,write:vda:8:HELLO,grow:vda:196608")
    for bad in ("write:vda:8:two words", "a,b", "x;reboot"):
        with pytest.raises(ValueError):
            guest.kernel_cmdline([bad])
    console = "[ 1.0] kernel noise\r\nRG ready\r\nRG disk vda sectors=8 data=A B\r\nnot RG\n"
    assert guest.parse_console(console) == ["ready", "disk vda sectors=8 data=A B"]


def test_domain_xml_is_tcg_with_acpi_and_a_file_console() -> None:
    image = guest.GuestImage("/k", "/i", VERSION)
    disk = "<disk type='network' device='disk'><target dev='vda' bus='virtio'/></disk>"
    root = ET.fromstring(domain_xml("g1", image, [disk], "console=ttyS0", "/c/g1.console"))
    assert root.get("type") == "qemu"
    assert root.find("features/acpi") is not None
    assert (root.findtext("os/kernel"), root.findtext("os/initrd")) == ("/k", "/i")
    assert root.findtext("on_poweroff") == "destroy"
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/c/g1.console"  # type: ignore[union-attr]
    assert root.find("devices/disk/target").get("dev") == "vda"  # type: ignore[union-attr]
