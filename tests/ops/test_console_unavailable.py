"""A console command the switch refused for a fault that may pass (AdminUnavailableError: the journal's
queue full while another writer holds the SQLite lock), through a real SSH client, and a card's block
or unblock so refused through the backoffice's gRPC as well.

It ended `failed` (exit 1), as a rule the command broke would: a script took it for final. It ends
`unavailable` with EX_TEMPFAIL (75), as gRPC answers UNAVAILABLE, and says to send it again.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from ops.console_commands import Outcome
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import CardStatus
from switch.store.journal import Write, WriteResult
from switch.store.schema import card_events
from tests.integration.harness import World, sqlite_write_lock_held
from tests.integration.test_card_replacement import ledger_balance
from tests.ops.conftest import ConsoleWorld, Keys, console_world_with

QUEUE_FILL_S_MAX = 2.0
LANDED_S_MAX = 15.0


@pytest.fixture
def small_journal_queue(keys: Keys, tmp_path: Path) -> Iterator[ConsoleWorld]:
    yield from console_world_with(keys, tmp_path, journal_queue_writes_max=1)


# A replacement the journal could not store: (the lost card reported lost first, what stderr says).
REPLACEMENTS_REFUSED = [
    (True, "nothing moved, send it again"),  # by phone first: the replacement writes only its transfer
    # The replacement blocks the card first and that write is refused: it ended exit 70, `error`.
    (False, "nothing changed, send it again"),
]


def test_a_command_refused_for_a_fault_that_may_pass_exits_75_and_says_to_send_it_again(
    small_journal_queue: ConsoleWorld,
) -> None:
    console, world = small_journal_queue, small_journal_queue.world
    pairs = [(world.issue(2_000), world.issue(100)) for _ in REPLACEMENTS_REFUSED]
    lost_ids = [world.server.core.cards.card_id(lost) for lost, _ in pairs]
    for lost_id, (reported_first, _) in zip(lost_ids, REPLACEMENTS_REFUSED, strict=True):
        assert lost_id is not None
        if reported_first:
            world.server.core.set_card_status(lost_id, CardStatus.lost, "reported lost", "test")
    commands = [f"cards replace {lost} {new}" for lost, new in pairs]
    with journal_refusing_writes(world):
        results = console.run(console.keys.operator, *commands)
    assert Outcome.unavailable.exit_status == Outcome.timed_out.exit_status == 75
    for (lost, new), lost_id, (reported_first, says), refused in zip(
        pairs, lost_ids, REPLACEMENTS_REFUSED, results, strict=True
    ):
        assert refused.exit_status == 75, refused  # EX_TEMPFAIL; it was 1, "failed", as for a rule
        assert refused.stderr.startswith("unavailable, not done: "), refused.stderr
        assert says in refused.stderr, refused.stderr
        assert lost not in refused.stderr and new not in refused.stderr
        assert (ledger_balance(world, lost), ledger_balance(world, new)) == (2_000, 100)
        assert lost_id is not None
        status = world.server.core.balance(lost_id).status
        assert status is (CardStatus.lost if reported_first else CardStatus.active), status
    for again in console.run(console.keys.operator, *commands):
        assert again.exit_status == 0 and "moved 20.00 EUR" in again.stdout, again
    for lost, new in pairs:
        assert (ledger_balance(world, lost), ledger_balance(world, new)) == (0, 2_100)
    records = [json.loads(line) for line in console.audit_path.read_text().splitlines()]
    outcomes = [
        (record["outcome"], record["exit_status"])
        for record in records
        if str(record["command"]).startswith("cards replace ") and record["outcome"] != "started"
    ]
    assert outcomes == [("unavailable", 75), ("unavailable", 75), ("ok", 0), ("ok", 0)], outcomes


def fill_journal_queue(world: World, done: Callable[[WriteResult], None]) -> int:
    """With SQLite's write lock held elsewhere: empty writes until the journal's writer holds one
    (waiting for the lock) and its queue of one write is full; how many it took."""
    writer = world.server.core.writer
    taken = 0
    deadline_s = time.monotonic() + QUEUE_FILL_S_MAX
    while True:
        if writer.submit(Write(), done):
            taken += 1
        elif taken >= 2:  # the second fitted only once the writer had taken the first
            return taken
        assert time.monotonic() < deadline_s, "the journal's queue did not fill"
        time.sleep(0.005)  # the writer thread takes the first write; nothing to wait on for it


@contextmanager
def journal_refusing_writes(world: World) -> Iterator[None]:
    """Every write refused as a fault (queue full, journal_queue_writes_max=1) inside the block;
    after it, the lock released, the writes that filled the queue have landed."""
    landed: queue.Queue[WriteResult] = queue.Queue()
    with sqlite_write_lock_held(world):
        taken = fill_journal_queue(world, landed.put)
        yield
    for _ in range(taken):
        assert landed.get(timeout=LANDED_S_MAX).ok


def card_event_kinds(world: World, card_id: str) -> list[str]:
    with world.server.core.store.engine.connect() as conn:
        query = select(card_events.c.kind).where(card_events.c.card_id == card_id)
        return [str(kind) for kind in conn.execute(query.order_by(card_events.c.event_id)).scalars()]


@dataclass(frozen=True)
class Answer:
    """A status change's answer, by whichever way it was asked: done, or how and why not."""

    outcome: str  # "ok", "unavailable", or the console's outcome or the gRPC status otherwise
    text: str


def by_console(command: str) -> Callable[[ConsoleWorld, str], Answer]:
    def change(console: ConsoleWorld, number: str) -> Answer:
        result = console.run_one(console.keys.operator, f"{command} {number}")
        if result.exit_status == 0:
            return Answer("ok", result.stdout)
        unavailable = result.exit_status == 75 and result.stderr.startswith("unavailable, not done: ")
        return Answer("unavailable" if unavailable else f"exit {result.exit_status}", result.stderr)

    return change


def by_backoffice(block: bool) -> Callable[[ConsoleWorld, str], Answer]:
    def change(console: ConsoleWorld, number: str) -> Answer:
        world, card = console.world, pb.CardRef(card_number=number)
        try:
            if block:
                request = bo.BlockCardRequest(card=card, reason="reported lost by phone")
                view = world.backoffice.BlockCard(request, metadata=world.admin_metadata, timeout=20)
            else:
                view = world.backoffice.UnblockCard(
                    bo.CardRequest(card=card), metadata=world.admin_metadata, timeout=20
                )
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            return Answer("unavailable" if code is grpc.StatusCode.UNAVAILABLE else code.name, details)
        return Answer("ok", view.status)

    return change


# A status change asked each way it can be: (name, how, the card's status once it is done).
CARD_STATUS_CHANGES: list[tuple[str, Callable[[ConsoleWorld, str], Answer], CardStatus]] = [
    ("console cards block", by_console("cards block"), CardStatus.blocked),
    ("console cards unblock", by_console("cards unblock"), CardStatus.active),
    ("backoffice BlockCard", by_backoffice(block=True), CardStatus.blocked),
    ("backoffice UnblockCard", by_backoffice(block=False), CardStatus.active),
]


def test_a_block_or_unblock_the_journal_could_not_store_is_unavailable_and_changes_nothing(
    small_journal_queue: ConsoleWorld,
) -> None:
    """A lost card's block the journal refused (its queue full behind a held SQLite lock) raised
    RuntimeError in the card actor: the console ended `error`, exit 70, "failed inside the switch",
    and gRPC answered INTERNAL, as for a bug. Each is unavailable (exit 75; UNAVAILABLE), send it
    again; the card is as it was, in its actor and in the database; sent again, each lands once."""
    console, world = small_journal_queue, small_journal_queue.world
    number = world.issue(1_000, world.benefit_programme)
    card_id = world.server.core.cards.card_id(number)
    assert card_id is not None
    events_before = card_event_kinds(world, card_id)
    with journal_refusing_writes(world):
        for name, change, _ in CARD_STATUS_CHANGES:
            refused = change(console, number)
            assert refused.outcome == "unavailable", (name, refused)
            assert "send it again" in refused.text and number not in refused.text, (name, refused)
            in_actor, stored = world.server.core.balance(card_id), world.server.core.store.card_state(card_id)
            assert (in_actor.status, stored.status) == (CardStatus.active, CardStatus.active), name
    assert card_event_kinds(world, card_id) == events_before
    for name, change, status in CARD_STATUS_CHANGES:
        done = change(console, number)
        assert done.outcome == "ok" and status.value in done.text, (name, done)
        assert world.server.core.balance(card_id).status is status, name
    changed = [status.value for _, _, status in CARD_STATUS_CHANGES]
    assert card_event_kinds(world, card_id) == [*events_before, *changed]  # once each, none refused
    records = [json.loads(line) for line in console.audit_path.read_text().splitlines()]
    audited = [
        (record["command"].split(" ")[1], record["outcome"], record["exit_status"])
        for record in records
        if str(record["command"]).startswith("cards ") and record["outcome"] != "started"
    ]
    assert audited == [
        ("block", "unavailable", 75),
        ("unblock", "unavailable", 75),
        ("block", "ok", 0),
        ("unblock", "ok", 0),
    ], audited
