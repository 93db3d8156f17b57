"""A merchant paying back by bank transfer what it owes a programme (its payable below zero)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from switch.admin import AdminConflictError, AdminError, AdminStateError, AdminUnavailableError
from switch.domain import ledger
from switch.domain.ledger import LedgerRefusal
from switch.domain.money import AMOUNT_MINOR_MAX, Money
from switch.domain.programmes import commission_percent, repayment_cleared_minor, repayment_transfer_minor
from switch.domain.quoting import quoted
from switch.store.journal import RepaymentRecord, Write, WriteResult
from switch.store.repayments import Repayment, stored_repayment
from switch.store.schema import accounts, merchant_programmes, merchants, programmes


@dataclass(frozen=True, slots=True)
class RepaymentAsked:
    """A repayment as the operator gave it, its shape checked (ids present, no card number)."""

    request_id: str
    merchant: str  # the merchant's id or e-mail address
    programme_id: str
    amount: Money
    reference: str


# A repayment judged on a debt lowered before it landed (another repayment, or a sale at the merchant:
# either credits its payable) is judged again on the debt then; this many judgements in a row lost so,
# it is refused as unavailable (sent again, it may land).
REPAYMENT_JUDGEMENTS_MAX = 3


def record_repayment(
    engine: Engine, write_now: Callable[[Write], WriteResult], asked: RepaymentAsked
) -> Repayment:
    """The repayment recorded, or the one recorded under its request id before (a replay).
    The amount is what arrived by bank: it clears the part of the debt it is the transfer for,
    the commission on that part given back (programmes.repayment_cleared_minor), judged on the
    debt as it is when it lands (one landing meanwhile has it judged again).
    AdminError naming the field for a bad amount or one above what clears the debt, LookupError
    for an unknown merchant or programme, AdminStateError when the merchant owes nothing or has
    nothing to transfer, AdminConflictError for a request id recorded with other details,
    AdminUnavailableError when the journal could not take it (a fault) or the debt kept changing
    under it; nothing moves then."""
    amount_problem = _amount_problem(asked.amount)
    if amount_problem is not None:
        raise AdminError(amount_problem)
    with engine.connect() as conn:
        merchant_id = _merchant_id(conn, asked.merchant)
        currency = _programme_currency(conn, asked.programme_id)
        record = RepaymentRecord(
            asked.request_id,
            merchant_id,
            asked.programme_id,
            asked.amount.currency,
            asked.amount.amount_minor,
            asked.reference,
        )
        stored = stored_repayment(conn, asked.request_id)
        if stored is not None:
            return _replayed(stored, record)
        if asked.amount.currency != currency:
            raise AdminError(
                f"amount.currency {quoted(asked.amount.currency)} is not programme "
                f"{quoted(asked.programme_id)}'s currency {currency}"
            )
    for _ in range(REPAYMENT_JUDGEMENTS_MAX):
        landed = _judged_and_written(engine, write_now, record)
        if landed is not None:
            return landed
    raise AdminUnavailableError(
        f"the repayment was not recorded: the debt it clears changed {REPAYMENT_JUDGEMENTS_MAX} times "
        "while it was judged (other repayments or sales at the merchant landing); nothing moved, "
        "send it again"
    )


def _judged_and_written(
    engine: Engine, write_now: Callable[[Write], WriteResult], record: RepaymentRecord
) -> Repayment | None:
    """The repayment judged on the debt now and written; None when another repayment or a sale at
    the merchant lowered the debt before it landed (nothing moved)."""
    with engine.connect() as conn:
        try:
            owed_minor, cleared_minor = _judged(conn, record)
        except AdminError:
            # The same request sent twice at once: the other landed after this one's first look
            # for it, and the debt it cleared is why this judgement refuses. Answer the first.
            stored = stored_repayment(conn, record.request_id)
            if stored is not None:
                return _replayed(stored, record)
            raise
    entry = ledger.repayment_entry(
        ledger.repayment_key(record.request_id),
        record.currency,
        record.programme_id,
        record.merchant_id,
        owed_minor,
        cleared_minor,
        record.amount_minor,
    )
    result = write_now(Write(entry=entry, repayment=record))
    with engine.connect() as conn:
        stored = stored_repayment(conn, record.request_id)
    if result.ok:
        assert stored is not None, "a repayment written is stored"
        return stored
    if stored is not None:  # the same request, landed first (sent twice at once)
        return _replayed(stored, record)
    if result.refusal is LedgerRefusal.above_maximum:  # the merchant owes less than it was judged on
        return None
    problem = f"the repayment was not recorded ({result.problem}); nothing moved, send it again"
    if result.fault:  # the journal or the database, not a rule: the same request sent again may land
        raise AdminUnavailableError(problem)
    raise AdminStateError(problem)


def _amount_problem(amount: Money) -> str | None:
    if amount.amount_minor <= 0:
        return "amount must be positive"
    if amount.amount_minor > AMOUNT_MINOR_MAX:
        return f"amount above {AMOUNT_MINOR_MAX} minor units"
    return None


def _replayed(stored: Repayment, asked: RepaymentRecord) -> Repayment:
    if stored.record != asked:
        raise AdminConflictError(
            f"request_id {quoted(asked.request_id)} recorded a repayment already, with other details "
            f"(merchant {quoted(stored.record.merchant_id)}, programme {quoted(stored.record.programme_id)}, "
            f"{stored.amount.format()}, reference {quoted(stored.record.reference)})"
        )
    return stored


def _merchant_id(conn: Connection, merchant: str) -> str:
    column = merchants.c.email if "@" in merchant else merchants.c.merchant_id
    key = merchant.lower() if "@" in merchant else merchant
    found = conn.execute(select(merchants.c.merchant_id).where(column == key)).scalar()
    if found is None:
        raise LookupError(f"merchant: no merchant {quoted(merchant)}")
    return str(found)


def _programme_currency(conn: Connection, programme_id: str) -> str:
    query = select(programmes.c.currency).where(programmes.c.programme_id == programme_id)
    currency = conn.execute(query).scalar()
    if currency is None:
        raise LookupError(f"programme_id: no programme {quoted(programme_id)}")
    return str(currency)


def _judged(conn: Connection, record: RepaymentRecord) -> tuple[int, int]:
    """(What the merchant owes, the part of it the repayment's transfer clears). AdminStateError unless the
    merchant takes the programme and owes it something to transfer; AdminError when the amount is
    above the transfer that clears the debt (its payable would go above zero)."""
    basis_points = conn.execute(
        select(merchant_programmes.c.commission_basis_points).where(
            merchant_programmes.c.merchant_id == record.merchant_id,
            merchant_programmes.c.programme_id == record.programme_id,
        )
    ).scalar()
    if basis_points is None:
        raise AdminStateError(
            f"merchant {quoted(record.merchant_id)} does not take programme {quoted(record.programme_id)}"
        )
    account_id = ledger.merchant_payable_account(record.merchant_id, record.programme_id)
    query = select(accounts.c.balance_minor).where(accounts.c.account_id == account_id)
    owed_minor = -int(conn.execute(query).scalar_one())
    owing = f"merchant {quoted(record.merchant_id)} owes programme {quoted(record.programme_id)}"
    if owed_minor <= 0:
        raise AdminStateError(
            f"{owing} nothing (its payable is {Money(-owed_minor, record.currency).format()})"
        )
    owed = Money(owed_minor, record.currency)
    whole = Money(repayment_transfer_minor(owed_minor, basis_points), record.currency)
    commission = f"the {commission_percent(basis_points)} commission on it given back"
    if whole.amount_minor == 0:
        raise AdminStateError(
            f"{owing} {owed.format()} and has nothing to transfer: {commission} is all of it; "
            "later redemptions pay it back"
        )
    cleared_minor = repayment_cleared_minor(record.amount_minor, owed_minor, basis_points)
    if cleared_minor is None:
        raise AdminError(
            f"amount {Money(record.amount_minor, record.currency).format()} is above the transfer that "
            f"clears the debt: {owing} {owed.format()}, cleared by a transfer of {whole.format()} "
            f"({commission})"
        )
    return owed_minor, cleared_minor
