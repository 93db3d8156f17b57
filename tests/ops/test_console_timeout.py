"""A console command the switch does not answer in time, over a real SSH client: the database held by
another writer (a real SQLite lock) keeps a card's block waiting past the console's backend timeout.

It was audited and exited `error` though it still completed once the lock went: its outcome is
unknown, so it is audited `timed_out` (exit 75) and the operator is told to check before sending it
again.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.console import BACKEND_WORKERS_MAX, OpsConsole
from ops.console_commands import Outcome
from switch.domain.cards import CardStatus
from tests.integration.harness import World
from tests.ops.conftest import ExecResult, Keys, console_of, exec_commands

BACKEND_CALL_TIMEOUT_S = 0.5
LOCK_HELD_S = 2.0  # the answer comes within it, while the lock is held: the lock goes only after it
# Long enough past BACKEND_CALL_TIMEOUT_S for 4 SSH logins and answers on a busy machine: the lock
# goes at the latest then, and as soon as every answer is in.
WORKERS_LOCK_HELD_S = 5.0


@pytest.fixture
def console(bare_world: World, keys: Keys, tmp_path: Path) -> Iterator[OpsConsole]:
    with console_of(
        bare_world, keys, tmp_path / "ops-audit.jsonl", backend_call_timeout_s=BACKEND_CALL_TIMEOUT_S
    ) as console:
        yield console


def test_a_command_past_its_timeout_is_audited_timed_out_and_the_operator_told_to_check(
    bare_world: World, console: OpsConsole, keys: Keys
) -> None:
    card = bare_world.issue(1_000)
    card_id = bare_world.server.core.cards.card_id(card)
    assert card_id
    database = bare_world.server.settings.data_dir / "txswitch.sqlite"
    other_writer = sqlite3.connect(database, isolation_level=None)
    try:
        other_writer.execute("BEGIN IMMEDIATE")
        started_s = time.monotonic()
        (result,) = asyncio.run(exec_commands(console.port, keys.operator, [f"cards block {card}"]))
        assert time.monotonic() - started_s < LOCK_HELD_S, "answered late"
    finally:
        other_writer.execute("COMMIT")
        other_writer.close()
    assert result.exit_status == 75, result  # EX_TEMPFAIL; it was 70 (EX_SOFTWARE), an internal error
    assert Outcome.timed_out.exit_status == 75
    assert "timed out" in result.stderr and "check its result before sending it again" in result.stderr
    assert card not in result.stderr
    # It did complete, once the other writer let go: "error" said it had failed.
    deadline_s = time.monotonic() + 10
    while bare_world.server.core.store.card_state(card_id).status is not CardStatus.blocked:
        assert time.monotonic() < deadline_s, "the block never completed"
        time.sleep(0.05)
    outcomes = _audited_outcomes(console.audit.path, "cards block ")
    assert outcomes == ["started", "timed_out"], outcomes


def _audited_outcomes(path: Path, command_start: str) -> list[str]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [record["outcome"] for record in records if record["command"].startswith(command_start)]


def test_commands_past_their_timeout_on_every_backend_worker_are_answered_in_time(
    bare_world: World, console: OpsConsole, keys: Keys
) -> None:
    """Every backend worker held by a command the switch does not answer: the outcome's audit line
    waited for a worker too, so no operator was told "timed out" until the database let go.

    One command more waits for a worker past its timeout: cancelled, it never runs, and its operator
    was told it "may still complete"; it is told it did not run, and audited `not_run`."""
    cards = [bare_world.issue(1_000) for _ in range(BACKEND_WORKERS_MAX)]
    queued = bare_world.issue(1_000)
    database = bare_world.server.settings.data_dir / "txswitch.sqlite"
    # Let go once the answers are in, or by a timer at the latest: the answers are waited for while it
    # is held. It was let go by the timer alone, 5 s in, when the answers came in about 1 s.
    other_writer = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other_writer.execute("BEGIN IMMEDIATE")
    let_go_once = threading.Lock()

    def let_go() -> None:
        if let_go_once.acquire(blocking=False):
            other_writer.execute("COMMIT")

    timer = threading.Timer(WORKERS_LOCK_HELD_S, let_go)
    timer.start()
    try:
        started_s = time.monotonic()

        async def block_all() -> tuple[list[list[ExecResult]], ExecResult]:
            blocks = [exec_commands(console.port, keys.operator, [f"cards block {card}"]) for card in cards]
            held = asyncio.gather(*blocks)
            await _until_audited(console.audit.path, "started", len(cards))  # every worker holds one
            (behind,) = await exec_commands(console.port, keys.operator, [f"cards block {queued}"])
            return await held, behind

        answered, behind = asyncio.run(block_all())
        answered_in_s = time.monotonic() - started_s
    finally:
        timer.cancel()
        let_go()
        timer.join()
        other_writer.close()
    assert answered_in_s < WORKERS_LOCK_HELD_S - 1, f"answered only after {answered_in_s:.1f} s"
    assert [result.exit_status for (result,) in answered] == [75] * len(cards), answered
    assert all("may still complete" in result.stderr for (result,) in answered), answered
    assert behind.exit_status == 75, behind
    assert behind.stderr.startswith("not run: ") and "nothing was done, send it again" in behind.stderr, (
        behind
    )
    outcomes = _audited_outcomes(console.audit.path, "cards block ")
    assert sorted(outcomes) == ["not_run"] + ["started"] * len(cards) + ["timed_out"] * len(cards), outcomes
    _wait_blocked(bare_world, cards)
    queued_id = bare_world.server.core.cards.card_id(queued)
    assert queued_id
    # Not run after the others either: their workers are free now, and its block would be done.
    assert bare_world.server.core.store.card_state(queued_id).status is CardStatus.active


async def _until_audited(path: Path, outcome: str, count: int) -> None:
    deadline_s = time.monotonic() + WORKERS_LOCK_HELD_S
    while _audited_so_far(path).count(outcome) < count:
        assert time.monotonic() < deadline_s, f"fewer than {count} commands {outcome}"
        await asyncio.sleep(0.02)


def _audited_so_far(path: Path) -> list[str]:
    """The outcomes audited yet: none before the first line, and a line read half written is not yet."""
    try:
        return _audited_outcomes(path, "cards block ")
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def _wait_blocked(world: World, cards: list[str]) -> None:
    """Until every one of cards is blocked: their commands timed out, and complete once the lock goes."""
    deadline_s = time.monotonic() + 10
    card_ids = [world.server.core.cards.card_id(card) for card in cards]
    while any(
        world.server.core.store.card_state(str(card_id)).status is not CardStatus.blocked
        for card_id in card_ids
    ):
        assert time.monotonic() < deadline_s, "the timed-out blocks never completed"
        time.sleep(0.05)


def test_a_command_the_stop_cancels_while_it_waits_for_a_worker_is_audited_not_run(
    bare_world: World, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every worker held by a block the database keeps waiting, one more command queued behind them:
    the console's stop cancels it (it never runs) and its session goes with the loop. The audit log
    showed nothing of it; it shows it not_run, exit 75.

    The stop cancels and awaits every session: those waiting on a command were left pending on the
    closed loop, and asyncio logged "Task was destroyed but it is pending" for each once collected."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    cards = [bare_world.issue(1_000) for _ in range(BACKEND_WORKERS_MAX)]
    queued = bare_world.issue(1_000)
    database = bare_world.server.settings.data_dir / "txswitch.sqlite"
    audit_path = tmp_path / "ops-audit.jsonl"
    other_writer = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    other_writer.execute("BEGIN IMMEDIATE")
    try:
        # A timeout longer than the test: only the stop ends the commands' wait.
        with console_of(bare_world, keys, audit_path, backend_call_timeout_s=60.0) as console:
            console_loop = console._loop

            async def stop_with_one_queued() -> None:
                sessions = [
                    asyncio.create_task(exec_commands(console.port, keys.operator, [f"cards block {card}"]))
                    for card in cards
                ]
                await _until_audited(audit_path, "started", len(cards))  # every worker holds one
                sessions.append(
                    asyncio.create_task(exec_commands(console.port, keys.operator, [f"cards block {queued}"]))
                )
                await _until_in_flight(console, len(cards) + 1)
                await asyncio.to_thread(console.stop)
                await asyncio.gather(*sessions, return_exceptions=True)  # their connections closed

            asyncio.run(stop_with_one_queued())
        # While the lock holds the blocks: a session waiting on one is still referenced, and pending.
        gc.collect()
        left = [task for task in gc.get_objects() if isinstance(task, asyncio.Task)]
        assert [task for task in left if task.get_loop() is console_loop and not task.done()] == []
    finally:
        other_writer.execute("COMMIT")
        other_writer.close()
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    # The audit log masks the card numbers: the queued block is the one line not started.
    blocks = [(r["outcome"], r["exit_status"]) for r in records if r["command"].startswith("cards block ")]
    assert sorted(blocks) == [("not_run", 75)] + [("started", None)] * len(cards), blocks
    _wait_blocked(bare_world, cards)  # the running ones complete once the lock goes
    queued_id = bare_world.server.core.cards.card_id(queued)
    assert queued_id
    assert bare_world.server.core.store.card_state(queued_id).status is CardStatus.active
    gc.collect()
    destroyed = [record for record in caplog.records if "Task was destroyed" in record.getMessage()]
    assert destroyed == [], [record.getMessage() for record in destroyed]


async def _until_in_flight(console: OpsConsole, count: int) -> None:
    """Until count commands are handed to the workers: a queued one leaves no line to wait for."""
    deadline_s = time.monotonic() + WORKERS_LOCK_HELD_S
    while console.commands_in_flight() < count:
        assert time.monotonic() < deadline_s, f"fewer than {count} commands in flight"
        await asyncio.sleep(0.02)
