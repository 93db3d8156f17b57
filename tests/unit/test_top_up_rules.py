"""Online top-up rules as tables: starting one, judging the PSP's confirmation. No I/O."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.domain.money import Money
from switch.domain.programmes import CoPayment, Programme, ProgrammeKind
from switch.domain.top_ups import TopUp, TopUpStatus, confirm_problem, paid_problem, start_refusal

TODAY = dt.date(2026, 12, 7)
TAXI = Programme("t", "Taxi", ProgrammeKind.benefit, "EUR", "600002", 50_000, CoPayment(180, 500), 4, 36, 500)
NO_COPAY = Programme("n", "Free", ProgrammeKind.benefit, "EUR", "600003", 50_000, None, 4, 36)
FUNDED = Programme(
    "f", "Funded", ProgrammeKind.benefit, "EUR", "600004", 50_000, CoPayment(0, 500), 4, 36, 500
)
GIFT = Programme("g", "Gift", ProgrammeKind.gift, "EUR", "600001", 50_000, None, 4, 36)
MASKED = "600002******0001"


def card(
    programme: Programme = TAXI, status: CardStatus = CardStatus.active, expiry: dt.date = TODAY
) -> CardState:
    return CardState("c", programme, MASKED, status, expiry, 0)


@pytest.mark.parametrize(
    ("state", "balance_minor", "amount", "detail", "malformed"),
    [
        (card(), 0, Money(1_000, "EUR"), None, False),
        (card(), 49_000, Money(1_000, "EUR"), None, False),  # exactly the maximum
        (
            card(),
            49_500,
            Money(1_000, "EUR"),
            f"card {MASKED} holds 495.00 EUR and may hold at most 500.00 EUR",
            False,
        ),
        (card(), 0, Money(0, "EUR"), "amount must be positive", True),
        (card(), 0, Money(-500, "EUR"), "amount must be positive", True),
        (card(), 0, Money(100_000_000, "EUR"), "amount above 99999999 minor units", True),
        (card(), 0, Money(1_234, "EUR"), "amount: loads are in steps of 5.00 EUR", True),
        (card(), 0, Money(500, "USD"), "amount.currency: card is in EUR, request in USD", True),
        (card(), 0, Money(500, "XYZ"), "amount.currency: unknown currency 'XYZ'", True),
        (
            card(GIFT),
            0,
            Money(500, "EUR"),
            f"card {MASKED} is a gift card: only benefit cards are topped up online",
            False,
        ),
        (
            card(NO_COPAY),
            0,
            Money(500, "EUR"),
            f"card {MASKED}: programme Free has no co-payment to pay online",
            False,
        ),
        (  # the funder pays all: nothing for the PSP to take, so no confirmation could come
            card(FUNDED),
            0,
            Money(500, "EUR"),
            f"card {MASKED}: programme Funded has no co-payment to pay online",
            False,
        ),
        (card(status=CardStatus.blocked), 0, Money(500, "EUR"), f"card {MASKED}: card is blocked", False),
        (card(status=CardStatus.lost), 0, Money(500, "EUR"), f"card {MASKED}: card is lost", False),
        (
            card(expiry=TODAY - dt.timedelta(days=1)),
            0,
            Money(500, "EUR"),
            f"card {MASKED}: card expired on 2026-12-06",
            False,
        ),
    ],
)
def test_start_refusal(
    state: CardState, balance_minor: int, amount: Money, detail: str | None, malformed: bool
) -> None:
    refusal = start_refusal(state, balance_minor, amount, TODAY)
    assert (refusal and (refusal.detail, refusal.malformed)) == (detail and (detail, malformed))


STARTED = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
PENDING = TopUp(
    "tup_1",
    "r",
    "c",
    MASKED,
    "t",
    "EUR",
    1_000,
    360,
    640,
    TopUpStatus.pending,
    STARTED,
    STARTED + dt.timedelta(minutes=30),
)


@pytest.mark.parametrize(
    ("paid", "after_s", "problem"),
    [
        (Money(360, "EUR"), 60, None),
        (Money(360, "EUR"), 1_800, None),  # at the expiry itself
        (Money(350, "EUR"), 60, "amount paid 3.50 EUR is not the holder's part 3.60 EUR"),
        (Money(1_000, "EUR"), 60, "amount paid 10.00 EUR is not the holder's part 3.60 EUR"),
        (Money(360, "USD"), 60, "amount paid 3.60 USD is not the holder's part 3.60 EUR"),
        # Paid in a currency the switch takes no card in: shown in that currency's decimals.
        (Money(360, "BHD"), 60, "amount paid 0.360 BHD is not the holder's part 3.60 EUR"),
        (Money(1_250, "KWD"), 60, "amount paid 1.250 KWD is not the holder's part 3.60 EUR"),
        (Money(360, "CLP"), 60, "amount paid 360 CLP is not the holder's part 3.60 EUR"),
        (Money(360, "KRW"), 60, "amount paid 360 KRW is not the holder's part 3.60 EUR"),
        (Money(36_000, "CLF"), 60, "amount paid 3.6000 CLF is not the holder's part 3.60 EUR"),
        (Money(360, "HUF"), 60, "amount paid 3.60 HUF is not the holder's part 3.60 EUR"),
        (
            Money(360, "EUR"),
            1_801,
            "the top-up expired at 2026-12-07T10:30:00+00:00, before the payment was confirmed",
        ),
    ],
)
def test_confirm_problem(paid: Money, after_s: int, problem: str | None) -> None:
    assert confirm_problem(PENDING, paid, STARTED + dt.timedelta(seconds=after_s)) == problem


def test_a_pending_top_up_past_its_expiry_shows_expired_and_a_judged_one_its_status() -> None:
    assert PENDING.shown_status(STARTED + dt.timedelta(minutes=30)) is TopUpStatus.pending
    assert PENDING.shown_status(STARTED + dt.timedelta(minutes=31)) is TopUpStatus.expired
    refund_due = dataclasses.replace(PENDING, status=TopUpStatus.refund_due)
    assert refund_due.shown_status(STARTED + dt.timedelta(days=1)) is TopUpStatus.refund_due


@pytest.mark.parametrize(
    ("paid", "problem"),
    [
        (Money(180, "EUR"), None),
        (Money(180, "USD"), None),  # a payment made: refund_due (confirm_problem), not refused
        (Money(99_999_999, "EUR"), None),
        (Money(180, "XYZ"), "amount_paid.currency: unknown currency 'XYZ'"),
        (Money(0, "EUR"), "amount_paid must be positive"),
        (Money(-180, "EUR"), "amount_paid must be positive"),
        (Money(100_000_000, "EUR"), "amount_paid above 99999999 minor units"),
    ],
)
def test_paid_problem(paid: Money, problem: str | None) -> None:
    assert paid_problem(paid) == problem
