"""What crosses the pipe to the journal process comes back equal, through the cheaper pickling."""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import dataclass

import pytest

from switch.domain.cards import CardStatus
from switch.domain.ledger import JournalEntry, Posting
from switch.domain.pickling import pickled_by_fields
from switch.store.journal import (
    BatchOutcome,
    CardChange,
    EmployeeAttempt,
    OriginalChange,
    PeriodClose,
    TransactionRecord,
    Write,
    WriteResult,
)

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _write() -> Write:
    record = TransactionRecord(
        source="terminal:trm_1",
        transaction_id="tx-000000000001",
        transaction_type="redeem",
        fingerprint="f" * 64,
        currency="EUR",
        result="00",
        status="approved",
        card_id="card_1",
        requested_minor=700,
        approved_minor=500,
        balance_after_minor=0,
        card_masked="603628******1234",
    )
    return Write(
        record=record,
        entry=JournalEntry(
            idempotency_key="terminal:trm_1:tx-000000000001",
            kind="redeem",
            currency="EUR",
            postings=(Posting("card:card_1", -500), Posting("merchant:mer_1", 500)),
        ),
        original=OriginalChange("terminal:trm_1", "tx-0", "refunded", refund_minor=200),
        card_changes=(CardChange("card_1", CardStatus.blocked, "blocked", "lost", "manager", "card_2"),),
        period_close=PeriodClose("trm_1", "close_1", 3, NOW - dt.timedelta(hours=9), NOW),
        employee_attempt=EmployeeAttempt("emp_1", 2, None),
    )


def test_a_write_with_every_part_comes_back_equal() -> None:
    write = _write()
    copy = pickle.loads(pickle.dumps([write, Write(tombstone=write.record)]))
    assert copy == [write, Write(tombstone=write.record)]
    assert copy[0].entry.postings[0].amount_minor == -500


def test_a_batch_outcome_comes_back_equal() -> None:
    outcome = BatchOutcome([WriteResult(True, 7), WriteResult(False, None, "would overdraw", True, 4)])
    assert pickle.loads(pickle.dumps(outcome)) == outcome


def test_the_state_is_the_field_values_in_order() -> None:
    posting = Posting("card:card_1", -500)
    assert posting.__getstate__() == ("card:card_1", -500, False, None)
    restored = Posting.__new__(Posting)
    restored.__setstate__(("merchant:mer_1:prg_1:payable", -500, True, None))  # type: ignore[attr-defined]
    assert restored == Posting("merchant:mer_1:prg_1:payable", -500, only_if_held=True)


def test_a_state_of_the_wrong_length_is_refused() -> None:
    restored = Posting.__new__(Posting)
    with pytest.raises(ValueError):
        restored.__setstate__(("card:card_1",))  # type: ignore[attr-defined]


def test_a_class_with_one_field_is_left_to_dataclasses() -> None:
    @dataclass(frozen=True, slots=True)
    class Single:
        value: int

    with pytest.raises(TypeError, match="Single"):
        pickled_by_fields(Single)
