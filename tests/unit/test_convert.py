"""Outcomes encoded for the terminal: every field, and each amount present exactly when the outcome has it."""

from __future__ import annotations

import pytest

from protocols import convert
from protocols.wire import terminal_pb2 as pb
from switch.domain.money import Money
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
