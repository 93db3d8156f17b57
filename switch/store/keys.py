"""Keys at rest: each one a WrappedKey line (sealed under the master key), looked up by key id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import Column, Connection, DateTime, Engine, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError

from switch.security import KeyIntegrityError, WrappedKey
from switch.store.engine import writing
from switch.store.schema import metadata

KEY_ID_LENGTH = 80

security_keys = Table(
    "security_keys",
    metadata,
    Column("key_id", String(KEY_ID_LENGTH), primary_key=True),
    Column("usage", String(24), nullable=False),
    Column("wrapped", Text, nullable=False),  # WrappedKey.to_text(): never a clear key
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, key_id: str) -> WrappedKey | None:
        with self._engine.connect() as conn:
            text = conn.execute(
                select(security_keys.c.wrapped).where(security_keys.c.key_id == key_id)
            ).scalar()
        if text is None:
            return None
        key = WrappedKey.from_text(text)
        if key.key_id != key_id:
            # The seal binds the key to its own id, so a row copied from another key's would
            # open: a PIN block under one terminal's key would then pass at another terminal.
            raise KeyIntegrityError(f"the key stored as {key_id} is {key.key_id}")
        return key

    def put(self, key: WrappedKey) -> None:
        """Store a key under its id, replacing an earlier one (a re-injected terminal key)."""
        with writing(self._engine) as conn:
            put_key(conn, key)

    def get_or_create(self, key_id: str, make: Callable[[], WrappedKey]) -> WrappedKey:
        """The stored key, or a new one; two nodes racing both end with the one that landed first."""
        existing = self.get(key_id)
        if existing is not None:
            return existing
        key = make()
        assert key.key_id == key_id, "made a key under another id"
        try:
            with writing(self._engine) as conn:
                conn.execute(insert(security_keys), _row(key))
        except IntegrityError:
            landed = self.get(key_id)
            assert landed is not None
            return landed
        return key


def put_key(conn: Connection, key: WrappedKey) -> None:
    """Store a key under its id in conn's transaction, replacing an earlier one: with what goes with
    it (a terminal's credential and its PIN key), so that both land or neither."""
    conn.execute(security_keys.delete().where(security_keys.c.key_id == key.key_id))
    conn.execute(insert(security_keys), _row(key))


def _row(key: WrappedKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "usage": key.usage.value,
        "wrapped": key.to_text(),
        "created_at": dt.datetime.now(dt.UTC),
    }
