"""Fixtures shared by the integration tests: a real sandbox executor publishing through the
test's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consumer.app import store_publisher
from consumer.sandbox import Executor
from consumer.store import Store


@pytest.fixture
async def executor(db_url: str) -> AsyncIterator[Executor]:
    store = await Store.open(db_url)
    try:
        async with Executor(workers=2, publisher=store_publisher(store)) as ex:
            yield ex
    finally:
        await store.close()
