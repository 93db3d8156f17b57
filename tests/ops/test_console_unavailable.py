"""A console command the switch refused for a fault that may pass (AdminUnavailableError: the journal's
queue full while another writer holds the SQLite lock), through a real SSH client.

It ended `failed` (exit 1), as a rule the command broke would: a script took it for final. It ends
`unavailable` with EX_TEMPFAIL (75), as gRPC answers UNAVAILABLE, and says to send it again.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from ops.console_commands import Outcome
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.admin import AdminStateError, AdminUnavailableError
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.store.journal import Write, WriteResult
from switch.store.schema import card_events
from tests.integration.harness import World, hold_sqlite_write_lock, sqlite_write_lock_held
from tests.integration.test_card_replacement import ledger_balance
from tests.ops.conftest import ConsoleWorld, Keys, console_world_with

QUEUE_FILL_S_MAX = 2.0
LANDED_S_MAX = 15.0


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


def block_by_grpc(world: World, number: str) -> bo.CardView:
    request = bo.BlockCardRequest(card=pb.CardRef(card_number=number), reason="reported lost by phone")
    view: bo.CardView = world.backoffice.BlockCard(request, metadata=world.admin_metadata, timeout=20)
    return view


def unblock_by_grpc(world: World, number: str) -> bo.CardView:
    request = bo.CardRequest(card=pb.CardRef(card_number=number))
    view: bo.CardView = world.backoffice.UnblockCard(request, metadata=world.admin_metadata, timeout=20)
    return view


# A status change the journal could not store, by each way it is asked: (name, how).
CARD_STATUS_CHANGES: list[tuple[str, Callable[[World, str], bo.CardView]]] = [
    ("backoffice BlockCard", block_by_grpc),
    ("backoffice UnblockCard", unblock_by_grpc),
]


def test_a_block_or_unblock_the_journal_could_not_store_is_unavailable_and_changes_nothing(
    small_journal_queue: ConsoleWorld,
) -> None:
    """A lost card's block the journal refused (its queue full) raised RuntimeError in the card actor:
    gRPC answered UNKNOWN, as for a bug. It is UNAVAILABLE, send it again; the card is as it was, in
    the card's actor and in the database, and the block sent again lands once."""
    world = small_journal_queue.world
    number = world.issue(1_000, world.benefit_programme)
    card_id = world.server.core.cards.card_id(number)
    assert card_id is not None
    events_before = card_event_kinds(world, card_id)
    with journal_refusing_writes(world):
        for name, change in CARD_STATUS_CHANGES:
            with pytest.raises(grpc.RpcError) as refused:
                change(world, number)
            code, details = refused.value.code(), refused.value.details() or ""
            assert code is grpc.StatusCode.UNAVAILABLE, (name, code, details)
            assert "send it again" in details and number not in details, (name, details)
            in_actor, stored = world.server.core.balance(card_id), world.server.core.store.card_state(card_id)
            assert (in_actor.status, stored.status) == (CardStatus.active, CardStatus.active), name
    assert card_event_kinds(world, card_id) == events_before
    assert block_by_grpc(world, number).status == "blocked"
    assert world.server.core.balance(card_id).status is CardStatus.blocked
    assert card_event_kinds(world, card_id) == [*events_before, "blocked"]
