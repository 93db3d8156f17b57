"""Card programmes: gift cards redeemed at member merchants, benefit cards with a co-payment."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from switch.domain.money import Money, proportional_share


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

    @property
    def load_step_minor(self) -> int | None:
        """Loads are whole multiples of this, or of any amount (None). A co-payment is a price per
        step ("voor elke 5 euro op jouw kaart, moet je zelf maar 1,80 euro betalen"): a load of part
        of one would cost the holder a share rounded up, so the step is the co-payment's unit."""
        return self.copayment.denominator_minor if self.copayment is not None else None

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


def commission_minor(gross_minor: int, commission_basis_points: int) -> int:
    """The programme's commission on a merchant's payout, rounded half up."""
    assert 0 <= commission_basis_points <= 10_000
    return proportional_share(gross_minor, commission_basis_points, 10_000)


# Payout cycles are counted in whole weeks from this Monday, so every node and every run agrees.
PAYOUT_EPOCH = dt.date(2024, 1, 1)


def payout_cycle_start(day: dt.date, interval_weeks: int) -> dt.date:
    """The Monday the payout cycle holding `day` began; a cycle lasts interval_weeks weeks."""
    assert interval_weeks >= 1
    cycle_days = 7 * interval_weeks
    return PAYOUT_EPOCH + dt.timedelta(days=(day - PAYOUT_EPOCH).days // cycle_days * cycle_days)


def payout_settlement_id(day: dt.date, interval_weeks: int) -> str:
    """The settlement id of the cycle's payout: a second run in the same cycle pays nothing twice."""
    return f"payout-{payout_cycle_start(day, interval_weeks).isoformat()}"


def cycle_payout_minor(owed_at_run_minor: int, balance_minor: int) -> int:
    """What a merchant is paid in a payout cycle: what it was owed when the cycle's payout ran (0 if
    nothing), never more than its payable holds now. Redeemed since the run waits for the next cycle;
    refunded since is taken off."""
    assert owed_at_run_minor >= 0, owed_at_run_minor
    return max(0, min(owed_at_run_minor, balance_minor))
