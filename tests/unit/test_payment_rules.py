"""Table-driven rules of bank-card payments: CVM, card data checks, EMV field 55, fingerprint."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from switch.domain.cvm import Cvm, CvmPolicy, missing_cvm, required_cvm
from switch.domain.money import Money
from switch.domain.payments import (
    BankCard,
    EmvData,
    EntryMode,
    Pay,
    emv_problem,
    emv_tlv_hex,
    expiry_problem,
    is_expired,
    pan_problem,
    payment_fingerprint,
    refund_over_takings_problem,
    track2_problem,
)

POLICY = CvmPolicy()
EUR = "EUR"

CVM_CASES = [
    # entry mode, amount, currency, PIN entered, required CVM, decline detail (None: go ahead)
    (EntryMode.chip, 100, EUR, False, Cvm.online_pin, "chip payments need an online PIN"),
    (EntryMode.chip, 100, EUR, True, Cvm.online_pin, None),
    (EntryMode.contactless, 5_000, EUR, False, Cvm.no_cvm, None),
    (
        EntryMode.contactless,
        5_001,
        EUR,
        False,
        Cvm.online_pin,
        "contactless above 50.00 EUR needs an online PIN",
    ),
    (EntryMode.contactless, 5_001, EUR, True, Cvm.online_pin, None),
    (EntryMode.contactless, 1, "USD", False, Cvm.online_pin, "contactless in USD needs an online PIN"),
    (EntryMode.contactless, 100, EUR, True, Cvm.no_cvm, None),
    (EntryMode.magstripe, 1_000_000, EUR, False, Cvm.no_cvm, None),
]


@pytest.mark.parametrize(("mode", "amount_minor", "currency", "has_pin", "cvm", "detail"), CVM_CASES)
def test_cvm_rules(
    mode: EntryMode, amount_minor: int, currency: str, has_pin: bool, cvm: Cvm, detail: str | None
) -> None:
    amount = Money(amount_minor, currency)
    assert required_cvm(mode, amount, POLICY) is cvm
    assert missing_cvm(mode, amount, has_pin, POLICY) == detail


def test_contactless_limit_is_configurable() -> None:
    policy = CvmPolicy({"EUR": 2_500})
    assert required_cvm(EntryMode.contactless, Money(2_501, EUR), policy) is Cvm.online_pin
    assert required_cvm(EntryMode.contactless, Money(2_500, EUR), policy) is Cvm.no_cvm


PAN_CASES = [
    ("4111111111111111", None),
    ("", "pan is missing"),
    ("4111 1111 1111 1111", "pan must be digits only"),
    ("41111111111", "pan must be 12-19 digits"),
    ("41111111111111111111", "pan must be 12-19 digits"),
    ("4111111111111112", "pan fails the Luhn check"),
]


@pytest.mark.parametrize(("pan", "problem"), PAN_CASES)
def test_pan_problems_never_quote_the_pan(pan: str, problem: str | None) -> None:
    assert pan_problem(pan) == problem
    if pan and problem:
        assert pan not in problem


@pytest.mark.parametrize(
    ("expiry", "problem"),
    [
        ("3012", None),
        ("301", "expiry_yymm must be 4 digits YYMM"),
        ("3000", "expiry_yymm has a month outside 01-12"),
    ],
)
def test_expiry_shape(expiry: str, problem: str | None) -> None:
    assert expiry_problem(expiry) == problem


@pytest.mark.parametrize(
    ("expiry", "today", "expired"),
    [
        ("2611", dt.date(2026, 11, 30), False),
        ("2610", dt.date(2026, 11, 1), True),
        ("2701", dt.date(2026, 12, 31), False),
    ],
)
def test_card_is_valid_through_its_expiry_month(expiry: str, today: dt.date, expired: bool) -> None:
    assert is_expired(expiry, today) is expired


PAN = "4111111111111111"


@pytest.mark.parametrize(
    ("track2", "problem"),
    [
        (f"{PAN}=3012201000", None),
        (f"{PAN}D3012201000", None),
        ("", "track2 is missing (magstripe needs it)"),
        (f"{PAN}3012201000", "track2 must be PAN, '=' and at least expiry and service code, digits only"),
        ("4111111111111129=3012201000", "track2 does not belong to card.pan"),
        (f"{PAN}=30122010000000000000000", "track2 is longer than 37 characters"),
    ],
)
def test_track2(track2: str, problem: str | None) -> None:
    assert track2_problem(track2, PAN) == problem


EMV = EmvData("1A2B3C4D5E6F7081", "80", "0042", "DEADBEEF", "0000008000", "A0000000031010")


@pytest.mark.parametrize(
    ("emv", "required", "problem"),
    [
        (EMV, True, None),
        (None, True, "emv is missing (chip needs it)"),
        (None, False, None),
        (dataclasses.replace(EMV, atc=""), True, "emv.atc is missing"),
        (dataclasses.replace(EMV, tvr="00000080"), True, "emv.tvr must be hex of length 10"),
        (dataclasses.replace(EMV, aid="A00000000Z"), True, "emv.aid must be hex of length 10-32 (even)"),
    ],
)
def test_emv_minimal_fields(emv: EmvData | None, required: bool, problem: str | None) -> None:
    assert emv_problem(emv, required) == problem


def test_emv_field_55_is_tlv_of_the_minimal_tags() -> None:
    assert emv_tlv_hex(EMV) == (
        "9F26081A2B3C4D5E6F70819F2701809F360200429F3704DEADBEEF950500000080004F07A0000000031010"
    )


def test_fingerprint_covers_content_but_not_the_pin_block() -> None:
    card = BankCard(PAN, "3012", EntryMode.chip, EMV)
    pay = Pay("t-1", 1, Money(1_000, EUR), card, b"\x01" * 16, 4)
    same_other_block = dataclasses.replace(pay, pin_block=b"\x02" * 16)
    other_amount = dataclasses.replace(pay, amount=Money(1_001, EUR))
    assert payment_fingerprint(pay, "h") == payment_fingerprint(same_other_block, "h")
    assert payment_fingerprint(pay, "h") != payment_fingerprint(other_amount, "h")
    assert payment_fingerprint(pay, "h") != payment_fingerprint(pay, "other card")
    assert PAN not in repr(pay) and repr(pay.pin_block) not in repr(pay)


@pytest.mark.parametrize(
    ("amount", "takings_left_minor", "problem"),
    [
        (Money(1_000, EUR), 1_000, None),  # exactly what was taken
        (Money(1, EUR), 5_000, None),
        (Money(1_001, EUR), 1_000, "not yet refunded: 10.00 EUR"),
        (Money(1, EUR), 0, "not yet refunded: 0.00 EUR"),
        # more refunded than taken (a sale cancelled after its refund) leaves nothing, not less
        (Money(1, EUR), -700, "not yet refunded: 0.00 EUR"),
        (Money(500, "JPY"), 499, "not yet refunded: 499 JPY"),
    ],
)
def test_a_card_refund_takes_at_most_the_takings_left(
    amount: Money, takings_left_minor: int, problem: str | None
) -> None:
    found = refund_over_takings_problem(amount, takings_left_minor)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.endswith(problem)
