"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from carbon_servers import FakeApi, serve


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A fake carbon API server (every provider's endpoints) on a free loopback port."""
    yield from serve()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s
