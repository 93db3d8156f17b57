"""Settings of one simulator run: fleet size, load model, flow mix, faults, limits."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

TERMINALS_MAX = 100_000
# Each card is one IssueCard call to provision (hundreds a second) and is held by the auditor and
# the Zipf picker for the whole run; a million is already a quarter hour of provisioning.
CARDS_MAX = 1_000_000


class SettingError(ValueError):
    """A setting outside what the simulator allows: `names` are the fields at fault, `rule` says
    what they may be (and what they were), so a command line can name its own flags instead."""

    def __init__(self, names: tuple[str, ...], rule: str) -> None:
        super().__init__(f"{joined(names)} {rule}")
        self.names = names
        self.rule = rule


def joined(names: tuple[str, ...]) -> str:
    """("a",) -> "a"; ("a", "b", "c") -> "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def check_count(name: str, value: int, least: int, most: int | None = None) -> None:
    """A whole number from least to most (no limit above when most is None)."""
    if most is not None and not least <= value <= most:
        raise SettingError((name,), f"must be from {least:,} to {most:,}, not {value}")
    if value < least:
        raise SettingError((name,), f"must be at least {least}, not {value}")


def check_above_zero(name: str, value: float) -> None:
    """A finite number above 0 (NaN and infinity are not)."""
    if not (math.isfinite(value) and value > 0):
        raise SettingError((name,), f"must be above 0 and finite, not {value}")


def check_not_negative(name: str, value: float) -> None:
    """A finite number, 0 or above."""
    if not (math.isfinite(value) and value >= 0):
        raise SettingError((name,), f"must not be negative or infinite, not {value}")


def check_share(name: str, value: float) -> None:
    """A share, from 0 to 1 (NaN is not)."""
    if not 0.0 <= value <= 1.0:
        raise SettingError((name,), f"must be from 0 to 1, not {value}")


class LoadModel(enum.StrEnum):
    closed = "closed"  # each terminal waits for its answer, then thinks
    open = "open"  # Poisson arrivals at a target rate, latency from the intended send time


@dataclass(frozen=True)
class FlowWeights:
    """Relative weights of the flows a shop runs; day close is time-driven, not weighted."""

    redeem: float = 50.0
    balance: float = 15.0
    load: float = 20.0
    refund: float = 5.0
    cancel: float = 10.0


@dataclass(frozen=True)
class FaultShares:
    """Shares (0..1) of money requests that suffer each fault; at most one fault per request."""

    duplicate: float = 0.0  # sent twice with the same transaction id
    timeout: float = 0.0  # the terminal gives up, then asks TransactionStatus or sends Reversal
    abandon: float = 0.0  # the terminal is switched off mid-request and never asks

    def __post_init__(self) -> None:
        shares = {"duplicate": self.duplicate, "timeout": self.timeout, "abandon": self.abandon}
        for name, share in shares.items():
            check_share(name, share)
        if sum(shares.values()) > 1.0:
            raise SettingError(tuple(shares), f"together must not be above 1, not {sum(shares.values()):g}")


@dataclass(frozen=True)
class SimConfig:
    terminals: int = 20
    duration_s: float = 20.0
    load_model: LoadModel = LoadModel.closed
    think_time_ms_mean: float = 0.0  # closed loop: exponential think time between transactions
    target_rate_per_s: float = 100.0  # open loop: transactions per second for the whole fleet
    flows: FlowWeights = field(default_factory=FlowWeights)
    faults: FaultShares = field(default_factory=FaultShares)
    wrong_pin_share: float = 0.02  # refund/cancel with a wrong employee PIN
    # The shop's employees who sign refunds and cancels; terminal i is signed for by employee
    # i % employees. One employee for a whole fleet would make every refund wait for the others'
    # PIN checks (the switch checks one employee's PINs one at a time, so lockout counts every
    # try), and three wrong PINs in a row anywhere would lock refunds fleet-wide for 15 minutes.
    employees: int = 50
    partial_share: float = 0.3  # redemptions that allow a partial approval
    zipf_exponent: float = 1.1
    day_length_s: float = 10.0  # one simulated shop day; a day close ends each
    terminal_timeout_s: float = 5.0  # the terminal's own patience per request
    activation_timeout_s: float = 60.0
    fault_timeout_s_max: float = 0.004  # a faulty timeout fires within this after sending
    switched_off_s: float = 0.5  # how long an abandoned terminal stays off
    activation_concurrency_max: int = 32
    channels: int = 4  # grpc connections shared by the fleet
    seed: int = 1
    recent_transactions_max: int = 32  # per terminal, candidates for refund and cancel
    exchanges_max: int = 2_000_000  # every exchange is kept for the auditor; beyond, run stops

    def __post_init__(self) -> None:
        check_count("terminals", self.terminals, 1, TERMINALS_MAX)
        check_count("employees", self.employees, 1)
        check_count("channels", self.channels, 1)
        for name in ("duration_s", "target_rate_per_s", "day_length_s"):
            check_above_zero(name, getattr(self, name))
        check_not_negative("think_time_ms_mean", self.think_time_ms_mean)
        check_share("wrong_pin_share", self.wrong_pin_share)
        check_share("partial_share", self.partial_share)


WRONG_PIN = "0000"  # what a terminal types for a wrong employee PIN: no employee is given it


@dataclass(frozen=True)
class ShopLogin:
    """Who the terminals are: the merchant login and the employees who sign refunds.

    employee_number and employee_pin are the first employee's; more_employees the others', as
    (number, PIN) pairs. Terminal i is signed for by employee i of all of them, round robin.
    """

    merchant_email: str
    password: str
    location: str
    employee_number: str
    employee_pin: str
    currency: str = "EUR"
    more_employees: tuple[tuple[str, str], ...] = ()

    def employee_of(self, terminal_index: int) -> tuple[str, str]:
        """(number, PIN) of the employee who signs for terminal terminal_index."""
        turn = terminal_index % (1 + len(self.more_employees))
        return (self.employee_number, self.employee_pin) if turn == 0 else self.more_employees[turn - 1]
