# SPDX-License-Identifier: Apache-2.0
"""Cephx keys and keyring files: masking, validation, atomic 0600 writes."""

from __future__ import annotations

import base64
import os
import pickle
import stat
import struct

import pytest

from rbd_driver import exception
from rbd_driver.storage import cephx

KEY_TEXT = "AQC+0gFrdsSyMBAAjF5khIwg55MMVmyAozs1vA=="  # the shape `ceph auth get-key` prints


def test_a_key_never_prints_itself() -> None:
    key = cephx.CephxKey(KEY_TEXT)
    for shown in (repr(key), str(key), f"{key}", "%s" % key, repr([key]), repr({"k": key})):
        assert KEY_TEXT not in shown and "****" in shown
    assert key.reveal() == KEY_TEXT
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_raw_is_the_decoded_cryptokey() -> None:
    raw = cephx.CephxKey(KEY_TEXT).raw()
    kind, _secs, _nsecs, length = struct.unpack_from("<HIIH", raw)
    assert (kind, length, len(raw)) == (1, 16, 28)


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"short").decode(),
                                 base64.b64encode(struct.pack("<HIIH", 1, 0, 0, 16) + b"x" * 15).decode()])
def test_bad_keys_are_refused_without_being_echoed(bad) -> None:
    with pytest.raises(exception.KeyringError) as info:
        cephx.CephxKey(bad, source="/etc/ceph/x.keyring")
    assert "/etc/ceph/x.keyring" in str(info.value)
    if bad:
        assert bad not in str(info.value)


def test_generated_keys_are_fresh_and_valid() -> None:
    a, b = cephx.generate_key(), cephx.generate_key(now=1_700_000_000.5)
    assert a != b and a.reveal().startswith("AQ") and len(a.raw()) == 28
    assert struct.unpack_from("<HIIH", b.raw())[1:3] == (1_700_000_000, 500_000_000)
    assert cephx.CephxKey(a.reveal()) == a and hash(cephx.CephxKey(a.reveal())) == hash(a)


def test_parse_keyring_finds_the_right_section() -> None:
    text = (f"# comment\n[client.other]\n\tkey = {cephx.generate_key().reveal()}\n"
            f"[client.compute]\n\tkey = {KEY_TEXT}\n\tcaps mon = \"profile rbd\"\n")
    assert cephx.parse_keyring(text, "client.compute").reveal() == KEY_TEXT
    with pytest.raises(exception.KeyringError, match="no key for client.absent"):
        cephx.parse_keyring(text, "client.absent", source="/k")


def test_read_key_of_a_missing_file() -> None:
    with pytest.raises(exception.KeyringError, match="/nonexistent/k"):
        cephx.read_key("/nonexistent/k", "client.x")


def test_keyring_text_round_trips_with_caps() -> None:
    key = cephx.CephxKey(KEY_TEXT)
    text = cephx.keyring_text("client.x", key, {"osd": 'profile rbd pool=vms', "mon": "profile rbd"})
    assert text.splitlines() == ["[client.x]", f"\tkey = {KEY_TEXT}", '\tcaps mon = "profile rbd"',
                                 '\tcaps osd = "profile rbd pool=vms"']
    assert cephx.parse_keyring(text, "client.x") == key


def test_write_keyring_is_0600_whatever_the_umask(tmp_path) -> None:
    path = str(tmp_path / "ceph.client.x.keyring")
    old = os.umask(0)
    try:
        cephx.write_keyring(path, "client.x", cephx.CephxKey(KEY_TEXT),
                            owner=(os.getuid(), os.getgid()))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert cephx.read_key(path, "client.x").reveal() == KEY_TEXT
    assert os.listdir(tmp_path) == ["ceph.client.x.keyring"]


def test_write_keyring_replaces_atomically(tmp_path) -> None:
    path = tmp_path / "k"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    cephx.write_keyring(str(path), "client.x", cephx.CephxKey(KEY_TEXT))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert cephx.read_key(str(path), "client.x").reveal() == KEY_TEXT


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    path = tmp_path / "k"
    path.write_text("previous\n")

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cephx.os, "write", full)
    with pytest.raises(exception.KeyringError) as info:
        cephx.write_keyring(str(path), "client.x", cephx.CephxKey(KEY_TEXT))
    assert str(path) in str(info.value) and KEY_TEXT not in str(info.value)
    assert os.listdir(tmp_path) == ["k"] and path.read_text() == "previous\n"


def test_a_missing_directory_is_a_keyring_error(tmp_path) -> None:
    with pytest.raises(exception.KeyringError, match="cannot create"):
        cephx.write_keyring(str(tmp_path / "no" / "k"), "client.x", cephx.CephxKey(KEY_TEXT))


@pytest.mark.parametrize("good", ["vms", "a", "Images_2", "pool.with-dots", "x" * 100])
def test_safe_names(good) -> None:
    assert cephx.validate_name("pool", good) == good
