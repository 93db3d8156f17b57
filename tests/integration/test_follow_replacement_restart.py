"""Audit session 22: money credited to a replaced card "follows it" (core._follow_replacement) on a
daemon thread started by the card actor after the credit is decided. Nothing stored says a move is
owed and nothing at start looks for one: a switch stopped (or dead) between the credit landing and
that thread's transfer leaves the money on the lost card, which no terminal takes, for good."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event

from protocols.backoffice_service import ADMIN_ACTOR
from switch.core import SwitchCore
from switch.server import SwitchServer
from switch.store.engine import make_engine
from switch.store.repository import Store
from tests.integration.harness import World, new_txn, on_statement, start_world, world_fixture
from tests.integration.test_card_replacement import replace


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(tmp_path, "", 1)
    yield world
    world.channel.close()


def balance_of(server: SwitchServer, number: str) -> int:
    card_id = server.core.cards.card_id(number)
    assert card_id is not None
    return server.core.store.card_state(card_id).balance_minor


def follows_counted(server: SwitchServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Non-zero samples of the replaced-card follow counters, from the server's own registry."""
    names = ("txswitch_replaced_card_follows_total", "txswitch_replaced_card_followed_minor_total")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(server.metrics.exposition().decode())
        for sample in family.samples
        if sample.name in names and sample.value
    }


@contextmanager
def follow_moves_held(engine: Engine, *, first_only: bool = False) -> Iterator[threading.Event]:
    """Each move of money following a replaced card (only the first, with first_only) waits before its
    first statement until the block ends, as if the switch stopped (or died) before the move was made.
    Yields the event set once a move is held; the held threads are let go and joined on the way out."""
    reached, release = threading.Event(), threading.Event()
    held: list[threading.Thread] = []

    def before(_cursor: Any, _statement: str, _parameters: Any) -> None:
        if threading.current_thread().name == "follow-replacement" and not (first_only and held):
            held.append(threading.current_thread())
            reached.set()
            release.wait(30)

    with on_statement(engine, "before", before):
        try:
            yield reached
        finally:
            release.set()
            for thread in held:
                thread.join(10)


def test_a_ride_reversed_just_before_a_restart_still_reaches_the_new_card(world: World) -> None:
    terminal = world.terminals[0]
    lost, new = world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme)
    assert terminal.redeem(lost, 700, "ride-1").response_code == "00"
    assert replace(world, lost, new).moved.amount_minor == 1_300

    again: SwitchServer | None = None
    with follow_moves_held(world.server.core.store.engine) as reached:
        try:
            reversal = terminal.reversal("ride-1")
            assert reversal.response_code == "00", reversal.message
            assert reached.wait(10), "no move of the reversed ride was started"
            world.server.stop()

            again = SwitchServer(world.server.settings)
            again.start()
            channel = grpc.insecure_channel(again.address)
            deadline = time.monotonic() + 5
            while balance_of(again, new) != 2_000 and time.monotonic() < deadline:
                time.sleep(0.05)
            on_new, on_lost = balance_of(again, new), balance_of(again, lost)
            channel.close()
            assert (on_new, on_lost) == (2_000, 0), (
                f"after the restart: new card {on_new}, lost card {on_lost}"
            )
            # The start's move is counted as such, once, with its amount.
            deadline = time.monotonic() + 5
            while not follows_counted(again) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert follows_counted(again) == {
                ("txswitch_replaced_card_follows_total", (("outcome", "moved"), ("when", "start"))): 1.0,
                (
                    "txswitch_replaced_card_followed_minor_total",
                    (("currency", "EUR"), ("when", "start")),
                ): 700.0,
            }
        finally:
            if again is not None:
                again.stop()
        # The held thread goes on and ends: the old switch's move then fails (its card registry is
        # closed), and the start above is what moved the money.


# Audit session 23: every start looked at each replaced card ever (a query or two per card) and
# started one thread per card holding money, without a limit.
REPLACED_CARDS = 300
RIDE_MINOR, LEFT_MINOR = 300, 700
BUILDERS = 8  # threads building the replaced cards


def follows_fail(engine: Engine) -> AbstractContextManager[None]:
    """Meanwhile every move of money following a replaced card fails on its first statement, as if
    the switch had stopped first: the money stays on the lost card for a start to find."""

    def refuse(*_: Any) -> None:
        if threading.current_thread().name.startswith("follow-replacement"):
            raise RuntimeError("the switch stopped before the move")

    return on_statement(engine, "before", refuse)


def follows_counted_by(core: SwitchCore, when: str, outcome: str, count: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while core.follow_statistics().moves[when, outcome] < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def cards_left_holding_money(world: World, count: int) -> list[tuple[str, str]]:
    """count (lost, new) cards: each lost card replaced by its new one (LEFT_MINOR moved), then a
    ride of RIDE_MINOR made before the replacement reversed, its move failed: it is on the lost card."""
    core = world.server.core

    def left_holding_money(index: int) -> tuple[str, str]:
        terminal = world.terminals[index % len(world.terminals)]
        # Issued and replaced in process, as the backoffice's IssueCard and ReplaceCard do (no gRPC).
        lost = core.admin.issue_card(world.benefit_programme, RIDE_MINOR + LEFT_MINOR, new_txn())
        new = core.admin.issue_card(world.benefit_programme, 0, new_txn())
        ride = new_txn()
        assert terminal.redeem(lost.card_number, RIDE_MINOR, ride).response_code == "00"
        moved = core.replace_card(lost.card_id, new.card_id, new_txn(), ADMIN_ACTOR).moved_minor
        assert moved == LEFT_MINOR
        assert terminal.reversal(ride).response_code == "00"
        return lost.card_number, new.card_number

    # Closed once every move has failed: a failed follow is not tried again until the next start.
    # Several pairs at once: each waits mostly for its commits, which the journal then batches.
    with follows_fail(core.store.engine), ThreadPoolExecutor(BUILDERS) as pool:
        pairs = list(pool.map(left_holding_money, range(count)))
        assert follows_counted_by(core, "credit", "failed", count, 30), core.follow_statistics()
    return pairs


def test_a_start_with_many_replaced_cards_holding_money_moves_each_once_on_a_few_threads(
    tmp_path: Path,
) -> None:
    world = start_world(tmp_path, "", 2)
    try:
        pairs = cards_left_holding_money(world, REPLACED_CARDS)
    finally:
        world.channel.close()
        world.server.stop()

    again = SwitchServer(world.server.settings)
    movers: set[int] = set()

    def record(*_: Any) -> None:
        if threading.current_thread().name.startswith("follow-replacement"):
            movers.add(threading.get_ident())

    event.listen(again.engine, "before_cursor_execute", record)  # before the start: no thread uses it yet
    again.start()
    try:
        assert follows_counted_by(again.core, "start", "moved", REPLACED_CARDS, 120), (
            again.core.follow_statistics()
        )
        workers_max = again.settings.replacement_follow_workers_max
        assert len(movers) <= workers_max, f"{len(movers)} threads moved money"
        balances = [(balance_of(again, lost), balance_of(again, new)) for lost, new in pairs]
        assert balances == [(0, RIDE_MINOR + LEFT_MINOR)] * REPLACED_CARDS  # all of it, once
        moves = again.core.follow_statistics().moves
        assert {key: total for key, total in moves.items() if total} == {("start", "moved"): REPLACED_CARDS}
    finally:
        again.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def on_either_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path)


def test_the_start_finds_the_replaced_cards_holding_money_in_one_query(on_either_database: World) -> None:
    world = on_either_database
    pairs = cards_left_holding_money(world, 4)
    empty_lost, empty_new = world.issue(0), world.issue(0)  # replaced, holding nothing
    replace(world, empty_lost, empty_new)
    run: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        run.append((statement, parameters))

    # An engine of the test's own: a listener added to the running switch's races its threads.
    engine = make_engine(world.server.settings.effective_database_url)
    try:
        event.listen(engine, "before_cursor_execute", record)
        found = Store(engine).money_on_replaced_cards()
        assert len(run) == 1, run
        if engine.dialect.name == "sqlite":  # PostgreSQL's planner scans a table this small
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {run[0][0]}", run[0][1])
                plan = " ".join(str(row) for row in rows)
            assert "SEARCH cards USING INDEX ix_cards_replaced" in plan, plan
    finally:
        engine.dispose()
    lost_ids = [str(world.server.core.cards.card_id(lost)) for lost, _ in pairs]
    assert sorted(card_id for card_id, _ in found) == sorted(lost_ids)
    assert all(last_posting > 0 for _, last_posting in found)


def test_a_follow_left_queued_at_stop_is_counted_and_logged_and_the_next_start_moves_its_money(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit session 26: follows queued (or waiting for a replacement) when the switch stopped were
    dropped uncounted and unlogged; their money stayed on the lost card for the next start."""
    world = start_world(tmp_path, "", 1, replacement_follow_workers_max=1)
    terminal, core = world.terminals[0], world.server.core
    (held_lost, held_new), (queued_lost, queued_new) = [
        (world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme))
        for _ in range(2)
    ]
    for lost, new, ride, amount_minor in (
        (held_lost, held_new, "ride-a", 700),
        (queued_lost, queued_new, "ride-b", 500),
    ):
        assert terminal.redeem(lost, amount_minor, ride).response_code == "00"
        assert replace(world, lost, new).moved.amount_minor == 2_000 - amount_minor

    again: SwitchServer | None = None
    # The only worker is held busy: the next follow waits in the queue.
    with follow_moves_held(core.store.engine, first_only=True) as reached:
        try:
            assert terminal.reversal("ride-a").response_code == "00"
            assert reached.wait(10), "no move of the first reversed ride was started"
            assert terminal.reversal("ride-b").response_code == "00"
            deadline = time.monotonic() + 10
            while core.follow_statistics().queued < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert core.follow_statistics().queued == 1, core.follow_statistics()
            world.channel.close()
            with caplog.at_level(logging.WARNING, logger="switch.core"):
                world.server.stop()
            assert core.follow_statistics().moves["credit", "left_at_stop"] == 1, core.follow_statistics()
            assert "1 moves of money on replaced cards left at stop" in caplog.text, caplog.text

            again = SwitchServer(world.server.settings)
            again.start()
            # The start moves both: the queued one and the one the stop caught making its move.
            assert follows_counted_by(again.core, "start", "moved", 2, 30), again.core.follow_statistics()
            balances = {
                number: balance_of(again, number) for number in (held_lost, held_new, queued_lost, queued_new)
            }
            assert balances == {held_lost: 0, held_new: 2_000, queued_lost: 0, queued_new: 2_000}, balances
        finally:
            if again is not None:
                again.stop()


def test_a_start_does_not_wait_for_the_follow_workers_and_their_backlog_moves_after(tmp_path: Path) -> None:
    """Audit session 26: the start's sweep waited, without a time limit, for room in the follow queue
    while the workers' moves waited on the journal: one slow move held the whole start."""
    world = start_world(tmp_path, "", 1)
    try:
        pairs = cards_left_holding_money(world, 3)
    finally:
        world.channel.close()
        world.server.stop()

    settings = world.server.settings.with_overrides(
        replacement_follow_workers_max=1, replacement_follows_queued_max=1
    )
    again = SwitchServer(settings)
    reached, release = threading.Event(), threading.Event()

    def hold_the_first_move(*_: Any) -> None:
        if threading.current_thread().name == "follow-replacement" and not reached.is_set():
            reached.set()
            release.wait(30)  # the only worker's first move is slow (a journal waiting on its disk)

    event.listen(again.engine, "before_cursor_execute", hold_the_first_move)  # before the start
    starter = threading.Thread(target=again.start, name="starter")
    starter.start()
    try:
        starter.join(10)
        assert not starter.is_alive(), "the start waited for the follow workers"
        assert reached.wait(10), "no move was started"
        assert again.core.follow_statistics().backlog >= 1, again.core.follow_statistics()
        release.set()
        assert follows_counted_by(again.core, "start", "moved", len(pairs), 30), (
            again.core.follow_statistics()
        )
        balances = [(balance_of(again, lost), balance_of(again, new)) for lost, new in pairs]
        assert balances == [(0, RIDE_MINOR + LEFT_MINOR)] * len(pairs)
    finally:
        release.set()
        starter.join(30)
        again.stop()
