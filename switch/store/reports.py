"""The transaction report's reads: one page of stored transactions, and totals over all of them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, and_, func, select

from switch.domain.reports import ReportQuery
from switch.store.schema import merchants, terminals, transactions

# Stored under a transaction's id so that a late original cannot move money; not a transaction.
_TOMBSTONE = "tombstone"


@dataclass(frozen=True, slots=True)
class ReportedTransaction:
    transaction_id: str
    source: str  # the terminal's id, "backoffice", or "iso:<acquirer>"
    device_name: str  # "" when the source is not a terminal
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


@dataclass(frozen=True, slots=True)
class TransactionReport:
    transactions: tuple[ReportedTransaction, ...]
    totals: tuple[ReportTotal, ...]  # over every transaction the query selects, not only this page
    next_after: int  # 0: this was the last page


class UnknownReportSubjectError(LookupError):
    """The merchant or terminal a report asks for does not exist."""


def transaction_report(engine: Engine, query: ReportQuery) -> TransactionReport:
    row = transactions.c
    with engine.connect() as conn:
        _check_subjects(conn, query)
        selected = _selection(query)
        found = conn.execute(
            select(transactions, terminals.c.device_name)
            .outerjoin(terminals, terminals.c.terminal_id == row.source)
            .where(selected, row.transaction_pk > query.after)
            .order_by(row.transaction_pk)
            .limit(query.page_size + 1)
        ).all()
        totals = conn.execute(
            select(
                row.transaction_type,
                row.payment_method,
                row.status,
                row.currency,
                func.count(),
                func.coalesce(func.sum(row.approved_minor), 0),
            )
            .where(selected)
            .group_by(row.transaction_type, row.payment_method, row.status, row.currency)
            .order_by(row.transaction_type, row.payment_method, row.status, row.currency)
        ).all()
    page = found[: query.page_size]
    return TransactionReport(
        transactions=tuple(_reported(r) for r in page),
        totals=tuple(ReportTotal(t, m, s, c, int(n), int(a)) for t, m, s, c, n, a in totals),
        next_after=int(page[-1].transaction_pk) if len(found) > query.page_size else 0,
    )


def _check_subjects(conn: Connection, query: ReportQuery) -> None:
    if (
        query.merchant_id
        and conn.execute(
            select(merchants.c.merchant_id).where(merchants.c.merchant_id == query.merchant_id)
        ).first()
        is None
    ):
        raise UnknownReportSubjectError(f"merchant_id {query.merchant_id!r}: no such merchant")
    if query.terminal_id:
        owner = conn.execute(
            select(terminals.c.merchant_id).where(terminals.c.terminal_id == query.terminal_id)
        ).scalar_one_or_none()
        if owner is None:
            raise UnknownReportSubjectError(f"terminal_id {query.terminal_id!r}: no such terminal")
        if query.merchant_id and owner != query.merchant_id:
            raise UnknownReportSubjectError(
                f"terminal_id {query.terminal_id!r}: not a terminal of merchant {query.merchant_id!r}"
            )


def _selection(query: ReportQuery) -> ColumnElement[bool]:
    row = transactions.c
    conditions: list[ColumnElement[bool]] = [
        row.created_at >= query.since,
        row.created_at < query.until,
        row.transaction_type != _TOMBSTONE,
    ]
    if query.merchant_id:
        conditions.append(row.merchant_id == query.merchant_id)
    if query.terminal_id:
        conditions.append(row.source == query.terminal_id)
    if query.types:
        conditions.append(row.transaction_type.in_(query.types))
    if query.payment_methods:
        conditions.append(row.payment_method.in_(query.payment_methods))
    if query.statuses:
        conditions.append(row.status.in_(query.statuses))
    return and_(*conditions)


def _reported(row: Row[Any]) -> ReportedTransaction:
    r = row._mapping
    created_at: dt.datetime = r["created_at"]
    return ReportedTransaction(
        transaction_id=r["transaction_id"],
        source=r["source"],
        device_name=r["device_name"] or "",
        merchant_id=r["merchant_id"] or "",
        created_at=created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=dt.UTC),
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
