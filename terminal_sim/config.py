"""Settings of one simulator run: fleet size, load model, flow mix, faults, limits."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
        shares = (self.duplicate, self.timeout, self.abandon)
        assert all(0.0 <= share <= 1.0 for share in shares), shares
        assert sum(shares) <= 1.0, shares


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
        assert 1 <= self.terminals <= 100_000, self.terminals
        assert self.duration_s > 0, self.duration_s
        assert self.channels >= 1, self.channels
        assert self.employees >= 1, self.employees


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
