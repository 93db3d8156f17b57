"""quoted: a caller's value as a message shows it (card numbers masked, cut, escaped)."""

from __future__ import annotations

import re
from random import Random

import pytest

from ops.logs import scrub_text
from switch.domain.quoting import QUOTED_CHARS_MAX, REDACTED_PAN, quoted

LONG = "x" * (1 << 20)

CASES = [
    # (value, shown)
    ("Europe/Amsterdam", "'Europe/Amsterdam'"),
    ("", "''"),
    ("4111111111111111", f"'{REDACTED_PAN}'"),  # Luhn-valid, 16 digits
    ("6001029876543210126", f"'{REDACTED_PAN}'"),  # Luhn-valid, 19 digits
    ("4111 1111 1111 1111", f"'{REDACTED_PAN}'"),  # as typed
    ("4111-1111-1111-1112", f"'{REDACTED_PAN}'"),  # mistyped: not Luhn-valid, masked all the same
    ("card 4111 - 1111 - 1111 - 1111 lost", f"'card {REDACTED_PAN} lost'"),
    ("123456789012", f"'{REDACTED_PAN}'"),  # 12 digits: as short as a card number may be
    ("12345678901", "'12345678901'"),  # 11: a number, not a card's
    ("tup_0000aaaa0000aaaa", "'tup_0000aaaa0000aaaa'"),
    ("x" * QUOTED_CHARS_MAX, f"'{'x' * QUOTED_CHARS_MAX}'"),
    (LONG, f"'{'x' * QUOTED_CHARS_MAX}...'"),
    # A card number across the cut: masked before it is cut, no digit of it left.
    ("x" * 35 + "4111111111111111" + LONG, f"'{'x' * 35}{REDACTED_PAN[:5]}...'"),
    # A long run masked shrinks the text, bringing a card number cut by the read's end into view:
    # the cut part is masked too, none of its 11 digits shown.
    ("1" * 101 + "x" + "4111111111111111", f"'{REDACTED_PAN}x{REDACTED_PAN}...'"),
    ("a\0b\u202ec\n", "'a\\x00b\\u202ec\\n'"),  # what does not print, escaped
    ("\0" * (2 * QUOTED_CHARS_MAX), "'" + "\\x00" * QUOTED_CHARS_MAX + "...'"),
]


@pytest.mark.parametrize(("value", "shown"), CASES)
def test_quoted(value: str, shown: str) -> None:
    assert quoted(value) == shown


@pytest.mark.parametrize("value", [value for value, _ in CASES if len(value) <= QUOTED_CHARS_MAX])
def test_a_short_value_is_masked_as_the_log_masks_typed_text(value: str) -> None:
    assert quoted(value) == repr(scrub_text(value, typed=True))


def test_no_seven_digits_of_a_card_number_are_shown_whatever_surrounds_it() -> None:
    # Seeded: card numbers (digits 1-4, grouped or not) among runs of 9s, letters and separators,
    # at every distance from the cut. Main before the fix showed 7 to 11 of the card's digits in
    # about one value in 10,000.
    card_digits = re.compile(r"[1-4](?:[ -]{0,3}[1-4]){6,}")
    random = Random(7)

    def filler(chars_min: int) -> str:
        parts: list[str] = []
        while sum(map(len, parts)) < chars_min:
            parts.append(random.choice(["9" * random.randint(1, 40), "x", " ", "-", "xy"]))
        return "".join(parts)

    for _ in range(30_000):
        separator = random.choice(["", " ", "-", " - ", "   "])
        card = separator.join(random.choice("1234") for _ in range(random.randint(12, 19)))
        value = filler(random.randint(0, 160)) + card + filler(random.randint(0, 60))
        assert card_digits.search(quoted(value)) is None, value
