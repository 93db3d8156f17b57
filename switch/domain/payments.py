"""Bank-card payments as domain records: entry modes, card data, the Pay command and its checks."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from dataclasses import dataclass, field
from typing import Final

from switch.domain.cards import is_luhn_valid
from switch.domain.money import Money
from switch.domain.transactions import TransactionType

PAN_DIGITS_MIN: Final = 12
PAN_DIGITS_MAX: Final = 19
TRACK2_CHARS_MAX: Final = 37
SEQUENCE_NUMBER_MAX: Final = 999_999
# ISO 8583 field 3 of an authorisation: a purchase debits the card, a refund credits it.
PURCHASE_PROCESSING_CODE: Final = "000000"
REFUND_PROCESSING_CODE: Final = "200000"
# EMV tag -> (field name, hex characters allowed); the minimal set a chip authorisation carries.
EMV_FIELDS: Final[tuple[tuple[str, str, tuple[int, ...]], ...]] = (
    ("9F26", "application_cryptogram", (16,)),
    ("9F27", "cryptogram_information", (2,)),
    ("9F36", "atc", (4,)),
    ("9F37", "unpredictable_number", (8,)),
    ("95", "tvr", (10,)),
    ("4F", "aid", tuple(range(10, 33, 2))),
)


class EntryMode(enum.Enum):
    """How the card was read; also the payment method in day-close totals."""

    contactless = "contactless"
    chip = "chip"
    magstripe = "magstripe"


@dataclass(frozen=True, slots=True)
class EmvData:
    """Hex values of the minimal EMV tags, keyed by field name (see EMV_FIELDS)."""

    application_cryptogram: str = field(repr=False)
    cryptogram_information: str
    atc: str
    unpredictable_number: str
    tvr: str
    aid: str


@dataclass(frozen=True, slots=True)
class BankCard:
    """Card data of one payment; the PAN and track never appear in a repr."""

    pan: str = field(repr=False)
    expiry_yymm: str = field(repr=False)
    entry_mode: EntryMode
    emv: EmvData | None = None
    track2: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Pay:
    transaction_id: str
    sequence_number: int
    amount: Money
    card: BankCard
    pin_block: bytes = field(default=b"", repr=False)
    pin_block_format: int = 4
    # A refund to the card presented (processing code 20): money goes back to the cardholder.
    refund: bool = False

    @property
    def has_pin(self) -> bool:
        return bool(self.pin_block)

    @property
    def kind(self) -> TransactionType:
        """The transaction type it is stored under."""
        return TransactionType.refund if self.refund else TransactionType.payment


@dataclass(frozen=True, slots=True)
class AbortPayment:
    transaction_id: str


def pan_problem(pan: str) -> str | None:
    """What is wrong with a PAN, never quoting it."""
    if not pan:
        return "pan is missing"
    if not (pan.isascii() and pan.isdigit()):
        return "pan must be digits only"
    if not PAN_DIGITS_MIN <= len(pan) <= PAN_DIGITS_MAX:
        return f"pan must be {PAN_DIGITS_MIN}-{PAN_DIGITS_MAX} digits"
    if not is_luhn_valid(pan):
        return "pan fails the Luhn check"
    return None


def expiry_problem(expiry_yymm: str) -> str | None:
    if len(expiry_yymm) != 4 or not expiry_yymm.isascii() or not expiry_yymm.isdigit():
        return "expiry_yymm must be 4 digits YYMM"
    if not 1 <= int(expiry_yymm[2:]) <= 12:
        return "expiry_yymm has a month outside 01-12"
    return None


def is_expired(expiry_yymm: str, today: dt.date) -> bool:
    """A card is valid through the last day of its expiry month (years 20YY)."""
    year, month = 2000 + int(expiry_yymm[:2]), int(expiry_yymm[2:])
    return (today.year, today.month) > (year, month)


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # isdigit alone takes superscripts and other scripts


def track2_problem(track2: str, pan: str) -> str | None:
    """Track 2 equivalent data: PAN, separator '=' or 'D', expiry, service code, discretionary data."""
    if not track2:
        return "track2 is missing (magstripe needs it)"
    if len(track2) > TRACK2_CHARS_MAX:
        return f"track2 is longer than {TRACK2_CHARS_MAX} characters"
    normal = track2.upper().replace("D", "=")
    number, separator, rest = normal.partition("=")
    if not separator or not _ascii_digits(number) or not _ascii_digits(rest) or len(rest) < 7:
        return "track2 must be PAN, '=' and at least expiry and service code, digits only"
    if number != pan:
        return "track2 does not belong to card.pan"
    return None


def emv_problem(emv: EmvData | None, required: bool) -> str | None:
    if emv is None:
        return "emv is missing (chip needs it)" if required else None
    for _, name, lengths in EMV_FIELDS:
        value = getattr(emv, name)
        if not value:
            return f"emv.{name} is missing"
        if len(value) not in lengths or not _is_hex(value):
            return f"emv.{name} must be hex of length {_lengths_text(lengths)}"
    return None


def emv_tlv_hex(emv: EmvData) -> str:
    """BER-TLV of the minimal tags for ISO 8583 field 55 (every value is shorter than 128 bytes)."""
    parts = []
    for tag, name, _ in EMV_FIELDS:
        value = getattr(emv, name).upper()
        parts.append(f"{tag}{len(value) // 2:02X}{value}")
    return "".join(parts)


def sequence_number_problem(sequence_number: int) -> str | None:
    if not 1 <= sequence_number <= SEQUENCE_NUMBER_MAX:
        return f"sequence_number must be 1-{SEQUENCE_NUMBER_MAX}"
    return None


def payment_fingerprint(pay: Pay, pan_hash: str) -> str:
    """What makes a payment what it is: never the PAN itself, the PIN block or the track."""
    parts = [
        pay.kind.value,
        pan_hash,
        pay.card.expiry_yymm,
        pay.card.entry_mode.value,
        f"{pay.amount.amount_minor}{pay.amount.currency}",
        str(pay.sequence_number),
        "pin" if pay.has_pin else "no-pin",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def refund_over_takings_problem(amount: Money, takings_left_minor: int) -> str | None:
    """Why a refund to a card of `amount` is refused, or None. A refund to a card is paid from the
    card takings of the terminal's open period not yet refunded (`takings_left_minor`, in the
    refund's currency; gift-card redemptions are no card takings). A shop without card takings on
    that terminal today sends no money to a card from it, so a stolen employee PIN is worth at
    most one period's takings of one terminal."""
    if amount.amount_minor <= takings_left_minor:
        return None
    left = Money(max(takings_left_minor, 0), amount.currency)
    return f"a refund to a card may take at most this period's card takings not yet refunded: {left.format()}"


def _is_hex(value: str) -> bool:
    return value.isascii() and all(char in "0123456789abcdefABCDEF" for char in value)


def _lengths_text(lengths: tuple[int, ...]) -> str:
    return str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]} (even)"
