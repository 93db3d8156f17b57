"""Reading merchants' repayments (merchant_repayments): one by its request id, a merchant's over days,
and each checked against its journal entry."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Row, Select, and_, or_, select

from switch.domain import ledger
from switch.domain.money import Money
from switch.domain.quoting import quoted
from switch.store.journal import RepaymentRecord
from switch.store.repository import as_utc
from switch.store.schema import journal_entries, merchant_repayments, postings


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


@dataclass(frozen=True, slots=True)
class _StoredEntry:
    key: str
    kind: str
    currency: str
    moved: dict[str, int]  # its postings, by account


def repayment_disagreements(conn: Connection) -> list[str]:
    """Each repayment row whose journal entry does not move what the row records, and each
    repayment entry no row records (both are written in one transaction: either is a fault)."""
    row, entry = merchant_repayments.c, journal_entries.c
    of_repayments = or_(entry.kind == ledger.REPAYMENT_KIND, entry.entry_id.in_(select(row.entry_id)))
    stored: dict[int, _StoredEntry] = {}
    for found in conn.execute(select(journal_entries).where(of_repayments)):
        stored[int(found.entry_id)] = _StoredEntry(
            str(found.idempotency_key), str(found.kind), str(found.currency), {}
        )
    moved = select(postings.c.entry_id, postings.c.account_id, postings.c.amount_minor).join(
        journal_entries, journal_entries.c.entry_id == postings.c.entry_id
    )
    for posting in conn.execute(moved.where(of_repayments)):
        stored[int(posting.entry_id)].moved[str(posting.account_id)] = int(posting.amount_minor)
    problems: list[str] = []
    recorded: set[int] = set()
    for found in conn.execute(select(merchant_repayments).order_by(row.entry_id)):
        recorded.add(int(found.entry_id))
        record = RepaymentRecord(
            str(found.request_id),
            str(found.merchant_id),
            str(found.programme_id),
            str(found.currency),
            int(found.amount_minor),
            str(found.reference),
        )
        problem = _disagreement(record, stored[int(found.entry_id)])
        if problem is not None:
            problems.append(f"repayment {quoted(record.request_id)}: its entry {found.entry_id} {problem}")
    problems += [
        f"entry {entry_id} is a repayment no repayment row records"
        for entry_id, unrecorded in sorted(stored.items())
        if entry_id not in recorded and unrecorded.kind == ledger.REPAYMENT_KIND
    ]
    return problems


def _disagreement(record: RepaymentRecord, entry: _StoredEntry) -> str | None:
    """How the entry differs from the one recording the repayment would (ledger.repayment_entry);
    None when it is that entry."""
    if entry.kind != ledger.REPAYMENT_KIND:
        return f"is a {quoted(entry.kind)} entry, not a repayment"
    if entry.key != ledger.repayment_key(record.request_id):
        return "is another repayment's"
    if entry.currency != record.currency:
        return f"is in {quoted(entry.currency)}, the repayment in {quoted(record.currency)}"
    payable = ledger.merchant_payable_account(record.merchant_id, record.programme_id)
    clearing = ledger.payout_clearing_account(record.programme_id)
    commission = ledger.commission_account(record.programme_id)
    if not set(entry.moved) <= {payable, clearing, commission} or not {payable, clearing} <= set(entry.moved):
        return (
            f"does not move the debt of merchant {quoted(record.merchant_id)} to programme "
            f"{quoted(record.programme_id)}"
        )
    if entry.moved[clearing] != -record.amount_minor:
        transfer = Money(-entry.moved[clearing], record.currency).format()
        recorded = Money(record.amount_minor, record.currency).format()
        return f"takes in a transfer of {transfer}, the row records {recorded}"
    if entry.moved[payable] < record.amount_minor:
        return "clears less of the debt than the transfer"
    return None
