# SPDX-License-Identifier: Apache-2.0
"""The unit tests' one fake cluster: ``env``.

``env`` is the test module's ``Env`` (a :class:`~rbd_driver.testing.fixtures.FakeEnv`
subclass with that module's helpers, defined there or imported), or ``FakeEnv``
itself, made on ``tmp_path``; its other parameters without a default are
fixtures, given by name (``monkeypatch``, ``capsys``). After the test its
drivers and clients are closed and no connection, ioctx or image handle may be
left open. A module that runs every test on other settings (both clone
formats, both aio modes) defines its own ``env``.

``sigterm_guard`` turns on the library's SIGTERM guard of long copies for a
test (it is opt-in; the ``rbd-driver`` command turns it on) and off after.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbd_driver.storage import sigterm
from rbd_driver.testing.fixtures import FakeEnv


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeEnv]:
    make = getattr(request.module, "Env", FakeEnv)
    _, *rest = inspect.signature(make).parameters.values()
    fixtures = {p.name: request.getfixturevalue(p.name) for p in rest
                if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD}
    made = make(tmp_path, **fixtures)
    yield made
    made.close_and_check()


@pytest.fixture
def sigterm_guard() -> Iterator[None]:
    sigterm.enable()
    yield
    sigterm.enable(False)
