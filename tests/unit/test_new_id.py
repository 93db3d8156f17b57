"""Ids the switch makes (admin.new_id) never hold a run of digits a card number could be, so
neither `quoted` in an error nor the log's card-data filter ever masks one of our own ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from switch import admin
from switch.domain.quoting import DIGIT_RUN, quoted


def uuids(*hexes: str) -> Iterator[uuid.UUID]:
    for hex_digits in hexes:
        yield uuid.UUID(hex=hex_digits.ljust(32, "0"))


@pytest.mark.parametrize(
    ("drawn", "made"),
    [
        (("1f13994647894ab6",), "loc_1f13994647894ab6"),  # eleven digits in a row: kept
        (("1f139946478946ab", "1f13994647894ab6"), "loc_1f13994647894ab6"),  # twelve: drawn again
        (("1f1399464789466d", "1f13994647894ab6"), "loc_1f13994647894ab6"),  # thirteen (seen masked)
        (("783148967643424b", "abcdef0123456789"), "loc_abcdef0123456789"),  # fifteen: drawn again
        (("1234567890123456", "0123456789abcdef"), "loc_0123456789abcdef"),  # all sixteen
    ],
)
def test_an_id_holds_no_run_of_twelve_digits(
    monkeypatch: pytest.MonkeyPatch, drawn: tuple[str, ...], made: str
) -> None:
    draws = uuids(*drawn)
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert admin.new_id("loc") == made


def test_ids_made_are_quoted_as_they_are() -> None:
    for _ in range(2_000):
        made = admin.new_id("lch")
        assert DIGIT_RUN.search(made) is None and quoted(made) == repr(made), made
