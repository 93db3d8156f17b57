"""The web back office's card lookups (Portal.CardBalance and Portal.Redeem name a card number) are
limited per merchant, as the cardholders' are per address: a login is no licence to try numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, new_txn, world_fixture
from tests.integration.test_portal import OTHER_EMAIL, OTHER_PASSWORD, refusal, sign_in, stub

LOOKUPS_PER_MINUTE_MAX = 60  # Settings.portal_card_lookups_per_minute_max's default
Metadata = tuple[tuple[str, str], ...]
UNKNOWN_NUMBER = "6001009999999999"  # no card of the world's has it


@pytest.fixture(params=["sqlite"])  # the count is in the node's memory, whatever the database
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def balance_of(world: World, metadata: Metadata, number: str) -> None:
    stub(world).CardBalance(pb.BalanceRequest(card=pb.CardRef(card_number=number)), metadata=metadata)


def redeem(world: World, metadata: Metadata, number: str) -> None:
    request = portal.PortalRedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(card_number=number),
        amount=pb.Amount(amount_minor=100, currency="EUR"),
    )
    stub(world).Redeem(request, metadata=metadata, timeout=20)


def refused_or_ok(call: Callable[[], None]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name
    return "OK"


# One row per way of using the lookups up: each counts before the number is read.
CASES = [
    ("balances of unknown numbers", balance_of, UNKNOWN_NUMBER),
    ("balances of malformed numbers", balance_of, "12ab"),
    ("redemptions of unknown cards", redeem, UNKNOWN_NUMBER),
]


@pytest.mark.parametrize(("case", "call", "number"), CASES, ids=[case for case, _, _ in CASES])
def test_a_merchants_card_lookups_are_limited_for_all_its_logins_and_for_it_only(
    world: World, case: str, call: Callable[[World, Metadata, str], None], number: str
) -> None:
    owner = sign_in(world)
    answers = {refused_or_ok(lambda: call(world, owner, number)) for _ in range(LOOKUPS_PER_MINUTE_MAX)}
    assert "RESOURCE_EXHAUSTED" not in answers, (case, answers)
    card = world.issue(1_000)
    admin = world.server.core.admin
    admin.add_employee(
        world.merchant_id, "31", "Till", "1357", "cashier", email="till@example.test", password="till-pw"
    )
    cashier = sign_in(world, "till@example.test", "till-pw")  # another login of the same merchant
    code, details = refusal(balance_of, world, cashier, card)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (case, code, details)
    assert details.startswith("too many card lookups for your merchant; try again in "), details
    assert card not in details
    # Another merchant's lookups and the terminals' own are not this merchant's to use up.
    admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    balance_of(world, sign_in(world, OTHER_EMAIL, OTHER_PASSWORD), card)
    assert world.terminals[0].balance(card) == 1_000
