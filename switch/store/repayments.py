"""Reading merchants' repayments (merchant_repayments): one by its request id, a merchant's over days."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Row, Select, and_, select

from switch.domain.money import Money
from switch.store.journal import RepaymentRecord
from switch.store.repository import as_utc
from switch.store.schema import merchant_repayments, postings


@dataclass(frozen=True, slots=True)
class Repayment:
    """A repayment recorded: its row and the journal entry that moved its money."""

    record: RepaymentRecord  # its amount: what arrived by bank
    entry_id: int
    recorded_at: dt.datetime  # UTC
    cleared_minor: int  # the part of the debt it cleared: its amount and the commission given back

    @property
    def amount(self) -> Money:
        return Money(self.record.amount_minor, self.record.currency)

    @property
    def commission_minor(self) -> int:
        """The commission on the part cleared, given back to the merchant."""
        return self.cleared_minor - self.record.amount_minor


def stored_repayment(conn: Connection, request_id: str) -> Repayment | None:
    query = _with_cleared().where(merchant_repayments.c.request_id == request_id)
    row = conn.execute(query).first()
    return None if row is None else _repayment(row)


def repayments_of(
    conn: Connection, merchant_id: str, since: dt.datetime, until: dt.datetime
) -> tuple[Repayment, ...]:
    """The merchant's repayments recorded in [since, until), oldest first."""
    row = merchant_repayments.c
    found = conn.execute(
        _with_cleared()
        .where(row.merchant_id == merchant_id, row.recorded_at >= since, row.recorded_at < until)
        .order_by(row.entry_id)
    )
    return tuple(_repayment(r) for r in found)


def _with_cleared() -> Select[tuple[object, ...]]:
    """The rows with the part of the debt each cleared: its entry's one credit, the payable's."""
    row, posting = merchant_repayments.c, postings.c
    on = and_(posting.entry_id == row.entry_id, posting.amount_minor > 0)
    return select(merchant_repayments, posting.amount_minor.label("cleared_minor")).join(postings, on)


def _repayment(row: Row[tuple[object, ...]]) -> Repayment:
    record = RepaymentRecord(
        str(row.request_id),
        str(row.merchant_id),
        str(row.programme_id),
        str(row.currency),
        int(row.amount_minor),
        str(row.reference),
    )
    return Repayment(record, int(row.entry_id), as_utc(row.recorded_at), int(row.cleared_minor))
