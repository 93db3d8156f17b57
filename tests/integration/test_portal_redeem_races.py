"""The web back office's redemption under races, a drain and its own terminal's life (session 22
audit of the feature; each test failed before its fix):

- two first redemptions at one location at once on PostgreSQL: one answered INTERNAL (both made
  the location's web terminal);
- a drain refused terminals' redemptions and took the web back office's;
- the web terminal could be deactivated, for good (nothing activates it again);
- one transaction id sent for two locations moved the money twice;
- a location's count of activated terminals counted the web terminal.

Races are made deterministic by holding each first-use lookup of the web terminal until both
requests have made it (harness.on_statement), as test_terminal_directory_race.py does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from switch.admin import WEB_BACK_OFFICE
from tests.integration.harness import (
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    World,
    new_txn,
    on_statement,
    world_fixture,
)
from tests.integration.nodes.conftest import Nodes, two_nodes

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def portal_redeem(
    world: World,
    metadata: Metadata,
    card: str,
    amount_minor: int,
    txn: str = "",
    stub: portal_grpc.PortalStub | None = None,
    **fields: object,
) -> pb.TransactionResponse:
    request = portal.PortalRedeemRequest(
        transaction_id=txn or new_txn(),
        card=pb.CardRef(card_number=card),
        amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
        **fields,  # type: ignore[arg-type]
    )
    stub = stub or portal_grpc.PortalStub(world.channel)
    answer: pb.TransactionResponse = stub.Redeem(request, metadata=metadata, timeout=20)
    return answer


@pytest.fixture(params=["postgres"])
def pg_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path)


@contextmanager
def web_terminal_lookups_meet(*engines: Engine) -> Iterator[None]:
    """The first two lookups of the web back office terminal (on any of the engines) each wait,
    after reading, until the other has read too (at most 5 s)."""
    meet = threading.Barrier(2, timeout=5)
    lock, left = threading.Lock(), [2]

    def after(_cursor: Any, statement: str, parameters: Any) -> None:
        if not statement.lstrip().upper().startswith("SELECT") or "terminals" not in statement:
            return
        if WEB_BACK_OFFICE not in str(parameters):
            return
        with lock:
            mine = left[0] > 0
            left[0] -= 1
        if mine:
            with suppress(threading.BrokenBarrierError):
                meet.wait()

    with ExitStack() as stack:
        for engine in engines:  # hooks, not listeners: these engines' switches are running
            stack.enter_context(on_statement(engine, "after", after))
        yield


def sign_in(channel: grpc.Channel) -> tuple[tuple[str, str], ...]:
    session = portal_grpc.PortalStub(channel).SignIn(
        portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD), timeout=20
    )
    return (("authorization", f"Bearer {session.token}"),)


def redeem_both(
    world: World, calls: list[tuple[portal_grpc.PortalStub, tuple[tuple[str, str], ...]]], card: str
) -> list[object]:
    answers: list[object] = [None, None]

    def one(index: int) -> None:
        stub, metadata = calls[index]
        try:
            answers[index] = portal_redeem(world, metadata, card, 100, stub=stub)
        except grpc.RpcError as error:
            answers[index] = (error.code(), error.details())

    threads = [threading.Thread(target=one, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def codes(answers: list[object]) -> list[object]:
    return [a.response_code if isinstance(a, pb.TransactionResponse) else a for a in answers]


def web_terminals(world: World) -> list[str]:
    return [
        t.terminal_id
        for t in world.server.core.admin.list_terminals(world.merchant_id)
        if t.device_name == WEB_BACK_OFFICE
    ]


def test_two_first_web_redemptions_at_once_on_one_node_are_both_served(pg_world: World) -> None:
    world = pg_world
    card = world.issue(1_000)
    owner = sign_in(world.channel)
    stub = portal_grpc.PortalStub(world.channel)
    with web_terminal_lookups_meet(world.server.core.store.engine):
        answers = redeem_both(world, [(stub, owner), (stub, owner)], card)
    assert codes(answers) == ["00", "00"]
    assert len(web_terminals(world)) == 1
    assert world.terminals[0].balance(card) == 800


def test_two_first_web_redemptions_at_once_on_two_nodes_are_both_served(nodes: Nodes) -> None:
    world = nodes.world
    card = world.issue(1_000)
    channel_b = grpc.insecure_channel(nodes.node_b.address)
    try:
        calls = [
            (portal_grpc.PortalStub(world.channel), sign_in(world.channel)),
            (portal_grpc.PortalStub(channel_b), sign_in(channel_b)),
        ]
        engines = (world.server.core.store.engine, nodes.node_b.core.store.engine)
        with web_terminal_lookups_meet(*engines):
            answers = redeem_both(world, calls, card)
    finally:
        channel_b.close()
    assert codes(answers) == ["00", "00"]
    assert len(web_terminals(world)) == 1
    assert nodes.on_a.balance(card) == 800


def test_a_draining_switch_takes_no_web_redemption(world: World) -> None:
    owner = sign_in(world.channel)
    card = world.issue(1_000)
    world.server.drain()
    with pytest.raises(grpc.RpcError) as refused:
        world.terminals[0].redeem(card, 100)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # a terminal's redemption
    with pytest.raises(grpc.RpcError) as refused:
        portal_redeem(world, owner, card, 100)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None and world.server.core.balance(card_id).balance_minor == 1_000


def test_the_web_terminal_cannot_be_deactivated_and_a_resend_gets_the_first_answer(world: World) -> None:
    owner = sign_in(world.channel)
    card = world.issue(1_000)
    txn = new_txn()
    first = portal_redeem(world, owner, card, 300, txn)
    assert first.response_code == "00"
    (web,) = web_terminals(world)
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.DeactivateTerminal(
            bo.TerminalRequest(terminal_id=web), metadata=world.admin_metadata, timeout=20
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "web back office" in (refused.value.details() or "")
    assert portal_redeem(world, owner, card, 300, txn) == first  # sent again: the first answer
    assert world.terminals[0].balance(card) == 700


def test_one_transaction_id_sent_for_two_locations_moves_the_money_once(world: World) -> None:
    admin = world.server.core.admin
    (shop,) = admin.list_locations(world.merchant_id)
    second = admin.add_location(world.merchant_id, "Second shop")
    owner = sign_in(world.channel)
    card = world.issue(1_000)
    txn = new_txn()
    assert portal_redeem(world, owner, card, 300, txn, location_id=shop.location_id).response_code == "00"
    again = portal_redeem(world, owner, card, 300, txn, location_id=second)
    assert (again.response_code, again.status) == ("94", "declined"), again.message
    assert world.terminals[0].balance(card) == 700


def test_the_web_terminal_is_not_counted_among_the_terminals_activated_at_its_location(
    world: World,
) -> None:
    owner = sign_in(world.channel)
    assert portal_redeem(world, owner, world.issue(1_000), 100).response_code == "00"
    (shop,) = (
        portal_grpc.PortalStub(world.channel)
        .ListLocations(bo.ListLocationsRequest(), metadata=owner, timeout=20)
        .locations
    )
    assert shop.terminals == 1  # A77-0; the web back office's terminal is never activated
