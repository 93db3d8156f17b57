"""Answers encoded for the terminal: every field, and each amount present exactly when the switch has it."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols import convert
from protocols.wire import terminal_pb2 as pb
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.domain.money import Money
from switch.domain.programmes import Programme, ProgrammeKind
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Outcome, TransactionStatus, TransactionType

AMOUNT_FIELDS = ("requested", "approved", "balance", "cardholder_part", "funder_part")

# (amounts the outcome has, by field): zero and empty values too, which proto3 would drop from a
# scalar field but a present Amount keeps
OUTCOME_AMOUNTS: list[dict[str, Money]] = [
    {},
    {"requested": Money(500, "EUR"), "approved": Money(500, "EUR"), "balance": Money(1500, "EUR")},
    {"requested": Money(500, "EUR"), "approved": Money(0, "EUR"), "balance": Money(0, "EUR")},
    {"balance": Money(0, "")},
    {"cardholder_part": Money(120, "GBP"), "funder_part": Money(380, "GBP")},
    {name: Money(index + 1, "USD") for index, name in enumerate(AMOUNT_FIELDS)},
]


@pytest.mark.parametrize("amounts", OUTCOME_AMOUNTS)
def test_transaction_response_holds_each_amount_the_outcome_has(amounts: dict[str, Money]) -> None:
    outcome = Outcome(
        "tx-1",
        TransactionType.redemption,
        ResponseCode.approved,
        "partly",
        card_masked="600100******1234",
        authorization_code="123456",
        period_number=3,
        status=TransactionStatus.approved,
        payment_method="stored_value",
        **amounts,  # type: ignore[arg-type]  # only the Money fields
    )
    response = convert.transaction_response(outcome)
    expected = pb.TransactionResponse(
        transaction_id="tx-1",
        response_code=ResponseCode.approved.iso_code,
        message=f"{ResponseCode.approved.message}: partly",
        card_masked="600100******1234",
        authorization_code="123456",
        period_number=3,
        payment_method="stored_value",
        status="approved",
        **{name: pb.Amount(amount_minor=m.amount_minor, currency=m.currency) for name, m in amounts.items()},
    )
    assert response == expected
    assert response.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    present = {field.name for field, _ in response.ListFields() if field.message_type is not None}
    assert present == set(amounts)


PROGRAMME = Programme("prg_1", "Gift", ProgrammeKind.gift, "EUR", "600100", 100_000, None, 4, 36)
TODAY = dt.date(2026, 12, 7)

# (status, expiry, balance_minor, the status shown): the balance present when zero too
BALANCES: list[tuple[CardStatus, dt.date, int, str]] = [
    (CardStatus.active, dt.date(2028, 1, 31), 1500, "active"),
    (CardStatus.active, TODAY, 0, "active"),  # through its expiry day
    (CardStatus.active, TODAY - dt.timedelta(days=1), 700, "expired"),
    (CardStatus.blocked, dt.date(2028, 1, 31), 1, "blocked"),
    (CardStatus.lost, dt.date(2028, 1, 31), 0, "lost"),
]


@pytest.mark.parametrize(("status", "expiry", "balance_minor", "shown"), BALANCES)
def test_balance_response(status: CardStatus, expiry: dt.date, balance_minor: int, shown: str) -> None:
    state = CardState("card_1", PROGRAMME, "600100******1234", status, expiry, balance_minor)
    response = convert.balance_response(state, "6001000000000006", TODAY, accepted=True)
    expected = pb.BalanceResponse(
        response_code="00",
        message=ResponseCode.approved.message,
        balance=pb.Amount(amount_minor=balance_minor, currency="EUR"),
        card_masked="600100******1234",
        card_status=shown,
        expiry_date=expiry.isoformat(),
    )
    assert response == expected and response.HasField("balance")
    assert response.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_balance_response_of_no_card_and_of_a_card_not_taken() -> None:
    unknown = convert.balance_response(None, "6001000000000006", TODAY, accepted=True)
    assert unknown == pb.BalanceResponse(
        response_code=ResponseCode.unknown_card.iso_code,
        message=ResponseCode.unknown_card.message,
        card_masked="600100******0006",
    )
    state = CardState("card_1", PROGRAMME, "600100******1234", CardStatus.active, TODAY, 1500)
    not_taken = convert.balance_response(state, "6001000000000006", TODAY, accepted=False)
    assert not_taken == pb.BalanceResponse(
        response_code=ResponseCode.merchant_not_in_programme.iso_code,
        message=f"{ResponseCode.merchant_not_in_programme.message}: Gift",
        card_masked="600100******1234",
    )
