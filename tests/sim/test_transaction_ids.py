"""The simulator's transaction ids read in the switch's log as sent: about one in ten of them was
logged as `[REDACTED-PAN]` (the run, terminal and counter digits made a 12+ digit Luhn-valid run),
so a load tester could not find a transaction in the log by its id."""

from __future__ import annotations

import itertools

import pytest

from ops.logs import scrub_text
from terminal_sim.terminal import transaction_id_of


@pytest.mark.parametrize("run_id", ["004b7375", "a1b2c3d4", "00000000", "9999999f"])
def test_no_transaction_id_looks_like_a_card_number_to_the_log(run_id: str) -> None:
    numbers = itertools.product(range(40), range(1, 500))
    ids = [transaction_id_of(run_id, index, counter) for index, counter in numbers]
    assert len(set(ids)) == len(ids)
    assert [i for i in ids if scrub_text(i) != i] == []
