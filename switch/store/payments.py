"""Bank-card payments at rest: the acquirer side of each payment (never a PAN, PIN block or track).

A payment's row is written as `pending` before its authorisation is sent, so a crash while it is in
flight leaves what a reversal needs; the answer then moves it to `answered`, or recovery at the next
start to `recovered` (reversal queued, the terminal's answer stored in the same transaction).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from switch.domain.money import Money
from switch.domain.payments import REFUND_PROCESSING_CODE, EntryMode, refund_over_takings_problem
from switch.domain.transactions import TransactionStatus, TransactionType
from switch.store.engine import writing
from switch.store.journal import TransactionRecord
from switch.store.key_locks import lock_name
from switch.store.periods import open_periods, transaction_rows
from switch.store.saf import NewReversal, SafStore, StanInUseError
from switch.store.schema import metadata, transactions

STAGE_PENDING: Final = "pending"  # stored before the authorisation went out; no answer yet
STAGE_ANSWERED: Final = "answered"  # the acquirer's answer (or its timeout) is stored
STAGE_RECOVERED: Final = "recovered"  # found pending at a start: reversed, answered as timed out
PENDING_BATCH_MAX: Final = 1_000

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
    Column("stage", String(16), nullable=False, index=True),
    # What the terminal's answer row needs when recovery has to write it (no card data).
    Column("fingerprint", String(32), nullable=False),
    Column("merchant_id", String(40), nullable=False),
    Column("period_number", BigInteger, nullable=False),
    Column("card_masked", String(19), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The node that sent it (`node.id` in its data directory); "" for rows from before the column.
    Column("node_id", String(40), nullable=False, server_default=""),
    UniqueConstraint("source", "transaction_id", name="uq_card_payments_transaction"),
    # How the acquirer names an authorisation: nodes count their STANs apart, so one may take a
    # name another node has in use at the same second; the row reserves it (StanInUseError).
    # An index, not a constraint, so databases created before it get it too.
    Index(
        "uq_card_payments_original", "acquirer", "acquirer_terminal_id", "stan", "transmission", unique=True
    ),
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
    fingerprint: str
    merchant_id: str
    period_number: int
    card_masked: str
    currency: str
    stage: str = STAGE_PENDING
    node_id: str = ""  # the node that sent it; stamped by `record_pending`, whatever this holds


PAYMENT_CHANGED: Final = "payment changed meanwhile"


def refunds_paid_from_sale_problem(sale: Money, left_minor: int) -> str:
    left = Money(left_minor, sale.currency)
    return (
        f"refunds to cards were paid from this sale (takings left {left.format()}, "
        f"the sale {sale.format()}); refund instead"
    )


class PaymentInFlightElsewhereError(Exception):
    """This transaction id has a payment row already: the same request is in flight on another node."""


class PaymentNotPendingError(Exception):
    """The payment's row was no longer pending when its answer came (recovery got there first)."""


# What the acquirer's answer (or its timeout) fills in on the pending row.
ANSWER_FIELDS: Final = (
    "response_code",
    "auth_code",
    "retrieval_reference",
    "reversal_queued",
    "stage",
)


def _details_values(details: PaymentDetails) -> dict[str, object]:
    return {name: getattr(details, name) for name in PaymentDetails.__slots__}


def _details_of(row: RowMapping) -> PaymentDetails:
    return PaymentDetails(**{name: row[name] for name in PaymentDetails.__slots__})


def _record_values(conn: Connection, record: TransactionRecord, now: dt.datetime) -> dict[str, object]:
    """The row, in the period its terminal has open as it commits (`switch.store.periods`)."""
    return transaction_rows([record], now, open_periods(conn, [record.source]))[0]


def refund_takings_left_minor(conn: Connection, source: str, period_number: int, currency: str) -> int:
    """What a refund to a card may still take on this terminal: its bank-card payments less its
    bank-card refunds of the period that still stand (neither cancelled, reversed nor aborted),
    less its refunds sent and not answered yet, in one currency."""
    row = transactions.c
    signed = case(
        (row.transaction_type == TransactionType.payment.value, row.approved_minor),
        else_=-row.approved_minor,
    )
    standing = select(func.coalesce(func.sum(signed), 0)).where(
        row.source == source,
        row.period_number == period_number,
        row.transaction_type.in_((TransactionType.payment.value, TransactionType.refund.value)),
        row.payment_method.in_([mode.value for mode in EntryMode]),
        row.currency == currency,
        row.status == TransactionStatus.approved.value,
    )
    sent = card_payments.c
    in_flight = select(func.coalesce(func.sum(sent.amount_minor), 0)).where(
        sent.source == source,
        sent.period_number == period_number,
        sent.processing_code == REFUND_PROCESSING_CODE,
        sent.currency == currency,
        sent.stage == STAGE_PENDING,
    )
    return int(conn.execute(standing).scalar_one()) - int(conn.execute(in_flight).scalar_one())


class PaymentStore:
    """Each write commits before it returns: a payment is durable before its answer is sent."""

    def __init__(self, engine: Engine, node_id: str = "") -> None:
        self._engine = engine
        self.node_id = node_id  # stamped on each row it sends, for recovery (`pending`)
        # SQLite has one writer at a time; waiting here beats its busy handler's sleeps (long tails).
        self._write_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    def create_tables(self) -> None:
        card_payments.create(self._engine, checkfirst=True)

    def record_pending(self, details: PaymentDetails, now: dt.datetime) -> str | None:
        """Before the authorisation goes out; raises PaymentInFlightElsewhereError if this id has a
        row already, StanInUseError if another payment holds its STAN (send it under another).

        A refund to a card is stored only if the terminal's card takings left cover it, counted in
        the same transaction under the terminal's refund lock, so refunds sent at the same moment
        (two nodes answering one terminal) count each other. Otherwise nothing is stored and the
        problem is returned: the refund must not go out."""
        assert details.stage == STAGE_PENDING, "a new payment row is pending"
        with self._write_lock, writing(self._engine) as conn:
            if details.processing_code == REFUND_PROCESSING_CODE:
                lock_name(conn, f"card-refund:{details.source}")
                if self._id_taken(conn, details):  # its own first copy counts against the takings
                    raise PaymentInFlightElsewhereError(details.transaction_id)
                amount = Money(details.amount_minor, details.currency)
                left = refund_takings_left_minor(conn, details.source, details.period_number, amount.currency)
                problem = refund_over_takings_problem(amount, left)
                if problem is not None:
                    return problem
            values = {**_details_values(details), "created_at": now, "node_id": self.node_id}
            try:
                with conn.begin_nested():
                    conn.execute(insert(card_payments), values)
            except IntegrityError:
                if self._id_taken(conn, details):
                    raise PaymentInFlightElsewhereError(details.transaction_id) from None
                raise StanInUseError(details.stan) from None
        return None

    @staticmethod
    def _id_taken(conn: Connection, details: PaymentDetails) -> bool:
        row = card_payments.c
        query = select(row.payment_pk).where(
            row.source == details.source, row.transaction_id == details.transaction_id
        )
        return conn.execute(query).first() is not None

    def refund_takings_left_minor(self, source: str, period_number: int, currency: str) -> int:
        with self._engine.connect() as conn:
            return refund_takings_left_minor(conn, source, period_number, currency)

    def record(self, record: TransactionRecord, details: PaymentDetails | None, now: dt.datetime) -> None:
        """Store the payment's answer and, when it reached the acquirer, its answered pending row.

        Raises IntegrityError on a stored id, PaymentNotPendingError when recovery resolved it."""
        with self._write_lock, writing(self._engine) as conn:
            if details is not None:
                assert details.stage == STAGE_ANSWERED, "an answer moves the row to answered"
                changed = conn.execute(
                    update(card_payments)
                    .where(
                        card_payments.c.source == details.source,
                        card_payments.c.transaction_id == details.transaction_id,
                        card_payments.c.stage == STAGE_PENDING,
                    )
                    .values(**{name: getattr(details, name) for name in ANSWER_FIELDS})
                )
                if changed.rowcount != 1:
                    raise PaymentNotPendingError(details.transaction_id)
            conn.execute(insert(transactions), _record_values(conn, record, now))

    def pending(
        self, limit: int = PENDING_BATCH_MAX, sent_before: dt.datetime | None = None, own_too: bool = True
    ) -> tuple[PaymentDetails, ...]:
        """Payments whose authorisation went out and whose answer was never stored, oldest first.

        With `sent_before`, only those sent before that time, and with `own_too` this node's own of
        any age as well: a node sharing the database must not take a payment its node still waits
        for (another node's, or, once it runs, its own)."""
        assert 0 < limit <= PENDING_BATCH_MAX, "pending limit out of range"
        row = card_payments.c
        query = select(card_payments).where(row.stage == STAGE_PENDING)
        if sent_before is not None:
            old = row.created_at < sent_before
            query = query.where(or_(row.node_id == self.node_id, old) if own_too else old)
        query = query.order_by(row.payment_pk).limit(limit)
        with self._engine.connect() as conn:
            return tuple(_details_of(row) for row in conn.execute(query).mappings())

    def resolve_pending(
        self, details: PaymentDetails, answer: TransactionRecord, reversal: NewReversal, now: dt.datetime
    ) -> bool:
        """In one transaction: queue the reversal (once per original), store the terminal's answer
        unless one is stored, and mark the row recovered. False when it was no longer pending."""
        with self._write_lock, writing(self._engine) as conn:
            changed = conn.execute(
                update(card_payments)
                .where(
                    card_payments.c.source == details.source,
                    card_payments.c.transaction_id == details.transaction_id,
                    card_payments.c.stage == STAGE_PENDING,
                )
                .values(stage=STAGE_RECOVERED, reversal_queued=True)
            )
            if changed.rowcount != 1:
                return False
            SafStore.enqueue_within(conn, reversal, now)
            stored = conn.execute(
                select(transactions.c.transaction_id).where(
                    transactions.c.source == answer.source,
                    transactions.c.transaction_id == answer.transaction_id,
                )
            ).first()
            if stored is None:
                conn.execute(insert(transactions), _record_values(conn, answer, now))
        return True

    def details(self, source: str, transaction_id: str) -> PaymentDetails | None:
        query = select(card_payments).where(
            card_payments.c.source == source, card_payments.c.transaction_id == transaction_id
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _details_of(row)

    def undo(
        self,
        details: PaymentDetails,
        to_status: str,
        reversal: NewReversal,
        now: dt.datetime,
        record: TransactionRecord | None = None,
    ) -> str | None:
        """In one transaction: move an approved payment (or card refund) to `to_status`, store the
        record of what did it (a cancel or reversal line; an abort has none) and queue its reversal
        advice; None when done, else why nothing changed (PAYMENT_CHANGED, or the refunds paid
        from a sale's takings, counted under the terminal's refund lock as a refund counts them).
        Before, the reversal went out first and a cancel of a sale that refunds to cards were paid
        from was taken: the terminal had refunded more than it took."""
        row = transactions.c
        with self._write_lock, writing(self._engine) as conn:
            if details.processing_code != REFUND_PROCESSING_CODE:
                lock_name(conn, f"card-refund:{details.source}")
                sale = conn.execute(
                    select(row.period_number, row.approved_minor, row.currency, row.status).where(
                        row.source == details.source, row.transaction_id == details.transaction_id
                    )
                ).first()
                if sale is None or sale.status != TransactionStatus.approved.value:
                    return PAYMENT_CHANGED  # undone meanwhile (another node): no takings to judge
                left = refund_takings_left_minor(conn, details.source, sale.period_number, sale.currency)
                if left < sale.approved_minor:
                    return refunds_paid_from_sale_problem(Money(sale.approved_minor, sale.currency), left)
            changed = conn.execute(
                update(transactions)
                .where(
                    and_(
                        row.source == details.source,
                        row.transaction_id == details.transaction_id,
                        row.transaction_type.in_(("payment", "refund")),  # a refund to a card too
                        row.status == TransactionStatus.approved.value,
                    )
                )
                .values(status=to_status)
            )
            if changed.rowcount != 1:
                return PAYMENT_CHANGED
            if record is not None:
                conn.execute(insert(transactions), _record_values(conn, record, now))
            SafStore.enqueue_within(conn, reversal, now)
        return None
