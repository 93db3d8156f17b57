"""Between stored transaction records and outcomes: what is written for an answer, and read back."""

from __future__ import annotations

from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Outcome, TransactionStatus, TransactionType, declined
from switch.secret_numbers import SecretNumbers
from switch.store.journal import TOMBSTONE_TYPE, TransactionRecord
from switch.store.repository import Store


def tombstone_of(source: str, transaction_id: str, period_number: int = 0) -> TransactionRecord:
    """The row that holds a never-seen original's id, so the original moves nothing if it arrives."""
    return TransactionRecord(
        source=source,
        transaction_id=transaction_id,
        transaction_type=TOMBSTONE_TYPE,
        fingerprint="",
        currency="",
        result=ResponseCode.already_reversed.name,
        status=TransactionStatus.reversed.value,
        period_number=period_number,
    )


_CODES = SecretNumbers()


def authorization_code() -> str:
    """Six unpredictable digits; drawn on the event loop, so without a system call each."""
    return f"{_CODES.below(1_000_000):06d}"


def record_of(outcome: Outcome, source: str, fingerprint: str, **extra: object) -> TransactionRecord:
    """The row that stores this answer, so a replay gets it back unchanged."""
    currency = next(
        (m.currency for m in (outcome.requested, outcome.approved, outcome.balance) if m is not None), ""
    )
    return TransactionRecord(
        source=source,
        transaction_id=outcome.transaction_id,
        transaction_type=outcome.transaction_type.value,
        fingerprint=fingerprint,
        currency=currency,
        result=outcome.code.name,
        status=outcome.status.value,
        requested_minor=_minor(outcome.requested),
        approved_minor=_minor(outcome.approved),
        balance_after_minor=outcome.balance.amount_minor if outcome.balance is not None else None,
        cardholder_part_minor=_minor(outcome.cardholder_part),
        funder_part_minor=_minor(outcome.funder_part),
        detail=outcome.detail[:250],
        authorization_code=outcome.authorization_code,
        period_number=outcome.period_number,
        card_masked=outcome.card_masked,
        payment_method=outcome.payment_method,
        **extra,  # type: ignore[arg-type]
    )


def outcome_of(record: TransactionRecord) -> Outcome:
    """The answer a stored record holds."""
    currency = record.currency

    def money(amount_minor: int | None, *, always: bool = False) -> Money | None:
        if amount_minor is None or not currency or (amount_minor == 0 and not always):
            return None
        return Money(amount_minor, currency)

    code = ResponseCode[record.result]
    return Outcome(
        transaction_id=record.transaction_id,
        transaction_type=TransactionType(record.transaction_type),
        code=code,
        detail=record.detail,
        requested=money(record.requested_minor),
        approved=money(record.approved_minor, always=code.approves),
        balance=money(record.balance_after_minor, always=True),
        card_masked=record.card_masked,
        authorization_code=record.authorization_code,
        period_number=record.period_number,
        cardholder_part=money(record.cardholder_part_minor),
        funder_part=money(record.funder_part_minor),
        status=TransactionStatus(record.status),
        payment_method=record.payment_method,
    )


def answer_for_stored(
    store: Store, source: str, transaction_id: str, transaction_type: TransactionType, fingerprint: str
) -> Outcome:
    """The answer to a request whose id is already stored: its first answer, or a refusal."""
    stored = store.transaction(source, transaction_id)
    if stored is None:
        return declined(transaction_id, transaction_type, ResponseCode.system_error, persisted=False)
    if stored.record.transaction_type == TOMBSTONE_TYPE:
        return declined(
            transaction_id,
            transaction_type,
            ResponseCode.already_reversed,
            "reversed before it arrived",
            persisted=False,
        )
    if stored.record.fingerprint != fingerprint:
        return declined(
            transaction_id,
            transaction_type,
            ResponseCode.duplicate_transmission,
            "transaction id already used with different content",
            persisted=False,
        )
    return outcome_of(stored.record)


def _minor(money: Money | None) -> int:
    return money.amount_minor if money is not None else 0
