"""A lost card's replacement: every transfer reaches the new card's actor, however the journal is
doing, and a replaced card stays blocked even when it was empty. Real switch on SQLite and
PostgreSQL, through the backoffice and terminal protocols."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus, mask
from switch.store.journal import Write, WriteResult
from switch.store.repository import REPLACED_CHAIN_LINKS_MAX
from switch.store.schema import accounts, card_events, card_replacements
from tests.integration.harness import (
    World,
    journal_write_held_past_a_wait,
    new_txn,
    sqlite_write_lock_held,
    world_fixture,
)
from tests.integration.test_receipts import wait_until


@pytest.fixture(params=["sqlite"])
def one_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path)


@pytest.fixture(params=["sqlite"])
def short_timeouts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, reply_timeout_s=1.0, ask_timeout_s=1.0)


@pytest.fixture(params=["sqlite"])
def small_journal_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, journal_queue_writes_max=1)


def replace(world: World, lost: str, new: str, request_id: str = "") -> bo.ReplaceCardResponse:
    return world.backoffice.ReplaceCard(
        bo.ReplaceCardRequest(
            lost_card=pb.CardRef(card_number=lost),
            replacement_card=pb.CardRef(card_number=new),
            request_id=request_id or new_txn(),
        ),
        metadata=world.admin_metadata,
        timeout=30,
    )


def ledger_balance(world: World, number: str) -> int:
    card_id = world.server.core.cards.card_id(number)
    with world.server.core.store.engine.connect() as conn:
        balance = conn.execute(
            select(accounts.c.balance_minor).where(accounts.c.account_id == f"card:{card_id}")
        ).scalar_one()
    return int(balance)


def test_a_card_replaced_while_empty_stays_blocked(world: World) -> None:
    lost, replacement = world.issue(0), world.issue(100)
    moved = replace(world, lost, replacement, "r-empty")
    assert (moved.moved.amount_minor, moved.lost_card.status) == (0, "lost")
    with pytest.raises(grpc.RpcError) as unblocked:
        world.backoffice.UnblockCard(
            bo.CardRequest(card=pb.CardRef(card_number=lost)), metadata=world.admin_metadata, timeout=20
        )
    assert unblocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "replaced" in (unblocked.value.details() or "")


def test_two_lost_cards_moved_to_one_new_card_at_once_both_reach_its_actor(one_node: World) -> None:
    """Two operators replace two lost cards with the same new card while its balance is looked at."""
    world, terminal = one_node, one_node.terminals[0]
    news = []
    for _ in range(6):
        first, second, new = world.issue(1_000), world.issue(2_000), world.issue(100)
        news.append(new)
        stop = threading.Event()

        def look(card: str = new, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                terminal.balance(card)

        with ThreadPoolExecutor(5) as pool:
            lookers = [pool.submit(look) for _ in range(3)]
            moved = list(pool.map(lambda lost, card=new: replace(world, lost, card), [first, second]))
            stop.set()
            for looker in lookers:
                looker.result()
        assert sorted(answer.moved.amount_minor for answer in moved) == [1_000, 2_000]
    assert [(terminal.balance(new), ledger_balance(world, new)) for new in news] == [(3_100, 3_100)] * 6
    assert terminal.redeem(news[0], 3_100).response_code == "00"


def test_a_transfer_slower_than_the_reply_timeout_still_reaches_the_new_card(short_timeouts: World) -> None:
    """The journal waits 3 s for the write lock, longer than the 1 s reply timeout: the replacement
    waits for its transfer instead of giving up while it may still land."""
    world, terminal = short_timeouts, short_timeouts.terminals[0]
    lost, new = world.issue(2_000), world.issue(100)
    # Its transfer (the write with an entry) waits until the card actor's wait for it (write_and_wait)
    # has outlasted the reply timeout.
    reply_timeout_s = world.server.settings.reply_timeout_s
    with journal_write_held_past_a_wait(
        world, reply_timeout_s, "write_and_wait", which=lambda w: bool(w.entry)
    ):
        moved = replace(world, lost, new, "slow")
    assert moved.moved.amount_minor == 2_000
    assert (ledger_balance(world, lost), ledger_balance(world, new)) == (0, 2_100)
    assert terminal.balance(new) == 2_100
    assert terminal.redeem(new, 2_100).response_code == "00"
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0)


def test_a_transfer_the_journal_could_not_take_is_unavailable_and_moves_once_sent_again(
    small_journal_queue: World,
) -> None:
    """A fault that may pass (the journal's queue full while the database is locked) is not a rule the
    replacement broke: UNAVAILABLE, not FAILED_PRECONDITION; sent again, it moves the balance once."""
    world = small_journal_queue
    lost, new = world.issue(2_000), world.issue(100)
    lost_id = world.server.core.cards.card_id(lost)
    assert lost_id is not None
    # Reported lost first (by phone): the replacement then writes only its transfer.
    world.server.core.set_card_status(lost_id, CardStatus.lost, "reported lost", "test")
    landed: list[WriteResult] = []
    submitted = 0
    with sqlite_write_lock_held(world):  # until the replacement has been refused
        writer = world.server.core.writer
        deadline_s = time.monotonic() + 2.0
        while writer.submit(Write(), landed.append) and time.monotonic() < deadline_s:
            submitted += 1
            time.sleep(0.01)  # the writer takes one and waits for the lock; the next fills the queue
        with pytest.raises(grpc.RpcError) as refused:
            replace(world, lost, new, "queue-full")
    # Sent again once the queue has drained (every write that filled it has landed): sent at once, it
    # could find the queue still full (seen in a full run) and be refused again.
    wait_until(lambda: len(landed) == submitted, timeout_s=10.0)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value
    details = refused.value.details() or ""
    assert "nothing moved, send it again" in details, details
    assert (ledger_balance(world, lost), ledger_balance(world, new)) == (2_000, 100)
    assert replace(world, lost, new, "queue-full").moved.amount_minor == 2_000
    assert replace(world, lost, new, "queue-full").moved.amount_minor == 2_000  # answered, not moved again
    assert (ledger_balance(world, lost), ledger_balance(world, new)) == (0, 2_100)
    assert world.ledger().balance_mismatches == 0


def test_a_replacement_sent_again_answers_what_the_first_moved(world: World) -> None:
    # An operator whose first answer was lost sends it again: it said "moved 0", as if the
    # balance had been lost, and wrote the card's replacement a second time.
    lost, replacement = world.issue(2_500), world.issue(100)
    first = replace(world, lost, replacement, "r-again")
    again = replace(world, lost, replacement, "r-again")
    assert (first.moved.amount_minor, first.journal_entry_id != "") == (2_500, True)
    assert (again.moved.amount_minor, again.journal_entry_id) == (2_500, first.journal_entry_id)
    assert (again.lost_card.status, again.replacement_card.balance.amount_minor) == ("lost", 2_600)
    assert (ledger_balance(world, lost), ledger_balance(world, replacement)) == (0, 2_600)
    other = world.issue(0)
    with pytest.raises(grpc.RpcError) as elsewhere:
        replace(world, lost, other, "r-again")
    assert elsewhere.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "r-again" in (elsewhere.value.details() or "")


def card_event_kinds(world: World, number: str) -> list[str]:
    card_id = world.server.core.cards.card_id(number)
    with world.server.core.store.engine.connect() as conn:
        query = select(card_events.c.kind).where(card_events.c.card_id == card_id)
        return [str(kind) for kind in conn.execute(query.order_by(card_events.c.event_id)).scalars()]


def test_an_empty_card_replacement_sent_again_answers_what_the_first_did(world: World) -> None:
    """Audit after session 24: an empty card's replacement records no transfer, so its request id
    was not kept: sent again, it wrote the card's replacement again, and once the new card was
    replaced in turn it was refused, where one that moved money answers what it moved."""
    lost, replacement, newest = world.issue(0), world.issue(100), world.issue(0)
    first = replace(world, lost, replacement, "r-empty-again")
    assert (first.moved.amount_minor, first.journal_entry_id, first.lost_card.status) == (0, "", "lost")
    again = replace(world, lost, replacement, "r-empty-again")
    assert (again.moved.amount_minor, again.journal_entry_id, again.lost_card.status) == (0, "", "lost")
    assert again.replacement_card.balance.amount_minor == 100
    assert card_event_kinds(world, lost) == ["lost", "transferred"]
    replace(world, replacement, newest)
    later = replace(world, lost, replacement, "r-empty-again")
    assert (later.moved.amount_minor, later.replacement_card.status) == (0, "lost")
    assert card_event_kinds(world, lost) == ["lost", "transferred"]


def test_an_empty_card_replacement_id_naming_other_cards_is_refused(world: World) -> None:
    """Audit after session 24: the request id of an empty card's replacement, sent with another
    lost card, replaced that one (its money moved, under an id already answered), where a request
    id that moved money is refused naming it. Each refusal changes nothing."""
    core = world.server.core
    lost, replacement = world.issue(0), world.issue(0)
    replace(world, lost, replacement, "r-empty-once")
    other_lost, other_new = world.issue(1_500), world.issue(0)
    for asked_lost, asked_new in ((other_lost, other_new), (other_lost, replacement), (lost, other_new)):
        with pytest.raises(grpc.RpcError) as refused:
            replace(world, asked_lost, asked_new, "r-empty-once")
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "r-empty-once" in (refused.value.details() or "")
    for card in (other_lost, other_new):
        assert core.store.card_state(core.cards.card_id(card) or "").status.value == "active"
    assert [ledger_balance(world, card) for card in (other_lost, other_new, replacement)] == [1_500, 0, 0]
    assert [card_event_kinds(world, card) for card in (other_lost, other_new)] == [[], []]
    lost_id = core.cards.card_id(lost)
    assert lost_id is not None and core.last_replacement(lost_id) == core.cards.card_id(replacement)


def test_two_replays_of_an_empty_card_replacement_at_once_both_answer_what_it_did(one_node: World) -> None:
    """Audit after session 24: two replays of an empty card's replacement arriving together both
    found no stored request id; the second's write then met the first's key in card_replacements
    and was refused FAILED_PRECONDITION ("balance not moved"), where a replay answers what the
    first did. SQLite's write lock is held while both are released, so both pass the look-up."""
    world = one_node
    lost, replacement = world.issue(0), world.issue(100)
    start = threading.Barrier(2)

    def replay() -> bo.ReplaceCardResponse:
        start.wait(10)
        return replace(world, lost, replacement, "r-empty-race")

    with ThreadPoolExecutor(2) as pool:
        with lock_held_until_both_mark(world, lost):
            replays = [pool.submit(replay) for _ in range(2)]
        answers = [answer.result() for answer in replays]
    assert [(answer.moved.amount_minor, answer.journal_entry_id) for answer in answers] == [(0, "")] * 2
    assert [answer.lost_card.status for answer in answers] == ["lost"] * 2
    assert [answer.replacement_card.balance.amount_minor for answer in answers] == [100] * 2
    assert card_event_kinds(world, lost).count("transferred") == 1
    core = world.server.core
    lost_id = core.cards.card_id(lost)
    assert lost_id is not None and core.last_replacement(lost_id) == core.cards.card_id(replacement)


def replays_at_once(world: World, lost: str, new: str, request_id: str) -> list[bo.ReplaceCardResponse]:
    """Two replays of one replacement released together while SQLite's write lock is held, so both
    pass the look-up of their request id before either lands."""
    start = threading.Barrier(2)

    def replay() -> bo.ReplaceCardResponse:
        start.wait(10)
        return replace(world, lost, new, request_id)

    with ThreadPoolExecutor(2) as pool:
        with lock_held_until_both_mark(world, lost):
            replays = [pool.submit(replay) for _ in range(2)]
        answers = [answer.result() for answer in replays]
    return answers


MARKS_AWAITED_S_MAX = 5.0


@contextlib.contextmanager
def lock_held_until_both_mark(world: World, lost: str) -> Iterator[None]:
    """SQLite's write lock held from the block's start until two requests have asked to mark the lost
    card lost (Core.set_card_status, observed and called through): each has then passed every look-up
    (its request id, both cards, their replacements) while nothing could land, the interleaving these
    tests need; released then (at most after MARKS_AWAITED_S_MAX), not after a fixed 1.5 s."""
    core = world.server.core
    lost_id = core.cards.card_id(lost)
    set_status = core.set_card_status
    marks: list[str] = []
    both = threading.Event()

    def observed(card_id: str, status: CardStatus, reason: str, actor: str) -> CardState:
        if card_id == lost_id:
            marks.append(card_id)  # list.append is atomic
            if len(marks) >= 2:
                both.set()
        return set_status(card_id, status, reason, actor)

    setattr(core, "set_card_status", observed)  # noqa: B010 (an instance's method: mypy refuses the assignment)
    try:
        with sqlite_write_lock_held(world):
            yield
            both.wait(MARKS_AWAITED_S_MAX)
    finally:
        delattr(core, "set_card_status")


def replacement_keys(world: World, number: str) -> list[str]:
    card_id = world.server.core.cards.card_id(number)
    with world.server.core.store.engine.connect() as conn:
        query = select(card_replacements.c.idempotency_key).where(card_replacements.c.lost_card_id == card_id)
        return [str(key) for key in conn.execute(query).scalars()]


def test_two_replays_of_a_card_replacement_moving_money_at_once_both_answer_what_it_did(
    one_node: World,
) -> None:
    """Audit after session 24: two replays at once of the replacement of a card holding money both
    found no stored request id; the second found the balance moved already and answered "moved 0"
    with no entry (the first: 25.00 and its entry), writing a second "transferred" event and a row
    in card_replacements under the transfer's key. The loser answers what the first did."""
    world = one_node
    lost, replacement = world.issue(2_500), world.issue(100)
    answers = replays_at_once(world, lost, replacement, "r-money-race")
    moved = [(answer.moved.amount_minor, answer.journal_entry_id) for answer in answers]
    assert moved[0] == moved[1] and moved[0][0] == 2_500 and moved[0][1] != ""
    assert [answer.replacement_card.balance.amount_minor for answer in answers] == [2_600] * 2
    assert (ledger_balance(world, lost), ledger_balance(world, replacement)) == (0, 2_600)
    assert card_event_kinds(world, lost).count("transferred") == 1
    assert replacement_keys(world, lost) == []  # the transfer's key is its entry's


@pytest.mark.parametrize("balance_minor", [0, 2_500])
def test_two_replays_of_a_card_replacement_at_once_mark_it_lost_once(
    one_node: World, balance_minor: int
) -> None:
    """Audit after session 24: two replays of a replacement at once both read the card active
    before either marked it, and both marked it lost: its events read lost, lost, transferred."""
    world = one_node
    lost, replacement = world.issue(balance_minor), world.issue(100)
    replays_at_once(world, lost, replacement, f"r-lost-race-{balance_minor}")
    assert card_event_kinds(world, lost) == ["lost", "transferred"]


def test_a_card_replaced_already_is_not_replaced_again_by_another_card(world: World) -> None:
    """Audit after session 24: a lost card replaced already (its balance moved to the holder's new
    card) was "replaced" again by any other card named with it, under a new request id or, when it
    was empty, under the same one: nothing moved, but the lost card then named the other card as its
    replacement, so the money credited to it later (an undone ride) and a top-up of it paid before
    its replacement went to that card, perhaps another holder's."""
    core = world.server.core
    full, empty = world.issue(2_500), world.issue(0)
    for lost, request_id in ((full, "r-twice-full"), (empty, "r-twice-empty")):
        first, other = world.issue(0), world.issue(0)
        replace(world, lost, first, request_id)
        for again in (request_id, new_txn()):
            with pytest.raises(grpc.RpcError) as refused:
                replace(world, lost, other, again)
            refusals = (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION)
            assert refused.value.code() in refusals
            details = refused.value.details() or ""
            assert "already" in details and all(number not in details for number in (lost, first, other))
        lost_id, first_id = core.cards.card_id(lost), core.cards.card_id(first)
        assert lost_id is not None and core.last_replacement(lost_id) == first_id
        assert ledger_balance(world, other) == 0
        # The same pair again (its answer lost) still answers.
        assert replace(world, lost, first, request_id).lost_card.status == "lost"


@pytest.mark.parametrize("balance_minor", [0, 2_500])
def test_two_replacements_of_one_card_by_two_cards_at_once_leave_it_one_replacement(
    one_node: World, balance_minor: int
) -> None:
    """Review after session 25: two operators replacing one lost card, each with another card, at
    once both read it not replaced yet; the first moved its balance, the second (an empty card by
    then) answered "moved 0" and made its card the lost card's replacement, so what followed the
    lost card later went to that card, not to the one holding its balance. The second is refused."""
    world, core = one_node, one_node.server.core
    lost, first, other = world.issue(balance_minor), world.issue(0), world.issue(0)
    start = threading.Barrier(2)

    def replace_with(new: str) -> bo.ReplaceCardResponse | grpc.RpcError:
        start.wait(10)
        try:
            return replace(world, lost, new)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(2) as pool:
        with lock_held_until_both_mark(world, lost):
            replacing = [pool.submit(replace_with, new) for new in (first, other)]
        answers = [answer.result() for answer in replacing]
    refused = [answer for answer in answers if isinstance(answer, grpc.RpcError)]
    assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused[0].details() or ""
    assert "already" in details and all(number not in details for number in (lost, first, other))
    winner = first if isinstance(answers[0], bo.ReplaceCardResponse) else other
    lost_id = core.cards.card_id(lost)
    assert lost_id is not None and core.last_replacement(lost_id) == core.cards.card_id(winner)
    assert (ledger_balance(world, winner), ledger_balance(world, lost)) == (balance_minor, 0)
    assert card_event_kinds(world, lost).count("transferred") == 1


@pytest.mark.parametrize("cards_between", [0, 1])
def test_money_waiting_on_a_lost_card_follows_when_its_blocked_replacement_is_replaced(
    world: World, cards_between: int
) -> None:
    """Audit after session 24: a ride undone on a lost card whose last replacement was blocked by
    phone could not follow it (the replacement is not active: counted failed). The office then
    replaced the blocked card, and its balance moved, but the lost card's credit stayed behind
    until the switch's next start, while the holder's newest card lacked it. With a card between
    them (lost, replaced, replaced again), the lost card names that card as its replacement."""
    core, terminal = world.server.core, world.terminals[0]
    lost, blocked, newest = world.issue(2_000), world.issue(0), world.issue(0)
    ride = new_txn()
    assert terminal.redeem(lost, 700, ride).response_code == "00"
    chain = [lost, *(world.issue(0) for _ in range(cards_between)), blocked]
    for replaced, replacement in itertools.pairwise(chain):
        assert replace(world, replaced, replacement).moved.amount_minor == 1_300
    world.backoffice.BlockCard(
        bo.BlockCardRequest(card=pb.CardRef(card_number=blocked), reason="lost too"),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert terminal.reversal(ride).response_code == "00"
    wait_until(lambda: core.follow_statistics().moves["credit", "failed"] == 1)
    assert ledger_balance(world, lost) == 700  # waits for the office
    assert replace(world, blocked, newest).moved.amount_minor == 1_300
    wait_until(lambda: ledger_balance(world, newest) == 2_000)
    assert [ledger_balance(world, card) for card in chain] == [0] * len(chain)
    assert terminal.balance(newest) == 2_000
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0)


def block_answer(world: World, number: str, reason: str) -> str:
    """The card's status a BlockCard answers, or the refusal's code and words."""
    request = bo.BlockCardRequest(card=pb.CardRef(card_number=number), reason=reason)
    try:
        return world.backoffice.BlockCard(request, metadata=world.admin_metadata, timeout=20).status
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"


def unblock_answer(world: World, number: str) -> str:
    """The card's status an UnblockCard answers, or the refusal's code and words."""
    request = bo.CardRequest(card=pb.CardRef(card_number=number))
    try:
        return world.backoffice.UnblockCard(request, metadata=world.admin_metadata, timeout=20).status
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"


def test_a_replaced_card_blocked_again_stays_lost_and_money_credited_to_it_follows_at_once(
    one_node: World,
) -> None:
    """Audit in session 28: a BlockCard (or the console's `cards block`) of a card already replaced
    rewrote its status from lost to blocked. Its actor then took it for a card blocked by phone, not
    replaced, and an earlier ride cancelled at the shop stayed on it until the next start or the
    replacement's own replacement. (A refund is declined on a lost card, 41, as on a blocked one.)
    The block is refused, naming the replacement masked; the card stays lost."""
    world, core, terminal = one_node, one_node.server.core, one_node.terminals[0]
    lost, new = world.issue(2_000), world.issue(0)
    ride = new_txn()
    assert terminal.redeem(lost, 700, ride).response_code == "00"
    assert replace(world, lost, new).moved.amount_minor == 1_300

    answer = block_answer(world, lost, "reported lost again")
    assert terminal.cancel(ride).response_code == "00"

    wait_until(lambda: ledger_balance(world, new) == 2_000, timeout_s=5.0)
    assert ledger_balance(world, lost) == 0
    lost_id, new_id = core.cards.card_id(lost), core.cards.card_id(new)
    assert lost_id is not None and core.store.card_state(lost_id).status is CardStatus.lost
    assert answer == (
        f"FAILED_PRECONDITION: card {mask(lost)} is lost and replaced by {mask(new)} ({new_id}): "
        "it is out of use already; to stop the replacement, block that card"
    )
    assert "blocked" not in card_event_kinds(world, lost)


def test_a_block_landing_between_a_replacements_mark_and_its_transfer_leaves_the_card_lost(
    one_node: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit in session 28: a replacement marks the card lost, then moves its balance (two asks of
    its actor); a block between them found it not yet replaced and made it blocked, and the
    transfer wrote the status it found: a replaced card blocked, which money credited to it later
    does not follow. The block lands there every time here: the replacement fences the new card's
    actors between the two asks, and the fence runs the block first."""
    world, core, terminal = one_node, one_node.server.core, one_node.terminals[0]
    lost, new = world.issue(2_000), world.issue(0)
    ride = new_txn()
    assert terminal.redeem(lost, 700, ride).response_code == "00"
    fence = core.card_actors.exclusive
    answers = []

    @contextlib.contextmanager
    def block_first(card_id: str) -> Iterator[None]:
        answers.append(block_answer(world, lost, "reported stolen at the same time"))
        with fence(card_id):
            yield

    monkeypatch.setattr(core.card_actors, "exclusive", block_first)
    assert replace(world, lost, new).moved.amount_minor == 1_300
    monkeypatch.undo()
    assert answers == ["blocked"]
    assert terminal.cancel(ride).response_code == "00"

    wait_until(lambda: ledger_balance(world, new) == 2_000, timeout_s=5.0)
    lost_id = core.cards.card_id(lost)
    assert lost_id is not None and core.store.card_state(lost_id).status is CardStatus.lost
    assert terminal.balance(new) == 2_000


def test_a_replacement_landing_between_an_unblocks_check_and_its_write_leaves_the_card_lost(
    one_node: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit in session 28: UnblockCard (and the console's `cards unblock`) read whether the card was
    replaced before asking its actor; a replacement landing between made the card active again
    with its balance moved, and a ride cancelled on it later stayed on it. The check is the card
    actor's now, as the block's. The replacement lands there every time here: the unblock's ask of
    the card's actor runs it first."""
    world, core, terminal = one_node, one_node.server.core, one_node.terminals[0]
    lost, new = world.issue(2_000), world.issue(0)
    ride = new_txn()
    assert terminal.redeem(lost, 700, ride).response_code == "00"
    assert block_answer(world, lost, "reported lost by phone") == "blocked"
    set_status = core.set_card_status
    moved = []

    def replaced_first(card_id: str, status: CardStatus, reason: str, actor: str) -> CardState:
        if status is CardStatus.active:  # the unblock's ask; the replacement's own (lost) goes through
            moved.append(replace(world, lost, new).moved.amount_minor)
        return set_status(card_id, status, reason, actor)

    monkeypatch.setattr(core, "set_card_status", replaced_first)
    answer = unblock_answer(world, lost)
    monkeypatch.undo()
    assert moved == [1_300]
    assert terminal.cancel(ride).response_code == "00"

    wait_until(lambda: ledger_balance(world, new) == 2_000, timeout_s=5.0)
    lost_id, new_id = core.cards.card_id(lost), core.cards.card_id(new)
    assert lost_id is not None and core.store.card_state(lost_id).status is CardStatus.lost
    assert answer == (
        f"FAILED_PRECONDITION: card {mask(lost)} is lost and replaced by {mask(new)} ({new_id}): "
        "it stays out of use"
    )
    # The replacement's mark and transfer, then the cancel's 700 following: no "active" between.
    assert card_event_kinds(world, lost) == ["blocked", "lost", "transferred", "transferred"]


@pytest.mark.parametrize("cards_between", [REPLACED_CHAIN_LINKS_MAX - 1, REPLACED_CHAIN_LINKS_MAX])
def test_money_waiting_beyond_the_chain_walks_bound_waits_for_the_next_start(
    one_node: World, cards_between: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit after session 24: a replacement walks back the chain of cards replaced into the lost
    card for money waiting on them, one query a link, with no limit but the cards themselves. It
    walks REPLACED_CHAIN_LINKS_MAX links: money on a card further back is left, with a warning
    naming the bound, for the next start, which reads every replaced card holding money."""
    world, core, terminal = one_node, one_node.server.core, one_node.terminals[0]
    lost, blocked, newest = world.issue(2_000), world.issue(0), world.issue(0)
    ride = new_txn()
    assert terminal.redeem(lost, 700, ride).response_code == "00"
    chain = [lost, *(world.issue(0) for _ in range(cards_between)), blocked]
    for replaced, replacement in itertools.pairwise(chain):
        replace(world, replaced, replacement)
    world.backoffice.BlockCard(
        bo.BlockCardRequest(card=pb.CardRef(card_number=blocked), reason="lost too"),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert terminal.reversal(ride).response_code == "00"
    wait_until(lambda: core.follow_statistics().moves["credit", "failed"] == 1)
    with caplog.at_level(logging.WARNING, logger="switch.store.repository"):
        assert replace(world, blocked, newest).moved.amount_minor == 1_300
    lost_id = core.cards.card_id(lost)
    warnings = [record.getMessage() for record in caplog.records if record.name == "switch.store.repository"]
    if cards_between < REPLACED_CHAIN_LINKS_MAX:  # lost is REPLACED_CHAIN_LINKS_MAX links back
        wait_until(lambda: ledger_balance(world, newest) == 2_000)
        assert (ledger_balance(world, lost), warnings) == (0, [])
        return
    assert [f"more than {REPLACED_CHAIN_LINKS_MAX} links" in warning for warning in warnings] == [True]
    assert (ledger_balance(world, lost), ledger_balance(world, newest)) == (700, 1_300)
    assert [card_id for card_id, _ in core.store.money_on_replaced_cards()] == [lost_id]


@pytest.mark.parametrize("links_on", [REPLACED_CHAIN_LINKS_MAX, REPLACED_CHAIN_LINKS_MAX + 1])
def test_the_walk_to_a_chains_last_card_stops_at_the_walks_bound(one_node: World, links_on: int) -> None:
    """Audit after session 24: the walk along a chain of replacements to its last card
    (SwitchCore.last_replacement) had no limit but the cards themselves, one query a link. It follows
    a card's own replacement and REPLACED_CHAIN_LINKS_MAX links on from it, as far as a replacement's
    walk back reaches; further, it is refused naming the bound, and the refusal changes nothing."""
    world, core = one_node, one_node.server.core
    chain = [world.issue(0) for _ in range(links_on + 2)]
    for replaced, replacement in itertools.pairwise(chain):
        replace(world, replaced, replacement)
    lost_id, last_id = core.cards.card_id(chain[0]), core.cards.card_id(chain[-1])
    assert lost_id is not None
    if links_on == REPLACED_CHAIN_LINKS_MAX:
        assert core.last_replacement(lost_id) == last_id
        return
    events = card_event_kinds(world, chain[0])
    with pytest.raises(grpc.RpcError) as refused:
        replace(world, chain[0], chain[-1])
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert f"longer than {REPLACED_CHAIN_LINKS_MAX + 1} links" in details, details
    assert all(number not in details for number in chain)
    assert card_event_kinds(world, chain[0]) == events
