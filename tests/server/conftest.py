"""The service's tests: every one that uses a store runs on SQLite and on PostgreSQL."""

import pytest

from tests.conftest import _stores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    if any("store_kind" in mark.args[0] for mark in metafunc.definition.iter_markers("parametrize")):
        return  # the module parametrizes the store itself
    metafunc.parametrize("store_kind", _stores(), indirect=True, scope="module")
