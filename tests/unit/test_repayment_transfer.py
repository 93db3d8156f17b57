"""A merchant's repayment gives back the commission on the part of the debt it clears, as later
redemptions absorbing the debt would: what it transfers and the part each transfer clears."""

from __future__ import annotations

import pytest

from switch.domain import ledger
from switch.domain.programmes import (
    commission_minor,
    commission_percent,
    repayment_cleared_minor,
    repayment_transfer_minor,
)

RATES_BASIS_POINTS = [0, 1, 99, 250, 333, 2_500, 5_000, 7_777, 9_950, 9_999, 10_000]


@pytest.mark.parametrize(
    ("owed_minor", "basis_points", "transfer_minor"),
    [
        (1_000, 250, 975),  # a 10.00 sale paid out 9.75 at 2.5 %, then refunded
        (1_001, 250, 976),  # 25.025 commission rounds to 25
        (1_020, 250, 994),  # 25.5 rounds half up to 26
        (1_000, 0, 1_000),
        (1, 5_000, 0),  # half a cent of commission rounds up to the whole cent
        (3, 5_000, 1),
        (1_000, 9_999, 0),  # 999.9 rounds to 1000
        (1_000, 10_000, 0),  # the commission takes all of it
    ],
)
def test_the_transfer_clearing_a_debt_is_the_debt_less_its_commission(
    owed_minor: int, basis_points: int, transfer_minor: int
) -> None:
    assert repayment_transfer_minor(owed_minor, basis_points) == transfer_minor


@pytest.mark.parametrize("basis_points", RATES_BASIS_POINTS)
@pytest.mark.parametrize("owed_minor", [1, 2, 3, 7, 41, 99, 100, 1_000, 1_001, 1_020, 12_345])
def test_every_transfer_up_to_the_whole_debts_leaves_the_least_debt_whose_transfer_is_the_rest(
    owed_minor: int, basis_points: int
) -> None:
    whole_minor = repayment_transfer_minor(owed_minor, basis_points)
    for transfer_minor in range(1, whole_minor + 1):
        cleared_minor = repayment_cleared_minor(transfer_minor, owed_minor, basis_points)
        assert cleared_minor is not None and transfer_minor <= cleared_minor <= owed_minor
        left_minor = owed_minor - cleared_minor
        assert repayment_transfer_minor(left_minor, basis_points) == whole_minor - transfer_minor
        assert left_minor == 0 or repayment_transfer_minor(left_minor - 1, basis_points) < (
            whole_minor - transfer_minor
        )
        # The commission given back is what the commission on the debt drops by
        given_back_minor = cleared_minor - transfer_minor
        assert given_back_minor == commission_minor(owed_minor, basis_points) - commission_minor(
            left_minor, basis_points
        )
    if whole_minor:
        assert repayment_cleared_minor(whole_minor, owed_minor, basis_points) == owed_minor
    assert repayment_cleared_minor(whole_minor + 1, owed_minor, basis_points) is None


@pytest.mark.parametrize("basis_points", RATES_BASIS_POINTS)
@pytest.mark.parametrize("owed_minor", [41, 10_001])
def test_partial_transfers_one_after_another_transfer_the_whole_debts_and_give_back_its_commission(
    basis_points: int, owed_minor: int
) -> None:
    whole_minor = repayment_transfer_minor(owed_minor, basis_points)
    for first_minor in range(1, whole_minor, 1 if owed_minor < 100 else 97):
        first_cleared = repayment_cleared_minor(first_minor, owed_minor, basis_points)
        assert first_cleared is not None
        left_minor = owed_minor - first_cleared
        rest_minor = repayment_transfer_minor(left_minor, basis_points)
        assert first_minor + rest_minor == whole_minor
        rest_cleared = repayment_cleared_minor(rest_minor, left_minor, basis_points) if rest_minor else 0
        assert rest_cleared == left_minor
        given_back_minor = first_cleared - first_minor + rest_cleared - rest_minor
        assert given_back_minor == commission_minor(owed_minor, basis_points)


def test_the_repayment_entry_gives_back_the_commission_on_the_part_cleared() -> None:
    entry = ledger.repayment_entry("repay:r-1", "EUR", "gift", "m-1", 1_000, 1_000, 975)
    assert {p.account_id: p.amount_minor for p in entry.postings} == {
        ledger.merchant_payable_account("m-1", "gift"): 1_000,
        ledger.payout_clearing_account("gift"): -975,
        ledger.commission_account("gift"): -25,
    }
    payable = entry.postings[0]
    assert payable.ceiling_minor == 0  # never above zero
    # A part lands only while the merchant owes at least the debt it was judged on (12.00)
    part = ledger.repayment_entry("repay:r-3", "EUR", "gift", "m-1", 1_200, 1_000, 975)
    assert part.postings[0].ceiling_minor == -200
    at_no_commission = ledger.repayment_entry("repay:r-2", "EUR", "gift", "m-1", 500, 500, 500)
    assert len(at_no_commission.postings) == 2  # no empty commission posting


@pytest.mark.parametrize(
    ("basis_points", "shown"),
    [(0, "0 %"), (1, "0.01 %"), (250, "2.5 %"), (333, "3.33 %"), (1_000, "10 %"), (10_000, "100 %")],
)
def test_a_commission_is_shown_in_percent(basis_points: int, shown: str) -> None:
    assert commission_percent(basis_points) == shown
