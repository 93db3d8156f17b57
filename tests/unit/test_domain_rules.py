"""Domain rules as tables: one row per rule, bad inputs included. No I/O."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from switch.domain import card_rules, ledger
from switch.domain.card_rules import CardState
from switch.domain.cards import (
    CardStatus,
    card_number_from_qr,
    card_number_problem,
    is_luhn_valid,
    luhn_check_digit,
    make_card_number,
    mask,
    qr_payload,
    typed_card_digits,
)
from switch.domain.employees import LockoutPolicy, PinAttempt, after_attempt, manage_problem, pin_problem
from switch.domain.money import Money, proportional_share
from switch.domain.programmes import (
    CoPayment,
    Programme,
    ProgrammeKind,
    commission_minor,
    cycle_payout_minor,
    load_step_setting_problem,
    stored_load_step_minor,
)
from switch.domain.response_codes import ResponseCode as R
from switch.domain.transactions import TransactionStatus as S

TODAY = dt.date(2026, 11, 21)
GIFT = Programme("p", "Gift", ProgrammeKind.gift, "EUR", "600001", 10_000, None, 4, 36)


def card(
    balance_minor: int = 1_000, status: CardStatus = CardStatus.active, expiry: dt.date = dt.date(2028, 1, 1)
) -> CardState:
    return CardState("c", GIFT, "600001******0001", status, expiry, balance_minor)


@pytest.mark.parametrize(
    ("state", "available", "amount", "partial", "accepts", "code", "approved"),
    [
        (card(), 1_000, Money(400, "EUR"), False, True, R.approved, 400),
        (card(), 1_000, Money(1_000, "EUR"), False, True, R.approved, 1_000),
        (card(), 1_000, Money(1_001, "EUR"), False, True, R.exceeds_balance, 0),
        (card(), 1_000, Money(1_500, "EUR"), True, True, R.approved_partial, 1_000),
        (card(0), 0, Money(1, "EUR"), True, True, R.exceeds_balance, 0),
        (card(), 600, Money(700, "EUR"), False, True, R.exceeds_balance, 0),  # reserved by in-flight work
        (card(), 1_000, Money(0, "EUR"), False, True, R.invalid_amount, 0),
        (card(), 1_000, Money(-5, "EUR"), False, True, R.invalid_amount, 0),
        (card(), 1_000, Money(100_000_000, "EUR"), False, True, R.invalid_amount, 0),
        (card(), 1_000, Money(100, "USD"), False, True, R.currency_not_accepted, 0),
        (card(), 1_000, Money(100, "ABC"), False, True, R.currency_not_accepted, 0),
        (card(status=CardStatus.blocked), 1_000, Money(100, "EUR"), False, True, R.card_blocked, 0),
        (card(status=CardStatus.lost), 1_000, Money(100, "EUR"), False, True, R.card_lost, 0),
        (card(expiry=dt.date(2026, 11, 20)), 1_000, Money(100, "EUR"), False, True, R.card_expired, 0),
        (card(), 1_000, Money(100, "EUR"), False, False, R.merchant_not_in_programme, 0),
    ],
)
def test_redemption(
    state: CardState, available: int, amount: Money, partial: bool, accepts: bool, code: R, approved: int
) -> None:
    decision = card_rules.decide_redemption(state, available, amount, partial, accepts, TODAY)
    assert (decision.code, decision.amount_minor) == (code, approved)


@pytest.mark.parametrize(
    ("balance_with_pending", "amount_minor", "code"),
    [
        (0, 500, R.approved),
        (9_500, 500, R.approved),
        (9_501, 500, R.exceeds_amount_limit),
        (0, 0, R.invalid_amount),
    ],
)
def test_load_respects_the_card_limit(balance_with_pending: int, amount_minor: int, code: R) -> None:
    assert (
        card_rules.decide_load(card(0), balance_with_pending, Money(amount_minor, "EUR"), True, TODAY).code
        is code
    )


TAXI = Programme("t", "Taxi", ProgrammeKind.benefit, "EUR", "600002", 10_000, CoPayment(180, 500), 4, 36, 500)


@pytest.mark.parametrize(
    ("programme", "amount_minor", "code"),
    [
        # "Voor elke 5 euro op jouw kaart, moet je zelf maar 1,80 euro betalen": whole 5.00 steps.
        (TAXI, 500, R.approved),
        (TAXI, 5_000, R.approved),
        (TAXI, 1_250, R.amount_not_a_multiple_of_load_step),
        (TAXI, 1, R.amount_not_a_multiple_of_load_step),
        (TAXI, 499, R.amount_not_a_multiple_of_load_step),
        (TAXI, 10_500, R.exceeds_amount_limit),  # a whole step, above the card's limit
        (TAXI, 0, R.invalid_amount),
        (GIFT, 1_250, R.approved),  # a gift card has no co-payment and no step
        (GIFT, 1, R.approved),
    ],
)
def test_a_load_comes_in_whole_steps_of_its_programme(
    programme: Programme, amount_minor: int, code: R
) -> None:
    state = CardState("c", programme, "600002******0001", CardStatus.active, dt.date(2028, 1, 1), 0)
    decision = card_rules.decide_load(state, 0, Money(amount_minor, "EUR"), True, TODAY)
    assert decision.code is code
    if code is R.amount_not_a_multiple_of_load_step:
        assert decision.detail == "loads are in steps of 5.00 EUR"


@pytest.mark.parametrize(
    ("status", "amount_minor", "code"),
    [
        # Started in another step (the programme's changed since): what was paid for is loaded.
        (CardStatus.active, 1_250, R.approved),
        (CardStatus.active, 500, R.approved),
        (CardStatus.active, 10_500, R.exceeds_amount_limit),  # the card's limit is the card's now
        (CardStatus.blocked, 500, R.card_blocked),
        (CardStatus.active, 0, R.invalid_amount),
    ],
)
def test_an_online_top_ups_load_keeps_the_step_it_was_priced_in_and_every_other_rule(
    status: CardStatus, amount_minor: int, code: R
) -> None:
    state = CardState("c", TAXI, "600002******0001", status, dt.date(2028, 1, 1), 0)
    amount = Money(amount_minor, "EUR")
    assert card_rules.decide_load(state, 0, amount, True, TODAY, priced_at_start=True).code is code


def test_the_load_step_is_the_programmes_own_and_a_gift_card_has_none() -> None:
    assert (TAXI.load_step_minor, GIFT.load_step_minor) == (500, None)


@pytest.mark.parametrize(
    ("step_minor", "balance_max_minor", "copay", "problem"),
    [
        (500, 10_000, (180, 500), None),  # the city card: 1.80 per 5.00
        (500, 10_000, (1_800, 5_000), None),  # the same price written per 50.00: still 5.00 steps
        (10, 10_000, (1_800, 5_000), "load_step_minor 10: the co-payment 1800 per 5000 of one step"),
        (100, 10_000, (1_800, 5_000), None),  # 1.00 costs 0.36
        (500, 10_000, (100, 300), "load_step_minor 500: the co-payment 100 per 300 of one step"),
        (300, 10_000, (100, 300), None),
        (500, 400, (180, 500), "load_step_minor 500 is above balance_max_minor 400: no load would fit"),
        (400, 400, None, None),
        (0, 10_000, (180, 500), "load_step_minor must be positive"),
        (-500, 10_000, None, "load_step_minor must be positive"),
        (1, 10_000, None, None),
    ],
)
def test_a_programmes_load_step_fits_its_maximum_and_costs_whole_cents(
    step_minor: int, balance_max_minor: int, copay: tuple[int, int] | None, problem: str | None
) -> None:
    copayment = CoPayment(*copay) if copay is not None else None
    found = load_step_setting_problem(step_minor, balance_max_minor, copayment)
    assert (found or "").startswith(problem or "") and (found is None) == (problem is None), found


@pytest.mark.parametrize(
    ("stored_minor", "balance_max_minor", "copay", "step_minor"),
    [
        (None, 10_000, (180, 500), 500),
        (None, 10_000, (1_800, 5_000), 500),  # stored before the step was its own: 5.00, not 50.00
        (None, 10_000, (100, 300), 300),  # 5.00 costs part of a cent: the denominator, as before
        (None, 10_000, (252, 700), 700),  # 5.00 does not divide 7.00: loads of 7.00 stay taken
        (None, 10_000, None, None),
        (2_000, 10_000, (180, 500), 2_000),
        (250, 10_000, None, 250),
    ],
)
def test_a_programme_stored_before_the_load_step_loads_as_it_can(
    stored_minor: int | None, balance_max_minor: int, copay: tuple[int, int] | None, step_minor: int | None
) -> None:
    copayment = CoPayment(*copay) if copay is not None else None
    assert stored_load_step_minor(stored_minor, balance_max_minor, copayment) == step_minor


@pytest.mark.parametrize(
    ("amount_minor", "status", "refundable", "code"),
    [
        (100, S.approved, 100, R.approved),
        (101, S.approved, 100, R.exceeds_original_amount),
        (50, S.cancelled, 100, R.already_reversed),
    ],
)
def test_refund(amount_minor: int, status: S, refundable: int, code: R) -> None:
    assert (
        card_rules.decide_refund(card(), Money(amount_minor, "EUR"), status, refundable, 1_000, TODAY).code
        is code
    )


@pytest.mark.parametrize(
    ("state", "released", "status", "refundable", "code"),
    [
        (card(), Money(150, "EUR"), S.approved, 400, R.approved),
        (card(), Money(400, "EUR"), S.approved, 400, R.approved),  # completed at 0.00
        (card(), Money(401, "EUR"), S.approved, 400, R.exceeds_original_amount),
        (card(), Money(150, "EUR"), S.reversed, 400, R.already_reversed),
        (card(), Money(150, "USD"), S.approved, 400, R.currency_not_accepted),
        (card(), Money(0, "EUR"), S.approved, 400, R.invalid_amount),
        # An advice: what became of the card since the authorisation does not refuse it.
        (card(status=CardStatus.blocked), Money(150, "EUR"), S.approved, 400, R.approved),
        (card(expiry=dt.date(2026, 1, 1)), Money(150, "EUR"), S.approved, 400, R.approved),
        (card(balance_minor=10_000), Money(150, "EUR"), S.approved, 400, R.approved),  # at the limit
    ],
)
def test_completion(state: CardState, released: Money, status: S, refundable: int, code: R) -> None:
    assert card_rules.decide_completion(state, released, status, refundable).code is code


@pytest.mark.parametrize(
    ("status", "refunded", "takes", "available", "code"),
    [
        (S.approved, 0, 0, 0, R.approved),
        (S.reversed, 0, 0, 0, R.already_reversed),
        (S.approved, 10, 0, 0, R.invalid_transaction),
        (S.approved, 0, 500, 499, R.exceeds_balance),
    ],
)
def test_undo(status: S, refunded: int, takes: int, available: int, code: R) -> None:
    assert card_rules.decide_undo(status, refunded, takes, available).code is code


@pytest.mark.parametrize(
    ("amount", "holder", "funder"),
    [
        (500, 180, 320),
        (1_000, 360, 640),
        (1_250, 450, 800),
        (1, 1, 0),
        (3, 2, 1),
        (2_001, 721, 1_280),
        (0, 0, 0),
    ],
)
def test_co_payment_split(amount: int, holder: int, funder: int) -> None:
    assert CoPayment(180, 500).split(amount) == (holder, funder)


@pytest.mark.parametrize(
    ("gross", "basis_points", "commission"), [(10_000, 250, 250), (199, 250, 5), (0, 250, 0), (100, 0, 0)]
)
def test_commission(gross: int, basis_points: int, commission: int) -> None:
    assert commission_minor(gross, basis_points) == commission


@pytest.mark.parametrize(
    ("owed_at_run", "balance", "paid"),
    [
        (1_000, 1_000, 1_000),  # the cycle's run
        (1_000, 1_400, 1_000),  # redeemed since the run: the next cycle's
        (1_000, 600, 600),  # refunded since the run: taken off
        (0, 400, 0),  # owed nothing at the run: nothing until the next cycle
        (1_000, 0, 0),  # paid already, or all refunded
        (1_000, -200, 0),  # owes the programme
        (0, -200, 0),
    ],
)
def test_cycle_payout(owed_at_run: int, balance: int, paid: int) -> None:
    assert cycle_payout_minor(owed_at_run, balance) == paid


def test_proportional_share_rounds_half_up() -> None:
    assert (
        proportional_share(1, 1, 2) == 1
        and proportional_share(3, 1, 4) == 1
        and proportional_share(1, 1, 4) == 0
    )


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        (make_card_number("600001", 42), None),
        ("", "card_number is empty"),
        ("60000100000004x", "card_number must contain digits only"),
        ("12345", "card_number must have 16 digits, got 5"),
        (
            make_card_number("600001", 42)[:-1] + "0"
            if make_card_number("600001", 42)[-1] != "0"
            else make_card_number("600001", 42)[:-1] + "1",
            "card_number fails the Luhn check",
        ),
    ],
)
def test_card_numbers(number: str, problem: str | None) -> None:
    assert card_number_problem(number) == problem


# (number, Luhn-valid): odd and even lengths, so the digit doubled is counted from the right
LUHN_NUMBERS: list[tuple[str, bool]] = [
    ("79927398713", True),  # the textbook example
    ("79927398710", False),
    ("79927398717", False),
    ("4111111111111111", True),
    ("4111111111111112", False),
    ("5500005555555559", True),
    ("6011000990139424", True),
    ("378282246310005", True),  # 15 digits
    ("378282246310006", False),
    ("6331101999990016", True),
    ("6331101999990061", False),  # the last two swapped
    ("00", True),
    ("18", True),
    ("81", False),
    ("59", True),
    ("0", False),  # too short to hold a check digit
    ("", False),
    ("4111 1111 1111 1111", False),
    ("411111111111111\u0661", False),  # an Arabic-Indic one: ASCII digits only
    ("4111111111111111\n", False),
]


@pytest.mark.parametrize(("number", "valid"), LUHN_NUMBERS)
def test_luhn(number: str, valid: bool) -> None:
    assert is_luhn_valid(number) is valid
    if number and number.isascii() and number.isdigit() and len(number) >= 2:
        assert (luhn_check_digit(number[:-1]) == number[-1]) is valid
        assert (card_number_problem(number) == "card_number fails the Luhn check") is (
            not valid and len(number) == 16
        )


def test_every_changed_digit_of_a_card_number_fails_luhn() -> None:
    number = make_card_number("600001", 4242)
    for index, digit in enumerate(number):
        for other in "0123456789".replace(digit, ""):
            changed = number[:index] + other + number[index + 1 :]
            assert card_number_problem(changed) == "card_number fails the Luhn check", (index, other)


# (how a person typed it, the digits read, or None: not a card number as typed)
TYPED_CARD_NUMBERS: list[tuple[str, str | None]] = [
    ("6001019999999999", "6001019999999999"),
    ("6001 0199 9999 9999", "6001019999999999"),
    ("6001-0199-9999-9999", "6001019999999999"),
    ("600101 9999999999", "6001019999999999"),
    ("6001 0199 9999 99999", "60010199999999999"),  # the wrong count: read, for the refusal to say so
    ("600101999999", "600101999999"),
    ("6001 0199 9999 9999 9", None),  # more groups than a card prints
    ("6001  0199 9999 9999", None),
    ("6001 -0199 9999 9999", None),
    ("6001.0199.9999.9999", None),
    ("6001 0199 9999 9999-", None),
    (" 6001019999999999", None),
    ("card_404", None),
    ("", None),
]


@pytest.mark.parametrize(("typed", "digits"), TYPED_CARD_NUMBERS)
def test_a_card_number_as_a_person_types_it(typed: str, digits: str | None) -> None:
    assert typed_card_digits(typed) == digits


def test_card_number_shape_qr_and_mask() -> None:
    number = make_card_number("600001", 123)
    assert is_luhn_valid(number) and number.startswith("600001") and len(number) == 16
    assert card_number_from_qr(qr_payload(number)) == number and card_number_from_qr("https://x") is None
    assert mask(number) == number[:6] + "******" + number[-4:]


def test_entries_must_balance() -> None:
    entry = ledger.redemption_entry("k", "EUR", "c", 100, merchant_id="m", programme_id="p")
    assert sum(p.amount_minor for p in entry.postings) == 0
    assert entry.reversed("u", "reversal").delta_for(ledger.card_account("c")) == 100
    with pytest.raises(AssertionError):
        ledger.JournalEntry(
            "k", "x", "EUR", (ledger.Posting("card:c", -100), ledger.Posting("merchant:m:payable", 99))
        )
    load = ledger.load_entry("k", "EUR", "c", "p", 180, 320)
    assert (
        load.delta_for(ledger.card_account("c")) == 500 and load.delta_for(ledger.funder_account("p")) == -320
    )


POLICY = LockoutPolicy(tries_max=3, lock_duration_s=900)
NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("state", "matches", "code", "failed_after", "locked_after"),
    [
        (PinAttempt(0, None), True, R.approved, 0, False),
        (PinAttempt(0, None), False, R.incorrect_pin, 1, False),
        (PinAttempt(1, None), False, R.incorrect_pin, 2, False),
        (PinAttempt(2, None), False, R.employee_locked, 0, True),
        (PinAttempt(2, None), True, R.approved, 0, False),
        (PinAttempt(0, NOW + dt.timedelta(seconds=1)), True, R.employee_locked, 0, True),
        (PinAttempt(0, NOW - dt.timedelta(seconds=1)), True, R.approved, 0, False),
    ],
)
def test_employee_pin_lockout(
    state: PinAttempt, matches: bool, code: R, failed_after: int, locked_after: bool
) -> None:
    after, answer = after_attempt(state, matches, POLICY, NOW)
    assert (
        answer is code
        and after.failed_tries == failed_after
        and (after.locked_until is not None and after.locked_until > NOW) == locked_after
    )


@pytest.mark.parametrize(
    ("pin", "problem"),
    [
        ("1234", None),
        ("", "employee pin is empty"),
        ("123", "employee pin must be exactly 4 digits"),
        ("12a4", "employee pin must be exactly 4 digits"),
    ],
)
def test_employee_pin_format(pin: str, problem: str | None) -> None:
    assert pin_problem(pin) == problem


FORBIDDEN = {
    "grpc",
    "google",
    "pykka",
    "trio",
    "sqlalchemy",
    "prometheus_client",
    "asyncssh",
    "actors",
    "protocols",
}


def test_domain_imports_no_infrastructure() -> None:
    domain = Path(__file__).resolve().parents[2] / "switch" / "domain"
    for path in domain.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in FORBIDDEN, f"{path.name} imports {name}"
                assert not name.startswith(("switch.store", "switch.server", "switch.core")), (
                    f"{path.name} imports {name}"
                )


@pytest.mark.parametrize(
    ("login_role", "roles", "allowed"),
    [
        ("owner", ("manager",), True),
        ("owner", ("cashier", "manager"), True),  # the merchant's account promotes a cashier
        ("manager", ("cashier",), True),
        ("manager", ("cashier", "cashier"), True),
        ("manager", ("manager",), False),  # another manager (or itself): not a manager's to change
        ("manager", ("cashier", "manager"), False),  # making a manager
        ("manager", ("manager", "cashier"), False),  # lowering a manager
        ("cashier", ("cashier",), False),
        ("auditor", ("cashier",), False),  # a role the table does not know may manage nobody
    ],
)
def test_whose_users_a_login_manages(login_role: str, roles: tuple[str, ...], allowed: bool) -> None:
    problem = manage_problem(login_role, *roles)
    assert (problem is None) == allowed
    if problem is not None:
        assert problem.startswith(f"a {login_role} may not add or change a ")


def test_splitting_a_load_into_cents_never_lowers_the_holders_part() -> None:
    co_payment = CoPayment(180, 500)
    whole_holder, _ = co_payment.split(20)
    assert sum(co_payment.split(1)[0] for _ in range(20)) >= whole_holder == 8


def test_a_load_through_a_shop_outside_the_programme_is_declined() -> None:
    decision = card_rules.decide_load(card(0), 0, Money(500, "EUR"), False, TODAY)
    assert decision.code is R.merchant_not_in_programme
