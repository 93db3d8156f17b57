"""Reading merchants' repayments (merchant_repayments): one by its request id, a merchant's over days."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Row, select

from switch.domain.money import Money
from switch.store.journal import RepaymentRecord
from switch.store.repository import as_utc
from switch.store.schema import merchant_repayments


@dataclass(frozen=True, slots=True)
class Repayment:
    """A repayment recorded: its row and the journal entry that moved its money."""

    record: RepaymentRecord
    entry_id: int
    recorded_at: dt.datetime  # UTC

    @property
    def amount(self) -> Money:
        return Money(self.record.amount_minor, self.record.currency)


def stored_repayment(conn: Connection, request_id: str) -> Repayment | None:
    query = select(merchant_repayments).where(merchant_repayments.c.request_id == request_id)
    row = conn.execute(query).first()
    return None if row is None else _repayment(row)


def repayments_of(
    conn: Connection, merchant_id: str, since: dt.datetime, until: dt.datetime
) -> tuple[Repayment, ...]:
    """The merchant's repayments recorded in [since, until), oldest first."""
    row = merchant_repayments.c
    found = conn.execute(
        select(merchant_repayments)
        .where(row.merchant_id == merchant_id, row.recorded_at >= since, row.recorded_at < until)
        .order_by(row.entry_id)
    )
    return tuple(_repayment(r) for r in found)


def _repayment(row: Row[tuple[object, ...]]) -> Repayment:
    record = RepaymentRecord(
        str(row.request_id),
        str(row.merchant_id),
        str(row.programme_id),
        str(row.currency),
        int(row.amount_minor),
        str(row.reference),
    )
    return Repayment(record, int(row.entry_id), as_utc(row.recorded_at))
