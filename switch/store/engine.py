"""Database engines: SQLite (WAL, synchronous=FULL) by default, PostgreSQL for several nodes."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from switch.store.schema import metadata

SQLITE_BUSY_TIMEOUT_MS = 10_000
POOL_SIZE = 16


def make_engine(url: str) -> Engine:
    """An engine whose commits are durable when they return."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=POOL_SIZE,
            max_overflow=POOL_SIZE,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Options given in the URL (a search_path, say) are kept beside the durability setting.
    parsed = make_url(url)
    url_options = parsed.query.get("options", "")
    given = url_options if isinstance(url_options, str) else " ".join(url_options)
    return create_engine(
        parsed.difference_update_query(["options"]),
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
        connect_args={"options": f"-c synchronous_commit=on {given}".strip()},
    )


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_schema(engine: Engine) -> None:
    """Create what is missing: tables, and indexes added to a table that exists already."""
    metadata.create_all(engine)
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(engine, checkfirst=True)
