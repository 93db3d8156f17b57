"""A card number typed by a person, as printed on the card ("6001 0199 9999 9998"), at every entry
where a person types one: `txswitch balance`, the cardholders' balance, the web back office's
CardBalance and Redeem, the backoffice's GetCard. Grouped otherwise, it is refused naming the field.

Real gRPC server on loopback, on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from switch.cli import main
from tests.integration.harness import World, new_txn, world_fixture
from tests.integration.test_portal import sign_in, stub

BALANCE_MINOR = 1_000
REDEEM_MINOR = 100

# An entry point: (world, typed card number) -> the balance it shows, in minor units, or raises
# ValueError(details) when it refuses the number.
Entry = Callable[[World, str], int]


@pytest.fixture(params=["sqlite"])  # the parsing is the node's, whatever the database
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def _grpc(call: Callable[[], int]) -> int:
    try:
        return call()
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        raise ValueError(error.details() or "") from error


def cli_balance(world: World, typed: str) -> int:
    # Typed unquoted, as a person copies it from the card: one argument per group.
    return _cli(world, typed.split(" "))


def _cli(world: World, card_args: list[str]) -> int:
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["balance", "--target", world.server.address, *card_args])
    if code != 0:
        raise ValueError(err.getvalue())
    return int(json.loads(out.getvalue())["balance"]["amount_minor"])


def cli_balance_quoted(world: World, typed: str) -> int:
    return _cli(world, [typed])


def cardholder_balance(world: World, typed: str) -> int:
    request = ch.CardholderBalanceRequest(card=pb.CardRef(card_number=typed))
    stub_ = ch_grpc.CardholderStub(world.channel)
    return _grpc(lambda: stub_.GetBalance(request, timeout=20).balance.amount_minor)


def portal_balance(world: World, typed: str) -> int:
    request = pb.BalanceRequest(card=pb.CardRef(card_number=typed))
    owner = sign_in(world)
    return _grpc(lambda: stub(world).CardBalance(request, metadata=owner, timeout=20).balance.amount_minor)


def portal_redeem(world: World, typed: str) -> int:
    request = portal.PortalRedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(card_number=typed),
        amount=pb.Amount(amount_minor=REDEEM_MINOR, currency="EUR"),
    )
    owner = sign_in(world)
    answer = _grpc(lambda: stub(world).Redeem(request, metadata=owner, timeout=20).approved.amount_minor)
    assert answer == REDEEM_MINOR
    return BALANCE_MINOR - REDEEM_MINOR


def backoffice_card(world: World, typed: str) -> int:
    request = bo.CardRequest(card=pb.CardRef(card_number=typed))
    return _grpc(
        lambda: (
            world.backoffice.GetCard(request, metadata=world.admin_metadata, timeout=20).balance.amount_minor
        )
    )


ENTRIES: dict[str, Entry] = {
    "txswitch balance": cli_balance,
    "txswitch balance, quoted": cli_balance_quoted,
    "Cardholder.GetBalance": cardholder_balance,
    "Portal.CardBalance": portal_balance,
    "Portal.Redeem": portal_redeem,
    "Backoffice.GetCard": backoffice_card,
}


def _grouped(number: str, separator: str) -> str:
    return separator.join(number[start : start + 4] for start in range(0, len(number), 4))


# (case, how the number is typed, accepted). Refused ones fail "digits only", naming the field.
TYPINGS: list[tuple[str, Callable[[str], str], bool]] = [
    ("digits", lambda n: n, True),
    ("four groups, spaces", lambda n: _grouped(n, " "), True),
    ("four groups, dashes", lambda n: _grouped(n, "-"), True),
    ("two groups", lambda n: f"{n[:6]} {n[6:]}", True),
    ("more groups than printed", lambda n: f"{n[:2]} {_grouped(n[2:], ' ')}", False),
    ("two spaces", lambda n: f"{n[:8]}  {n[8:]}", False),
    ("a dot", lambda n: f"{n[:8]}.{n[8:]}", False),
    ("a trailing dash", lambda n: f"{n}-", False),
    ("space and dash", lambda n: f"{n[:8]} -{n[8:]}", False),
]
# (case, how the number is typed, what the refusal says after "card.card_number ")
WRONG_NUMBERS: list[tuple[str, Callable[[str], str], str]] = [
    ("a digit too many, grouped", lambda n: _grouped(n, " ") + "1", "must have 16 digits, got 17"),
    ("a digit too few, grouped", lambda n: _grouped(n[:-1], "-"), "must have 16 digits, got 15"),
]


@pytest.mark.parametrize("entry_name", list(ENTRIES))
@pytest.mark.parametrize(("case", "typing", "accepted"), TYPINGS, ids=[row[0] for row in TYPINGS])
def test_a_card_number_typed_as_printed_is_read_and_anything_else_refused_naming_the_field(
    world: World, entry_name: str, case: str, typing: Callable[[str], str], accepted: bool
) -> None:
    if entry_name == "txswitch balance" and "  " in typing("0" * 16):
        pytest.skip("the shell splits on any run of spaces")
    number = world.issue(BALANCE_MINOR)
    typed = typing(number)
    entry = ENTRIES[entry_name]
    if accepted:
        shown_minor = entry(world, typed)
        assert shown_minor == (BALANCE_MINOR - REDEEM_MINOR if entry is portal_redeem else BALANCE_MINOR)
        return
    with pytest.raises(ValueError) as refused:
        entry(world, typed)
    details = str(refused.value)
    assert "card.card_number must contain digits only" in details, (entry_name, case, details)
    assert number not in details and typed not in details and number[6:12] not in details, details
    assert world.terminals[0].balance(number) == BALANCE_MINOR  # nothing moved


@pytest.mark.parametrize("entry_name", list(ENTRIES))
@pytest.mark.parametrize(("case", "typing", "named"), WRONG_NUMBERS, ids=[row[0] for row in WRONG_NUMBERS])
def test_a_grouped_number_of_the_wrong_length_is_refused_saying_so(
    world: World, entry_name: str, case: str, typing: Callable[[str], str], named: str
) -> None:
    number = world.issue(BALANCE_MINOR)
    with pytest.raises(ValueError) as refused:
        ENTRIES[entry_name](world, typing(number))
    details = str(refused.value)
    assert f"card.card_number {named}" in details, (entry_name, case, details)
    assert number[6:12] not in details, details
    assert world.terminals[0].balance(number) == BALANCE_MINOR
