"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tabfleetd.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real LMDB store in a temporary directory, closed afterwards."""
    s = Store(tmp_path / "store")
    yield s
    s.close()
