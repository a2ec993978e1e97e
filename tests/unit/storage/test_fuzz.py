# SPDX-License-Identifier: Apache-2.0
"""Fuzzing (hypothesis): only documented exceptions, and never a wrong acceptance."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbd_driver import exception
from rbd_driver.storage import formats
from rbd_driver.storage.location import InvalidLocation, format_location, parse_location
from tests.unit.backends.test_rbd import Env

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

url_text = st.one_of(
    st.text(max_size=200),
    st.builds(lambda parts: "rbd://" + "/".join(parts),
              st.lists(st.text(max_size=30), min_size=0, max_size=6)),
    st.builds(lambda parts: "rbd://" + "/".join(parts),
              st.lists(st.sampled_from(["%", "%zz", "%2F", "%40", "%00", " ", "a", "%C3%A9",
                                        "%ff", str(uuid.uuid4()), "@", "?", "#"]),
                       min_size=4, max_size=4)),
)


@FUZZ
@given(url_text)
def test_parse_location_raises_only_invalid_location(url: str) -> None:
    try:
        loc = parse_location(url)
    except InvalidLocation:
        return
    # Anything accepted is four non-blank parts that round-trip.
    for part in (loc.fsid, loc.pool, loc.image, loc.snapshot):
        assert part.strip() and "\x00" not in part
    for part in (loc.pool, loc.image, loc.snapshot):
        assert "/" not in part and "@" not in part
    assert parse_location(loc.url) == loc


names = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())


@FUZZ
@given(st.uuids(), names, names, names)
def test_format_then_parse_round_trips(fsid: uuid.UUID, pool: str, image: str, snap: str) -> None:
    try:
        url = format_location(str(fsid), pool, image, snap)
    except InvalidLocation:
        return
    loc = parse_location(url)
    assert (loc.pool, loc.image, loc.snapshot) == (pool, image, snap)


@FUZZ
@given(st.binary(max_size=4096), st.one_of(st.none(), st.binary(max_size=1024)))
def test_detect_format_never_raises(head: bytes, tail: bytes | None) -> None:
    assert formats.detect_format(head, tail) in formats.FORMATS
    formats.qcow2_backing_file(head)


def _qcow2(version: int, backing: bytes) -> bytes:
    header = bytearray(1024)
    header[0:4] = b"QFI\xfb"
    header[4:8] = version.to_bytes(4, "big")
    header[8:16] = (512).to_bytes(8, "big")
    header[16:20] = len(backing).to_bytes(4, "big")
    header[512:512 + len(backing)] = backing
    return bytes(header)


@FUZZ
@given(st.integers(min_value=0, max_value=2**32 - 1), st.binary(min_size=1, max_size=400),
       st.binary(max_size=2048))
def test_qcow_magic_is_never_raw(version: int, backing: bytes, rest: bytes) -> None:
    data = _qcow2(version, backing) + rest
    assert formats.detect_format(data) in ("qcow", "qcow2")
    assert not formats.is_raw(data)


meta_values = st.one_of(st.none(), st.text(max_size=10), st.integers(), st.booleans(),
                        st.sampled_from(["raw", "qcow2", "RAW", " raw", "raw\x00", "iso"]))


@FUZZ
@given(st.dictionaries(st.sampled_from(["disk_format", "size", "container_format", "x"]),
                       meta_values, max_size=4),
       st.lists(st.one_of(st.none(), st.text(max_size=20),
                          st.dictionaries(st.sampled_from(["url", "metadata"]),
                                          st.one_of(st.none(), url_text, st.integers()),
                                          max_size=2)), max_size=3))
def test_direct_fetch_only_clones_what_it_should(tmp_path_factory: Any, meta: dict[str, Any],
                                                 locations: list[Any]) -> None:
    env = Env(tmp_path_factory.mktemp("fuzz"))
    env.golden(data=_qcow2(3, b"/etc/shadow"), name="evil")
    good = f"rbd://{env.fsid}/images/evil/snap"
    disk = env.disk()
    try:
        disk.direct_fetch("img", meta, locations + [{"url": good}])
    except exception.ImageUnacceptable:
        assert not disk.exists()
        return
    raise AssertionError(f"cloned {meta!r} {locations!r}: the only real location is qcow2")


@FUZZ
@given(st.dictionaries(st.sampled_from(["disk_format", "size"]), meta_values, max_size=2))
def test_raw_golden_is_cloned_exactly_when_metadata_says_raw(tmp_path_factory: Any,
                                                             meta: dict[str, Any]) -> None:
    env = Env(tmp_path_factory.mktemp("fuzz"))
    url = env.golden(data=b"just raw bytes")
    disk = env.disk()
    try:
        disk.direct_fetch("img", meta, [{"url": url}])
        cloned = True
    except exception.ImageUnacceptable:
        cloned = False
    assert cloned == (meta.get("disk_format") == "raw") == disk.exists()
