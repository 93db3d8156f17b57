"""Bank-card payments at rest: the acquirer side of each payment (never a PAN, PIN block or track)."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    insert,
    select,
    update,
)

from switch.store.journal import TransactionRecord
from switch.store.schema import metadata, transactions

# One row per payment that reached the acquirer stage; joined to `transactions` by (source, id).
card_payments = Table(
    "card_payments",
    metadata,
    Column("payment_pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(40), nullable=False),
    Column("transaction_id", String(80), nullable=False),
    Column("sequence_number", Integer, nullable=False),
    Column("pan_hash", String(64), nullable=False, index=True),  # HMAC-SHA256 under the card hash key
    Column("bin6", String(6), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("entry_mode", String(16), nullable=False),
    Column("pin_entered", Boolean, nullable=False),
    Column("acquirer", String(64), nullable=False),
    Column("acquirer_terminal_id", String(8), nullable=False),  # ISO 8583 field 41
    Column("acquirer_merchant_id", String(15), nullable=False),  # field 42
    Column("original_mti", String(4), nullable=False),
    Column("stan", String(6), nullable=False),
    Column("transmission", String(10), nullable=False),  # field 7, MMDDhhmmss
    Column("processing_code", String(6), nullable=False),
    Column("currency_numeric", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("response_code", String(2), nullable=False),
    Column("auth_code", String(6), nullable=False),
    Column("retrieval_reference", String(12), nullable=False),
    Column("reversal_queued", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source", "transaction_id", name="uq_card_payments_transaction"),
)


@dataclass(frozen=True, slots=True)
class PaymentDetails:
    source: str
    transaction_id: str
    sequence_number: int
    pan_hash: str
    bin6: str
    last4: str
    entry_mode: str
    pin_entered: bool
    acquirer: str
    acquirer_terminal_id: str
    acquirer_merchant_id: str
    original_mti: str
    stan: str
    transmission: str
    processing_code: str
    currency_numeric: str
    amount_minor: int
    response_code: str
    auth_code: str
    retrieval_reference: str
    reversal_queued: bool


def _record_values(record: TransactionRecord, now: dt.datetime) -> dict[str, object]:
    return {**{name: getattr(record, name) for name in TransactionRecord.__slots__}, "created_at": now}


class PaymentStore:
    """Each write commits before it returns: a payment is durable before its answer is sent."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # SQLite has one writer at a time; waiting here beats its busy handler's sleeps (long tails).
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    def create_tables(self) -> None:
        card_payments.create(self._engine, checkfirst=True)

    def record(self, record: TransactionRecord, details: PaymentDetails | None, now: dt.datetime) -> None:
        """Store the payment's answer (and its acquirer side); raises IntegrityError on a stored id."""
        with self._write_lock, self._engine.begin() as conn:
            conn.execute(insert(transactions), _record_values(record, now))
            if details is not None:
                values = {name: getattr(details, name) for name in PaymentDetails.__slots__}
                conn.execute(insert(card_payments), {**values, "created_at": now})

    def details(self, source: str, transaction_id: str) -> PaymentDetails | None:
        query = select(card_payments).where(
            card_payments.c.source == source, card_payments.c.transaction_id == transaction_id
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return PaymentDetails(**{name: row[name] for name in PaymentDetails.__slots__})

    def change_status(
        self,
        source: str,
        transaction_id: str,
        from_status: str,
        to_status: str,
        now: dt.datetime,
        reversal: TransactionRecord | None = None,
    ) -> bool:
        """Move a payment from one status to another (and store the reversal that did it), or nothing."""
        row = transactions.c
        with self._write_lock, self._engine.begin() as conn:
            changed = conn.execute(
                update(transactions)
                .where(
                    and_(
                        row.source == source,
                        row.transaction_id == transaction_id,
                        row.transaction_type == "payment",
                        row.status == from_status,
                    )
                )
                .values(status=to_status)
            )
            if changed.rowcount != 1:
                return False
            if reversal is not None:
                conn.execute(insert(transactions), _record_values(reversal, now))
        return True
