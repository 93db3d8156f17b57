"""What the switch sends its journal process and gets back comes back equal through the pipe's
encoding (switch/store/journal_process.py): every kind of write, every kind of result."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle

import pytest

from switch.domain.cards import CardStatus
from switch.domain.ledger import JournalEntry, LedgerRefusal, Posting
from switch.store.journal import (
    BalanceAsRead,
    BatchOutcome,
    CardChange,
    CardIssue,
    CyclePayout,
    EmployeeAttempt,
    InboundResend,
    OriginalChange,
    PeriodClose,
    PinRehash,
    RepaymentRecord,
    TransactionRecord,
    Write,
    WriteResult,
)
from switch.store.journal_process import decode_batch, decode_outcome, encode_batch, encode_outcome

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

# Every field away from its default, so a field the encoding dropped would come back different
RECORD = TransactionRecord(
    "terminal:trm_1",
    "tx-1",
    "load",
    "f" * 64,
    "EUR",
    "approved",
    "approved",
    card_id="crd_1",
    merchant_id="mer_1",
    requested_minor=900,
    approved_minor=800,
    balance_after_minor=1_800,
    cardholder_part_minor=700,
    funder_part_minor=100,
    detail="partial",
    authorization_code="000123",
    period_number=4,
    original_transaction_id="tx-0",
    card_masked="603628******1234",
    payment_method="web",
    mti="0200",
    retrieval_reference="000000000042",
)
ENTRY = JournalEntry(
    "txn:trm_1:tx-1",
    "load",
    "EUR",
    (
        Posting("card:crd_1", 800, ceiling_minor=100_000),
        Posting("programme:prg_1:float", -700),
        Posting("merchant:mer_1:prg_1:payable", -100, only_if_held=True),
    ),
)
ORIGINAL = OriginalChange("terminal:trm_1", "tx-0", "cancelled", refund_minor=300, require_unrefunded=True)
WRITE = Write(
    record=RECORD,
    tombstone=dataclasses.replace(RECORD, transaction_id="tx-2", transaction_type="tombstone"),
    entry=ENTRY,
    original=ORIGINAL,
    card_changes=(
        CardChange("crd_1", CardStatus.lost, "lost", "replaced", "manager", "crd_2", "replace:r1", "crd_3"),
        CardChange("crd_4", CardStatus.blocked, "blocked", "stolen", "console"),
    ),
    period_close=PeriodClose("trm_1", "close_1", 3, NOW - dt.timedelta(hours=9), NOW),
    employee_attempt=EmployeeAttempt("emp_1", 2, NOW + dt.timedelta(minutes=5), attempts_before=6),
    pin_rehash=PinRehash("emp_1", "pbkdf2$c2FsdA==$b2xk", "pbkdf2$1000$c2FsdA==$bmV3"),
    card_issue=CardIssue(
        "crd_5", "prg_1", "h" * 64, "603628******9999", dt.date(2030, 1, 31), "EUR", "req_1"
    ),
    refund_undone=OriginalChange("terminal:trm_1", "tx-3", "approved", refund_minor=-300),
    active_card="crd_1",
    credited_card="crd_2",
    balance_as_read=BalanceAsRead("crd_1", 1_000),
    cycle_payout=CyclePayout("prg_1", "payout-2026-12-01", "mer_1", "settle_7"),
    repayment=RepaymentRecord("req_2", "mer_1", "prg_1", "EUR", 5_000, "bank ref 9"),
    resend=InboundResend("acquirer:1", "T1:000042:1206120000", "T1:000042:1206115900"),
)

# The writes the switch makes, one of each kind
WRITES = [
    pytest.param(Write(record=RECORD, entry=ENTRY), id="sale or load"),
    pytest.param(Write(record=RECORD, entry=ENTRY, active_card="crd_1"), id="load onto a shared card"),
    pytest.param(Write(record=RECORD, entry=ENTRY, original=ORIGINAL, credited_card="crd_1"), id="cancel"),
    pytest.param(Write(record=RECORD), id="decline"),
    pytest.param(Write(tombstone=RECORD, entry=ENTRY, original=ORIGINAL), id="reversal before its original"),
    pytest.param(Write(record=RECORD, refund_undone=WRITE.refund_undone), id="refund undone"),
    pytest.param(Write(card_issue=WRITE.card_issue, entry=ENTRY), id="card issue"),
    pytest.param(
        Write(card_changes=WRITE.card_changes, entry=ENTRY, balance_as_read=WRITE.balance_as_read),
        id="card replacement",
    ),
    pytest.param(Write(period_close=WRITE.period_close), id="day close"),
    pytest.param(Write(employee_attempt=WRITE.employee_attempt), id="PIN attempt"),
    pytest.param(Write(pin_rehash=WRITE.pin_rehash), id="PIN hashed again"),
    pytest.param(Write(entry=ENTRY, cycle_payout=WRITE.cycle_payout), id="settlement"),
    pytest.param(Write(entry=ENTRY, repayment=WRITE.repayment), id="repayment"),
    pytest.param(Write(record=RECORD, resend=WRITE.resend), id="inbound resend"),
    pytest.param(WRITE, id="every part"),
]


def _through_the_pipe(writes: list[Write]) -> list[Write]:
    return decode_batch(pickle.loads(pickle.dumps(encode_batch(writes), pickle.HIGHEST_PROTOCOL)))


def _fields_at_default(instance: object) -> set[str]:
    assert dataclasses.is_dataclass(instance)
    return {
        field.name
        for field in dataclasses.fields(instance)
        if getattr(instance, field.name) == field.default
        or (callable(field.default_factory) and getattr(instance, field.name) == field.default_factory())
    }


def test_the_samples_set_every_field() -> None:
    """Each field of each class away from its default in one sample at least: else a field the
    encoding dropped could come back at its default and still compare equal."""
    samples: list[object] = [WRITE, *ENTRY.postings, *WRITE.card_changes]
    samples += [getattr(WRITE, field.name) for field in dataclasses.fields(Write)]
    at_default: dict[str, set[str]] = {}
    for sample in samples:
        if dataclasses.is_dataclass(sample):
            name = type(sample).__name__
            at_default[name] = at_default.get(name, _fields_at_default(sample)) & _fields_at_default(sample)
    assert at_default == {name: set() for name in at_default}
    assert len(at_default) == 14


@pytest.mark.parametrize("write", WRITES)
def test_a_write_comes_back_equal(write: Write) -> None:
    (copy,) = _through_the_pipe([write])
    assert copy == write
    assert type(copy.entry) is type(write.entry)
    if write.entry is not None:
        assert copy.entry is not None and copy.entry.postings == write.entry.postings


def test_a_batch_comes_back_equal_in_order() -> None:
    batch = [write for param in WRITES for write in param.values if isinstance(write, Write)]
    assert len(batch) == len(WRITES)
    assert _through_the_pipe(batch) == batch


RESULTS = [
    pytest.param(WriteResult(True, 7), id="landed"),
    pytest.param(WriteResult(True), id="landed moving nothing"),
    pytest.param(WriteResult(True, 8, credited_lost_card=True), id="landed on a lost card"),
    pytest.param(WriteResult(True, None, sequence_number=3, totals_json='{"n": 1}'), id="day close"),
    pytest.param(WriteResult(False, problem="transaction id already stored", conflict=True), id="conflict"),
    pytest.param(
        WriteResult(False, problem="refused", refusal=LedgerRefusal.below_zero), id="refused by a rule"
    ),
    pytest.param(
        WriteResult(False, problem="refused", card_not_active=CardStatus.lost, decline_stored=True),
        id="card not active",
    ),
    pytest.param(WriteResult(False, problem="refused", period_closed=True), id="period closed"),
    pytest.param(WriteResult(False, problem="refused", balance_changed=True), id="balance changed"),
    pytest.param(WriteResult(False, problem="database commit failed", fault=True), id="fault"),
]


@pytest.mark.parametrize("result", RESULTS)
def test_a_result_comes_back_equal(result: WriteResult) -> None:
    outcome = BatchOutcome([result, WriteResult(True, 9)])
    assert decode_outcome(pickle.loads(pickle.dumps(encode_outcome(outcome)))) == outcome


@pytest.mark.parametrize(
    "outcome",
    [
        BatchOutcome([WriteResult(False, problem="database commit failed", fault=True)] * 2, failed=True),
        BatchOutcome([WriteResult(False, problem="commit in doubt", fault=True)] * 3, True, in_doubt=True),
    ],
    ids=["failed", "in doubt"],
)
def test_a_failed_batch_comes_back_failed(outcome: BatchOutcome) -> None:
    assert decode_outcome(pickle.loads(pickle.dumps(encode_outcome(outcome)))) == outcome
