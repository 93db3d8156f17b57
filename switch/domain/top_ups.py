"""Online top-ups of a benefit card: the holder pays their part at a payment service provider (PSP),
then the switch loads the card. The rules of starting one, confirming one and what the holder sees."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from switch.domain.card_rules import CardState, Decision, amount_problem, usability_problem
from switch.domain.money import AMOUNT_MINOR_MAX, Money, is_currency
from switch.domain.programmes import ProgrammeKind
from switch.domain.response_codes import ResponseCode

TOP_UP_REQUEST_ID_LENGTH_MAX = 64
PSP_REFERENCE_LENGTH_MAX = 64


class TopUpStatus(enum.Enum):
    pending = "pending"  # started; waits for the PSP's confirmation that the holder paid
    confirming = "confirming"  # a confirmation took it; the load is under way
    loaded = "loaded"  # the holder paid and the card was loaded
    refund_due = "refund_due"  # the holder paid but the card was not loaded: pay the holder back
    refunded = "refunded"  # the operator paid the holder back (its refund_reference)
    expired = "expired"  # shown only: pending past its expiry, never confirmed (nothing was paid)


@dataclass(frozen=True, slots=True)
class TopUp:
    top_up_id: str
    request_id: str
    card_id: str
    card_masked: str
    programme_id: str
    currency: str
    amount_minor: int
    holder_part_minor: int
    funder_part_minor: int
    status: TopUpStatus
    created_at: dt.datetime
    expires_at: dt.datetime
    confirmed_at: dt.datetime | None = None
    psp_reference: str = ""
    amount_paid_minor: int = 0
    amount_paid_currency: str = ""  # what the PSP said the holder paid in; "" until confirmed
    reason: str = ""  # why it is refund_due, or the load's answer
    refund_reference: str = ""  # the operator's (or the PSP's) id of the refund, once refunded

    def __post_init__(self) -> None:
        assert self.holder_part_minor + self.funder_part_minor == self.amount_minor, self
        assert self.status is not TopUpStatus.expired, "expired is shown, never stored"

    def shown_status(self, now: dt.datetime) -> TopUpStatus:
        if self.status is TopUpStatus.pending and now > self.expires_at:
            return TopUpStatus.expired
        return self.status

    def asks(self, card_id: str, amount: Money) -> bool:
        """Whether a start of `amount` onto card_id is the request that started this top-up."""
        asked = (card_id, amount.amount_minor, amount.currency)
        return (self.card_id, self.amount_minor, self.currency) == asked

    def money(self, amount_minor: int) -> Money:
        return Money(amount_minor, self.currency)

    @property
    def amount_paid(self) -> Money:
        return Money(self.amount_paid_minor, self.amount_paid_currency or self.currency)


@dataclass(frozen=True, slots=True)
class StartRefusal:
    """Why a top-up cannot start: the request's own fault (`malformed`), or the card's."""

    detail: str
    malformed: bool


def start_refusal(card: CardState, balance_minor: int, amount: Money, today: dt.date) -> StartRefusal | None:
    """A top-up of `amount` onto `card` holding `balance_minor` (committed, less what is reserved)."""
    programme = card.programme
    problem = amount_problem(amount, card.currency)
    if problem is not None:
        return StartRefusal(amount_refusal(problem), malformed=True)
    if programme.kind is ProgrammeKind.gift:
        return StartRefusal(
            f"card {card.masked} is a gift card: only benefit cards are topped up online", False
        )
    # A holder's part of nothing (the funder pays all) is no payment at the PSP: none is confirmed.
    if programme.copayment is None or programme.copayment.numerator_minor == 0:
        return StartRefusal(
            f"card {card.masked}: programme {programme.name} has no co-payment to pay online", False
        )
    step_problem = programme.load_step_problem(amount.amount_minor)
    if step_problem is not None:
        return StartRefusal(f"amount: {step_problem}", malformed=True)
    unusable = usability_problem(card, today)
    if unusable is not None:
        return StartRefusal(f"card {card.masked}: {unusable.detail}", malformed=False)
    if balance_minor + amount.amount_minor > programme.balance_max_minor:
        most, holds = card.money(programme.balance_max_minor), card.money(balance_minor)
        detail = f"card {card.masked} holds {holds.format()} and may hold at most {most.format()}"
        return StartRefusal(detail, malformed=False)
    return None


def amount_refusal(problem: Decision) -> str:
    """A card rule's refusal of a request's amount, naming the field as every other bad input does:
    the card rules' currency words ("card is in EUR, request in USD") name none."""
    if problem.code is ResponseCode.currency_not_accepted:
        return f"amount.currency: {problem.detail}"
    assert problem.detail.startswith("amount"), problem  # "amount must be positive", "amount above …"
    return problem.detail


def paid_problem(amount_paid: Money) -> str | None:
    """Why the PSP's amount_paid is no amount at all, naming the field: the confirmation is refused
    and nothing stored. A real amount not the holder's part (another currency that exists, another
    sum) is a payment made: it leaves the top-up refund_due (confirm_problem)."""
    # A code that is no currency: no payment was made in it, nor refunded in it. One that exists but
    # the switch takes no card in (HUF) is a payment made all the same: refund_due (confirm_problem).
    if not is_currency(amount_paid.currency):
        return f"amount_paid.currency: unknown currency {amount_paid.currency!r}"
    if amount_paid.amount_minor <= 0:  # no payment to load from, nor to refund
        return "amount_paid must be positive"
    if amount_paid.amount_minor > AMOUNT_MINOR_MAX:  # more than any top-up's holder part
        return f"amount_paid above {AMOUNT_MINOR_MAX} minor units"
    return None


def confirm_problem(top_up: TopUp, amount_paid: Money, confirmed_at: dt.datetime) -> str | None:
    """Why the holder's payment does not load the card (it is then refund_due); None when it does.
    The card itself is judged by the load, as at a terminal."""
    if amount_paid.currency != top_up.currency or amount_paid.amount_minor != top_up.holder_part_minor:
        paid, due = amount_paid.format(), top_up.money(top_up.holder_part_minor).format()
        return f"amount paid {paid} is not the holder's part {due}"
    if confirmed_at > top_up.expires_at:
        return f"the top-up expired at {top_up.expires_at.isoformat()}, before the payment was confirmed"
    return None
