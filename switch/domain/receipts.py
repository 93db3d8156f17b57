"""The customer's receipt by e-mail: the address checked, the receipt's text, the address masked.

A receipt shows what the terminal's screen showed: the shop, the terminal, the time on the
shop's clock, the kind of transaction, the masked card, the amount, the answer. It never holds
more of the card than the masked number the switch stores.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode

EMAIL_LENGTH_MAX = 254
EMAIL_LOCAL_LENGTH_MAX = 64
RECEIPT_TEXT_LENGTH_MAX = 500  # a merchant's header or footer
_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOP_LEVEL = re.compile(r"[A-Za-z]{2,63}")

TITLES = {
    "redemption": "GIFT CARD PAYMENT",
    "load": "CARD TOP-UP",
    "refund": "REFUND",
    "cancel": "CANCELLATION",
    "reversal": "REVERSAL",
    "payment": "CARD PAYMENT",
}


class BadEmailError(ValueError):
    """An address the switch will not send to; the message says why, without repeating it."""


def checked_email(address: str) -> str:
    """The address if a mail server can take it as one recipient; BadEmailError otherwise.

    Deliberately narrow: no display names, comments, quoted local parts or address literals, and
    no character that could end a header line (so no header can be smuggled into the message).
    """
    if not address:
        raise BadEmailError("email is missing")
    if len(address) > EMAIL_LENGTH_MAX:
        raise BadEmailError(f"email is {len(address)} characters; at most {EMAIL_LENGTH_MAX}")
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise BadEmailError("email must look like name@example.com")
    if len(local) > EMAIL_LOCAL_LENGTH_MAX or not _LOCAL.fullmatch(local) or ".." in local:
        raise BadEmailError("email: the part before @ has characters or dots a mailbox cannot have")
    labels = domain.split(".")
    if (
        len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or not _TOP_LEVEL.fullmatch(labels[-1])
    ):
        raise BadEmailError("email: the part after @ is not a domain name like example.com")
    return address


def masked_email(address: str) -> str:
    """Enough to recognise the address on a screen or in a log, not enough to write to it."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


@dataclass(frozen=True, slots=True)
class ReceiptLayout:
    """What a merchant adds to every receipt: a header (address, opening hours), a footer (returns)
    and the shop's logo (PNG) above it all."""

    header: str = ""
    footer: str = ""
    logo_png: bytes = field(default=b"", repr=False)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOGO_BYTES_MAX = 65_536
# A receipt is 58 mm wide, 384 dots on a terminal's printer; the logo heads an e-mail too.
LOGO_WIDTH_MAX_PX = 576
LOGO_HEIGHT_MAX_PX = 384


def logo_problem(png: bytes) -> str | None:
    """Why these bytes cannot be a receipt logo, or None: a PNG image, its size and its pixels
    within the limits (read from the image's IHDR header)."""
    if len(png) > LOGO_BYTES_MAX:
        return f"logo_png is {len(png)} bytes; at most {LOGO_BYTES_MAX}"
    if not png.startswith(PNG_SIGNATURE) or len(png) < 33 or png[12:16] != b"IHDR":
        return "logo_png is not a PNG image"
    width_px, height_px = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    if not (0 < width_px <= LOGO_WIDTH_MAX_PX and 0 < height_px <= LOGO_HEIGHT_MAX_PX):
        return f"logo_png is {width_px}x{height_px} pixels; at most {LOGO_WIDTH_MAX_PX}x{LOGO_HEIGHT_MAX_PX}"
    return None


def sample_facts(merchant_name: str, location_name: str, at: dt.datetime) -> ReceiptFacts:
    """A made-up approved gift-card payment, for the merchant's preview of the layout."""
    return ReceiptFacts(
        merchant_name=merchant_name,
        location_name=location_name,
        device_name="A77",  # shown as "A77 (preview)", the terminal id in brackets
        terminal_id="preview",
        transaction_id="preview",
        transaction_type="redemption",
        payment_method="stored_value",
        result=ResponseCode.approved,
        status="approved",
        at=at,
        amount=Money(1_250, "EUR"),
        card_masked="600101******1234",
        authorization_code="123456",
        balance_after=Money(3_750, "EUR"),
    )


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    merchant_name: str
    location_name: str
    device_name: str
    terminal_id: str
    transaction_id: str
    transaction_type: str
    payment_method: str
    result: ResponseCode
    status: str
    at: dt.datetime  # on the shop's clock
    amount: Money | None  # approved, or requested when declined; None when nothing was asked
    card_masked: str
    authorization_code: str
    balance_after: Money | None


def render(facts: ReceiptFacts, layout: ReceiptLayout) -> tuple[str, str]:
    """(subject, plain-text body) of the receipt."""
    title = TITLES.get(facts.transaction_type, facts.transaction_type.upper())
    approved = facts.result in (ResponseCode.approved, ResponseCode.approved_partial)
    amount = facts.amount.format() if facts.amount is not None else "-"
    # One line: a merchant name pasted with a line break made the header, and the whole round, fail.
    merchant = " ".join(facts.merchant_name.split())
    subject = f"Receipt {merchant}: {title.lower()} {amount}"
    if not approved:
        subject += " (not approved)"
    elif facts.status not in ("approved", "declined"):
        subject += f" ({facts.status})"  # a cancelled sale must not read as one that stands
    lines = [facts.merchant_name, facts.location_name]
    lines += [line for line in layout.header.splitlines() if line.strip()]
    lines += [
        "",
        f"{title}",
        _row("Date", facts.at.strftime("%Y-%m-%d %H:%M:%S %Z")),
        _row("Terminal", f"{facts.device_name} ({facts.terminal_id})"),
        _row("Transaction", facts.transaction_id),
        _row("Card", facts.card_masked or "-"),
        _row("Method", facts.payment_method.replace("_", " ")),
        _row("Amount", amount),
    ]
    if facts.authorization_code:
        lines.append(_row("Auth. code", facts.authorization_code))
    if facts.balance_after is not None and approved:
        lines.append(_row("Balance left", facts.balance_after.format()))
    lines.append(_row("Result", f"{facts.result.iso_code} {facts.result.message}"))
    if facts.status not in ("approved", "declined"):
        lines.append(_row("Now", facts.status))
    lines += ["", *(line for line in layout.footer.splitlines() if line.strip())]
    return subject, "\n".join(lines).rstrip() + "\n"


def _row(label: str, value: str) -> str:
    return f"{label:<14}{value}"
