# SPDX-License-Identifier: Apache-2.0
"""Tests for rbd_driver.storage.location."""

from __future__ import annotations

import dataclasses
import random

import pytest

from rbd_driver.storage import location
from rbd_driver.storage.location import (
    MAX_LOCATION_LENGTH,
    InvalidLocation,
    RbdLocation,
    format_location,
    parse_location,
)

FSID = "0b5f6a9c-1d2e-4f3a-8b7c-6d5e4f3a2b1c"


def url(pool: str = "images", image: str = "img", snap: str = "snap",
        fsid: str = FSID) -> str:
    return f"rbd://{fsid}/{pool}/{image}/{snap}"


def test_public_names() -> None:
    assert set(location.__all__) == {
        "MAX_LOCATION_LENGTH", "InvalidLocation", "RbdLocation", "SnapshotIdentity",
        "format_location", "parse_location"}
    assert issubclass(InvalidLocation, ValueError)


def test_parse_plain_location() -> None:
    loc = parse_location(url())
    assert loc == RbdLocation(FSID, "images", "img", "snap")
    assert (loc.fsid, loc.pool, loc.image, loc.snapshot) == (
        FSID, "images", "img", "snap")
    assert loc.url == url()


def test_format_plain_location() -> None:
    assert format_location(FSID, "images", "img", "snap") == url()


def test_scheme_is_case_insensitive_and_fsid_lowercased() -> None:
    loc = parse_location(url(fsid=FSID.upper()).replace("rbd", "RbD", 1))
    assert loc.fsid == FSID
    assert loc.url == url()


def test_constructor_lowercases_fsid() -> None:
    loc = RbdLocation(FSID.upper(), "p", "i", "s")
    assert loc.fsid == FSID
    assert loc == RbdLocation(FSID, "p", "i", "s")


def test_location_is_frozen() -> None:
    loc = parse_location(url())
    with pytest.raises(dataclasses.FrozenInstanceError):
        loc.pool = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", [
    "with space",
    "  surrounded  ",
    "100%",
    "%41",  # must stay literal, not decode to "A"
    "q?x=1#frag",
    "colon:id=admin:conf=x",
    "plus+tilde~dot.dash-under_",
    "образ-ü-\u4e2d-\U0001f40d",
])
def test_names_round_trip(name: str) -> None:
    formatted = format_location(FSID, name, name, name)
    assert "?" not in formatted and "#" not in formatted
    assert " " not in formatted
    loc = parse_location(formatted)
    assert (loc.pool, loc.image, loc.snapshot) == (name, name, name)
    assert loc.url == formatted


def test_encoding_is_percent_encoded_utf8() -> None:
    assert format_location(FSID, "a b", "50%", "é") == (
        f"rbd://{FSID}/a%20b/50%25/%C3%A9")


def test_parse_decodes_parts() -> None:
    loc = parse_location(url("my%20pool", "%C3%A9", "s%3Fnap"))
    assert (loc.pool, loc.image, loc.snapshot) == ("my pool", "é", "s?nap")


def test_parse_accepts_raw_unencoded_unicode_and_space() -> None:
    loc = parse_location(url("my pool", "é", "snap"))
    assert (loc.pool, loc.image) == ("my pool", "é")


def test_random_names_round_trip() -> None:
    rng = random.Random(1234)
    alphabet = "ab Z9%?#:+&=~.-_é\u4e2d\U0001f40d\u00a0'\"\\"
    for _ in range(500):
        parts = ["".join(rng.choice(alphabet)
                         for _ in range(rng.randint(1, 12)))
                 for _ in range(3)]
        if any(not p.strip() for p in parts):
            continue
        formatted = format_location(FSID, *parts)
        loc = parse_location(formatted)
        assert [loc.pool, loc.image, loc.snapshot] == parts


@pytest.mark.parametrize("bad, fragment", [
    ("", "does not start with rbd://"),
    ("images/img@snap", "does not start with rbd://"),
    (url().replace("rbd://", "http://"), "does not start with rbd://"),
    (url().replace("rbd://", "rbd:/"), "does not start with rbd://"),
    (url().replace("rbd://", "rbdx://"), "does not start with rbd://"),
    (f"rbd://{FSID}/images/img", "has 3 parts"),
    (f"rbd://{FSID}", "has 1 parts"),
    (url() + "/", "has 5 parts (trailing '/')"),
    (url() + "/extra", "has 5 parts, expected 4"),
    (url() + "?k=v", "has a query or fragment"),
    (url() + "#frag", "has a query or fragment"),
    (url(pool=""), "pool is blank"),
    (url(image=""), "image is blank"),
    (url(snap=""), "snapshot is blank"),
    (url(fsid=""), "fsid is blank"),
    (url(pool="   "), "pool is blank"),
    (url(image="%20%20"), "image is blank"),
    (url(snap="%09"), "snapshot is blank"),
    (url(pool="%zz"), "pool '%zz' of location"),
    (url(image="abc%4"), "malformed percent-escape"),
    (url(snap="abc%"), "malformed percent-escape"),
    (url(pool="%ff"), "pool '%ff' of location"),
    (url(image="%C3%28"), "is not UTF-8 once percent-decoded"),
    (url(image="%ED%A0%80"), "is not UTF-8"),  # encoded surrogate
    (url(pool="a%00b"), "contains the control character '\\x00'"),
    (url(image="a\x00b"), "control character"),
    (url(image="line%0Abreak"), "control character '\\n'"),
    (url(snap="del%7F"), "control character '\\x7f'"),
    (url(snap="nel%C2%85"), "control character '\\x85'"),
    (url(pool="a%2Fb"), "pool 'a/b' contains '/'"),
    (url(image="a%2fb"), "image 'a/b' contains '/'"),
    (url(snap="a%40b"), "snapshot 'a@b' contains '@'"),
    (url(image="img@snap"), "image 'img@snap' contains '@'"),
    (url(fsid="not-a-uuid"), "fsid 'not-a-uuid' is not a UUID"),
    (url(fsid=FSID.replace("-", "")), "is not a UUID"),
    (url(fsid="{" + FSID + "}"), "is not a UUID"),
    (url(fsid=FSID + "0"), "is not a UUID"),
    (url(fsid="urn:uuid:" + FSID), "is not a UUID"),
    (url(fsid=FSID + "%20"), "is not a UUID"),
    (url(fsid=FSID.replace("0", "g")), "is not a UUID"),
    (url(image="a" * MAX_LOCATION_LENGTH), "is longer than 4096"),
])
def test_parse_rejects(bad: str, fragment: str) -> None:
    with pytest.raises(InvalidLocation) as info:
        parse_location(bad)
    assert fragment in str(info.value)


def test_error_names_the_location() -> None:
    bad = url(pool="")
    with pytest.raises(InvalidLocation, match="pool is blank") as info:
        parse_location(bad)
    assert repr(bad) in str(info.value)


def test_error_message_of_huge_location_is_short() -> None:
    with pytest.raises(InvalidLocation) as info:
        parse_location("rbd://" + "x" * 100_000)
    assert len(str(info.value)) < 400


def test_encoded_length_is_what_counts() -> None:
    # Each "é" is 6 characters once encoded, so this fits as text but the
    # URL does not: format must refuse what parse would refuse.
    name = "é" * 1000
    with pytest.raises(InvalidLocation, match="longer than"):
        format_location(FSID, "p", name, "s")
    fits = "a" * (MAX_LOCATION_LENGTH - len(url(image="")))
    assert format_location(FSID, "images", fits, "snap") == url(image=fits)
    assert len(url(image=fits)) == MAX_LOCATION_LENGTH
    assert parse_location(url(image=fits)).image == fits
    with pytest.raises(InvalidLocation, match="longer than"):
        parse_location(url(image=fits + "a"))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"pool": "a/b"}, "pool 'a/b' contains '/'"),
    ({"image": "a@b"}, "image 'a@b' contains '@'"),
    ({"snapshot": " "}, "snapshot is blank"),
    ({"snapshot": "a\x1fb"}, "control character"),
    ({"image": "lone\udc80"}, "control character"),
    ({"fsid": "xyz"}, "not a UUID"),
])
def test_constructor_and_format_reject(kwargs: dict[str, str],
                                       fragment: str) -> None:
    parts = {"fsid": FSID, "pool": "p", "image": "i", "snapshot": "s"}
    parts.update(kwargs)
    with pytest.raises(InvalidLocation, match=fragment):
        RbdLocation(**parts)
    with pytest.raises(InvalidLocation, match=fragment):
        format_location(**parts)


def test_non_str_is_type_error() -> None:
    with pytest.raises(TypeError, match="snapshot must be a str"):
        RbdLocation(FSID, "p", "i", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="location must be a str"):
        parse_location(url().encode())  # type: ignore[arg-type]
