"""Integration fixtures: a real switch on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine

from switch.store.engine import create_schema, make_engine
from tests.integration.harness import World, world_fixture
from tests.pg import postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket of the test's holds (bound and listening) while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture(params=["sqlite", "postgres"])
def schema_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty schema, no switch: a SQLite file, or a PostgreSQL schema of its own."""
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        engine = make_engine(url or f"sqlite:///{tmp_path / 'schema.sqlite'}")
        create_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()
