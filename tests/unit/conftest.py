"""The unit tests' one fake cluster: ``env``.

``env`` is the test module's ``Env`` (a :class:`~rbd_driver.testing.fixtures.FakeEnv`
subclass with that module's helpers, defined there or imported), or ``FakeEnv``
itself, made on ``tmp_path``; after the test its drivers and clients are closed
and no connection, ioctx or image handle may be left open. A module that runs
on other settings (both clone formats, both aio modes) defines its own ``env``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rbd_driver.testing.fixtures import FakeEnv


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeEnv]:
    made = getattr(request.module, "Env", FakeEnv)(tmp_path)
    yield made
    made.close_and_check()
