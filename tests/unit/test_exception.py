# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import inspect
import re

import pytest

from rbd_driver import exception


def _classes() -> list[type[exception.RbdDriverError]]:
    return [c for _, c in inspect.getmembers(exception, inspect.isclass)
            if issubclass(c, exception.RbdDriverError)]


def test_every_class_is_exported_and_derives_from_base() -> None:
    assert {c.__name__ for c in _classes()} == set(exception.__all__)


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_templates_fill_from_keywords(cls: type[exception.RbdDriverError]) -> None:
    keys = set(re.findall(r"%\((\w+)\)s", cls.message))
    values = {k: f"<{k}-value>" for k in keys}
    err = cls(**values)
    for k in keys:
        assert f"<{k}-value>" in str(err)
    assert err.kwargs == values


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_every_template_names_what_is_at_fault(cls: type[exception.RbdDriverError]) -> None:
    keys = set(re.findall(r"%\((\w+)\)s", cls.message))
    if cls in (exception.RbdDriverError, exception.ConfigError, exception.ClusterError):
        assert keys == {"detail"}  # generic bases carry their subject in detail
    else:
        assert keys & {"pool", "image", "path", "target", "conf", "image_id", "image_type"}, cls


def test_missing_keyword_still_shows_something_useful() -> None:
    # The template cannot be filled without "image": the error still reads as
    # the template, followed by the keywords that were given.
    err = exception.ImageNotFound(pool="vms")
    text = str(err)
    assert text.startswith(exception.ImageNotFound.message), text  # what went wrong
    assert text.endswith(" ({'pool': 'vms'})"), text  # and where
    assert err.kwargs == {"pool": "vms"}


def test_explicit_message_wins() -> None:
    assert str(exception.PoolNotFound("custom text", pool="p")) == "custom text"
