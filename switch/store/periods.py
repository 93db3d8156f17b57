"""A terminal's periods in the database: which period a transaction row belongs to, and a period's
totals, both read inside the transaction that writes.

A row belongs to the period open when it commits, as the terminal's row says then, not to the one
an actor last saw: an actor's copy can be behind (a close that timed out and landed later, a close
taken on another node, an actor restarted while a write was on its way), and a row stamped with a
closed period was counted in no close. A close counts its period inside its own transaction, after
it has moved the terminal on: every row committed before it is counted, every row after it belongs
to the next period. On PostgreSQL a writer reads the terminal's row FOR SHARE, so a close on
another node waits for it, or it for the close; on SQLite every writer holds the one write lock.

The switch's own terminals (the web back office) have their day closed by the switch: a write for
one whose open period holds a row of an earlier day on the report zone's clock closes that period
first, in the write's own transaction (`WebDayRule`), so a row is counted in the day it commits on,
whatever was checked before it (switch/web_days.py).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Select, and_, bindparam, exists, func, select

from switch.domain.reports import midnight
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


@dataclass(frozen=True, slots=True)
class WebDayRule:
    """Which terminals' days the switch closes (by device name), and on which clock."""

    zone: zoneinfo.ZoneInfo
    device_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EarlierDay:
    """A switch terminal's open period holding a row of a day before the one now."""

    terminal_id: str
    period_number: int
    opened_at: dt.datetime


def web_day_close_id(period_number: int) -> str:
    """The close id of a web terminal's period: one per period, whoever closes it."""
    return f"web-day-{period_number}"


def earlier_days(
    conn: Connection, periods: dict[str, int], now: dt.datetime, rule: WebDayRule, tombstone_type: str
) -> list[EarlierDay]:
    """Of the switch's own terminals with these open periods, those whose open period holds a row
    (not a tombstone) committed before today's midnight on the rule's clock; one query."""
    if not periods:
        return []
    row, web = transactions.c, terminals.c
    today = now.astimezone(rule.zone).date()
    held = and_(
        row.source == web.terminal_id,
        row.period_number == web.period_number,  # ix_transactions_period
        row.transaction_type != tombstone_type,
        row.created_at < midnight(today, rule.zone),
    )
    query = select(web.terminal_id, web.period_number, web.period_opened_at).where(
        web.terminal_id.in_(sorted(periods)), web.device_name.in_(rule.device_names), exists().where(held)
    )
    return [EarlierDay(str(t), int(p), opened_at) for t, p, opened_at in conn.execute(query)]


def open_periods(conn: Connection, sources: Iterable[str]) -> dict[str, int]:
    """The open period of each source that is a terminal, read in conn's writing transaction."""
    return {terminal_id: period for terminal_id, (period, _) in open_periods_by_device(conn, sources).items()}


def open_periods_by_device(conn: Connection, sources: Iterable[str]) -> dict[str, tuple[int, str]]:
    """(open period, device name) of each source that is a terminal, read in conn's writing
    transaction: the device name tells the switch's own terminals from the others."""
    wanted = sorted(set(sources))
    if not wanted:
        return {}
    statement, size = _open_periods_statement(len(wanted))
    filled = wanted + [wanted[-1]] * (size - len(wanted))  # a terminal named twice is read once
    rows = conn.execute(statement, {f"terminal_{i}": terminal_id for i, terminal_id in enumerate(filled)})
    return {str(terminal_id): (int(period), str(device)) for terminal_id, period, device in rows}


# Built once per power of two of terminals named, so every batch's read is one already compiled:
# an IN list built per batch (and expanded per execution) cost more CPU than the journal's writes
# of a batch of two (python -m terminal_sim.journal_cost).
_OPEN_PERIODS_STATEMENTS: dict[int, Select[str, int, str]] = {}


def _open_periods_statement(count: int) -> tuple[Select[str, int, str], int]:
    size = 1 << (count - 1).bit_length()
    statement = _OPEN_PERIODS_STATEMENTS.get(size)
    if statement is None:
        web = terminals.c
        named = [bindparam(f"terminal_{i}", type_=web.terminal_id.type) for i in range(size)]
        statement = (
            select(web.terminal_id, web.period_number, web.device_name)
            .where(web.terminal_id.in_(named))
            .with_for_update(read=True)
        )
        _OPEN_PERIODS_STATEMENTS[size] = statement
    return statement, size


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
