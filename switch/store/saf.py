"""The durable store-and-forward queue of acquirer reversal advices (0420, repeated as 0421)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from switch.store.engine import writing
from switch.store.schema import metadata

STATUS_PENDING: Final = "pending"
STATUS_ACKNOWLEDGED: Final = "acknowledged"
SAF_PENDING_LIMIT_MAX: Final = 1_000
# How long an acknowledged advice keeps its STAN on its terminal: a late or repeated 0430 of it may
# still come, and must find no other pending advice under that name. Then the STAN is given back.
REVERSAL_STAN_HOLD_AFTER_ACK: Final = dt.timedelta(hours=24)
# Field 37 (retrieval reference number) is an-12 in ISO 8583:1987; an advice's is its saf_id in
# 12 digits, so it is unique per advice across every node sharing the database.
RETRIEVAL_REFERENCE_CHARS: Final = 12

# No PAN, track 2, PIN block or EMV data here: the acquirer finds the original by field 90 + 41.
acquirer_saf = Table(
    "acquirer_saf",
    metadata,
    Column("saf_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("acquirer", String(64), nullable=False),
    Column("terminal_id", String(8), nullable=False),
    Column("merchant_id", String(15), nullable=False),
    Column("transaction_id", String(80), nullable=False),
    Column("original_mti", String(4), nullable=False),
    Column("original_stan", String(6), nullable=False),
    Column("original_transmission", String(10), nullable=False),
    Column("reversal_stan", String(6), nullable=False),
    Column("processing_code", String(6), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency_numeric", String(3), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    # When the advice gave its STAN back, a hold after its acknowledgement (NULL: it holds it).
    Column("reversal_stan_released_at", DateTime(timezone=True), nullable=True),
    # Field 37 of every send of the advice (0420 and each 0421), set as it is stored; a 0430 echoing
    # it names this advice alone. NULL on rows from before the column: those go out without one.
    Column("retrieval_reference", String(RETRIEVAL_REFERENCE_CHARS), nullable=True),
    # One reversal per original authorisation, however often a timeout or late answer asks.
    UniqueConstraint(
        "acquirer", "terminal_id", "original_stan", "original_transmission", name="uq_acquirer_saf_original"
    ),
    # How the acquirer names an advice (field 41 and the advice's own STAN; field 7 changes with
    # each repeat; a late 0430 names the original by field 90 as well): nodes count their STANs
    # apart, so one may take a STAN another node's advice holds on that terminal; the row reserves
    # it (StanInUseError), as `uq_card_payments_original` does an authorisation's. Only while the
    # advice holds it: pending, and for a hold after its acknowledgement (an advice holding it for
    # ever, session 23's `uq_acquirer_saf_reversal`, made the counter meet more of them as it came
    # round, until no STAN could be found). An index, not a constraint, so databases created before
    # it get it too (left out, with an error in the log, where old rows break it).
    Index(
        "uq_acquirer_saf_reversal_held",
        "acquirer",
        "terminal_id",
        "reversal_stan",
        unique=True,
        sqlite_where=text("reversal_stan_released_at IS NULL"),
        postgresql_where=text("reversal_stan_released_at IS NULL"),
    ),
    # A late 0430 echoing field 37 is looked up by it (with field 41).
    Index("ix_acquirer_saf_retrieval_reference", "acquirer", "terminal_id", "retrieval_reference"),
)


class StanInUseError(Exception):
    """Another row (another node's) holds this name at the acquirer: the terminal's STAN (and, for
    an authorisation, its field 7). Nothing was stored; send it under another STAN."""


@dataclass(frozen=True, slots=True)
class NewReversal:
    acquirer: str
    terminal_id: str
    merchant_id: str
    transaction_id: str
    original_mti: str
    original_stan: str
    original_transmission: str  # field 7 of the original, MMDDhhmmss
    reversal_stan: str
    processing_code: str
    amount_minor: int
    currency_numeric: str
    reason: str  # timeout | late_response | abort | reversal | cancel | not_recorded | switch_restart


@dataclass(frozen=True, slots=True)
class AdviceAnswer:
    """What an acknowledgement (0430) says of the advice it answers: field 41, the advice's own STAN
    (field 11), the original it reverses (field 90) and, when echoed, the amount (field 4)."""

    acquirer: str
    terminal_id: str
    reversal_stan: str
    original_mti: str
    original_stan: str
    original_transmission: str
    amount_minor: int | None


@dataclass(frozen=True, slots=True)
class SafEntry:
    saf_id: int
    acquirer: str
    terminal_id: str
    merchant_id: str
    transaction_id: str
    original_mti: str
    original_stan: str
    original_transmission: str
    reversal_stan: str
    processing_code: str
    amount_minor: int
    currency_numeric: str
    reason: str
    status: str
    attempts: int
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    retrieval_reference: str | None  # field 37; None on advices stored before it was given

    @property
    def is_repeat(self) -> bool:
        """After one send attempt, the advice goes out as a repeat (0421)."""
        return self.attempts > 0


def _new_values(reversal: NewReversal, now: dt.datetime) -> dict[str, object]:
    return {
        **{name: getattr(reversal, name) for name in NewReversal.__slots__},
        "status": STATUS_PENDING,
        "attempts": 0,
        "created_at": now,
    }


def _original_stored(connection: Connection, reversal: NewReversal) -> bool:
    column = acquirer_saf.c
    stored = connection.execute(
        select(column.saf_id).where(
            column.acquirer == reversal.acquirer,
            column.terminal_id == reversal.terminal_id,
            column.original_stan == reversal.original_stan,
            column.original_transmission == reversal.original_transmission,
        )
    ).first()
    return stored is not None


def _release_stan_held_past_its_hold(connection: Connection, reversal: NewReversal, now: dt.datetime) -> None:
    """Give back the reversal STAN an advice acknowledged a hold ago still holds on that terminal:
    done as a new advice asks for it, so that the unique index alone decides who takes it."""
    row = acquirer_saf.c
    connection.execute(
        update(acquirer_saf)
        .where(
            row.acquirer == reversal.acquirer,
            row.terminal_id == reversal.terminal_id,
            row.reversal_stan == reversal.reversal_stan,
            row.status == STATUS_ACKNOWLEDGED,
            row.acknowledged_at <= now - REVERSAL_STAN_HOLD_AFTER_ACK,
            row.reversal_stan_released_at.is_(None),
        )
        .values(reversal_stan_released_at=now)
    )


def retrieval_reference_of(saf_id: int) -> str:
    """The advice's field 37: its row id, which no other advice of the database has."""
    assert 0 < saf_id < 10**RETRIEVAL_REFERENCE_CHARS, "saf_id fits field 37"
    return f"{saf_id:0{RETRIEVAL_REFERENCE_CHARS}d}"


def _insert(connection: Connection, reversal: NewReversal, now: dt.datetime) -> None:
    """Store the advice and give it its field 37, which needs its row id: one transaction."""
    inserted = connection.execute(insert(acquirer_saf).values(**_new_values(reversal, now)))
    primary_key = inserted.inserted_primary_key
    assert primary_key is not None, "an insert of one row has its primary key"
    saf_id = int(primary_key[0])
    connection.execute(
        update(acquirer_saf)
        .where(acquirer_saf.c.saf_id == saf_id)
        .values(retrieval_reference=retrieval_reference_of(saf_id))
    )


def _entry(row: RowMapping) -> SafEntry:
    return SafEntry(**{name: row[name] for name in SafEntry.__slots__})


class SafStore:
    """Reversal advices that must reach their acquirer; each write is committed before it returns."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_table(self) -> None:
        acquirer_saf.create(self._engine, checkfirst=True)

    def enqueue(self, reversal: NewReversal, now: dt.datetime) -> bool:
        """Store a reversal; False (and nothing changed) if one for that original is stored.

        Raises StanInUseError, storing nothing, when another advice holds its reversal STAN."""
        with writing(self._engine) as connection:
            try:
                return self.enqueue_within(connection, reversal, now)
            except IntegrityError:
                return False  # stored by another at the same moment

    @staticmethod
    def enqueue_within(connection: Connection, reversal: NewReversal, now: dt.datetime) -> bool:
        """enqueue() inside a caller's transaction. A reversal of the same original stored by
        another at the same moment raises IntegrityError, and the caller's whole transaction goes
        (recovery then leaves that payment to its node); a reversal STAN another advice holds
        raises StanInUseError, and the caller's transaction goes too: it tries again under another."""
        if _original_stored(connection, reversal):
            return False
        try:
            with connection.begin_nested():
                _release_stan_held_past_its_hold(connection, reversal, now)
                _insert(connection, reversal, now)
        except IntegrityError:
            if _original_stored(connection, reversal):
                raise
            raise StanInUseError(reversal.reversal_stan) from None
        return True

    def pending(
        self, acquirer: str | None = None, limit: int = SAF_PENDING_LIMIT_MAX
    ) -> tuple[SafEntry, ...]:
        """Unacknowledged reversals, oldest first."""
        assert 0 < limit <= SAF_PENDING_LIMIT_MAX, "pending limit out of range"
        query = select(acquirer_saf).where(acquirer_saf.c.status == STATUS_PENDING)
        if acquirer is not None:
            query = query.where(acquirer_saf.c.acquirer == acquirer)
        query = query.order_by(acquirer_saf.c.saf_id).limit(limit)
        with self._engine.connect() as connection:
            return tuple(_entry(row) for row in connection.execute(query).mappings())

    def pending_counts(self) -> dict[str, int]:
        """Unacknowledged reversals by acquirer, every one counted (pending() lists at most a limit)."""
        query = (
            select(acquirer_saf.c.acquirer, func.count())
            .where(acquirer_saf.c.status == STATUS_PENDING)
            .group_by(acquirer_saf.c.acquirer)
        )
        with self._engine.connect() as connection:
            return {str(acquirer): int(count) for acquirer, count in connection.execute(query)}

    def all_entries(self, limit: int = SAF_PENDING_LIMIT_MAX) -> tuple[SafEntry, ...]:
        """Pending and acknowledged reversals, oldest first (for audits and the ops console)."""
        query = select(acquirer_saf).order_by(acquirer_saf.c.saf_id).limit(limit)
        with self._engine.connect() as connection:
            return tuple(_entry(row) for row in connection.execute(query).mappings())

    def record_attempt(self, saf_id: int, now: dt.datetime) -> None:
        """Count a send before it happens, so a crash mid-send makes the next one a repeat."""
        statement = (
            update(acquirer_saf)
            .where(acquirer_saf.c.saf_id == saf_id)
            .values(attempts=acquirer_saf.c.attempts + 1, last_attempt_at=now)
        )
        with writing(self._engine) as connection:
            connection.execute(statement)

    def acknowledge(self, saf_id: int, now: dt.datetime) -> bool:
        """Mark acknowledged; False if it already was (an acknowledgement may arrive twice)."""
        statement = (
            update(acquirer_saf)
            .where(acquirer_saf.c.saf_id == saf_id, acquirer_saf.c.status == STATUS_PENDING)
            .values(status=STATUS_ACKNOWLEDGED, acknowledged_at=now)
        )
        with writing(self._engine) as connection:
            return connection.execute(statement).rowcount == 1

    def pending_by_reference(
        self, acquirer: str, terminal_id: str, retrieval_reference: str
    ) -> SafEntry | None:
        """The pending advice a 0430 names by field 37 and field 41; None when none is pending
        (acknowledged already, or never ours). Field 37 is unique per advice: at most one row."""
        row = acquirer_saf.c
        query = select(acquirer_saf).where(
            row.acquirer == acquirer,
            row.terminal_id == terminal_id,
            row.retrieval_reference == retrieval_reference,
            row.status == STATUS_PENDING,
        )
        with self._engine.connect() as connection:
            found = connection.execute(query.limit(1)).mappings().first()
        return None if found is None else _entry(found)

    def acknowledge_answer(self, answer: AdviceAnswer, now: dt.datetime) -> bool:
        """Acknowledge the pending advice a 0430 that came after we stopped waiting names: its own
        STAN and the original its field 90 names (and its amount, when field 4 is echoed). False,
        changing nothing, when it names none: an advice gives its STAN back a hold after its
        acknowledgement, so a 0430 of it later still must not acknowledge the one that took it."""
        row = acquirer_saf.c
        matching = [
            row.acquirer == answer.acquirer,
            row.terminal_id == answer.terminal_id,
            row.reversal_stan == answer.reversal_stan,
            row.original_mti == answer.original_mti,
            row.original_stan == answer.original_stan,
            row.original_transmission == answer.original_transmission,
            row.status == STATUS_PENDING,
        ]
        if answer.amount_minor is not None:
            matching.append(row.amount_minor == answer.amount_minor)
        # At most one row: `uq_acquirer_saf_original` names one advice per original.
        statement = (
            update(acquirer_saf).where(*matching).values(status=STATUS_ACKNOWLEDGED, acknowledged_at=now)
        )
        with writing(self._engine) as connection:
            return connection.execute(statement).rowcount == 1

    def acknowledge_held_stan(
        self, acquirer: str, terminal_id: str, reversal_stan: str, amount_minor: int | None, now: dt.datetime
    ) -> bool:
        """Acknowledge the pending advice under a STAN, for a late 0430 echoing no field 90, only when
        it can answer no other: that advice went out under the STAN less than a hold ago and no other
        advice holds the STAN or went out under it since. An earlier advice gave the STAN back a hold
        after its acknowledgement, so its 0430 would be more than a hold late; with field 4 echoed,
        the amount must be the advice's too. False, changing nothing, otherwise (it goes out again)."""
        row = acquirer_saf.c
        sent_since = now - REVERSAL_STAN_HOLD_AFTER_ACK
        under_stan = (
            row.acquirer == acquirer,
            row.terminal_id == terminal_id,
            row.reversal_stan == reversal_stan,
        )
        # Two rows hold one STAN only on a database from before `uq_acquirer_saf_reversal_held`.
        candidates = (
            select(row.saf_id)
            .where(
                *under_stan, or_(row.reversal_stan_released_at.is_(None), row.last_attempt_at > sent_since)
            )
            .limit(2)
        )
        with writing(self._engine) as connection:
            saf_ids = list(connection.execute(candidates).scalars())
            if len(saf_ids) != 1:
                return False
            matching = [
                row.saf_id == saf_ids[0],
                row.status == STATUS_PENDING,
                row.last_attempt_at > sent_since,
            ]
            if amount_minor is not None:
                matching.append(row.amount_minor == amount_minor)
            statement = (
                update(acquirer_saf).where(*matching).values(status=STATUS_ACKNOWLEDGED, acknowledged_at=now)
            )
            return connection.execute(statement).rowcount == 1

    def depth(self) -> int:
        query = select(func.count()).select_from(acquirer_saf).where(acquirer_saf.c.status == STATUS_PENDING)
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())
