"""Terminal commands and their outcomes, as frozen records; the fingerprint that makes retries safe."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from switch.domain.card_pins import PinProof
from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode

TRANSACTION_ID_LENGTH_MAX = 64
STORED_VALUE = "stored_value"  # the payment method of our own cards; else a bank card's entry mode


class TransactionType(enum.Enum):
    redemption = "redemption"
    load = "load"
    refund = "refund"
    cancel = "cancel"
    reversal = "reversal"
    payment = "payment"


class TransactionStatus(enum.Enum):
    approved = "approved"
    declined = "declined"
    reversed = "reversed"  # approved, then undone by a reversal
    cancelled = "cancelled"  # approved, then undone by a cancel (void)
    aborted = "aborted"


@dataclass(frozen=True, slots=True)
class EmployeeAuth:
    employee_number: str
    pin: str = field(repr=False)  # never printed


@dataclass(frozen=True, slots=True)
class Redeem:
    transaction_id: str
    card_id: str
    amount: Money
    allow_partial: bool
    # The entered closed-loop card PIN, as a verification value; never part of the fingerprint.
    pin: PinProof | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Load:
    transaction_id: str
    card_id: str
    amount: Money
    # An online top-up's load (switch/top_ups.py): its amount was whole steps of the programme's load
    # step when the holder started it and was quoted its price, so a step changed since does not
    # refuse what was paid for. No terminal sets it; not in the fingerprint (a top-up's load sent
    # again after an upgrade is the same transaction).
    priced_at_start: bool = False


@dataclass(frozen=True, slots=True)
class Refund:
    transaction_id: str
    original_transaction_id: str
    amount: Money
    employee: EmployeeAuth


@dataclass(frozen=True, slots=True)
class Cancel:
    transaction_id: str
    original_transaction_id: str
    employee: EmployeeAuth


# The ids the switch gives the reversal and the completion of a transaction (below), in the same
# namespace as the ids terminals choose: a terminal's id may not start with them, or a redemption
# named "reversal:x" would take the id x's reversal needs, and x could never be reversed.
RESERVED_ID_PREFIXES = ("reversal:", "completion:")


@dataclass(frozen=True, slots=True)
class Reversal:
    original_transaction_id: str
    # An acquirer's (inbound ISO 8583): an authorisation its completion gave part of back is reversed
    # for what it leaves charged (the final amount). A terminal's reverses only what nothing refunded.
    after_completion: bool = False

    @property
    def transaction_id(self) -> str:
        # A reversal is identified by what it reverses, so repeating it is idempotent.
        return f"reversal:{self.original_transaction_id}"


@dataclass(frozen=True, slots=True)
class Completion:
    """An acquirer's final amount for an authorisation it had approved (ISO 8583 0220).

    The authorisation took its whole amount from the card; `amount` is what it took above the
    final one, which goes back to the card. Identified by the authorisation, so it is taken once.
    """

    original_transaction_id: str
    amount: Money

    @property
    def transaction_id(self) -> str:
        return f"completion:{self.original_transaction_id}"


TerminalCommand = Redeem | Load | Refund | Cancel | Reversal
AdjustingCommand = Refund | Cancel | Reversal | Completion

COMMAND_TYPES: dict[type[TerminalCommand], TransactionType] = {
    Redeem: TransactionType.redemption,
    Load: TransactionType.load,
    Refund: TransactionType.refund,
    Cancel: TransactionType.cancel,
    Reversal: TransactionType.reversal,
}


def transaction_type_of(command: TerminalCommand | Completion) -> TransactionType:
    # A completion gives money back to the card from what the merchant was owed, as a refund does.
    return TransactionType.refund if isinstance(command, Completion) else COMMAND_TYPES[type(command)]


def fingerprint(command: TerminalCommand | Completion) -> str:
    """A digest of everything that makes a request what it is (never the employee PIN)."""
    kind = "completion" if isinstance(command, Completion) else COMMAND_TYPES[type(command)].value
    parts: list[str] = [kind]
    match command:
        case Redeem():
            parts += [command.card_id, _money(command.amount), str(command.allow_partial)]
        case Load():
            parts += [command.card_id, _money(command.amount)]
        case Refund() | Completion():
            parts += [command.original_transaction_id, _money(command.amount)]
        case Cancel():
            parts += [command.original_transaction_id]
        case Reversal():
            parts += [command.original_transaction_id]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _money(money: Money) -> str:
    return f"{money.amount_minor}{money.currency}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the switch answered to one transaction."""

    transaction_id: str
    transaction_type: TransactionType
    code: ResponseCode
    detail: str = ""
    requested: Money | None = None
    approved: Money | None = None
    balance: Money | None = None
    card_masked: str = ""
    authorization_code: str = ""
    period_number: int = 0
    cardholder_part: Money | None = None
    funder_part: Money | None = None
    status: TransactionStatus = TransactionStatus.declined
    persisted: bool = True  # False: a system error whose request may be retried afresh
    payment_method: str = STORED_VALUE  # or a card entry mode: contactless, chip, magstripe

    @property
    def message(self) -> str:
        return f"{self.code.message}: {self.detail}" if self.detail else self.code.message


def declined(
    transaction_id: str,
    transaction_type: TransactionType,
    code: ResponseCode,
    detail: str = "",
    *,
    requested: Money | None = None,
    balance: Money | None = None,
    card_masked: str = "",
    period_number: int = 0,
    persisted: bool = True,
) -> Outcome:
    assert not code.approves, code
    return Outcome(
        transaction_id,
        transaction_type,
        code,
        detail,
        requested=requested,
        balance=balance,
        card_masked=card_masked,
        period_number=period_number,
        persisted=persisted,
    )
