"""Structured JSON-lines logging that refuses card data, and the one-line-per-transaction log."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import re
import sys
import time
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TextIO

from switch.domain import quoting

if TYPE_CHECKING:
    from switch.domain.transactions import Outcome

TRANSACTION_LOGGER_NAME: Final = "txswitch.transactions"
REDACTED: Final = "[REDACTED]"
REDACTED_PAN: Final = quoting.REDACTED_PAN

PAN_DIGITS_MIN: Final = quoting.PAN_DIGITS_MIN
PAN_DIGITS_MAX: Final = quoting.PAN_DIGITS_MAX
# Nested extras deeper than this are cut off rather than walked: a log line has a size limit.
NESTING_DEPTH_MAX: Final = 6
VALUE_CHARS_MAX: Final = 4096
# Read past VALUE_CHARS_MAX's cut, so a card number across it is judged whole: 19 digits and a separator
# between each. A longer run the read's end cuts (one split by wider gaps, up to
# quoting.TYPED_CARD_NUMBER_CHARS_MAX) is masked whole, unjudged (quoting.head_to_mask).
CARD_NUMBER_CHARS_MAX: Final = 40
# A message, exception or stack text is cut to this many characters before it is scrubbed, as a value
# is to VALUE_CHARS_MAX: a client can make the switch log what it sent (a refusal quoting it, an exception
# text), and scrubbing is linear in the text, its worst case slow. The digits ending the kept part are
# masked whole, whatever follows (quoting.mask_trailing_run): no part of a card number the cut goes
# through is shown, nor one the whole text shows glued to letters after the cut. A marker after the kept
# part says how many characters were cut.
MESSAGE_CHARS_MAX: Final = 16384

# The names whose value is never logged, each as its words: the one list of a field's name
# (is_sensitive_name) and of a name in free text ("pin=...", _SENSITIVE_ASSIGNMENT). A name's words
# may be written joined, in camel case or split by "_", "-" or a space ("pin_block", "PINBLOCK",
# "pinBlock", "pin-block", "PIN block", "track_2"); a longer name may end or hold it ("employee_pin").
SENSITIVE_NAMES: Final = (
    ("pan",),
    ("primary", "account", "number"),
    ("card", "number"),
    ("card", "no"),
    ("pin",),
    ("pin", "block"),
    ("cvv",),
    ("cvv", "2"),
    ("cvc",),
    ("cvc", "2"),
    ("track", "1"),
    ("track", "2"),
    ("track", "data"),
    ("password",),
    ("secret",),
    ("master", "key"),
)
_SENSITIVE_NAMES_JOINED: Final = frozenset("".join(words) for words in SENSITIVE_NAMES)
# A field name's words: upper-case runs, capitalised or lower-case words, digit runs ("newPINBlock2":
# new, pin, block, 2).
_NAME_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SEPARATORS: Final = re.compile(rf"[{quoting.SPACE_CHARS}{quoting.DASH_CHARS}]")
_DIGIT_GROUP: Final = re.compile(r"\d+")
# An id holding a card number is refused (holds_card_number) from this many digits in a row: a date
# and a counter (20261207-0001, 12 digits) stay usable as an id.
ID_PAN_DIGITS_MIN: Final = 13
# The runs the scrubber and the id check look at, quoted's (quoting.DIGIT_RUN): digit groups as a person
# may split a card number, by up to 4 spaces, tabs, dashes, dots, underscores or slashes
# ("4111.1111.1111.1111", "4111    1111 ..."), from PAN_DIGITS_MIN digits. One scan of a text finds them
# all. The id check judges a run from ID_PAN_DIGITS_MIN digits only, and across tabs, dots, underscores,
# slashes and long gaps only the layouts cards print (_printed_span_holds_pan).
_DIGIT_RUN: Final = quoting.DIGIT_RUN
# Digit groups joined by up to 3 spaces (quoting.SPACE_CHARS: a no-break space too) or dashes
# (quoting.DASH_CHARS: an en dash too), as a card number is typed or copied, from PAN_DIGITS_MIN
# digits: the parts of a _DIGIT_RUN run the scrubber judges each as a whole (_looks_like_pan).
_SPACED_RUN: Final = re.compile(
    rf"(?<!\d)\d(?:[{quoting.SPACE_CHARS}{quoting.DASH_CHARS}]{{0,3}}\d){{11,}}(?!\d)"
)
# A card number (ID_PAN_DIGITS_MIN to PAN_DIGITS_MAX digits) glued to an id's own short number, which
# letters start or end ("T1" of "T14111...1111"): up to this many digits. Without a letter beside them,
# digits in a row are judged whole: numeric ids of 14-19 digits (a timestamp, a date and counter, as in
# "POS-20261207103015") often hold a Luhn-valid window; the id check would refuse those 1 time in 5 (14
# digits) or 3 (17) rather than 1 in 10 (the whole run passing Luhn), so "T-1" and a card number is not
# seen. The cost of every card length: a uuid4's hex, whose letters glue most runs, is refused 1 time
# in 185 rather than 1 in 410 when only 16-digit card numbers were seen glued.
GLUED_DIGITS_MAX: Final = 3
# A separator _SPACED_RUN does not take. A tab is one: it parts a table's columns, rows of numbers
# of which any span of groups passes Luhn 1 time in 10, and a card number pasted from cells is laid
# out as cards print it.
_PRINTED_ONLY_SEPARATOR: Final = re.compile(rf"[\t._/]|[{quoting.SPACE_CHARS}{quoting.DASH_CHARS}]{{4}}")
# What may close the structure a named value stands in ("[pin=1234]", "(cvv=123)", "pin=1234, ok"):
# the value's end only where nothing of the value follows (whitespace, the text's end or another of
# them), else part of it ("pin=12]34", "password=se,cret"; "a=1,pin=1234,b=2" hides "b=2" too).
_VALUE_CLOSERS: Final = r",;\"'})\]"
# "pin=1234", "pan: 4111...", '"cvv": "123"', "{'pin': '1234'}" (a Python dict as str() shows it),
# '"pin" => "1234"' (Perl's, Ruby's) inside free text: an unquoted value up to whitespace or a closer
# (_VALUE_CLOSERS), a quoted one up to its closing quote, spaces and all ('"pin": "12 34"'). In XML an
# attribute is such a value ('pin="1234"'); an element's text and CDATA are hidden up to the next tag
# or the text's end ("<cvv>737</cvv>", '<ns:pin enc="x">...'), an end tag passed whole. The digit
# runs are masked first: a value masked so ("pan=[REDACTED-PAN]") is one value, its "]" too. The names
# are SENSITIVE_NAMES, as is_sensitive_name takes them: words joined or split by one "_", "-" or space,
# any case ("pin-block=", "PIN block:", "primaryAccountNumber="); a name may end, start or sit in a
# longer one, its words split as _NAME_WORD splits a field's ("employee_pin=", "employeePin=",
# "pin_block_id=", "pinBlockId="), a name in free text judged as a field's is but after digits or an
# upper-case word (below).
_SENSITIVE_NAME_PATTERN: Final = "|".join(
    sorted(("[ _-]?".join(words) for words in SENSITIVE_NAMES), key=len, reverse=True)
)
# The letters a name starts with, looked at first at each place, so most places are passed at once:
# scrub_text of a 100-character line holding "=" took 16 us without it, 9.3 with it (13.3 with the 9
# names of before and no such look).
_SENSITIVE_NAME_FIRST_LETTERS: Final = "".join(sorted({words[0][0] for words in SENSITIVE_NAMES}))
# What may follow a sensitive name in a longer one, from a word's end as _NAME_WORD splits a name
# ("pin_block_id", "pin-block-id", "pinBlockId", "PINCount", "pin2"): the rest of the name, so it is
# judged as is_sensitive_name judges a field's name. Not after a space: in free text that ends the name
# ("PIN tries > 3"), as "pins" and "pinned" are words of their own.
_LONGER_NAME_REST: Final = (
    r"(?:(?:[_-]|(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)"
    r"|(?-i:(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])))[\w-]*)?"
)
_SENSITIVE_ASSIGNMENT: Final = re.compile(
    rf"(?i)(?=[<{_SENSITIVE_NAME_FIRST_LETTERS}])"
    r"(?:(?P<end_tag></[\w:.-]+\s*>)"  # passed whole: "</pin>" is no start of a value
    # after no letter or digit, or in camel case ("newPin"); not after digits ("x2pin") nor an upper-case
    # word ("NEWPin"), as _NAME_WORD splits a field's name: those looks cost 1.1 us of a 100-character
    # line holding "=" (8.05 us, 6.96 without)
    r"|(?:(?<![^\W_])|(?-i:(?<=[a-z])(?=[A-Z])))"
    rf"(?P<name>(?:{_SENSITIVE_NAME_PATTERN}){_LONGER_NAME_REST})"
    r"(?:(?P<separator>[\"']?\s*(?:=>|[=:])\s*)"
    r"(?:(?P<quote>[\"'])(?P<quoted>(?:(?!(?P=quote))[^\\\n]|\\.)*)(?P<close>(?P=quote)?)"
    rf"|(?:{re.escape(REDACTED_PAN)}|[^\s{_VALUE_CLOSERS}]|[{_VALUE_CLOSERS}]+(?=[^\s{_VALUE_CLOSERS}]))+)"
    # an XML element's start tag, its attributes and not "/>", then its text and CDATA to the next tag
    r"|(?P<tag>(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*\s*>)"
    r"(?:<!\[CDATA\[(?:(?!\]\]>)[\s\S])*(?:\]\]>)?|[^<])*))"
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def luhn_valid(digits: str) -> bool:
    """digits pass Luhn, of any script: a run (DIGIT_RUN) takes a Japanese keyboard's full-width ones."""
    if not digits.isascii():
        digits = "".join(str(unicodedata.digit(char)) for char in digits)
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _looks_like_pan(run: str) -> bool:
    """run (digits, maybe grouped by spaces or dashes as _SPACED_RUN finds them) holds a
    Luhn-valid card number of PAN_DIGITS_MIN to PAN_DIGITS_MAX digits."""
    digits = _SEPARATORS.sub("", run)
    if len(digits) < PAN_DIGITS_MIN:
        return False
    if len(digits) > PAN_DIGITS_MAX:
        # A PAN glued to other digits: any Luhn-valid window counts.
        return _holds_luhn_valid_window(digits)
    if luhn_valid(digits):
        return True
    # "T1-4111-1111-1111-1111", "4111 1111 1111 1111 2": a typed card number joined to another
    # group fails Luhn as a whole run. Only grouped runs get here, after the whole run failed.
    return len(digits) < len(run) and _group_span_looks_like_pan(run, len(digits))


_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a digit Luhn doubles, its digits summed


def _holds_luhn_valid_window(digits: str) -> bool:
    """A window of PAN_DIGITS_MIN to PAN_DIGITS_MAX digits of digits passes Luhn. From running sums,
    one a parity: a window ending before index end doubles the digits of end's parity, so its Luhn sum
    is the difference of that parity's sums at end and at its start. Each end compares its sum with the
    8 starts' in one slice: luhn_valid of every window (8 per digit) took 175 ms for 16,383 "1"s, which
    hold no Luhn-valid window."""
    if not digits.isascii():
        digits = "".join(str(unicodedata.digit(char)) for char in digits)
    sums: tuple[list[int], list[int]] = ([0], [0])  # [parity][index]: mod 10, digits of parity doubled
    even = odd = 0
    for index, char in enumerate(digits):
        digit = ord(char) - 48
        if index % 2:
            even, odd = (even + digit) % 10, (odd + _DOUBLED[digit]) % 10
        else:
            even, odd = (even + _DOUBLED[digit]) % 10, (odd + digit) % 10
        sums[0].append(even)
        sums[1].append(odd)
    return any(
        sums[end % 2][end] in sums[end % 2][max(0, end - PAN_DIGITS_MAX) : end - PAN_DIGITS_MIN + 1]
        for end in range(PAN_DIGITS_MIN, len(digits) + 1)
    )


def _group_span_looks_like_pan(run: str, digits_total: int) -> bool:
    """A span of run's whole groups, shorter than the run, of PAN_DIGITS_MIN to PAN_DIGITS_MAX digits
    is Luhn-valid. At most 19 digits in all: fewer spans than the windows of a glued run."""
    groups = _DIGIT_GROUP.findall(run)
    for first in range(len(groups)):
        span = ""
        for group in groups[first:]:
            span += group
            if len(span) >= digits_total or len(span) > PAN_DIGITS_MAX:
                break
            if len(span) >= PAN_DIGITS_MIN and luhn_valid(span):
                return True
    return False


def holds_card_number(value: str) -> bool:
    """value holds a card number as a person would type one into an id: a run of ID_PAN_DIGITS_MIN
    to PAN_DIGITS_MAX digits in a row, or groups laid out as cards print them (`_typed_as_printed`),
    Luhn-valid. For ids the switch stores as given, where masking would break their idempotency: one
    that holds a card number is refused instead. Stricter than the log scrubber, which masks any
    Luhn-valid span and window (masking costs a log line a few digits; refusing costs a terminal its
    sale): ids built from a date and counters ("POS1-20261207-0004", a 13-digit grouped run) pass
    Luhn one time in ten, and most long numeric ids hold a Luhn-valid window. Most ids are shorter
    than the shortest run, and the regex finds no run in the rest, so the Luhn check seldom runs."""
    if len(value) < ID_PAN_DIGITS_MIN:
        return False
    return any(
        _id_run_holds_card_number(run.group(0)) or _glued_to_letters_holds_pan(run)
        for run in _DIGIT_RUN.finditer(value)
    )


# How cards print their numbers, besides groups of four (the last one shorter): American Express
# (4-6-5) and Diners Club (4-6-4).
PRINTED_LAYOUTS: Final = frozenset({(4, 6, 5), (4, 6, 4)})


def _typed_as_printed(lengths: tuple[int, ...]) -> bool:
    if lengths[0] != 4:
        return False
    return lengths in PRINTED_LAYOUTS or (all(length == 4 for length in lengths[:-1]) and lengths[-1] <= 4)


def _id_run_holds_card_number(run: str) -> bool:
    groups = _DIGIT_GROUP.findall(run)
    for group in groups:
        if ID_PAN_DIGITS_MIN <= len(group) <= PAN_DIGITS_MAX and luhn_valid(group):
            return True
    return _printed_span_holds_pan(groups, ID_PAN_DIGITS_MIN)


def _glued_to_letters_holds_pan(run: re.Match[str]) -> bool:
    """The run's first group, after a letter, ends in a card number glued to up to GLUED_DIGITS_MAX
    digits before it ("T14111...1111"), or its last group, before a letter, starts with one. The one
    rule of a glued card number, the scrubber's and the id check's."""
    text, start, end = run.string, run.start(), run.end()
    if end - start <= ID_PAN_DIGITS_MIN:  # most runs: no group of 14 digits or more
        return False
    letter_before = start > 0 and text[start - 1].isalpha()
    letter_after = end < len(text) and text[end].isalpha()
    if not (letter_before or letter_after):
        return False
    groups = _DIGIT_GROUP.findall(run.group(0))
    return (letter_before and _is_glued_pan(groups[0], glued_before=True)) or (
        letter_after and _is_glued_pan(groups[-1], glued_before=False)
    )


def _is_glued_pan(group: str, *, glued_before: bool) -> bool:
    """group is a Luhn-valid card number and 1 to GLUED_DIGITS_MAX digits glued before or after it."""
    lengths = (len(group) - glued for glued in range(1, GLUED_DIGITS_MAX + 1))
    return any(
        luhn_valid(group[-length:] if glued_before else group[:length])
        for length in lengths
        if ID_PAN_DIGITS_MIN <= length <= PAN_DIGITS_MAX
    )


def _printed_span_holds_pan(groups: list[str], digits_min: int) -> bool:
    """A span of groups laid out as cards print them (_typed_as_printed) is a Luhn-valid card number of
    digits_min digits or more: the scrubber's PAN_DIGITS_MIN (a 12-digit Maestro card, "6759.6498.2643"),
    the id check's ID_PAN_DIGITS_MIN."""
    for first, group in enumerate(groups):
        if len(group) != 4:  # a printed layout starts with four digits
            continue
        span, lengths = "", tuple[int, ...]()
        for next_group in groups[first:]:
            span, lengths = span + next_group, (*lengths, len(next_group))
            if len(span) > PAN_DIGITS_MAX:
                break
            if len(span) >= digits_min and _typed_as_printed(lengths) and luhn_valid(span):
                return True
    return False


def pan_in_id_problem(field: str, value: str) -> str | None:
    """Why `value` may not be stored as the id `field`, naming the field and never the value."""
    return f"{field} has the shape of a card number" if holds_card_number(value) else None


def _redact_digit_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if _PRINTED_ONLY_SEPARATOR.search(run) is None:
        return REDACTED_PAN if _looks_like_pan(run) or _glued_to_letters_holds_pan(match) else run
    # Tabs, dots, underscores, slashes and long gaps join IP addresses, versions, dates, decimals and
    # a table's columns too: across them only the layouts cards print are judged, and each part as
    # _SPACED_RUN's run.
    if _printed_span_holds_pan(_DIGIT_GROUP.findall(run), PAN_DIGITS_MIN) or _glued_to_letters_holds_pan(
        match
    ):
        return REDACTED_PAN
    return _SPACED_RUN.sub(_redact_spaced_run, run)


def _redact_spaced_run(match: re.Match[str]) -> str:
    run = match.group(0)
    return REDACTED_PAN if _looks_like_pan(run) else run


def scrub_text(text: str, *, typed: bool = False) -> str:
    """text with PAN-like digit runs and `pin=...`-style values replaced.

    Most values in a log line are short ids and codes: a text shorter than the shortest PAN holds
    no digit run to look at, and one without "=", ":" or "<" no named value, so neither pass runs there
    ("<" for an XML element: a line's "->" does not run the pass).
    A card number split by tabs, dots, underscores, slashes or 4 spaces is masked when laid out as cards
    print it and Luhn-valid (_redact_digit_run).
    `typed`: text a person typed (a console command, a block reason), where a card number may be
    mistyped and split by any of those separators: every run of 12 or more digits is masked, Luhn-valid
    or not, in any layout, but an IPv4 address that fails Luhn (quoting.mask_digit_runs).
    """
    if len(text) >= PAN_DIGITS_MIN:
        text = _DIGIT_RUN.sub(quoting.masked_run if typed else _redact_digit_run, text)
    if "=" in text or ":" in text or "<" in text:
        text = _SENSITIVE_ASSIGNMENT.sub(_redact_assignment, text)
    return text


def scrub_cut(text: str, chars_max: int, *, typed: bool = False) -> str:
    """text scrubbed (scrub_text) and cut to at most chars_max characters, reading only a card number's
    length past the cut (CARD_NUMBER_CHARS_MAX), not the whole of a huge text: the digits ending the read
    are masked whole (quoting.mask_trailing_run), a card number across chars_max is judged whole, and
    the cut comes after the scrub. Of a log value (VALUE_CHARS_MAX) and of the text an operator sends
    that is kept in a column of a given length (a console command, a card block's reason)."""
    if len(text) > chars_max + CARD_NUMBER_CHARS_MAX:
        # The digits ending the read masked whatever follows, as scrub_message's: a card number glued
        # to letters past the read ("...411111111111111107x") is no longer seen glued, and the runs
        # masked before it may shrink the text enough to bring it into view.
        text = quoting.mask_trailing_run(text[: chars_max + CARD_NUMBER_CHARS_MAX])
    return scrub_text(text, typed=typed)[:chars_max]


def scrub_message(text: str) -> str:
    """A log line's message, exception or stack text scrubbed, cut first to MESSAGE_CHARS_MAX characters."""
    if len(text) <= MESSAGE_CHARS_MAX:
        return scrub_text(text)
    kept = scrub_text(quoting.mask_trailing_run(text[:MESSAGE_CHARS_MAX]))
    return f"{kept} [{len(text) - MESSAGE_CHARS_MAX} more characters not logged]"


def _redact_assignment(match: re.Match[str]) -> str:
    name, separator, tag = match.group("name", "separator", "tag")
    if name is None:  # an end tag
        return match.group(0)
    if tag is not None:
        return f"{name}{tag}{REDACTED}"
    if match.group("quoted") is None:
        return f"{name}{separator}{REDACTED}"
    return f"{name}{separator}{match.group('quote')}{REDACTED}{match.group('close')}"


@functools.lru_cache(maxsize=4096)  # field names come from our code: a few dozen, asked per line
def is_sensitive_name(name: str) -> bool:
    """name holds one of SENSITIVE_NAMES: words of it in a row, joined, are one of them."""
    words = [word.lower() for word in _NAME_WORD.findall(name)]
    return any(
        "".join(words[first:last]) in _SENSITIVE_NAMES_JOINED
        for first in range(len(words))
        for last in range(first + 1, len(words) + 1)
    )


def scrub_value(value: object, depth: int = 0) -> object:
    """A JSON-ready copy of value with card data removed."""
    if depth > NESTING_DEPTH_MAX:
        return "[TRUNCATED]"
    if type(value) is str:  # most values: before the checks below, Mapping's the slowest of them
        return _scrub_string(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return REDACTED_PAN if _looks_like_pan(str(abs(value))) else value
    if isinstance(value, Mapping):
        return scrub_fields({str(key): item for key, item in value.items()}, depth + 1)
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_value(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        # Raw bytes may be a PIN block or track data; nobody needs them in a log.
        return REDACTED
    return _scrub_string(str(value))


def _scrub_string(value: str) -> str:
    """Masked before it is cut, so a card number across the cut is not left in part; the scrub
    reads a card number's length past the cut, not the whole of a huge value."""
    return scrub_cut(value, VALUE_CHARS_MAX)


def scrub_fields(fields: Mapping[str, object], depth: int = 0) -> dict[str, object]:
    return {
        key: REDACTED if is_sensitive_name(key) else scrub_value(value, depth)
        for key, value in fields.items()
    }


def record_extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


# Set on a record by CardDataFilter once it has rewritten it; the formatter then need not scrub again.
_SCRUBBED: Final = "_txswitch_scrubbed"
# The record's extras as the filter left them, so the formatter need not collect them again.
_EXTRAS: Final = "_txswitch_extras"


class CardDataFilter(logging.Filter):
    """Rewrites each record so no handler after it can see card data; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SCRUBBED, False):
            return True
        record.msg = scrub_message(record.getMessage())
        record.args = None
        extras = scrub_fields(record_extras(record))
        for key, value in extras.items():
            setattr(record, key, value)
        setattr(record, _EXTRAS, extras)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_message(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_message(record.stack_info)
        setattr(record, _SCRUBBED, True)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        # Scrubbed here unless CardDataFilter did it already, so the formatter is safe even where
        # the filter was not installed.
        scrubbed = getattr(record, _SCRUBBED, False)
        message = record.getMessage()
        line: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message if scrubbed else scrub_message(message),
        }
        extras: dict[str, object] | None = getattr(record, _EXTRAS, None) if scrubbed else None
        line.update(extras if extras is not None else scrub_fields(record_extras(record)))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        # Scrubbed again after the filter, as before; not cut again: the filter's cut text is
        # MESSAGE_CHARS_MAX characters and its marker.
        scrub = scrub_text if scrubbed else scrub_message
        if record.exc_text:
            line["exception"] = scrub(record.exc_text)
        if record.stack_info:
            line["stack"] = scrub(record.stack_info)
        return _JSON.encode(line)


# One encoder for every line: json.dumps with any argument other than its defaults builds a new
# JSONEncoder per call.
_JSON: Final = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))


def _timestamp(created_s: float) -> str:
    """ISO 8601 in UTC to the millisecond, as datetime.fromtimestamp(created_s, UTC) reads it (rounded
    to the microsecond, half to even, then cut). The text up to the second is made once a second:
    the whole conversion for every line cost 2.4 us of each transaction's log line."""
    fraction, whole_s = math.modf(created_s)
    microseconds = round(fraction * 1e6)
    if microseconds >= 1_000_000:
        whole_s, microseconds = whole_s + 1, microseconds - 1_000_000
    elif microseconds < 0:
        whole_s, microseconds = whole_s - 1, microseconds + 1_000_000
    return f"{_second_text(whole_s)}.{microseconds // 1000:03d}Z"


@functools.lru_cache(maxsize=4)  # the current second and the few before it that threads still log in
def _second_text(whole_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(whole_s, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").removesuffix("+00:00")


class _TxswitchHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Route every log record, as scrubbed JSON lines, to stream (stderr by default)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _TxswitchHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _TxswitchHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(CardDataFilter())
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # asyncssh logs each console command line as typed at INFO; the console's own audit log keeps
    # it, masked (ops/console_audit.py), so asyncssh's lines below WARNING are not wanted.
    logging.getLogger("asyncssh").setLevel(max(logging.WARNING, root.level))


def skip_unused_record_fields() -> None:
    """For a process whose only log output is configure_logging's: records stop looking up what
    its JSON lines never show (thread, process, source file and line), as the logging HOWTO's
    "Optimization" section describes. Process-wide, so `txswitch serve` calls it, tests do not.
    Without the caller's frame, `stack_info=True` adds nothing to a record; no code here asks for it."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


_transaction_log = logging.getLogger(TRANSACTION_LOGGER_NAME)


def log_transaction(
    *,
    terminal_id: str,
    transaction_id: str,
    transaction_type: str,
    response_code: str,
    latency_ms: float,
    **context: Any,
) -> None:
    """The one info line per answered transaction; context adds non-card fields (e.g. rpc)."""
    if not _transaction_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, object] = {
        "event": "transaction",
        "terminal_id": terminal_id,
        "transaction_id": transaction_id,
        "type": transaction_type,
        "response_code": response_code,
        "latency_ms": round(latency_ms, 3),
    }
    # A context key named like a LogRecord attribute would make logging raise.
    for key, value in context.items():
        fields[f"context_{key}" if key in _RECORD_ATTRIBUTES else key] = value
    _transaction_log.info("transaction", extra=fields)


def log_outcome(logger: logging.Logger, terminal_id: str, outcome: Outcome, started_s: float) -> None:
    """The one info line per answered transaction, on the caller's logger: a terminal's
    (protocols.terminal_service) and a web back office's or online top-up's (switch.core).

    The two strings are scrubbed here and the record marked scrubbed, so CardDataFilter passes
    it as it is: the other fields are the switch's own (a type, a response code, a number), and
    scrubbing five fields by name and value on every transaction was a third of the line's cost."""
    if logger.isEnabledFor(logging.INFO):
        fields: dict[str, object] = {
            "terminal_id": _scrub_string(terminal_id),
            "transaction_id": _scrub_string(outcome.transaction_id),
            "type": outcome.transaction_type.value,
            "response_code": outcome.code.iso_code,
            "latency_ms": round((time.perf_counter() - started_s) * 1000, 3),
        }
        logger.info("transaction", extra={**fields, _EXTRAS: fields, _SCRUBBED: True})
