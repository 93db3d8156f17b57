"""A PostgreSQL schema of its own for each test, so that several suites can share the server at once."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """Yield a URL whose connections work in a fresh, empty schema; drop the schema afterwards.

    Skips when the server is not there, unless TXSWITCH_REQUIRE_POSTGRES=1 (CI), where it fails.
    """
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:
        admin.dispose()
        if os.environ.get("TXSWITCH_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(error).__name__})")
    try:
        yield f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class LockWaits:
    """Whether one PostgreSQL backend now waits for a lock another holds (pg_blocking_pids), asked on
    a connection of its own: a sure sign that a race's second party is kept from going on, where a
    test would otherwise wait out a timeout. Any thread may ask; close() when done."""

    def __init__(self) -> None:
        self._engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def blocked_by(self, waiter_pids: Iterable[int], holder_pid: int) -> bool:
        """Whether any of the waiters waits for a lock that the holder holds."""
        query = text(
            "SELECT coalesce(bool_or(CAST(:holder AS integer) = ANY(pg_blocking_pids(waiter))), false) "
            "FROM unnest(CAST(:waiters AS integer[])) AS waiter"
        )
        with self._lock:
            if self._conn is None:
                self._conn = self._engine.connect()
            found = self._conn.execute(query, {"holder": holder_pid, "waiters": list(waiter_pids)})
            return bool(found.scalar())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._engine.dispose()


def backend_pid(dbapi_cursor: Any) -> int:
    """The PostgreSQL backend serving a psycopg cursor's connection."""
    return int(dbapi_cursor.connection.info.backend_pid)
