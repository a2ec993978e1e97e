import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/functional talks to a real cluster.
    for item in items:
        if "tests/functional/" in str(item.fspath):
            item.add_marker(pytest.mark.functional)
