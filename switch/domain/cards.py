"""Closed-loop card numbers: Luhn check, programme prefix, QR payload, masking, status."""

from __future__ import annotations

import enum
import re

CARD_NUMBER_LENGTH = 16
CARD_PREFIX_LENGTH = 6
QR_SCHEME = "txswitch://card/"
CARD_NUMBER_GROUPS_MAX = 4  # as printed on the card: four groups of four digits
_DIGITS = re.compile(r"[0-9]+")  # fullmatch
# Digit groups split by one space or dash each; a subset of what the log scrubber masks (up to
# quoting.SEPARATORS_BETWEEN_DIGITS_MAX separators between digits), so a typed number that leaks is
# still masked.
_TYPED_CARD_NUMBER = re.compile(rf"[0-9]+(?:[ -][0-9]+){{0,{CARD_NUMBER_GROUPS_MAX - 1}}}")  # fullmatch


class CardStatus(enum.Enum):
    active = "active"
    blocked = "blocked"
    lost = "lost"
    expired = "expired"


def luhn_check_digit(payload: str) -> str:
    """The digit that makes payload + digit Luhn-valid."""
    assert _DIGITS.fullmatch(payload), "payload must be digits"
    return _CHECK_DIGIT_BY_REMAINDER[_luhn_sum(payload, last_doubled=True) % 10]


def is_luhn_valid(number: str) -> bool:
    if len(number) < 2 or not _DIGITS.fullmatch(number):
        return False
    return _luhn_sum(number, last_doubled=False) % 10 == 0


# Luhn's sum by table lookups over every other digit: a loop of int() and arithmetic per digit
# cost 3.4 us for a card number (now 1.7), called on every card lookup a terminal makes.
_DIGIT_VALUES = {str(digit): digit for digit in range(10)}
_DOUBLED_DIGIT_SUMS = {str(digit): sum(divmod(digit * 2, 10)) for digit in range(10)}
_CHECK_DIGIT_BY_REMAINDER = "0987654321"  # (10 - remainder) % 10


def _luhn_sum(digits: str, *, last_doubled: bool) -> int:
    """Luhn's sum of ASCII digits, doubling every other one from the last (last_doubled) or the one
    before it."""
    doubled, kept = (digits[-1::-2], digits[-2::-2]) if last_doubled else (digits[-2::-2], digits[-1::-2])
    return sum(map(_DOUBLED_DIGIT_SUMS.__getitem__, doubled)) + sum(map(_DIGIT_VALUES.__getitem__, kept))


def make_card_number(prefix: str, serial: int) -> str:
    """Prefix + zero-padded serial + Luhn digit, CARD_NUMBER_LENGTH digits in all."""
    assert len(prefix) == CARD_PREFIX_LENGTH and _DIGITS.fullmatch(prefix), prefix
    body_length = CARD_NUMBER_LENGTH - CARD_PREFIX_LENGTH - 1
    assert 0 <= serial < 10**body_length, serial
    payload = f"{prefix}{serial:0{body_length}d}"
    return payload + luhn_check_digit(payload)


def card_number_problem(number: str) -> str | None:
    """Why this is not a well-formed card number, or None. Never echoes the number."""
    if not number:
        return "card_number is empty"
    if not _DIGITS.fullmatch(number):
        return "card_number must contain digits only"
    if len(number) != CARD_NUMBER_LENGTH:
        return f"card_number must have {CARD_NUMBER_LENGTH} digits, got {len(number)}"
    if _luhn_sum(number, last_doubled=False) % 10 != 0:  # is_luhn_valid, its checks made above
        return "card_number fails the Luhn check"
    return None


def typed_card_digits(text: str) -> str | None:
    """The digits of text when it is a card number as a person types it, digits or as printed
    ("6001 0199 ...": one space or dash between groups, at most CARD_NUMBER_GROUPS_MAX groups), of
    any count; None for anything else. The one rule of every entry where a person types a number
    (gRPC's, the console's)."""
    if not _TYPED_CARD_NUMBER.fullmatch(text):
        return None
    return text.replace(" ", "").replace("-", "")


def card_number_as_typed(text: str) -> str:
    """typed_card_digits, or text as it is when grouped otherwise, for card_number_problem to name
    what is wrong. Digits of the wrong count are stripped too, so the refusal says how many digits
    it got."""
    digits = typed_card_digits(text)
    return text if digits is None else digits


def qr_payload(number: str) -> str:
    return QR_SCHEME + number


def card_number_from_qr(payload: str) -> str | None:
    """The card number a QR payload encodes, or None when it is not one of ours."""
    if not payload.startswith(QR_SCHEME):
        return None
    return payload[len(QR_SCHEME) :]


def mask(number: str) -> str:
    """First six and last four digits; the rest hidden."""
    return f"{number[:CARD_PREFIX_LENGTH]}{'*' * (len(number) - 10)}{number[-4:]}"
