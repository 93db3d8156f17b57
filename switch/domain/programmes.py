"""Card programmes: gift cards redeemed at member merchants, benefit cards with a co-payment."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from switch.domain.money import Money, proportional_share
from switch.domain.quoting import mask_digit_runs

# The city card's letter: "voor elke 5 euro op jouw kaart, moet je zelf maar 1,80 euro betalen".
LOAD_STEP_MINOR_DEFAULT = 500


class ProgrammeKind(enum.Enum):
    gift = "gift"
    benefit = "benefit"


@dataclass(frozen=True, slots=True)
class CoPayment:
    """The holder pays numerator_minor for each denominator_minor loaded; the funder pays the rest."""

    numerator_minor: int
    denominator_minor: int

    def __post_init__(self) -> None:
        assert 0 <= self.numerator_minor <= self.denominator_minor, self
        assert self.denominator_minor > 0, self

    def split(self, amount_minor: int) -> tuple[int, int]:
        """(holder part, funder part), summing to amount_minor. The holder's part is rounded up: the
        funder pays at most its share of every load, so loads of a cent cost the holder 100 %, not 0
        (rounded half up, twenty loads of 0.01 cost the holder nothing)."""
        holder_minor = -(-amount_minor * self.numerator_minor // self.denominator_minor)
        return holder_minor, amount_minor - holder_minor


@dataclass(frozen=True, slots=True)
class Programme:
    programme_id: str
    name: str
    kind: ProgrammeKind
    currency: str
    card_prefix: str
    balance_max_minor: int
    copayment: CoPayment | None  # benefit programmes only
    payout_interval_weeks: int
    card_validity_months: int
    # Loads are whole multiples of this, or of any amount (None). Its own setting: the co-payment's
    # denominator is only a ratio (1800 per 5000 is 1.80 per 5.00, not loads of 50.00 only).
    load_step_minor: int | None = None

    def __post_init__(self) -> None:
        assert self.load_step_minor is None or self.load_step_minor > 0, self

    def load_step_problem(self, amount_minor: int) -> str | None:
        """Why a load of amount_minor is not whole steps of this programme; None when it is."""
        step_minor = self.load_step_minor
        if step_minor is None or amount_minor % step_minor == 0:
            return None
        return f"loads are in steps of {Money(step_minor, self.currency).format()}"

    def split_load(self, amount_minor: int) -> tuple[int, int]:
        """(holder part, funder part) of a load."""
        if self.copayment is None:
            return amount_minor, 0
        return self.copayment.split(amount_minor)


def load_step_setting_problem(
    load_step_minor: int, balance_max_minor: int, copayment: CoPayment | None
) -> str | None:
    """Why a programme cannot have this load step; None when it can. A step above the maximum is no
    load at all; a step whose co-payment is part of a cent would round every load's holder part."""
    if load_step_minor <= 0:
        return "load_step_minor must be positive"
    # The numbers are the caller's, 64 bits wide: a card number typed into one is masked.
    step = _shown(load_step_minor)
    if load_step_minor > balance_max_minor:
        return (
            f"load_step_minor {step} is above balance_max_minor {_shown(balance_max_minor)}: "
            "no load would fit"
        )
    if copayment is not None and load_step_minor * copayment.numerator_minor % copayment.denominator_minor:
        return (
            f"load_step_minor {step}: the co-payment {_shown(copayment.numerator_minor)} per "
            f"{_shown(copayment.denominator_minor)} of one step is not a whole number of minor units"
        )
    return None


def _shown(number: int) -> str:
    return mask_digit_runs(str(number))


def stored_load_step_minor(
    load_step_minor: int | None, balance_max_minor: int, copayment: CoPayment | None
) -> int | None:
    """The step of a programme as stored. One stored before the step was its own setting (NULL)
    loaded in its co-payment's denominator; it loads in LOAD_STEP_MINOR_DEFAULT where that divides
    the denominator (every load taken before is still taken) and fits it, else in the denominator,
    as it did: either way a whole number of cents per step."""
    if load_step_minor is not None or copayment is None:
        return load_step_minor
    divides = copayment.denominator_minor % LOAD_STEP_MINOR_DEFAULT == 0
    if divides and load_step_setting_problem(LOAD_STEP_MINOR_DEFAULT, balance_max_minor, copayment) is None:
        return LOAD_STEP_MINOR_DEFAULT
    return copayment.denominator_minor


def commission_minor(gross_minor: int, commission_basis_points: int) -> int:
    """The programme's commission on a merchant's payout, rounded half up."""
    assert 0 <= commission_basis_points <= 10_000
    return proportional_share(gross_minor, commission_basis_points, 10_000)


def commission_percent(commission_basis_points: int) -> str:
    """A commission as an operator reads it: 250 -> "2.5 %", 10000 -> "100 %"."""
    whole, hundredths = divmod(commission_basis_points, 100)
    return f"{whole}.{hundredths:02d}".rstrip("0").rstrip(".") + " %"


def repayment_transfer_minor(owed_minor: int, commission_basis_points: int) -> int:
    """What a merchant owing owed_minor transfers to clear it: the debt less the commission on it
    (rounded as at a payout), given back, as later redemptions absorbing the debt would."""
    assert owed_minor >= 0
    return owed_minor - commission_minor(owed_minor, commission_basis_points)


def repayment_cleared_minor(transfer_minor: int, owed_minor: int, commission_basis_points: int) -> int | None:
    """The part of a debt of owed_minor a bank transfer of transfer_minor clears; None for a
    transfer above the one that clears it all.

    It clears what leaves a debt whose transfer is the rest of the whole debt's: the parts of a
    debt repaid one after another transfer the whole debt's transfer, no more, no less, and give
    back the commission on the whole debt (each part gives back what the commission on the debt
    drops by). Parts each cleared as a gross of their own were rounded each: 0.41 at 2.5 % repaid
    0.20 then 0.19 gave back 0.02 of a 0.01 commission. The transfer for a debt grows with it in
    steps of 0 or 1, so every rest is reached; of the debts left with it, the least."""
    assert transfer_minor > 0 and owed_minor >= 0
    whole_minor = repayment_transfer_minor(owed_minor, commission_basis_points)
    if transfer_minor > whole_minor:
        return None
    rest_minor = whole_minor - transfer_minor
    low, high = 0, owed_minor  # the least debt left whose transfer is the rest
    while low < high:  # halves the range each time: at most about 64 rounds
        middle = (low + high) // 2
        if repayment_transfer_minor(middle, commission_basis_points) < rest_minor:
            low = middle + 1
        else:
            high = middle
    assert repayment_transfer_minor(low, commission_basis_points) == rest_minor
    return owed_minor - low


# Payout cycles are counted in whole weeks from this Monday, so every node and every run agrees.
PAYOUT_EPOCH = dt.date(2024, 1, 1)


def payout_cycle_start(day: dt.date, interval_weeks: int) -> dt.date:
    """The Monday the payout cycle holding `day` began; a cycle lasts interval_weeks weeks."""
    assert interval_weeks >= 1
    cycle_days = 7 * interval_weeks
    return PAYOUT_EPOCH + dt.timedelta(days=(day - PAYOUT_EPOCH).days // cycle_days * cycle_days)


# The payout cycles' settlement ids begin so; a Settle's may not, or it would take a cycle's key
PAYOUT_SETTLEMENT_PREFIX = "payout-"


def payout_settlement_id(day: dt.date, interval_weeks: int) -> str:
    """The settlement id of the cycle's payout: a second run in the same cycle pays nothing twice."""
    return f"{PAYOUT_SETTLEMENT_PREFIX}{payout_cycle_start(day, interval_weeks).isoformat()}"


def cycle_payout_minor(owed_at_run_minor: int, balance_minor: int) -> int:
    """What a merchant is paid in a payout cycle: what it was owed when the cycle's payout ran (0 if
    nothing), never more than its payable holds now. Redeemed since the run waits for the next cycle;
    refunded since is taken off."""
    assert owed_at_run_minor >= 0, owed_at_run_minor
    return max(0, min(owed_at_run_minor, balance_minor))
