"""Messages the terminal and card actors understand, as small typed records."""

from __future__ import annotations

from dataclasses import dataclass, field

from switch.domain.cards import CardStatus
from switch.domain.ledger import LedgerRefusal
from switch.domain.transactions import AdjustingCommand, Cancel, Load, Redeem, Refund, Reversal


@dataclass(frozen=True, slots=True)
class TerminalContext:
    terminal_id: str
    merchant_id: str
    period_number: int
    # The ISO 8583 MTI an inbound request came as, stored with its answer; "" for a terminal's.
    mti: str = ""
    # Field 37 of an inbound 0100/0200, stored with its answer so a resend under a new field 7 finds it.
    retrieval_reference: str = ""


# To a card actor


@dataclass(frozen=True, slots=True)
class Authorize:
    """Redeem from or load onto the card."""

    command: Redeem | Load
    terminal: TerminalContext
    fingerprint: str


@dataclass(frozen=True, slots=True)
class AdjustOriginal:
    """Refund, cancel, reverse or complete an earlier transaction on the card."""

    command: AdjustingCommand
    terminal: TerminalContext
    fingerprint: str


@dataclass(frozen=True, slots=True)
class GetBalance:
    pass


@dataclass(frozen=True, slots=True)
class SetStatus:
    status: CardStatus
    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class SetCardPin:
    """A new PIN verification value for the card; clears its wrong tries."""

    pvv: str = field(repr=False)
    pvv_key_id: str = ""


@dataclass(frozen=True, slots=True)
class TransferOut:
    """Move the whole balance to a replacement card; the card is already blocked or lost."""

    new_card_id: str
    idempotency_key: str
    actor: str
    # The lost card's own replacement as the caller read it before judging this one (None: not
    # replaced): the journal refuses the change if another replacement landed since.
    replaced_by_seen: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRefused:
    """Why a TransferOut moved nothing, as values: the caller's answer names the cards (masked)."""

    balance_minor: int  # the lost card's balance the transfer would have moved
    lost_card_status: CardStatus | None = None  # the lost card was this (unblocked) when read
    new_card_status: CardStatus | None = None  # the journal found the new card so, not active
    refusal: LedgerRefusal | None = None  # the rule the journal's write broke, when it named one
    balance_changed: bool = False  # the lost card's balance changed at every read (another node)
    fault: bool = False  # not stored for a fault of the database or journal, no rule: may land if sent again
    problem: str = ""  # the journal's own words, for the log: internal ids, no card number


# To a terminal actor


@dataclass(frozen=True, slots=True)
class Submit:
    command: Redeem | Load | Refund | Cancel | Reversal


@dataclass(frozen=True, slots=True)
class QueryStatus:
    transaction_id: str


@dataclass(frozen=True, slots=True)
class CloseDay:
    close_id: str
    # The period to close (a terminal's DayClose naming it, or the web back office's close): if that
    # period is not the open one, nothing is closed (DayClosePeriodError), and a close id stored
    # for another period is refused. None: the open one (a DayClose naming none).
    period_number: int | None = None
    # Close only if the period holds approved money, judged once what is in flight has landed
    # (a deactivation's close); otherwise nothing is closed and the answer is None.
    only_if_approved: bool = False


@dataclass(frozen=True, slots=True)
class ReportX:
    pass


@dataclass(frozen=True, slots=True)
class Deactivate:
    pass


@dataclass(frozen=True, slots=True)
class Reload:
    """The terminal's row changed around its actor (activated again): read it afresh."""
