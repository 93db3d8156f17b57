"""The card population of a run, with Zipf-skewed picks so that some cards are hot."""

from __future__ import annotations

import bisect
import enum
import itertools
import random
from dataclasses import dataclass

from switch.domain.cards import luhn_check_digit


class CardKind(enum.StrEnum):
    gift = "gift"
    benefit = "benefit"


def mask(card_number: str) -> str:
    """first6****last4: the only form of a card number a log or report may show."""
    if len(card_number) < 11:
        return "****"
    return f"{card_number[:6]}****{card_number[-4:]}"


@dataclass(frozen=True)
class SimCard:
    card_id: str  # the switch's id; safe to log
    card_number: str = ""  # clear, for typing in; never logged
    qr_payload: str = ""
    kind: CardKind = CardKind.gift
    start_balance_minor: int = 0

    def __repr__(self) -> str:
        return f"SimCard({self.card_id}, {mask(self.card_number)}, {self.kind.value})"

    @property
    def masked(self) -> str:
        return mask(self.card_number)


class CardPopulation:
    """Cards ranked by heat: rank k is picked with weight 1 / k**exponent."""

    def __init__(self, cards: list[SimCard], zipf_exponent: float) -> None:
        assert cards, "a run needs at least one card"
        self.cards = tuple(cards)
        weights = (1.0 / (rank**zipf_exponent) for rank in range(1, len(cards) + 1))
        self._cumulative = list(itertools.accumulate(weights))

    def pick(self, rng: random.Random) -> SimCard:
        point = rng.random() * self._cumulative[-1]
        index = bisect.bisect_right(self._cumulative, point)
        return self.cards[min(index, len(self.cards) - 1)]

    def pick_kind(self, rng: random.Random, kind: CardKind, tries_max: int = 16) -> SimCard:
        """A Zipf pick of the given kind; falls back to any card after tries_max misses."""
        for _ in range(tries_max):
            card = self.pick(rng)
            if card.kind is kind:
                return card
        return self.pick(rng)

    def by_id(self) -> dict[str, SimCard]:
        return {card.card_id: card for card in self.cards}


def synthetic_cards(count: int, seed: int, benefit_share: float = 0.3) -> list[SimCard]:
    """Made-up cards for a server that keeps no cards (the echo ceiling)."""
    rng = random.Random(seed)
    cards = []
    for index in range(count):
        partial = f"999999{index:09d}"
        number = partial + luhn_check_digit(partial)
        kind = CardKind.benefit if rng.random() < benefit_share else CardKind.gift
        cards.append(SimCard(f"synthetic-{index}", number, f"QR:{number}", kind, 5_000))
    return cards
