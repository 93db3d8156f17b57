"""How a message shows a value its caller sent: card numbers masked, a long value cut, the rest escaped."""

from __future__ import annotations

import re
from typing import Final

from switch.domain.cards import is_luhn_valid

REDACTED_PAN: Final = "[REDACTED-PAN]"
PAN_DIGITS_MIN: Final = 12
PAN_DIGITS_MAX: Final = 19
# Separators between two digits of a card number as a person types or copies it: " - ", a double
# space, a copy's wider gap. No card prints wider gaps, and a wider bound joins columns of numbers
# ("1200.00     3400.00", a console's table, which typed text masks whole from 12 digits) into runs
# and lengthens what every read past a cut reads (TYPED_CARD_NUMBER_CHARS_MAX).
SEPARATORS_BETWEEN_DIGITS_MAX: Final = 4
# The spaces a card number's groups are copied with, each taken as " " is: every Unicode space
# separator (category Zs), as a web page, a PDF or a word processor gives them ("4111\u00a01111", a
# no-break space; "4111\u202f1111", a narrow one, and "4111\u2009...", a thin one, number grouping's;
# U+2007, a figure space; U+3000, an ideographic one typed with an input method), and the zero-width
# spaces (U+200B; U+2060 and U+FEFF, which also keep words together), which show the groups joined:
# a reader sees the whole card number. None ends a line (U+2028 and U+2029 do, and are not here).
SPACE_CHARS: Final = r" \u00a0\u1680\u2000-\u200b\u202f\u205f\u2060\u3000\ufeff"  # of a regex class
# The dashes a card number's groups are typed or copied with, each taken as "-" is: every Unicode dash
# (category Pd: a word processor makes " - " an en dash, "4111\u20131111"; a web page's non-breaking
# hyphen, U+2011; an input method's fullwidth one, U+FF0D), the minus sign (U+2212) and the soft
# hyphen (U+00AD), which shows the groups joined. The ASCII "-" last, so the class ends with it.
DASH_CHARS: Final = (  # of a regex class
    r"\u00ad\u058a\u05be\u1400\u1806\u2010-\u2015\u2212\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d"
    r"\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead-"
)
# What separates a card number's groups as a person types, copies or pastes it: a space (SPACE_CHARS),
# a tab (a spreadsheet's cells pasted as text, a console line), a dot, an underscore, a slash or a dash
# (DASH_CHARS).
# Not a line break (nor \r, \v, \f): a value typed or pasted into one field or command is one line,
# and no card prints its number across two; while text of many lines (a traceback, a console's table,
# rows pasted in a reason) often ends a line and starts the next with digits, which typed text would
# mask from 12 digits joined, Luhn-valid or not.
SEPARATOR_CHARS: Final = rf"{SPACE_CHARS}\t._/{DASH_CHARS}"  # of a regex class, the dash last
# Digit runs of a card number's length or more, optionally grouped as a person types or copies a card
# number: by SEPARATOR_CHARS, up to SEPARATORS_BETWEEN_DIGITS_MAX of them between two digits
# ("4111 1111 1111 1111", "4111 - 1111 ...", "4111.1111.1111.1111", "4111\t1111\t...",
# "4111    1111 ..."). (11 more digits after the first: PAN_DIGITS_MIN.) The log scrubber and its
# id check find their runs with it.
DIGIT_RUN: Final = re.compile(
    rf"(?<!\d)\d(?:[{SEPARATOR_CHARS}]{{0,{SEPARATORS_BETWEEN_DIGITS_MAX}}}\d){{{PAN_DIGITS_MIN - 1},}}(?!\d)"
)
TYPED_CARD_NUMBER_CHARS_MAX: Final = PAN_DIGITS_MAX + SEPARATORS_BETWEEN_DIGITS_MAX * (PAN_DIGITS_MAX - 1)
# Of a caller's value shown whole in a message: the longest id the protocol takes (a transaction's
# or request's id, a top-up's request id, a PSP reference: 64), so two ids never read the same.
QUOTED_CHARS_MAX: Final = 64
# A longer value shows its head and its tail around "...": ids alike at the start differ at the end.
QUOTED_HEAD_CHARS: Final = 44
QUOTED_TAIL_CHARS: Final = QUOTED_CHARS_MAX - QUOTED_HEAD_CHARS
READ_CHARS_MAX: Final = QUOTED_CHARS_MAX + TYPED_CARD_NUMBER_CHARS_MAX
# The digits (and their separators) that start a text, to the last: a run the read's start cut. Those
# that end it, from the first (a run the read's end cut), are read from the reversed text with
# _RUN_CHARS: a search for r"\d[...]*\Z" tries each digit of a run, and from each reads the run to its
# end, so a read ending in a long run and a letter (16,383 "1"s and an "x") took 1.3 s.
_LEADING_RUN: Final = re.compile(rf"\A[\d{SEPARATOR_CHARS}]*\d")
_RUN_CHAR: Final = re.compile(rf"[\d{SEPARATOR_CHARS}]")
_RUN_CHARS: Final = re.compile(rf"[\d{SEPARATOR_CHARS}]*")
_DIGIT: Final = re.compile(r"\d")
# A DIGIT_RUN run that is an IPv4 address has 12 digits ("192.168.100.200"), a card number's least:
# shown when it fails Luhn, as no card number can then be in it (a card is not typed as four groups of
# three digits each up to 255).
_IPV4_ADDRESS: Final = re.compile(r"\d{3}\.\d{3}\.\d{3}\.\d{3}")  # fullmatch
IPV4_GROUP_MAX: Final = 255


def mask_digit_runs(text: str) -> str:
    """text with every DIGIT_RUN run masked, Luhn-valid or not (a card number, maybe mistyped), but an
    IPv4 address that cannot be one. The one rule of text a person typed and of refusals."""
    return DIGIT_RUN.sub(masked_run, text)


def masked_run(run: re.Match[str]) -> str:
    """DIGIT_RUN's run as mask_digit_runs shows it."""
    text = run.group(0)
    if _IPV4_ADDRESS.fullmatch(text) and all(int(group) <= IPV4_GROUP_MAX for group in text.split(".")):
        return text if not is_luhn_valid(text.replace(".", "")) else REDACTED_PAN
    return REDACTED_PAN


def quoted(value: str) -> str:
    """value in quotes for a message: every run of 12 or more digits masked (a card number, Luhn-valid
    or mistyped, its groups split as DIGIT_RUN's are: mask_digit_runs), characters that do not print
    escaped; up to QUOTED_CHARS_MAX characters whole, a longer value as its first QUOTED_HEAD_CHARS,
    "..." and its last QUOTED_TAIL_CHARS.

    Masked before it is cut, so a card number across a cut is not left in part; only a card
    number's length past each cut is read, not the whole of a huge value.
    """
    head = mask_digit_runs(head_to_mask(value, READ_CHARS_MAX))
    if len(value) <= READ_CHARS_MAX and len(head) <= QUOTED_CHARS_MAX:
        return repr(head)  # read whole, and no longer than an id once masked
    tail = mask_digit_runs(tail_to_mask(value, READ_CHARS_MAX))
    return repr(head[:QUOTED_HEAD_CHARS] + "..." + tail[-QUOTED_TAIL_CHARS:])


def head_to_mask(value: str, chars_max: int) -> str:
    """value's first chars_max characters, to be masked and then cut shorter: a digit run the end
    goes through is masked here, whole. What is left of it may be too short to look like a card
    number, and a run masked before it shrinks the text and brings it into view."""
    head = value[:chars_max]
    return mask_trailing_run(head) if _RUN_CHAR.match(value, chars_max) else head


def mask_trailing_run(text: str) -> str:
    """text with the digits and separators that end it, from the first digit, masked whole."""
    trailing = _RUN_CHARS.match(text[::-1])
    run = _DIGIT.search(text, len(text) - trailing.end()) if trailing else None
    return text if run is None else text[: run.start()] + REDACTED_PAN


def tail_to_mask(value: str, chars_max: int) -> str:
    """value's last chars_max characters, to be masked and then cut shorter: head_to_mask's mirror,
    a digit run the start goes through masked here, whole."""
    if len(value) <= chars_max:
        return value
    tail = value[-chars_max:]
    if _RUN_CHAR.match(value, len(value) - chars_max - 1):
        tail = _LEADING_RUN.sub(REDACTED_PAN, tail)
    return tail
