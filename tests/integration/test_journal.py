"""The batched journal apply on SQLite and PostgreSQL: all of a batch or none of it, backstops per row."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from actors.journal_writer import JournalWriter
from switch.domain import ledger
from switch.domain.ledger import AccountKind
from switch.store.engine import create_schema, make_engine
from switch.store.journal import (
    BackstopError,
    OriginalChange,
    TransactionRecord,
    Write,
    apply_alone,
    apply_batch,
)
from switch.store.schema import accounts, journal_entries, postings, transactions
from tests.pg import postgres_schema

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
MERCHANT = "mer_1"
CARDS = ("card_a", "card_b")


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
        else:
            url = stack.enter_context(postgres_schema())
        engine = make_engine(url)
        create_schema(engine)
        with engine.begin() as conn:
            rows = [
                {"account_id": ledger.card_account(card), "kind": AccountKind.card, "currency": "EUR"}
                for card in CARDS
            ]
            rows.append(
                {
                    "account_id": ledger.merchant_payable_account(MERCHANT),
                    "kind": AccountKind.merchant_payable,
                    "currency": "EUR",
                }
            )
            conn.execute(insert(accounts), [{**row, "balance_minor": 0} for row in rows])
            conn.execute(
                accounts.update().where(accounts.c.kind == AccountKind.card).values(balance_minor=1_000)
            )
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
    entry = ledger.redemption_entry(f"txn:trm_1:{txn}", "EUR", card, MERCHANT, amount_minor)
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
    assert balances(engine) == {"card:card_a": 0, "card:card_b": 800, "merchant:mer_1:payable": 1_200}


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
    assert balances(engine) == {"card:card_a": 400, "card:card_b": 995, "merchant:mer_1:payable": 605}


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
