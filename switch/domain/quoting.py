"""How a message shows a value its caller sent: card numbers masked, a long value cut, the rest escaped."""

from __future__ import annotations

import re
from typing import Final

REDACTED_PAN: Final = "[REDACTED-PAN]"
PAN_DIGITS_MIN: Final = 12
PAN_DIGITS_MAX: Final = 19
# Digit runs of a card number's length or more, optionally grouped by spaces or dashes as a card
# number is typed ("4111 1111 1111 1111", "4111 - 1111 ..."): up to 3 of them between two digits.
# (11 more digits after the first: PAN_DIGITS_MIN.)
DIGIT_RUN: Final = re.compile(r"(?<!\d)\d(?:[ -]{0,3}\d){11,}(?!\d)")
TYPED_CARD_NUMBER_CHARS_MAX: Final = PAN_DIGITS_MAX + 3 * (PAN_DIGITS_MAX - 1)
QUOTED_CHARS_MAX: Final = 40  # of a caller's value shown in a message; an id is at most as long
READ_CHARS_MAX: Final = QUOTED_CHARS_MAX + TYPED_CARD_NUMBER_CHARS_MAX
# The digits (and their separators) that end a text, from the first: a run the read's end cut.
_TRAILING_RUN: Final = re.compile(r"\d[\d -]*\Z")
_RUN_CHAR: Final = re.compile(r"[\d -]")


def quoted(value: str) -> str:
    """value in quotes for a message: every run of 12 or more digits masked (a card number, Luhn-valid
    or mistyped), cut to QUOTED_CHARS_MAX characters with "...", characters that do not print escaped.

    Masked before it is cut, so a card number across the cut is not left in part; only a card
    number's length past the cut is read, not the whole of a huge value.
    """
    masked = DIGIT_RUN.sub(REDACTED_PAN, head_to_mask(value, READ_CHARS_MAX))
    return repr(masked if len(value) <= QUOTED_CHARS_MAX else masked[:QUOTED_CHARS_MAX] + "...")


def head_to_mask(value: str, chars_max: int) -> str:
    """value's first chars_max characters, to be masked and then cut shorter: a digit run the end
    goes through is masked here, whole. What is left of it may be too short to look like a card
    number, and a run masked before it shrinks the text and brings it into view."""
    head = value[:chars_max]
    if _RUN_CHAR.match(value, chars_max):
        head = _TRAILING_RUN.sub(REDACTED_PAN, head)
    return head
