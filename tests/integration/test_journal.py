"""The batched journal apply on SQLite and PostgreSQL: all of a batch or none of it, backstops per row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from actors.journal_writer import JournalWriter
from actors.terminal_actor import EmployeePins, EmployeePinTryNotStoredError
from switch.domain import ledger
from switch.domain.employees import LockoutPolicy
from switch.domain.ledger import AccountKind
from switch.store.engine import create_schema, make_engine
from switch.store.journal import (
    BackstopError,
    CyclePayout,
    EmployeeAttempt,
    OriginalChange,
    PeriodClose,
    TransactionRecord,
    Write,
    WriteResult,
    apply_alone,
    apply_batch,
    commit_alone,
    commit_batch,
)
from switch.store.periods import totals_of_json
from switch.store.repository import Store
from switch.store.schema import (
    accounts,
    day_closes,
    employees,
    journal_entries,
    locations,
    merchants,
    postings,
    terminals,
    transactions,
)
from tests.pg import postgres_schema

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
MERCHANT = "mer_1"
PROGRAMME = "prg_1"
CARDS = ("card_a", "card_b")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'journal.sqlite'}"
        else:
            yield stack.enter_context(postgres_schema())


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.begin() as conn:
        rows = [
            {"account_id": ledger.card_account(card), "kind": AccountKind.card, "currency": "EUR"}
            for card in CARDS
        ]
        rows.append(
            {
                "account_id": ledger.merchant_payable_account(MERCHANT, PROGRAMME),
                "kind": AccountKind.merchant_payable,
                "currency": "EUR",
            }
        )
        conn.execute(insert(accounts), [{**row, "balance_minor": 0} for row in rows])
        conn.execute(accounts.update().where(accounts.c.kind == AccountKind.card).values(balance_minor=1_000))
    yield engine
    engine.dispose()


def redemption(txn: str, card: str, amount_minor: int) -> Write:
    record = TransactionRecord(
        source="trm_1",
        transaction_id=txn,
        transaction_type="redemption",
        fingerprint="f" * 32,
        currency="EUR",
        result="approved",
        status="approved",
        card_id=card,
        merchant_id=MERCHANT,
        requested_minor=amount_minor,
        approved_minor=amount_minor,
    )
    entry = ledger.redemption_entry(
        f"txn:trm_1:{txn}", "EUR", card, amount_minor, merchant_id=MERCHANT, programme_id=PROGRAMME
    )
    return Write(record=record, entry=entry)


def balances(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {row.account_id: row.balance_minor for row in conn.execute(select(accounts))}


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_batch_lands_whole_with_an_entry_id_per_write(engine: Engine) -> None:
    writes = [redemption("t1", "card_a", 300), Write(), redemption("t2", "card_b", 200)]
    writes.append(redemption("t3", "card_a", 700))
    with engine.begin() as conn:
        results = apply_batch(conn, writes, NOW)
    assert [r.ok for r in results] == [True] * 4
    assert results[1].entry_id is None
    ids = [r.entry_id for r in results if r.entry_id is not None]
    assert len(set(ids)) == 3
    with engine.connect() as conn:
        keys = dict(conn.execute(select(journal_entries.c.entry_id, journal_entries.c.idempotency_key)).all())
        per_entry = conn.execute(
            select(postings.c.entry_id, func.sum(postings.c.amount_minor)).group_by(postings.c.entry_id)
        ).all()
    assert [keys[i] for i in ids] == ["txn:trm_1:t1", "txn:trm_1:t2", "txn:trm_1:t3"]
    assert all(total == 0 for _, total in per_entry) and len(per_entry) == 3
    assert balances(engine) == {"card:card_a": 0, "card:card_b": 800, "merchant:mer_1:prg_1:payable": 1_200}


def test_one_overdraft_refuses_the_whole_batch_and_alone_only_itself(engine: Engine) -> None:
    writes = [redemption("t1", "card_a", 600), redemption("t2", "card_a", 600), redemption("t3", "card_b", 5)]
    with pytest.raises(BackstopError), engine.begin() as conn:
        apply_batch(conn, writes, NOW)
    assert count(engine, transactions) == 0 and count(engine, journal_entries) == 0
    assert balances(engine)["card:card_a"] == 1_000
    outcomes = []
    for write in writes:
        try:
            with engine.begin() as conn:
                outcomes.append(apply_alone(conn, write, NOW).ok)
        except BackstopError:
            outcomes.append(False)
    assert outcomes == [True, False, True]
    assert balances(engine) == {"card:card_a": 400, "card:card_b": 995, "merchant:mer_1:prg_1:payable": 605}


def test_an_original_changes_once_and_the_second_change_is_a_backstop(engine: Engine) -> None:
    with engine.begin() as conn:
        apply_alone(conn, redemption("t1", "card_a", 300), NOW)
    cancel = OriginalChange("trm_1", "t1", "cancelled", require_unrefunded=True)
    refund = OriginalChange("trm_1", "t1", "approved", refund_minor=100)
    with engine.begin() as conn:
        apply_batch(conn, [Write(original=refund)], NOW)
    with pytest.raises(BackstopError), engine.begin() as conn:
        apply_batch(conn, [Write(original=cancel)], NOW)  # partly refunded: no cancel
    twice = [Write(original=refund), Write(original=refund), Write(original=refund)]
    with pytest.raises(BackstopError), engine.begin() as conn:
        apply_batch(conn, twice, NOW)  # 100 + 300 > 300: the third would over-refund
    with engine.connect() as conn:
        row = conn.execute(select(transactions.c.status, transactions.c.refunded_minor)).one()
    assert (row.status, row.refunded_minor) == ("approved", 100)


def test_the_writer_counts_its_wall_and_cpu_time_in_batches(engine: Engine) -> None:
    writer = JournalWriter(engine, batch_writes_max=8, queue_writes_max=8)
    landed = threading.Event()
    writer.start()
    try:
        assert writer.submit(redemption("t1", "card_a", 300), lambda _result: landed.set())
        assert landed.wait(10)
    finally:
        writer.stop()
    statistics = writer.statistics()
    assert statistics.batches == 1 and statistics.writes == 1
    assert statistics.busy_s > 0
    assert 0 <= statistics.busy_cpu_s <= statistics.busy_s + 0.001  # one thread's CPU within its wall


def add_terminal(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(merchants),
            {
                "merchant_id": MERCHANT,
                "name": "Shop",
                "email": "s@x",
                "password_hash": "-",
                "created_at": NOW,
            },
        )
        conn.execute(insert(locations), {"location_id": "loc_1", "merchant_id": MERCHANT, "name": "Shop"})
        conn.execute(
            insert(terminals),
            {
                "terminal_id": "trm_1",
                "merchant_id": MERCHANT,
                "location_id": "loc_1",
                "device_name": "A77",
                "credential_hash": "-",
                "period_number": 1,
                "period_opened_at": NOW,
                "activated_at": NOW,
            },
        )
        conn.execute(
            insert(employees),
            {
                "employee_id": "emp_1",
                "merchant_id": MERCHANT,
                "employee_number": "1",
                "name": "Manager",
                "role": "manager",
                "pin_hash": "-",
            },
        )


def period_close(close_id: str, period_number: int) -> Write:
    closed_at = NOW + dt.timedelta(hours=period_number)
    return Write(period_close=PeriodClose("trm_1", close_id, period_number, NOW, closed_at))


def test_a_period_closes_once_in_a_batch_with_transactions(engine: Engine) -> None:
    add_terminal(engine)
    locked_until = NOW + dt.timedelta(minutes=15)
    writes = [
        redemption("t1", "card_a", 300),
        period_close("c1", 1),
        Write(employee_attempt=EmployeeAttempt("emp_1", 3, locked_until)),
    ]
    with engine.begin() as conn:
        results = apply_batch(conn, writes, NOW)
    assert [r.sequence_number for r in results] == [None, 1, None]
    with engine.begin() as conn:
        assert apply_alone(conn, period_close("c2", 2), NOW).sequence_number == 2
    with pytest.raises(BackstopError), engine.begin() as conn:
        apply_alone(conn, period_close("c3", 2), NOW)  # period 2 is closed already
    with pytest.raises(IntegrityError), engine.begin() as conn:
        apply_alone(conn, period_close("c2", 3), NOW)  # a close id stored already
    with engine.connect() as conn:
        closes = conn.execute(select(day_closes.c.close_id, day_closes.c.sequence_number)).all()
        period = conn.execute(select(terminals.c.period_number)).scalar_one()
        tries = conn.execute(select(employees.c.failed_tries, employees.c.locked_until)).one()
    assert sorted(closes) == [("c1", 1), ("c2", 2)] and period == 3
    stored_until = tries.locked_until
    if stored_until.tzinfo is None:  # SQLite hands back naive UTC
        stored_until = stored_until.replace(tzinfo=dt.UTC)
    assert tries.failed_tries == 3 and stored_until == locked_until


def test_a_replayed_close_id_comes_back_from_the_writer_as_a_conflict(engine: Engine) -> None:
    add_terminal(engine)
    writer = JournalWriter(engine, batch_writes_max=8, queue_writes_max=8)
    writer.start()
    try:
        first = writer.write_and_wait(period_close("c1", 1), 10)
        again = writer.write_and_wait(period_close("c1", 2), 10)
    finally:
        writer.stop()
    assert (first.ok, first.sequence_number) == (True, 1)
    assert (again.ok, again.conflict) == (False, True)
    assert count(engine, day_closes) == 1


def test_the_journal_process_answers_each_write_as_the_writer_thread_does(
    engine: Engine, database_url: str
) -> None:
    writer = JournalWriter(engine, batch_writes_max=8, queue_writes_max=8, database_url=database_url)
    writer.start()
    try:
        assert writer.process_pid is not None
        first = writer.write_and_wait(redemption("t1", "card_a", 300), 10)
        overdraw = writer.write_and_wait(redemption("t2", "card_a", 5_000), 10)
        replay = writer.write_and_wait(redemption("t1", "card_a", 300), 10)
    finally:
        writer.stop()
    assert first.ok and first.entry_id is not None
    assert not overdraw.ok and "below zero" in overdraw.problem
    assert not replay.ok and replay.conflict
    assert balances(engine)[ledger.card_account("card_a")] == 700
    assert count(engine, transactions) == 1 and count(engine, journal_entries) == 1


def test_a_journal_process_that_dies_leaves_its_batch_unanswered_and_takes_no_more_writes(
    engine: Engine, database_url: str
) -> None:
    failures: list[int] = []
    writer = JournalWriter(
        engine, batch_writes_max=8, queue_writes_max=8, on_failure=failures.append, database_url=database_url
    )
    writer.start()
    try:
        assert writer.write_and_wait(redemption("t1", "card_a", 300), 10).ok
        pid = writer.process_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _wait_until_gone(pid)
        answered = threading.Event()
        assert writer.submit(redemption("t2", "card_a", 300), lambda _result: answered.set())
        deadline_s = time.monotonic() + 10
        while not writer.statistics().lost and time.monotonic() < deadline_s:
            time.sleep(0.01)
        later = writer.write_and_wait(redemption("t3", "card_a", 300), 10)
    finally:
        writer.stop()
    assert "journal process" in writer.statistics().lost
    assert not answered.is_set()  # in doubt: neither approved nor declined
    assert not later.ok and later.problem.startswith("journal lost")
    assert failures == [1]
    assert balances(engine)[ledger.card_account("card_a")] == 700
    assert count(engine, transactions) == 1


def _wait_until_gone(pid: int) -> None:
    deadline_s = time.monotonic() + 10
    while time.monotonic() < deadline_s:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still there")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite keeps any length
def test_a_value_too_long_for_its_column_refuses_only_its_own_write(engine: Engine) -> None:
    too_long = "x" * 100  # transaction ids are stored in 80 characters
    writes = [redemption("t1", "card_a", 100), redemption(too_long, "card_a", 200)]
    writes.append(redemption("t3", "card_b", 50))
    outcome = commit_batch(engine, writes)
    assert [result.ok for result in outcome.results] == [True, False, True]
    assert outcome.results[1].problem == "a value does not fit its column"
    assert not outcome.failed
    assert balances(engine)["card:card_a"] == 900 and balances(engine)["card:card_b"] == 950
    assert count(engine, transactions) == 2


def test_an_employee_attempt_counted_from_a_state_stored_over_meanwhile_is_refused(engine: Engine) -> None:
    add_terminal(engine)  # and its merchant's employee, with no attempt stored yet
    with engine.begin() as conn:
        apply_alone(conn, Write(employee_attempt=EmployeeAttempt("emp_1", 1, None, attempts_before=0)), NOW)
    # Another node had read the same state (no attempt stored) and judged a wrong PIN too.
    with (
        pytest.raises(BackstopError, match="another PIN attempt was stored meanwhile"),
        engine.begin() as conn,
    ):
        apply_alone(conn, Write(employee_attempt=EmployeeAttempt("emp_1", 1, None, attempts_before=0)), NOW)
    with engine.begin() as conn:  # counted from what is stored now: the second wrong try
        apply_alone(conn, Write(employee_attempt=EmployeeAttempt("emp_1", 2, None, attempts_before=1)), NOW)
    with engine.connect() as conn:
        stored = conn.execute(select(employees.c.failed_tries, employees.c.pin_attempts)).one()
    assert tuple(stored) == (2, 2)


# (a write decided on a state changed meanwhile, the rule the journal names for its caller)
CHANGED_MEANWHILE = [
    (
        Write(original=OriginalChange("trm_1", "t1", "cancelled", require_unrefunded=True)),
        "original_changed_meanwhile",
    ),
    (
        Write(original=OriginalChange("trm_1", "t1", "approved", refund_minor=201)),
        "original_changed_meanwhile",
    ),
    (
        Write(employee_attempt=EmployeeAttempt("emp_1", 1, None, attempts_before=0)),
        "pin_try_stored_meanwhile",
    ),
    (
        Write(cycle_payout=CyclePayout(PROGRAMME, "payout-2026-11-01", MERCHANT, "")),
        "paid_under_another_settlement",
    ),
]


@pytest.mark.parametrize(("write", "changed"), CHANGED_MEANWHILE)
def test_a_write_on_a_state_changed_meanwhile_is_refused_by_a_named_rule(
    engine: Engine, write: Write, changed: str
) -> None:
    add_terminal(engine)
    with engine.begin() as conn:
        apply_alone(conn, redemption("t1", "card_a", 300), NOW)
        apply_alone(conn, Write(original=OriginalChange("trm_1", "t1", "approved", refund_minor=100)), NOW)
        apply_alone(conn, Write(employee_attempt=EmployeeAttempt("emp_1", 1, None, attempts_before=0)), NOW)
    before = balances(engine), count(engine, transactions)
    result = commit_alone(engine, write)
    assert not result.ok and result.refusal is not None and result.refusal.value == changed, result
    assert (balances(engine), count(engine, transactions)) == before


def test_a_pin_try_counted_from_a_stale_count_is_answered_without_the_journals_words(engine: Engine) -> None:
    add_terminal(engine)
    writer = JournalWriter(engine, batch_writes_max=8, queue_writes_max=8)
    pins = EmployeePins(Store(engine), writer, LockoutPolicy(3, 60), lambda: NOW, 10.0)
    stale = EmployeeAttempt("emp_1", 1, None, attempts_before=0)  # as two nodes read it
    writer.start()
    try:
        pins._store_try(stale)
        with pytest.raises(EmployeePinTryNotStoredError) as refused:
            pins._store_try(stale)
    finally:
        writer.stop()
    said = str(refused.value)
    assert "another try of this employee was stored meanwhile" in said, said
    assert "emp_1" not in said and "ledger" not in said, said


def test_a_row_belongs_to_the_period_its_terminal_has_open_when_it_commits(engine: Engine) -> None:
    """An actor's copy of the period may be behind (a close that timed out, a close on another
    node): the row goes to the open period, and the close of that period counts it."""
    add_terminal(engine)
    for close_id, period in (("c1", 1), ("c2", 2)):
        with engine.begin() as conn:
            apply_alone(conn, period_close(close_id, period), NOW)
    stale = redemption("t1", "card_a", 300)
    assert stale.record is not None
    stale = Write(record=dataclasses.replace(stale.record, period_number=1), entry=stale.entry)
    with engine.begin() as conn:
        landed, closed = apply_batch(conn, [stale, period_close("c3", 3)], NOW)
    assert landed.ok and closed.sequence_number == 3
    with engine.connect() as conn:
        period = conn.execute(
            select(transactions.c.period_number).where(transactions.c.transaction_id == "t1")
        ).scalar_one()
        stored_totals = conn.execute(
            select(day_closes.c.totals_json).where(day_closes.c.close_id == "c3")
        ).scalar_one()
    assert period == 3
    assert [(t.transaction_type, t.count, t.total_minor) for t in totals_of_json(closed.totals_json)] == [
        ("redemption", 1, 300)
    ]
    assert stored_totals == closed.totals_json


def test_a_failing_callback_does_not_stop_the_writer(engine: Engine) -> None:
    writer = JournalWriter(engine, batch_writes_max=8, queue_writes_max=8)
    writer.start()

    def fail(_result: WriteResult) -> None:
        raise RuntimeError("the waiter's loop is closed")

    try:
        assert writer.submit(redemption("t1", "card_a", 100), fail)
        assert writer.write_and_wait(redemption("t2", "card_a", 100), 10).ok
    finally:
        writer.stop()
    assert count(engine, transactions) == 2
