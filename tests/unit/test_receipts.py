"""The receipt's address check and text: pure rules, no mail server."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from switch.domain.money import Money
from switch.domain.receipts import (
    LOGO_BYTES_MAX,
    BadEmailError,
    ReceiptFacts,
    ReceiptLayout,
    checked_email,
    logo_problem,
    masked_email,
    render,
    sample_facts,
)
from switch.domain.response_codes import ResponseCode
from tests.images import tiny_png

FACTS = ReceiptFacts(
    merchant_name="Bakkerij Jansen",
    location_name="Markt",
    device_name="A77-kassa",
    terminal_id="trm_1",
    transaction_id="t-1",
    transaction_type="payment",
    payment_method="contactless",
    result=ResponseCode.approved,
    status="approved",
    at=dt.datetime(2026, 11, 22, 7, 30, tzinfo=dt.UTC).astimezone(zoneinfo.ZoneInfo("Europe/Amsterdam")),
    amount=Money(1_995, "EUR"),
    card_masked="476173******0010",
    authorization_code="A1B2C3",
    balance_after=None,
)


@pytest.mark.parametrize(
    "address", ["jane@example.com", "j.doe+bon@mail.example.nl", "X_Y@sub-domain.example.co.uk"]
)
def test_ordinary_addresses_pass(address: str) -> None:
    assert checked_email(address) == address


@pytest.mark.parametrize(
    "address",
    [
        "jane@",
        "@example.com",
        "jane@example",
        "jane@-example.com",
        "jane@example.c0m",
        "ja ne@example.com",
        "jane@example.com\n",
        "jané@example.com",
        ".jane@example..com",
    ],
)
def test_odd_addresses_are_refused(address: str) -> None:
    with pytest.raises(BadEmailError):
        checked_email(address)


def test_the_masked_address_keeps_only_the_first_letter_and_the_domain() -> None:
    assert masked_email("jane.doe@example.com") == "j***@example.com"


def test_a_payment_receipt_reads_like_the_terminals_screen() -> None:
    subject, body = render(FACTS, ReceiptLayout(header="Markt 3\nOpen 7-18", footer="Dank u wel!"))
    assert subject == "Receipt Bakkerij Jansen: card payment 19.95 EUR"
    assert body.splitlines() == [
        "Bakkerij Jansen",
        "Markt",
        "Markt 3",
        "Open 7-18",
        "",
        "CARD PAYMENT",
        "Date          2026-11-22 08:30:00 CET",
        "Terminal      A77-kassa (trm_1)",
        "Transaction   t-1",
        "Card          476173******0010",
        "Method        contactless",
        "Amount        19.95 EUR",
        "Auth. code    A1B2C3",
        "Result        00 Approved",
        "",
        "Dank u wel!",
    ]


def test_a_reversal_that_moved_nothing_shows_no_amount_and_says_what_became_of_it() -> None:
    facts = ReceiptFacts(
        **{**{f: getattr(FACTS, f) for f in FACTS.__slots__}, "amount": None, "status": "reversed"}
    )
    subject, body = render(facts, ReceiptLayout())
    assert subject.endswith(" - (reversed)")  # what became of it, in the subject too
    assert "Amount        -" in body and "Now           reversed" in body


@pytest.mark.parametrize(
    ("logo", "problem"),
    [
        (tiny_png(384, 120), None),
        (tiny_png(576, 384), None),  # the largest
        (tiny_png(1, 1), None),
        (tiny_png(577, 10), "logo_png is 577x10 pixels; at most 576x384"),
        (tiny_png(10, 385), "logo_png is 10x385 pixels; at most 576x384"),
        (tiny_png(0, 10), "logo_png is 0x10 pixels; at most 576x384"),
        (b"GIF89a" + bytes(40), "logo_png is not a PNG image"),
        (tiny_png(10, 10)[:20], "logo_png is not a PNG image"),  # cut off inside its header
        (tiny_png(10, 10)[:12] + b"IDAT" + tiny_png(10, 10)[16:], "logo_png is not a PNG image"),
        (tiny_png(10, 10) + bytes(LOGO_BYTES_MAX), f"is {LOGO_BYTES_MAX + len(tiny_png(10, 10))} bytes"),
    ],
)
def test_a_receipt_logo_is_a_png_within_the_limits(logo: bytes, problem: str | None) -> None:
    found = logo_problem(logo)
    assert found is None if problem is None else found is not None and problem in found


def test_the_layouts_preview_names_its_made_up_terminal_once() -> None:
    # It read "Terminal      A77 (preview) (preview)".
    at = dt.datetime(2026, 12, 7, 8, 51, tzinfo=zoneinfo.ZoneInfo("Europe/Amsterdam"))
    _subject, body = render(sample_facts("Demo Bakery", "Main Street", at), ReceiptLayout())
    terminal_lines = [line for line in body.splitlines() if line.startswith("Terminal")]
    assert terminal_lines == ["Terminal      A77 (preview)"]
