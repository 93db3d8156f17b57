"""The purge of the inbound repeat tables (inbound_repeat_keys, inbound_resends): rows past their use."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import Engine, Table, delete, select, tuple_

from switch.config import Settings
from switch.store.engine import writing
from switch.store.schema import (
    INBOUND_REPEAT_KEY_PURGE_MARGIN,
    INBOUND_REPEAT_WINDOW,
    inbound_repeat_keys,
    inbound_resends,
)

log = logging.getLogger(__name__)


class InboundRepeatPurge:
    """Deletes repeat keys older than INBOUND_REPEAT_WINDOW and INBOUND_REPEAT_KEY_PURGE_MARGIN
    (past the window a key is another day's and the journal replaces it anyway) and resends older
    than inbound_resends_kept_days (a reversal or completion naming a resend's field 7 finds its
    first until then). At most inbound_repeat_rows_purged_max rows a transaction, so the write
    lock (SQLite's only writer) is held for one short batch at a time, and at most
    inbound_repeat_purge_batches_max batches a call: the next sweep takes what is left."""

    def __init__(self, engine: Engine, settings: Settings, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._now = now
        self._resends_kept = dt.timedelta(days=settings.inbound_resends_kept_days)
        self._rows_max = settings.inbound_repeat_rows_purged_max
        self._batches_max = settings.inbound_repeat_purge_batches_max

    def purge(self) -> int:
        """Returns how many rows were deleted, of both tables."""
        now = self._now()
        keys = self._purge_older(
            inbound_repeat_keys, now - INBOUND_REPEAT_WINDOW - INBOUND_REPEAT_KEY_PURGE_MARGIN
        )
        resends = self._purge_older(inbound_resends, now - self._resends_kept)
        if keys or resends:
            log.info("%d inbound repeat keys and %d inbound resends purged", keys, resends)
        return keys + resends

    def _purge_older(self, table: Table, before: dt.datetime) -> int:
        key = list(table.primary_key.columns)
        old = table.c.created_at < before
        oldest = select(*key).where(old).order_by(table.c.created_at).limit(self._rows_max)
        # The condition again on the rows themselves: a key replaced meanwhile (a new created_at) stays.
        statement = delete(table).where(tuple_(*key).in_(oldest), old)
        purged = 0
        for _ in range(self._batches_max):
            with writing(self._engine) as conn:
                deleted = int(conn.execute(statement).rowcount)
            purged += deleted
            if deleted < self._rows_max:
                break
        return purged
