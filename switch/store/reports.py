"""The transaction report's reads: one page of stored transactions, and totals over all of them."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, Select, and_, func, select

from switch.domain import ledger
from switch.domain.programmes import repayment_transfer_minor
from switch.domain.quoting import quoted
from switch.domain.reports import ReportQuery
from switch.domain.transactions import TransactionStatus, TransactionType
from switch.store.journal import TOMBSTONE_TYPE
from switch.store.repayments import Repayment, repayments_of
from switch.store.repository import as_utc, merchant_name
from switch.store.schema import (
    accounts,
    cards,
    journal_entries,
    locations,
    merchant_programmes,
    postings,
    programmes,
    terminals,
    transactions,
)


@dataclass(frozen=True, slots=True)
class ReportedTransaction:
    transaction_id: str
    source: str  # the terminal's id, "backoffice", or "iso:<acquirer>"
    device_name: str  # "" when the source is not a terminal
    location_id: str  # the terminal's location; "" when the source is not a terminal
    location_name: str
    merchant_id: str
    created_at: dt.datetime  # UTC
    transaction_type: str
    payment_method: str
    status: str
    result: str  # a ResponseCode member's name
    currency: str
    requested_minor: int
    approved_minor: int
    card_masked: str
    authorization_code: str
    original_transaction_id: str
    period_number: int


@dataclass(frozen=True, slots=True)
class ReportTotal:
    transaction_type: str
    payment_method: str
    status: str
    currency: str
    count: int
    approved_minor: int
    moved_nothing: bool = False  # rows taken that moved no money: a close leaves them out


@dataclass(frozen=True, slots=True)
class TransactionReport:
    transactions: tuple[ReportedTransaction, ...]
    totals: tuple[ReportTotal, ...]  # over every transaction the query selects, not only this page
    next_after: int  # 0: this was the last page


@dataclass(frozen=True, slots=True)
class ProgrammeSummary:
    programme_id: str
    name: str
    currency: str
    commission_basis_points: int
    payout_interval_weeks: int
    redemptions: int
    cards_redeemed: int
    redeemed_minor: int
    owed_minor: int  # below zero: the merchant owes the programme

    @property
    def to_transfer_minor(self) -> int:
        """What the merchant transfers by bank to clear what it owes (record-repayment's amount):
        the debt less the commission on it given back; 0 when it owes nothing or that is all of it."""
        return repayment_transfer_minor(max(-self.owed_minor, 0), self.commission_basis_points)


@dataclass(frozen=True, slots=True)
class PayoutMade:
    programme_id: str
    settlement_id: str
    made_at: dt.datetime  # UTC
    currency: str
    gross_minor: int
    commission_minor: int

    @property
    def net_minor(self) -> int:
        return self.gross_minor - self.commission_minor


@dataclass(frozen=True, slots=True)
class MerchantSummary:
    merchant_id: str
    merchant_name: str
    programmes: tuple[ProgrammeSummary, ...]
    payouts: tuple[PayoutMade, ...]
    repayments: tuple[Repayment, ...] = ()  # what it paid back by bank transfer, over the days


# Statuses of rows never taken: their lines say so, and none moved money.
_NOT_TAKEN = (TransactionStatus.declined.value, TransactionStatus.aborted.value)


class UnknownReportSubjectError(LookupError):
    """The merchant or terminal a report asks for does not exist."""


def transaction_report(engine: Engine, query: ReportQuery) -> TransactionReport:
    row = transactions.c
    with engine.connect() as conn:
        _check_subjects(conn, query)
        selected = _selection(query)
        found = conn.execute(_page(query, query.after)).all()
        # A line apart for rows taken that moved no money (a reversal of what never arrived): a
        # close leaves them out, and counted with the rest their line's count was not the close's.
        nothing = and_(row.status.not_in(_NOT_TAKEN), row.approved_minor == 0)
        lines = (row.transaction_type, row.payment_method, row.status, row.currency, nothing)
        totals = conn.execute(
            select(*lines, func.count(), func.coalesce(func.sum(row.approved_minor), 0))
            .where(selected)
            .group_by(*lines)
            .order_by(*lines)
        ).all()
    page = found[: query.page_size]
    return TransactionReport(
        transactions=tuple(_reported(r) for r in page),
        totals=tuple(ReportTotal(t, m, s, c, int(n), int(a), bool(z)) for t, m, s, c, z, n, a in totals),
        next_after=int(page[-1].transaction_pk) if len(found) > query.page_size else 0,
    )


def exported_pages(engine: Engine, query: ReportQuery) -> Generator[tuple[ReportedTransaction, ...]]:
    """Every transaction the query selects, in pages of query.page_size, all read from one snapshot.

    Paging by id over separate reads missed rows: on PostgreSQL an id is handed out at insert and
    its transaction may commit after a higher one, so a page could pass an id still uncommitted.
    The first page comes even when empty; an unknown subject is UnknownReportSubjectError before
    it. The snapshot (and a connection) is held until the last page is taken or the iterator closed.

    One statement, its rows fetched a page at a time (a server-side cursor on PostgreSQL): with a
    query per page, a plan on the merchant's index (SQLite's) found and sorted every selected row
    after the page's id again for each page, so the reads grew as the square of the rows (60,000
    of one merchant among 300,000: 121 queries and 4.7 s of CPU here, 0.9 s as one).
    """
    with engine.connect() as conn, _read_snapshot(conn):
        _check_subjects(conn, query)
        found = conn.execute(
            _selected_rows(query, query.after),
            execution_options={"stream_results": True, "yield_per": query.page_size},
        )
        pages = found.partitions()
        yield tuple(_reported(r) for r in next(pages, ()))
        for page in pages:
            yield tuple(_reported(r) for r in page)


@contextmanager
def _read_snapshot(conn: Connection) -> Iterator[None]:
    """A read-only transaction whose every read sees the database as of its first one."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    with conn.begin():
        if conn.dialect.name == "sqlite":
            # pysqlite begins a transaction only before a write; each read would be its own.
            dbapi = conn.connection.dbapi_connection
            assert isinstance(dbapi, sqlite3.Connection), "an SQLite engine's connections are sqlite3's"
            dbapi.execute("BEGIN")
        yield


def _page(query: ReportQuery, after: int) -> Select[Any]:
    """Up to one more than a page of the selected transactions after a stored one, by id."""
    return _selected_rows(query, after).limit(query.page_size + 1)


def _selected_rows(query: ReportQuery, after: int) -> Select[Any]:
    """The selected transactions after a stored one, by id, with their terminal's and location's names."""
    row = transactions.c
    return (
        select(
            transactions,
            terminals.c.device_name,
            terminals.c.location_id,
            locations.c.name.label("location_name"),
        )
        .outerjoin(terminals, terminals.c.terminal_id == row.source)
        .outerjoin(locations, locations.c.location_id == terminals.c.location_id)
        .where(_selection(query), row.transaction_pk > after)
        .order_by(row.transaction_pk)
    )


def _check_subjects(conn: Connection, query: ReportQuery) -> None:
    if query.merchant_id and merchant_name(conn, query.merchant_id) is None:
        raise UnknownReportSubjectError(f"merchant_id {quoted(query.merchant_id)}: no such merchant")
    if query.terminal_id:
        owner = conn.execute(
            select(terminals.c.merchant_id).where(terminals.c.terminal_id == query.terminal_id)
        ).scalar_one_or_none()
        # Another merchant's terminal is answered as one that does not exist: ids are not probed.
        if owner is None or (query.merchant_id and owner != query.merchant_id):
            problem = _no_such("terminal", query)
            raise UnknownReportSubjectError(f"terminal_id {quoted(query.terminal_id)}: {problem}")
    if query.location_ids:
        owners = dict(
            conn.execute(
                select(locations.c.location_id, locations.c.merchant_id).where(
                    locations.c.location_id.in_(query.location_ids)
                )
            ).all()
        )
        for location_id in query.location_ids:
            if location_id not in owners or (query.merchant_id and owners[location_id] != query.merchant_id):
                problem = _no_such("location", query)
                raise UnknownReportSubjectError(f"location_ids: {quoted(location_id)}: {problem}")


def _no_such(kind: str, query: ReportQuery) -> str:
    return (
        f"no such {kind} of merchant {quoted(query.merchant_id)}" if query.merchant_id else f"no such {kind}"
    )


def _selection(query: ReportQuery) -> ColumnElement[bool]:
    row = transactions.c
    conditions: list[ColumnElement[bool]] = [
        row.created_at >= query.since,
        row.created_at < query.until,
        row.transaction_type != TOMBSTONE_TYPE,
    ]
    if query.merchant_id:
        conditions.append(row.merchant_id == query.merchant_id)
    if query.terminal_id:
        conditions.append(row.source == query.terminal_id)
    if query.location_ids:
        there = select(terminals.c.terminal_id).where(terminals.c.location_id.in_(query.location_ids))
        conditions.append(row.source.in_(there))
    if query.types:
        conditions.append(row.transaction_type.in_(query.types))
    if query.payment_methods:
        conditions.append(row.payment_method.in_(query.payment_methods))
    if query.statuses:
        conditions.append(row.status.in_(query.statuses))
    return and_(*conditions)


def _reported(row: Row[Any]) -> ReportedTransaction:
    r = row._mapping
    return ReportedTransaction(
        transaction_id=r["transaction_id"],
        source=r["source"],
        device_name=r["device_name"] or "",
        location_id=r["location_id"] or "",
        location_name=r["location_name"] or "",
        merchant_id=r["merchant_id"] or "",
        created_at=as_utc(r["created_at"]),
        transaction_type=r["transaction_type"],
        payment_method=r["payment_method"],
        status=r["status"],
        result=r["result"],
        currency=r["currency"],
        requested_minor=int(r["requested_minor"]),
        approved_minor=int(r["approved_minor"]),
        card_masked=r["card_masked"],
        authorization_code=r["authorization_code"],
        original_transaction_id=r["original_transaction_id"],
        period_number=int(r["period_number"]),
    )


def merchant_summary(engine: Engine, query: ReportQuery) -> MerchantSummary:
    """Per programme the merchant takes: redemptions over the days, what is owed now; payouts made
    and repayments recorded."""
    assert query.merchant_id, "a summary is of one merchant"
    merchant_id = query.merchant_id
    with engine.connect() as conn:
        name = merchant_name(conn, merchant_id)
        if name is None:
            raise UnknownReportSubjectError(f"merchant_id {quoted(merchant_id)}: no such merchant")
        members = conn.execute(
            select(
                programmes.c.programme_id,
                programmes.c.name,
                programmes.c.currency,
                merchant_programmes.c.commission_basis_points,
                programmes.c.payout_interval_weeks,
            )
            .join(programmes, programmes.c.programme_id == merchant_programmes.c.programme_id)
            .where(merchant_programmes.c.merchant_id == merchant_id)
            .order_by(programmes.c.name, programmes.c.programme_id)
        ).all()
        payable = {
            ledger.merchant_payable_account(merchant_id, m.programme_id): m.programme_id for m in members
        }
        redeemed = _redeemed_by_programme(conn, query)
        owed = dict(
            conn.execute(
                select(accounts.c.account_id, accounts.c.balance_minor).where(
                    accounts.c.account_id.in_(payable)
                )
            ).all()
        )
        payouts = _payouts(conn, query, payable)
        repayments = repayments_of(conn, merchant_id, query.since, query.until)
    summaries = tuple(
        ProgrammeSummary(
            m.programme_id,
            m.name,
            m.currency,
            m.commission_basis_points,
            m.payout_interval_weeks,
            *redeemed.get(m.programme_id, (0, 0, 0)),
            int(owed.get(ledger.merchant_payable_account(merchant_id, m.programme_id), 0)),
        )
        for m in members
    )
    return MerchantSummary(merchant_id, name, summaries, payouts, repayments)


def _redeemed_by_programme(conn: Connection, query: ReportQuery) -> dict[str, tuple[int, int, int]]:
    """(redemptions, distinct cards, amount less refunds) of the redemptions that still stand."""
    row = transactions.c
    found = conn.execute(
        select(
            cards.c.programme_id,
            func.count(),
            func.count(func.distinct(row.card_id)),
            func.coalesce(func.sum(row.approved_minor - row.refunded_minor), 0),
        )
        .join(cards, cards.c.card_id == row.card_id)
        .where(
            row.merchant_id == query.merchant_id,
            row.transaction_type == TransactionType.redemption.value,
            row.status == TransactionStatus.approved.value,
            row.created_at >= query.since,
            row.created_at < query.until,
        )
        .group_by(cards.c.programme_id)
    ).all()
    return {programme_id: (int(n), int(c), int(a)) for programme_id, n, c, a in found}


def _payouts(conn: Connection, query: ReportQuery, payable: dict[str, str]) -> tuple[PayoutMade, ...]:
    """Settlement entries that paid one of the merchant's payables over the days, oldest first."""
    entry = journal_entries.c
    paid = conn.execute(
        select(
            entry.entry_id,
            entry.idempotency_key,
            entry.created_at,
            entry.currency,
            postings.c.account_id,
            postings.c.amount_minor,
        )
        .join(postings, postings.c.entry_id == entry.entry_id)
        .where(
            entry.kind == ledger.SETTLEMENT_KIND,
            postings.c.account_id.in_(payable),
            entry.created_at >= query.since,
            entry.created_at < query.until,
        )
        .order_by(entry.entry_id)
    ).all()
    if not paid:
        return ()
    commission_accounts = {ledger.commission_account(p) for p in payable.values()}
    commissions = dict(
        conn.execute(
            select(postings.c.entry_id, postings.c.amount_minor).where(
                postings.c.entry_id.in_([p.entry_id for p in paid]),
                postings.c.account_id.in_(commission_accounts),
            )
        ).all()
    )
    made = []
    for p in paid:
        programme_id = payable[p.account_id]
        made.append(
            PayoutMade(
                programme_id,
                ledger.settlement_id_of(p.idempotency_key, programme_id, query.merchant_id),
                as_utc(p.created_at),
                p.currency,
                -int(p.amount_minor),
                int(commissions.get(p.entry_id, 0)),
            )
        )
    return tuple(made)
