"""A terminal's periods in the database: which period a transaction row belongs to, and a period's
totals, both read inside the transaction that writes.

A row belongs to the period open when it commits, as the terminal's row says then, not to the one
an actor last saw: an actor's copy can be behind (a close that timed out and landed later, a close
taken on another node, an actor restarted while a write was on its way), and a row stamped with a
closed period was counted in no close. A close counts its period inside its own transaction, after
it has moved the terminal on: every row committed before it is counted, every row after it belongs
to the next period. On PostgreSQL a writer reads the terminal's row FOR SHARE, so a close on
another node waits for it, or it for the close; on SQLite every writer holds the one write lock.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, func, select

from switch.domain.transactions import TransactionStatus
from switch.store.schema import terminals, transactions

if TYPE_CHECKING:  # the journal imports this module
    from switch.store.journal import TransactionRecord


# A line of these undoes what another line counts: a cancel or a reversal of a sale takes from the
# takings, of a refund adds to them, so each is its own line, named by what it undoes.
UNDO_TYPES = ("cancel", "reversal")


@dataclass(frozen=True, slots=True)
class TypeTotal:
    transaction_type: str
    payment_method: str
    currency: str
    count: int
    total_minor: int
    undoes: str = ""  # a cancel or reversal line: the type of what it undid ("" in closes before it)


def open_periods(conn: Connection, sources: Iterable[str]) -> dict[str, int]:
    """The open period of each source that is a terminal, read in conn's writing transaction."""
    wanted = sorted(set(sources))
    if not wanted:
        return {}
    query = (
        select(terminals.c.terminal_id, terminals.c.period_number)
        .where(terminals.c.terminal_id.in_(wanted))
        .with_for_update(read=True)
    )
    return {str(terminal_id): int(period) for terminal_id, period in conn.execute(query)}


def transaction_rows(
    records: Iterable[TransactionRecord], now: dt.datetime, periods: dict[str, int]
) -> list[dict[str, object]]:
    """Insert values for records: each in its terminal's open period (others keep theirs)."""
    rows = []
    for record in records:
        values: dict[str, object] = {name: getattr(record, name) for name in record.__slots__}
        values["period_number"] = periods.get(record.source, record.period_number)
        values["created_at"] = now
        rows.append(values)
    return rows


def period_totals(conn: Connection, terminal_id: str, period_number: int) -> tuple[TypeTotal, ...]:
    """Approved transactions of the period that moved money, per type, payment method and, for a
    cancel or reversal, the type of what it undid. An original undone stays on its line and its
    undoing is a line beside it (a reversal in a later period is a line of that period), so a
    close reads as taken less undone. An aborted payment was never taken: no line at all."""
    row = transactions.c
    original = transactions.alias("original")
    undoes = func.coalesce(original.c.transaction_type, "")
    undone_original = and_(
        row.transaction_type.in_(UNDO_TYPES),
        original.c.source == row.source,
        original.c.transaction_id == row.original_transaction_id,
    )
    query = (
        select(
            row.transaction_type,
            row.payment_method,
            row.currency,
            undoes,
            func.count(),
            func.coalesce(func.sum(row.approved_minor), 0),
        )
        .select_from(transactions.outerjoin(original, undone_original))
        .where(
            row.source == terminal_id,
            row.period_number == period_number,
            row.result.in_(("approved", "approved_partial")),
            row.status != TransactionStatus.aborted.value,
            # a reversal of what never moved money was answered, but is no money to count
            row.approved_minor > 0,
        )
        .group_by(row.transaction_type, row.payment_method, row.currency, undoes)
        .order_by(row.transaction_type, row.payment_method, row.currency, undoes)
    )
    return tuple(TypeTotal(t, m, c, int(n), int(s), u) for t, m, c, u, n, s in conn.execute(query))


def totals_json(totals: tuple[TypeTotal, ...]) -> str:
    return json.dumps(
        [
            {
                "transaction_type": total.transaction_type,
                "payment_method": total.payment_method,
                "currency": total.currency,
                "count": total.count,
                "total_minor": total.total_minor,
                "undoes": total.undoes,
            }
            for total in totals
        ]
    )


def totals_of_json(text: str) -> tuple[TypeTotal, ...]:
    return tuple(TypeTotal(**item) for item in json.loads(text))
