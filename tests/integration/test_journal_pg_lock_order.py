"""Two nodes' journals on one PostgreSQL database: batches that debit the same cards in different
orders. Each batch is valid on its own; together they deadlock, and the loser's whole batch is
declined 96 ("database commit failed") although every write in it could land."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from switch.domain import ledger
from switch.domain.cards import CardStatus
from switch.store.engine import make_engine
from switch.store.journal import BalanceAsRead, BatchOutcome, CardChange, Write, commit_batch
from switch.store.schema import accounts
from tests.integration.journal_world import (
    CEILING,
    PROGRAMME,
    TERMINAL,
    card_balance,
    issue,
    make_world,
    record,
    redemption,
)
from tests.pg import postgres_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def _waiting(admin: Engine, application_name: str) -> int:
    with admin.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = :name AND wait_event_type = 'Lock'"
                ),
                {"name": application_name},
            ).scalar_one()
        )


def _wait_for(admin: Engine, application_name: str, expected: int) -> None:
    deadline_s = time.monotonic() + 10
    while _waiting(admin, application_name) < expected:
        assert time.monotonic() < deadline_s, f"{application_name}: {expected} backends never waited"
        time.sleep(0.02)


def test_two_nodes_debiting_the_same_cards_in_opposite_orders_both_land(
    pg_url: str,
) -> None:
    engine = make_world(pg_url)
    name = f"audit-{uuid.uuid4().hex[:8]}"
    node_a = make_engine(f"{pg_url}&application_name={name}")
    node_b = make_engine(f"{pg_url}&application_name={name}")
    outcomes: dict[str, BatchOutcome] = {}
    try:
        issue(engine, "card_x", 1_000)
        issue(engine, "card_y", 1_000)
        # Something else (a third node's batch) holds card_x's row for a moment.
        holder = engine.connect()
        holder_txn = holder.begin()
        holder.execute(
            select(accounts.c.account_id)
            .where(accounts.c.account_id == ledger.card_account("card_x"))
            .with_for_update()
        )

        def run(node: str, node_engine: Engine, writes: list) -> None:  # type: ignore[type-arg]
            outcomes[node] = commit_batch(node_engine, writes)

        # Node A's batch: x then y; node B's: y then x. Both cards hold 1,000: every write can land.
        a = threading.Thread(
            target=run, args=("a", node_a, [redemption("a1", "card_x", 100), redemption("a2", "card_y", 100)])
        )
        b = threading.Thread(
            target=run, args=("b", node_b, [redemption("b1", "card_y", 100), redemption("b2", "card_x", 100)])
        )
        a.start()
        _wait_for(engine, name, 1)  # A waits for card_x
        b.start()
        _wait_for(engine, name, 2)  # B holds card_y and waits for card_x behind A
        holder_txn.rollback()
        holder.close()
        a.join(20)
        b.join(20)
        assert not a.is_alive() and not b.is_alive()
        x, y = card_balance(engine, "card_x"), card_balance(engine, "card_y")
    finally:
        node_a.dispose()
        node_b.dispose()
        engine.dispose()
    problems = {node: [r.problem for r in o.results if not r.ok] for node, o in outcomes.items()}
    assert problems == {"a": [], "b": []}, f"valid writes declined: {problems}"
    assert (x, y) == (800, 800)


def test_a_load_and_another_nodes_replacement_of_its_card_do_not_deadlock(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of session 25: where nodes share cards, a load's write locks its card's row first
    (`active_card`), then its account's row; a replacement's transfer locked the lost card's account
    (`balance_as_read`) first, then the card's row. A third node holding that account for a moment
    lined the two up in opposite orders: a deadlock, one batch aborted and tried again. The transfer
    now locks the card's row before its account, as every write does."""
    engine = make_world(pg_url)
    name = f"audit-{uuid.uuid4().hex[:8]}"
    node_a = make_engine(f"{pg_url}&application_name={name}")
    node_b = make_engine(f"{pg_url}&application_name={name}")
    outcomes: dict[str, BatchOutcome] = {}
    try:
        issue(engine, "card_x", 500)
        issue(engine, "card_new")
        holder = engine.connect()
        holder_txn = holder.begin()
        holder.execute(
            select(accounts.c.account_id)
            .where(accounts.c.account_id == ledger.card_account("card_x"))
            .with_for_update()
        )
        replacement = Write(
            entry=ledger.card_transfer_entry("transfer:r-1", "EUR", "card_x", "card_new", 500, CEILING),
            card_changes=(
                CardChange("card_x", CardStatus.lost, "transferred", "to card_new", "test", "card_new"),
            ),
            active_card="card_new",
            balance_as_read=BalanceAsRead("card_x", 500),
        )
        load = Write(
            record=record("a1", "load", "card_x", 200),
            entry=ledger.load_entry(f"txn:{TERMINAL}:a1", "EUR", "card_x", PROGRAMME, 200, 0, CEILING),
            active_card="card_x",
        )

        def run(node: str, node_engine: Engine, write: Write) -> None:
            outcomes[node] = commit_batch(node_engine, [write])

        b = threading.Thread(target=run, args=("b", node_b, replacement))
        a = threading.Thread(target=run, args=("a", node_a, load))
        with caplog.at_level(logging.WARNING, logger="switch.store.journal"):
            b.start()
            _wait_for(engine, name, 1)  # B waits for card_x's account
            a.start()
            _wait_for(engine, name, 2)  # A waits too, holding card_x's row before the fix
            holder_txn.rollback()
            holder.close()
            a.join(20)
            b.join(20)
        assert not a.is_alive() and not b.is_alive()
        balances = card_balance(engine, "card_x"), card_balance(engine, "card_new")
    finally:
        node_a.dispose()
        node_b.dispose()
        engine.dispose()
    assert [line.getMessage() for line in caplog.records if "trying again" in line.getMessage()] == []
    assert outcomes["b"].results[0].ok, outcomes["b"].results[0].problem
    assert not outcomes["a"].results[0].ok  # the card was replaced under it: declined, nothing moved
    assert balances == (0, 500)
