"""The rounding rules of money split in two, checked over every small amount: a payout's commission
(rounded half up, on the payout) and a load's holder part (rounded up) never create or lose a cent."""

from __future__ import annotations

import pytest

from switch.domain import ledger
from switch.domain.programmes import CoPayment, commission_minor

BASIS_POINTS = (0, 1, 250, 333, 4_999, 5_000, 5_001, 9_999, 10_000)
CO_PAYMENTS = ((180, 500), (1, 3), (2, 3), (0, 500), (500, 500), (1_800, 5_000))


@pytest.mark.parametrize(
    ("gross", "basis_points", "commission"),
    [
        (1, 5_000, 1),  # half a cent: up (half to even would give 0)
        (3, 5_000, 2),  # 1.5: up
        (5, 5_000, 3),  # 2.5: up (half to even would give 2)
        (20, 250, 1),  # 0.5: up
        (19, 250, 0),  # 0.475: down
        (100, 250, 3),  # 2.5: up (half to even would give 2)
        (400, 250, 10),  # twenty redemptions of 0.20: 10 on their sum, not 20 on each
        (1, 10_000, 1),
        (99_999_999, 9_999, 99_989_999),  # 99,989,999.0001: the largest single amount
    ],
)
def test_commission_rounds_half_up_on_the_payout(gross: int, basis_points: int, commission: int) -> None:
    assert commission_minor(gross, basis_points) == commission


@pytest.mark.parametrize("basis_points", BASIS_POINTS)
def test_a_payout_and_its_commission_are_the_gross_for_every_amount(basis_points: int) -> None:
    for gross in range(1, 5_001):
        commission = commission_minor(gross, basis_points)
        # Within half a cent of the exact share, a half rounded up
        assert -10_000 < 2 * (commission * 10_000 - gross * basis_points) <= 10_000, (gross, commission)
        entry = ledger.settlement_entry("k", "EUR", "prg", "mer", gross, commission)
        paid = entry.delta_for(ledger.payout_clearing_account("prg"))
        taken = entry.delta_for(ledger.commission_account("prg"))
        assert (paid + taken, taken) == (gross, commission)
        assert -entry.delta_for(ledger.merchant_payable_account("mer", "prg")) == gross


@pytest.mark.parametrize(("numerator", "denominator"), CO_PAYMENTS)
def test_a_loads_holder_and_funder_parts_are_the_load_for_every_amount(
    numerator: int, denominator: int
) -> None:
    co_payment = CoPayment(numerator, denominator)
    for amount in range(0, 5_001):
        holder, funder = co_payment.split(amount)
        # The holder's part rounded up, by less than a cent: the funder never pays above its share
        assert 0 <= holder * denominator - amount * numerator < denominator, (amount, holder)
        assert (holder + funder, funder >= 0) == (amount, True)
        if amount:
            entry = ledger.load_entry("k", "EUR", "card", "prg", holder, funder)
            assert entry.delta_for(ledger.card_account("card")) == amount
            taken = entry.delta_for(ledger.programme_float_account("prg")) + entry.delta_for(
                ledger.funder_account("prg")
            )
            assert taken == -amount
