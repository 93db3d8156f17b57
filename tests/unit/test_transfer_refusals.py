"""A replacement's transfer that moved nothing is answered by what happened, naming the cards masked,
never by the journal's own words (they hold internal ids)."""

from __future__ import annotations

import datetime as dt

import pytest

from actors.messages import TransferRefused
from switch.core import transfer_refused_text
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.domain.ledger import LedgerRefusal
from switch.domain.programmes import Programme, ProgrammeKind

GIFT = Programme("p", "Gift", ProgrammeKind.gift, "EUR", "600001", 10_000, None, 4, 36)
LOST = CardState("card_lost_id", GIFT, "600001******0001", CardStatus.lost, dt.date(2030, 1, 1), 1_000)
NEW = CardState("card_new_id", GIFT, "600001******0002", CardStatus.active, dt.date(2030, 1, 1), 100)
PROBLEM = "refused by the ledger: card card_lost_id was replaced by another card meanwhile"

# (why nothing moved, what the answer says)
REFUSALS = [
    (
        TransferRefused(1_000, lost_card_status=CardStatus.active),
        "0001 is active: unblocked",
    ),
    (
        TransferRefused(1_000, new_card_status=CardStatus.blocked),
        "0002 was blocked meanwhile",
    ),
    (TransferRefused(1_000, new_card_status=CardStatus.lost), "0002 was replaced meanwhile"),
    (
        TransferRefused(1_000, refusal=LedgerRefusal.above_maximum, problem=PROBLEM),
        "with the lost card's 10.00 EUR it would hold more than 100.00 EUR",
    ),
    (
        TransferRefused(1_000, refusal=LedgerRefusal.replaced_meanwhile, problem=PROBLEM),
        "card 600001******0001 was replaced by another card meanwhile",
    ),
    (TransferRefused(1_000, refusal=LedgerRefusal.below_zero), "card 600001******0001 was spent meanwhile"),
    (TransferRefused(1_000, balance_changed=True), "card 600001******0001's balance changed at each of"),
    (TransferRefused(1_000, problem="database commit failed"), "the ledger did not store the move"),
]


@pytest.mark.parametrize(("refused", "said"), REFUSALS)
def test_a_refused_transfer_says_what_happened_without_the_journals_words(
    refused: TransferRefused, said: str
) -> None:
    text = transfer_refused_text(refused, LOST, NEW)
    assert said in text and "nothing moved" in text, text
    assert "card_lost_id" not in text and "card_new_id" not in text and "ledger:" not in text, text
