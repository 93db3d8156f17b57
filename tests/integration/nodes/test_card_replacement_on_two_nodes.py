"""A lost card's whole balance moves to its replacement, whatever another node did just before; a
load another node decides after on its older copy of the card moves nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Connection, select, text

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import CardStatus, mask
from switch.store.schema import cards
from tests.integration.harness import new_txn, on_statement
from tests.integration.nodes.conftest import Nodes, two_nodes
from tests.integration.test_benefit_cards import assert_ledger_clean, card_balance


def _replace_request(lost: str, new: str) -> bo.ReplaceCardRequest:
    return bo.ReplaceCardRequest(
        lost_card=pb.CardRef(card_number=lost),
        replacement_card=pb.CardRef(card_number=new),
        request_id=new_txn(),
    )


def _held(nodes: Nodes, lost: str, new: str) -> tuple[int, int]:
    """What the lost card and its replacement hold, read from the journal."""
    return card_balance(nodes.world, lost), card_balance(nodes.world, new)


@pytest.fixture
def nodes_default_age(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path, max_age_s=1.0)  # TXSWITCH_SHARED_COPY_MAX_AGE_S's default


def test_a_replacement_on_node_b_moves_what_node_a_loaded_just_before(nodes_default_age: Nodes) -> None:
    nodes = nodes_default_age
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    assert nodes.on_b.balance(lost) == 1_000  # node B's card actor holds a copy of the card
    assert nodes.on_a.load(lost, 500).response_code == "00"  # durable: the card holds 1,500
    request = _replace_request(lost, new)
    moved = nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor
    time.sleep(1.2)
    left = nodes.on_b.balance(lost)
    assert (moved, left, nodes.on_b.balance(new)) == (1_500, 0, 1_600), "money left on the lost card"


@pytest.fixture
def nodes_lasting_copies(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path, max_age_s=60.0)  # node A's copy outlives the test: always stale


def _replace_on_b(nodes: Nodes, lost: str, new: str) -> None:
    assert nodes.on_b_as_admin("ReplaceCard", _replace_request(lost, new)).moved.amount_minor == 1_000


def _block_on_b(nodes: Nodes, lost: str, _new: str) -> None:
    nodes.on_b_as_admin("BlockCard", bo.BlockCardRequest(card=pb.CardRef(card_number=lost), reason="stolen"))


# (what node B does to the card, the code node A answers as it would for that card, who holds what)
NODE_B_CHANGES = [
    pytest.param(_replace_on_b, "41", (0, 1_100), id="replaced"),
    pytest.param(_block_on_b, "62", (1_000, 100), id="blocked"),
]


def _changed_on_b_after_a_read_it(
    nodes: Nodes, change_on_b: Callable[[Nodes, str, str], None]
) -> tuple[str, str]:
    """A lost card of 1,000 and its replacement of 100; node A's card actor holds a copy of the lost
    card (active) when node B changes it. Returns both card numbers."""
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    assert nodes.on_a.balance(lost) == 1_000
    change_on_b(nodes, lost, new)
    return lost, new


@pytest.mark.parametrize(("change_on_b", "code", "held"), NODE_B_CHANGES)
def test_a_load_on_node_a_onto_a_card_node_b_replaced_meanwhile_moves_nothing(
    nodes_lasting_copies: Nodes,
    change_on_b: Callable[[Nodes, str, str], None],
    code: str,
    held: tuple[int, int],
) -> None:
    nodes = nodes_lasting_copies
    lost, new = _changed_on_b_after_a_read_it(nodes, change_on_b)
    answer = nodes.on_a.load(lost, 500)  # decided on node A's copy, taken before node B's change
    moved = _held(nodes, lost, new)
    assert (answer.response_code, moved) == (code, held), answer.message  # the code node B would give
    assert lost not in answer.message
    # Node A's copy is read again: the next load is declined by node A's actor itself, and stored.
    again = new_txn()
    assert nodes.on_a.load(lost, 500, again).response_code == code
    assert nodes.on_a.load(lost, 500, again).response_code == code  # the stored answer
    assert nodes.on_a.balance(lost) == held[0], "node A still holds its copy from before the change"
    assert_ledger_clean(nodes.world)


@pytest.mark.parametrize(("change_on_b", "code", "held"), NODE_B_CHANGES)
def test_a_load_the_journal_refuses_on_node_a_is_stored_declined_for_its_status_and_a_resend(
    nodes_lasting_copies: Nodes,
    change_on_b: Callable[[Nodes, str, str], None],
    code: str,
    held: tuple[int, int],
) -> None:
    nodes = nodes_lasting_copies
    lost, new = _changed_on_b_after_a_read_it(nodes, change_on_b)
    txn = new_txn()
    answer = nodes.on_a.load(lost, 500, txn)  # refused by the journal's active_card check
    status = nodes.on_a.stub.TransactionStatus(
        pb.TransactionStatusRequest(transaction_id=txn), metadata=nodes.on_a.metadata, timeout=20
    )
    asked = (status.found, status.status, status.transaction.response_code)
    assert asked == (True, "declined", code), "a terminal asking what became of its load finds nothing"
    assert status.transaction.message == answer.message and lost not in answer.message
    assert not status.transaction.HasField("approved")
    again = nodes.on_a.load(lost, 500, txn)
    assert (again.response_code, again.message) == (code, answer.message)
    moved = _held(nodes, lost, new)
    assert moved == held, "the stored decline moved money"
    assert_ledger_clean(nodes.world)


def _give_back(nodes: Nodes, how: str, original: str) -> pb.TransactionResponse:
    match how:
        case "refund":
            return nodes.on_a.refund(original, 300)
        case "cancel":
            return nodes.on_a.cancel(original)
    return nodes.on_a.reversal(original)


@pytest.mark.parametrize("how", ["refund", "cancel", "reversal"])
def test_money_given_back_on_node_a_onto_a_card_node_b_replaced_meanwhile_follows_to_the_replacement(
    nodes_lasting_copies: Nodes, how: str
) -> None:
    nodes = nodes_lasting_copies
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    redemption = new_txn()
    assert nodes.on_a.redeem(lost, 300, redemption).response_code == "00"  # node A's copy: the card active
    request = _replace_request(lost, new)
    assert nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor == 700
    answer = _give_back(nodes, how, redemption)  # decided on node A's copy, taken before the replacement
    assert answer.response_code == "00", answer.message  # the shop gives the money back: never declined
    deadline = time.monotonic() + 5
    while card_balance(nodes.world, new) != 1_100 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = _held(nodes, lost, new)
    assert held == (0, 1_100), "money given back stranded on the lost card until a restart"
    assert_ledger_clean(nodes.world)


@contextmanager
def new_card_held(nodes: Nodes, number: str) -> Iterator[Connection]:
    """The test's own connection holds the replacement card's row (FOR UPDATE): a transfer onto it
    waits for it (journal._require_active), after it has read the lost card's balance."""
    card_id = nodes.world.server.core.cards.card_id(number)
    with nodes.world.server.core.store.engine.connect() as holder:
        transaction = holder.begin()
        holder.execute(select(cards.c.card_id).where(cards.c.card_id == card_id).with_for_update())
        try:
            yield holder
        finally:
            transaction.rollback()


def _waiting_on(holder: Connection) -> int:
    """How many other backends wait for a lock the holder's backend holds."""
    pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
    query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    with holder.engine.connect() as conn:
        return int(conn.execute(query, {"pid": pid}).scalar_one())


def _wait_until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.02)


def test_money_given_back_on_node_a_while_node_b_moves_the_balance_moves_with_it(
    nodes_lasting_copies: Nodes,
) -> None:
    nodes = nodes_lasting_copies
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    redemption = new_txn()
    assert nodes.on_a.redeem(lost, 300, redemption).response_code == "00"  # node A's copy: the card active
    request = _replace_request(lost, new)
    follows = nodes.world.server.core.follow_statistics
    replaced: dict[str, int] = {}
    with new_card_held(nodes, new) as holder:
        replacing = threading.Thread(
            target=lambda: replaced.update(
                moved=nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor
            )
        )
        replacing.start()
        _wait_until(lambda: _waiting_on(holder) == 1, "node B's transfer waiting, the balance read")
        # Node A gives 300 back onto the card node B has marked lost and read at 700; node A's follow
        # finds it lost, not yet replaced, meanwhile (it looks within milliseconds).
        assert nodes.on_a.refund(redemption, 300).response_code == "00"
        time.sleep(0.5)
    replacing.join(20)
    assert not replacing.is_alive()
    held = _held(nodes, lost, new)
    assert (replaced, held) == ({"moved": 1_000}, (0, 1_100)), "money given back left on the lost card"
    assert_ledger_clean(nodes.world)
    # Node B's transfer moved the 300 with the balance: node A's follow says nothing waits on the card.
    _wait_until(lambda: sum(follows().moves.values()) == 1, "node A's follow counted")
    counted = {outcome: count for (when, outcome), count in follows().moves.items() if count}
    assert counted == {"nothing_moved": 1}, "counted as money waiting for the office"


def test_a_card_unblocked_on_node_a_while_node_b_replaces_it_is_refused_and_nothing_moves(
    nodes_lasting_copies: Nodes,
) -> None:
    nodes = nodes_lasting_copies
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    lost_ref = pb.CardRef(card_number=lost)
    request = _replace_request(lost, new)
    answered: dict[str, object] = {}

    def replace() -> None:
        try:
            answered["moved"] = nodes.on_b_as_admin("ReplaceCard", request).moved.amount_minor
        except grpc.RpcError as error:
            answered["refused"] = (error.code(), error.details())

    with new_card_held(nodes, new) as holder:
        replacing = threading.Thread(target=replace)
        replacing.start()
        _wait_until(lambda: _waiting_on(holder) == 1, "node B's transfer waiting, the card read lost")
        # The card found: node A unblocks it and it is used there, so node B's transfer reads it again.
        unblocked = nodes.on_a_as_admin("UnblockCard", bo.CardRequest(card=lost_ref))
        assert unblocked.status == "active"
        assert nodes.on_a.redeem(lost, 300, new_txn()).response_code == "00"
    replacing.join(20)
    assert not replacing.is_alive()
    refused = answered.get("refused")
    assert isinstance(refused, tuple) and refused[0] is grpc.StatusCode.FAILED_PRECONDITION, answered
    assert unblocked.card_masked in refused[1] and lost not in refused[1], refused[1]
    held = _held(nodes, lost, new)
    assert held == (700, 100), "money moved off a card unblocked meanwhile"
    assert_ledger_clean(nodes.world)


def _refused_on_a_as_b_replaces(
    nodes: Nodes, method: str, request: object, lost: str, new: str
) -> grpc.RpcError:
    """Node A's refusal of `method` on the lost card, node B replacing the card right after node A's
    card actor read whether it is replaced (on that actor's thread, between its read and its write)."""
    lost_id = nodes.world.server.core.cards.card_id(lost)
    assert lost_id is not None
    replaced = threading.Event()

    def after(_cursor: Any, statement: str, parameters: Any) -> None:
        asks_replaced = statement.startswith("SELECT cards.replaced_by") and lost_id in str(parameters)
        if asks_replaced and not replaced.is_set():
            replaced.set()
            _replace_on_b(nodes, lost, new)

    with (
        on_statement(nodes.world.server.core.store.engine, "after", after),
        pytest.raises(grpc.RpcError) as refused,
    ):
        nodes.on_a_as_admin(method, request)
    assert replaced.is_set()
    return refused.value


def test_a_block_or_unblock_on_node_a_that_read_the_card_before_node_b_replaced_it_leaves_it_lost(
    nodes_lasting_copies: Nodes,
) -> None:
    """Audit in session 28: node A's card actor read that the card was not replaced, node B's
    replacement landed, then node A's block or unblock wrote blocked or active over lost; money
    credited to the card later stayed on it. The journal's write now lands only on a card not
    replaced, and node A answers as for a card replaced before. Node B replaces the card every time
    right after node A's read, for a block and an unblock in turn."""
    nodes = nodes_lasting_copies
    core_a = nodes.world.server.core
    for method, blocked_first, stays in [
        ("BlockCard", False, "it is out of use already; to stop the replacement, block that card"),
        ("UnblockCard", True, "it stays out of use"),
    ]:
        lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
        lost_ref = pb.CardRef(card_number=lost)
        if blocked_first:  # reported lost by phone, then found: node A's copy is blocked
            nodes.on_a_as_admin("BlockCard", bo.BlockCardRequest(card=lost_ref, reason="lost"))
        request = (
            bo.BlockCardRequest(card=lost_ref, reason="stolen")
            if method == "BlockCard"
            else (bo.CardRequest(card=lost_ref))
        )
        refused = _refused_on_a_as_b_replaces(nodes, method, request, lost, new)
        lost_id, new_id = core_a.cards.card_id(lost), core_a.cards.card_id(new)
        assert lost_id is not None
        assert (refused.code(), refused.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"card {mask(lost)} is lost and replaced by {mask(new)} ({new_id}): {stays}",
        )
        assert core_a.store.card_state(lost_id).status is CardStatus.lost, method
        assert nodes.on_a.balance(lost) == 0, "node A still holds its copy from before the replacement"
    assert_ledger_clean(nodes.world)


def _load_on_a(nodes: Nodes, new: str) -> None:
    assert nodes.on_a.load(new, 99_000).response_code == "00"  # 991.00 of the programme's 1,000.00


def _block_on_a(nodes: Nodes, new: str) -> None:
    nodes.on_a_as_admin("BlockCard", bo.BlockCardRequest(card=pb.CardRef(card_number=new), reason="stolen"))


# (what node A does to the replacement card once node B has judged it, what node B answers, its balance)
NODE_A_CHANGES = [
    pytest.param(_load_on_a, "was loaded meanwhile: with the lost card's 10.00", 99_100, id="loaded"),
    pytest.param(_block_on_a, "was blocked meanwhile", 100, id="blocked"),
]


@pytest.mark.parametrize(("change_on_a", "said", "new_holds"), NODE_A_CHANGES)
def test_a_replacement_the_journal_refuses_says_what_happened_to_the_new_card(
    nodes_lasting_copies: Nodes, change_on_a: Callable[[Nodes, str], None], said: str, new_holds: int
) -> None:
    nodes = nodes_lasting_copies
    lost, new = nodes.world.issue(1_000), nodes.world.issue(100)
    cards_of = nodes.world.server.core
    lost_id, new_id = cards_of.cards.card_id(lost), cards_of.cards.card_id(new)
    assert lost_id is not None and new_id is not None
    changed = threading.Event()

    def after(_cursor: Any, statement: str, parameters: Any) -> None:
        # Node B has read the new card's state (its room, its status): node A changes it now.
        if not changed.is_set() and "balance_minor" in statement and new_id in str(parameters):
            changed.set()
            change_on_a(nodes, new)

    request = _replace_request(lost, new)
    with (
        on_statement(nodes.node_b.core.store.engine, "after", after),
        pytest.raises(grpc.RpcError) as refused,
    ):
        nodes.on_b_as_admin("ReplaceCard", request)
    assert changed.is_set()
    details = refused.value.details() or ""
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION, details
    new_masked = cards_of.store.card_state(new_id).masked
    assert f"the replacement card {new_masked} {said}" in details, details
    assert "nothing moved" in details, details
    for unshown in (lost, new, lost_id, new_id):
        assert unshown not in details, details
    held = _held(nodes, lost, new)
    assert held == (1_000, new_holds), "money moved by a refused replacement"
    assert_ledger_clean(nodes.world)
