"""What a card may do: pure decisions over a card's state, one rule per check, declines as values."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from switch.domain.cards import CardStatus
from switch.domain.money import AMOUNT_MINOR_MAX, Money, is_known_currency
from switch.domain.programmes import Programme
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import TransactionStatus

STATUS_DECLINES: dict[CardStatus, ResponseCode] = {
    CardStatus.blocked: ResponseCode.card_blocked,
    CardStatus.lost: ResponseCode.card_lost,
    CardStatus.expired: ResponseCode.card_expired,
}


def shown_status(status: CardStatus, expiry: dt.date, today: dt.date) -> str:
    """A card's state as its holder and the office see it: an active card past its last day is
    `expired` (no write marks it so; every terminal declines it 54)."""
    if status is CardStatus.active and today > expiry:
        return CardStatus.expired.value
    return status.value


@dataclass(frozen=True, slots=True)
class CardState:
    card_id: str
    programme: Programme
    masked: str
    status: CardStatus
    expiry: dt.date
    balance_minor: int  # committed in the ledger

    def __post_init__(self) -> None:
        assert self.balance_minor >= 0, "a card balance is never negative"

    @property
    def currency(self) -> str:
        return self.programme.currency

    def money(self, amount_minor: int) -> Money:
        return Money(amount_minor, self.programme.currency)


@dataclass(frozen=True, slots=True)
class Decision:
    code: ResponseCode
    amount_minor: int = 0
    detail: str = ""

    @property
    def approves(self) -> bool:
        return self.code.approves


def status_decline(status: CardStatus) -> Decision:
    """The decline of a card found in this status where it must be active: as a terminal's request
    on it is declined (41 lost, 62 blocked); a status with no decline of its own counts as lost."""
    return Decision(STATUS_DECLINES.get(status, ResponseCode.card_lost), detail=f"card is {status.value}")


def amount_problem(amount: Money, card_currency: str) -> Decision | None:
    """Zero, negative, oversized or foreign-currency amounts."""
    if not is_known_currency(amount.currency):
        return Decision(ResponseCode.currency_not_accepted, detail=f"unknown currency {amount.currency!r}")
    if amount.currency != card_currency:
        return Decision(
            ResponseCode.currency_not_accepted,
            detail=f"card is in {card_currency}, request in {amount.currency}",
        )
    if amount.amount_minor <= 0:
        return Decision(ResponseCode.invalid_amount, detail="amount must be positive")
    if amount.amount_minor > AMOUNT_MINOR_MAX:
        return Decision(ResponseCode.invalid_amount, detail=f"amount above {AMOUNT_MINOR_MAX} minor units")
    return None


def usability_problem(card: CardState, today: dt.date) -> Decision | None:
    """A card that is blocked, lost or expired declines everything but undoing."""
    if card.status in STATUS_DECLINES:
        return Decision(STATUS_DECLINES[card.status], detail=f"card is {card.status.value}")
    if today > card.expiry:
        return Decision(ResponseCode.card_expired, detail=f"card expired on {card.expiry.isoformat()}")
    return None


def decide_redemption(
    card: CardState,
    available_minor: int,
    amount: Money,
    allow_partial: bool,
    merchant_accepts: bool,
    today: dt.date,
) -> Decision:
    problem = amount_problem(amount, card.currency) or usability_problem(card, today)
    if problem is not None:
        return problem
    if not merchant_accepts:
        return Decision(ResponseCode.merchant_not_in_programme, detail=card.programme.name)
    if amount.amount_minor <= available_minor:
        return Decision(ResponseCode.approved, amount.amount_minor)
    if allow_partial and available_minor > 0:
        return Decision(ResponseCode.approved_partial, available_minor)
    return Decision(ResponseCode.exceeds_balance, detail=f"{card.money(available_minor).format()} available")


def decide_load(
    card: CardState,
    balance_with_pending_minor: int,
    amount: Money,
    merchant_accepts: bool,
    today: dt.date,
    priced_at_start: bool = False,
) -> Decision:
    """A load through a shop of the card's programme: a load moves programme (and funder) money.
    An online top-up's load (`priced_at_start`) had its step judged when it was started and paid."""
    problem = amount_problem(amount, card.currency) or usability_problem(card, today)
    if problem is not None:
        return problem
    if not merchant_accepts:
        return Decision(ResponseCode.merchant_not_in_programme, detail=card.programme.name)
    step_problem = None if priced_at_start else card.programme.load_step_problem(amount.amount_minor)
    if step_problem is not None:
        return Decision(ResponseCode.amount_not_a_multiple_of_load_step, detail=step_problem)
    room_minor = card.programme.balance_max_minor - balance_with_pending_minor
    if amount.amount_minor > room_minor:
        return Decision(
            ResponseCode.exceeds_amount_limit,
            detail=f"card may hold at most {card.money(card.programme.balance_max_minor).format()}",
        )
    return Decision(ResponseCode.approved, amount.amount_minor)


def decide_refund(
    card: CardState,
    amount: Money,
    original_status: TransactionStatus,
    refundable_minor: int,
    balance_with_pending_minor: int,
    today: dt.date,
) -> Decision:
    """A refund returns (part of) an approved redemption to its card."""
    problem = (
        amount_problem(amount, card.currency)
        or usability_problem(card, today)
        or _original_problem(card, amount, original_status, refundable_minor)
    )
    if problem is not None:
        return problem
    if balance_with_pending_minor + amount.amount_minor > card.programme.balance_max_minor:
        return Decision(ResponseCode.exceeds_amount_limit, detail="refund would exceed the card limit")
    return Decision(ResponseCode.approved, amount.amount_minor)


def decide_completion(
    card: CardState, released: Money, original_status: TransactionStatus, refundable_minor: int
) -> Decision:
    """An acquirer's completion gives back what its authorisation took above the final amount.

    It is an advice: the sale is done at the acquirer, so what became of the card since (blocked,
    expired, loaded to its limit) does not refuse it. The money going back was the card's.
    """
    problem = amount_problem(released, card.currency) or _original_problem(
        card, released, original_status, refundable_minor
    )
    if problem is not None:
        return problem
    return Decision(ResponseCode.approved, released.amount_minor)


def _original_problem(
    card: CardState, amount: Money, original_status: TransactionStatus, refundable_minor: int
) -> Decision | None:
    """Money goes back only from an original still approved, and at most what it has left."""
    if original_status is not TransactionStatus.approved:
        return Decision(ResponseCode.already_reversed, detail=f"original is {original_status.value}")
    if amount.amount_minor > refundable_minor:
        return Decision(
            ResponseCode.exceeds_original_amount,
            detail=f"{card.money(refundable_minor).format()} left to refund",
        )
    return None


def decide_undo(
    original_status: TransactionStatus,
    refunded_minor: int,
    takes_from_card_minor: int,
    available_minor: int,
) -> Decision:
    """Cancel or reverse an approved transaction in full.

    takes_from_card_minor is what undoing takes back from the card (a load's amount), 0 when it
    gives money back to the card.
    """
    if original_status is not TransactionStatus.approved:
        return Decision(ResponseCode.already_reversed, detail=f"original is {original_status.value}")
    if refunded_minor:
        return Decision(
            ResponseCode.invalid_transaction, detail="original was partly refunded; refund the rest"
        )
    if takes_from_card_minor > available_minor:
        return Decision(ResponseCode.exceeds_balance, detail="the loaded value has been spent")
    return Decision(ResponseCode.approved)
