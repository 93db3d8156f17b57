"""The simulator's transaction ids read in the switch's log as sent: about one in ten of them was
logged as `[REDACTED-PAN]` (the run, terminal and counter digits made a 12+ digit Luhn-valid run),
so a load tester could not find a transaction in the log by its id."""

from __future__ import annotations

import itertools
import uuid

import pytest

from ops.logs import holds_card_number, scrub_text
from terminal_sim.payments import payment_transaction_id
from terminal_sim.terminal import close_id_of, transaction_id_of


@pytest.mark.parametrize("run_id", ["004b7375", "a1b2c3d4", "00000000", "9999999f"])
def test_no_transaction_id_looks_like_a_card_number_to_the_log(run_id: str) -> None:
    numbers = itertools.product(range(40), range(1, 500))
    ids = [transaction_id_of(run_id, index, counter) for index, counter in numbers]
    assert len(set(ids)) == len(ids)
    assert [i for i in ids if scrub_text(i) != i] == []


@pytest.mark.parametrize("run_id", ["004b7375", "00000000", "12345678", "9999999f"])
def test_no_close_id_holds_a_card_number(run_id: str) -> None:
    """A day close's id with an all-digit run id (one run in 40) held 13 digits in a row, which
    the log masked and the switch refuses as an id holding a card number."""
    ids = [close_id_of(run_id, index, day) for index, day in itertools.product(range(1_000), range(1, 8))]
    assert len(set(ids)) == len(ids)
    assert [i for i in ids if holds_card_number(i) or scrub_text(i) != i] == []


def test_a_payment_id_never_holds_a_card_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """The payment simulator's ids are uuid4s, whose digits hold a card number about once in 185
    draws; the switch refuses such an id (INVALID_ARGUMENT), so the simulator draws again."""
    holding = uuid.UUID("ab411111-1111-1111-11cd-ef0123abcd45")  # 4111 1111 1111 1111 in its hex
    assert holds_card_number(holding.hex)
    drawn = iter([holding, holding, uuid.UUID("004b7375-abcd-4ef0-8abc-def0abcd1234")])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert payment_transaction_id() == "004b7375abcd4ef08abcdef0abcd1234"
