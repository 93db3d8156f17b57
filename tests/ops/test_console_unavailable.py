"""A console command the switch refused for a fault that may pass (AdminUnavailableError: the journal's
queue full while another writer holds the SQLite lock), through a real SSH client.

It ended `failed` (exit 1), as a rule the command broke would: a script took it for final. It ends
`unavailable` with EX_TEMPFAIL (75), as gRPC answers UNAVAILABLE, and says to send it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.console_commands import Outcome
from switch.admin import AdminStateError, AdminUnavailableError
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.store.journal import Write, WriteResult
from tests.integration.harness import hold_sqlite_write_lock
from tests.integration.test_card_replacement import ledger_balance
from tests.ops.conftest import ConsoleWorld, Keys, console_world_with

QUEUE_FILL_S_MAX = 2.0


@pytest.fixture
def small_journal_queue(keys: Keys, tmp_path: Path) -> Iterator[ConsoleWorld]:
    yield from console_world_with(keys, tmp_path, journal_queue_writes_max=1)


def test_a_command_refused_for_a_fault_that_may_pass_exits_75_and_says_to_send_it_again(
    small_journal_queue: ConsoleWorld,
) -> None:
    console, world = small_journal_queue, small_journal_queue.world
    lost, new = world.issue(2_000), world.issue(100)
    lost_id = world.server.core.cards.card_id(lost)
    assert lost_id is not None
    # Reported lost first (by phone): the replacement then writes only its transfer.
    world.server.core.set_card_status(lost_id, CardStatus.lost, "reported lost", "test")
    landed: list[WriteResult] = []
    holder = hold_sqlite_write_lock(world, 3.0)
    try:
        writer = world.server.core.writer
        deadline_s = time.monotonic() + QUEUE_FILL_S_MAX
        while writer.submit(Write(), landed.append) and time.monotonic() < deadline_s:
            time.sleep(0.01)  # the writer takes one and waits for the lock; the next fills the queue
        refused = console.run_one(console.keys.operator, f"cards replace {lost} {new}")
    finally:
        holder.join()
    assert refused.exit_status == 75, refused  # EX_TEMPFAIL; it was 1, "failed", as for a rule
    assert Outcome.unavailable.exit_status == Outcome.timed_out.exit_status == 75
    assert refused.stderr.startswith("unavailable, not done: "), refused.stderr
    assert "nothing moved, send it again" in refused.stderr, refused.stderr
    assert lost not in refused.stderr and new not in refused.stderr
    assert (ledger_balance(world, lost), ledger_balance(world, new)) == (2_000, 100)
    again = console.run_one(console.keys.operator, f"cards replace {lost} {new}")
    assert again.exit_status == 0 and "moved 20.00 EUR" in again.stdout, again
    assert (ledger_balance(world, lost), ledger_balance(world, new)) == (0, 2_100)
    records = [json.loads(line) for line in console.audit_path.read_text().splitlines()]
    outcomes = [
        (record["outcome"], record["exit_status"])
        for record in records
        if str(record["command"]).startswith("cards replace ")
    ]
    assert outcomes == [("started", None), ("unavailable", 75), ("started", None), ("ok", 0)], outcomes


# (command, what the switch raises, exit status, how stderr starts). No AdminError is raised on
# the block or unblock path today (a journal refusal there is the card actor's RuntimeError), so
# the switch's refusal is put in its set_card_status: the console's words and status for it are
# what is tested.
CARD_STATUS_REFUSALS = [
    ("cards block", AdminStateError("the card is being replaced"), 1, "failed: the card is being replaced"),
    ("cards unblock", AdminStateError("the card is being replaced"), 1, "failed: the card is being replaced"),
    ("cards block", AdminUnavailableError("the journal is full"), 75, "unavailable, not done: the journal"),
    ("cards unblock", AdminUnavailableError("the journal is full"), 75, "unavailable, not done: the journal"),
]


def test_a_block_or_unblock_the_switch_refuses_ends_failed_or_unavailable_not_error(
    console_world: ConsoleWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ended `error`, exit 70, "failed inside the switch": a refusal read as a bug in the switch."""
    world = console_world.world
    number = world.issue(1_000)
    refusals = iter(error for _, error, _, _ in CARD_STATUS_REFUSALS)

    def refuse(*_args: object) -> CardState:
        raise next(refusals)

    monkeypatch.setattr(world.server.core, "set_card_status", refuse)
    results = console_world.run(
        console_world.keys.operator, *(f"{command} {number}" for command, _, _, _ in CARD_STATUS_REFUSALS)
    )
    for (command, _, exit_status, stderr_start), result in zip(CARD_STATUS_REFUSALS, results, strict=True):
        assert (result.exit_status, result.stderr.startswith(stderr_start)) == (exit_status, True), (
            command,
            result,
        )
        assert number not in result.stderr
    records = [json.loads(line) for line in console_world.audit_path.read_text().splitlines()]
    audited = [
        record["exit_status"]
        for record in records
        if str(record["command"]).startswith("cards ") and record["outcome"] != "started"
    ]
    assert audited == [exit_status for _, _, exit_status, _ in CARD_STATUS_REFUSALS], audited
