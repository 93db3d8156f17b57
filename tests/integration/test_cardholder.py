"""The cardholder's balance lookup without a login (service Cardholder).

Real gRPC server on loopback, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch.cli import main
from switch.domain.cards import luhn_check_digit, qr_payload
from tests.integration.harness import World, world_fixture
from tests.integration.test_portal import refusal

LOOKUPS_PER_MINUTE_MAX = 12


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request, tmp_path, terminals=1, cardholder_lookups_per_minute_max=LOOKUPS_PER_MINUTE_MAX
    )


def look_up(world: World, card: pb.CardRef) -> ch.CardholderBalance:
    stub = ch_grpc.CardholderStub(world.channel)
    answer: ch.CardholderBalance = stub.GetBalance(ch.CardholderBalanceRequest(card=card), timeout=20)
    return answer


def by_number(number: str) -> pb.CardRef:
    return pb.CardRef(card_number=number)


def test_a_holder_sees_the_balance_by_number_or_qr_code_as_the_terminal_does(world: World) -> None:
    terminal = world.terminals[0]
    taxi = world.issue(0, world.benefit_programme)
    assert terminal.load(taxi, 1_000).response_code == "00"
    assert terminal.redeem(taxi, 350).response_code == "00"
    seen = look_up(world, by_number(taxi))
    assert (seen.balance.amount_minor, seen.balance.currency) == (650, "EUR")
    assert seen.balance.amount_minor == terminal.balance(taxi)
    assert (seen.card_status, seen.programme_name) == ("active", "Taxi")
    assert seen.card_masked.endswith(taxi[-4:]) and taxi not in str(seen)
    assert seen.expiry_date > "2026-01-01"
    # "For each 5.00 on your card you pay 1.80 yourself."
    assert (seen.holder_pays.amount_minor, seen.per_loaded.amount_minor) == (180, 500)
    assert look_up(world, pb.CardRef(qr_payload=qr_payload(taxi))) == seen
    gift = look_up(world, by_number(world.issue(2_500)))
    assert (gift.balance.amount_minor, gift.programme_name) == (2_500, "Gift")
    assert not gift.HasField("holder_pays") and not gift.HasField("per_loaded")


def test_a_lost_card_shows_lost_and_its_balance_on_the_new_card(world: World) -> None:
    lost, replacement = world.issue(2_500), world.issue(0)
    world.backoffice.ReplaceCard(
        bo.ReplaceCardRequest(
            lost_card=by_number(lost), replacement_card=by_number(replacement), request_id="r1"
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    old = look_up(world, by_number(lost))
    assert (old.card_status, old.balance.amount_minor) == ("lost", 0)
    assert look_up(world, by_number(replacement)).balance.amount_minor == 2_500
    blocked = world.issue(700)
    world.backoffice.BlockCard(
        bo.BlockCardRequest(card=by_number(blocked), reason="stolen"),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert (
        look_up(world, by_number(blocked)).card_status,
        look_up(world, by_number(blocked)).balance.amount_minor,
    ) == (
        "blocked",
        700,
    )


def test_an_unknown_or_malformed_card_is_refused_naming_what_and_never_echoed(world: World) -> None:
    real = world.issue(1_000)
    other = real[:-2] + str((int(real[-2]) + 1) % 10)  # another number of the programme, never issued
    unknown = other + luhn_check_digit(other)
    code, details = refusal(look_up, world, by_number(unknown))
    assert code == grpc.StatusCode.NOT_FOUND and details.endswith("no such card")
    assert unknown not in details and unknown[-4:] in details
    for card, named in (
        (None, "card is missing"),
        (pb.CardRef(), "card needs card_number or qr_payload"),
        (by_number(""), "card."),
        (by_number("12ab"), "card."),
        (by_number(real[:-1] + str((int(real[-1]) + 1) % 10)), "card."),  # fails the Luhn check
        (
            pb.CardRef(qr_payload="https://example.test/other"),
            "card.qr_payload is not a txswitch card QR code",
        ),
    ):
        request = ch.CardholderBalanceRequest() if card is None else ch.CardholderBalanceRequest(card=card)
        stub = ch_grpc.CardholderStub(world.channel)
        code, details = refusal(stub.GetBalance, request, timeout=20)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(named), (card, details)
        assert real not in details
    assert world.ledger().unbalanced_entries == 0


def test_lookups_from_one_address_are_limited_wrong_numbers_included(world: World) -> None:
    card = world.issue(1_000)
    for _ in range(LOOKUPS_PER_MINUTE_MAX // 2):
        assert look_up(world, by_number(card)).balance.amount_minor == 1_000
        code, _ = refusal(look_up, world, by_number("12ab"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = refusal(look_up, world, by_number(card))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("too many balance lookups from your address; try again in ")
    # The terminals' own Balance is not the holders' to use up.
    assert world.terminals[0].balance(card) == 1_000


def test_txswitch_balance_asks_as_the_holder_does(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    card = world.issue(1_500, world.benefit_programme)
    assert main(["balance", "--target", world.server.address, qr_payload(card)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["balance"] == {"amount_minor": "1500", "currency": "EUR"}
    assert (shown["card_status"], shown["holder_pays"]["amount_minor"]) == ("active", "180")
    other = card[:-2] + str((int(card[-2]) + 1) % 10)
    assert main(["balance", "--target", world.server.address, other + luhn_check_digit(other)]) == 1
    refused = capsys.readouterr().err
    assert refused.startswith("txswitch balance: NOT_FOUND: card ") and other not in refused
