"""Locks on a name for the rest of a transaction, for checks that read before they insert.

A count or an "is it taken?" read followed by an insert is a race when the rows it reads may
not exist yet: there is no row to lock. Both databases can still serialise such transactions:
PostgreSQL with a transaction-scoped advisory lock on the name's hash (held until commit or
rollback, across nodes), SQLite by taking its one write lock at the start of the transaction
(`BEGIN IMMEDIATE`, which `switch.store.engine.writing` does), so the reads that follow see every
earlier writer's commit.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text


def lock_name(conn: Connection, name: str) -> None:
    """Hold the name until this transaction ends; another transaction locking it waits.

    Call it before the transaction's first read, in a transaction begun with `writing`. On SQLite
    every name is the same lock, the database's write lock, which `writing` took at the start.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(name)})
        return
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None and dbapi.in_transaction, "on SQLite, lock a name in a `writing` transaction"


def advisory_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock; names of other uses may share one, which
    only makes them wait on each other now and then."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
