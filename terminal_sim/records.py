"""What the terminals saw: one frozen record per request sent and how it ended."""

from __future__ import annotations

import enum
from dataclasses import dataclass

APPROVING_CODES = frozenset({"00", "10"})


class Operation(enum.StrEnum):
    activate = "activate"
    balance = "balance"
    redeem = "redeem"
    load = "load"
    refund = "refund"
    cancel = "cancel"
    reversal = "reversal"
    status = "status"
    day_close = "day_close"


# Requests that move money on a card when approved.
MONEY_OPERATIONS = frozenset({Operation.redeem, Operation.load, Operation.refund, Operation.cancel})


class Outcome(enum.StrEnum):
    answered = "answered"  # a reply arrived (approved or declined)
    timed_out = "timed_out"  # the terminal's own timeout fired, or the reply was lost
    abandoned = "abandoned"  # the terminal was switched off before the reply
    failed = "failed"  # the call ended with a grpc error status


@dataclass(frozen=True)
class Exchange:
    """One request and its reply as the terminal saw them.

    For reversal and status, transaction_id is the id of the transaction asked about.
    card_id is the switch's id of the card (never the clear number); for refund and cancel it
    is the card of the original transaction, which the terminal remembers.
    """

    terminal_id: str
    transaction_id: str
    operation: Operation
    outcome: Outcome
    card_id: str | None = None
    amount_requested_minor: int = 0
    amount_approved_minor: int = 0
    response_code: str | None = None
    status: str = ""  # TransactionResponse.status or TransactionStatusResponse.status
    found: bool | None = None  # TransactionStatus only
    original_transaction_id: str | None = None  # refund and cancel
    original_operation: Operation | None = None  # refund and cancel
    duplicate: bool = False  # the second copy of a request already sent
    grpc_code: str | None = None
    started_s: float = 0.0
    latency_s: float = 0.0

    @property
    def approved(self) -> bool:
        return self.outcome is Outcome.answered and self.response_code in APPROVING_CODES
