"""An adjustment the journal refused because its original changed meanwhile is answered by the rule
(a decline, not stored, so the same id is judged again), never by the journal's own words."""

from __future__ import annotations

import pytest

from actors.card_actor import original_changed
from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Outcome, TransactionStatus, TransactionType

PROBLEM = "refused by the ledger: original txn-7 can no longer be cancelled"


@pytest.mark.parametrize("kind", [TransactionType.refund, TransactionType.cancel, TransactionType.reversal])
def test_an_adjustment_whose_original_changed_meanwhile_is_declined_by_the_rule(
    kind: TransactionType,
) -> None:
    amount = Money(300, "EUR")
    outcome = Outcome(
        "txn-8",
        kind,
        ResponseCode.approved,
        requested=amount,
        approved=amount,
        card_masked="600001******0001",
        period_number=3,
        status=TransactionStatus.approved,
    )
    answer = original_changed(outcome, PROBLEM)
    assert answer.code is ResponseCode.invalid_transaction and not answer.persisted
    assert "original was refunded, cancelled or reversed meanwhile" in answer.detail, answer.detail
    assert "send it again" in answer.detail and "txn-7" not in answer.detail and "ledger" not in answer.detail
    assert (answer.card_masked, answer.period_number) == ("600001******0001", 3)
