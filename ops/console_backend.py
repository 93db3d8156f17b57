"""The OpsBackend protocol the switch implements for the ops console, and the records it returns."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of an operator action: ok, and a one-line message for the operator. unavailable:
    not done for a fault that may pass (the database, the journal), not for a rule; sent again, it
    may succeed (the console's exit status 75, as gRPC's UNAVAILABLE)."""

    ok: bool
    message: str
    unavailable: bool = False


@dataclass(frozen=True, slots=True)
class TopUpsWaiting:
    """Online top-ups paid and not done with, as the top-up sweep last counted them (the counts of
    txswitch_top_ups_waiting), and how long the oldest of each has waited, as of now."""

    confirming: int  # its load not known yet: the sweep tries again
    refund_due: int  # not loaded: the operator refunds the holder
    oldest_confirming_waited_s: int
    oldest_refund_due_waited_s: int


@dataclass(frozen=True, slots=True)
class SwitchStatus:
    version: str
    uptime_s: int
    draining: bool
    terminals_active: int  # devices; not the switch's own (web back office, online top-up)
    switch_terminals_active: int
    terminals_online: int
    card_actors_live: int
    requests_in_flight: int
    acquirer_links_up: int
    acquirer_links_total: int
    store_and_forward_pending: int
    location_changes_pending: int  # merchants' changes waiting for the operator's check
    location_change_oldest_waited_s: int
    # Unique indexes this node's start left out because rows break them (see the log); a start
    # after the rows are resolved creates them.
    indexes_missing: tuple[str, ...] = ()
    top_ups_waiting: TopUpsWaiting | None = None  # None before the top-up sweep's first count


@dataclass(frozen=True, slots=True)
class TerminalInfo:
    terminal_id: str
    merchant: str
    location: str
    device_name: str
    active: bool
    online: bool
    activated_at: datetime.datetime | None
    last_seen_at: datetime.datetime | None
    day_close_sequence: int


@dataclass(frozen=True, slots=True)
class CardInfo:
    """A card as operators may see it: masked number only, never the full PAN."""

    card_ref: str
    masked_number: str
    programme: str
    status: str
    expiry: datetime.date
    balance_minor: int
    currency: str
    currency_exponent: int
    pin_blocked: bool


@dataclass(frozen=True, slots=True)
class DayCloseTotal:
    transaction_type: str
    count: int
    amount_minor: int
    currency: str
    currency_exponent: int


@dataclass(frozen=True, slots=True)
class DayCloseReport:
    """One closed period (closed_at set) or the open one (closed_at None, an X report)."""

    terminal_id: str
    sequence: int
    opened_at: datetime.datetime
    closed_at: datetime.datetime | None
    totals: Sequence[DayCloseTotal]


@dataclass(frozen=True, slots=True)
class DayCloseListing:
    """A page of a terminal's closes in sequence order; the newest page ends with the open period."""

    reports: Sequence[DayCloseReport]
    next_before_sequence: int  # the older page's before_sequence; 0: this page holds the first close


@dataclass(frozen=True, slots=True)
class AcquirerInfo:
    name: str
    state: str
    host: str
    port: int
    requests_in_flight: int
    last_echo_at: datetime.datetime | None
    store_and_forward_pending: int


@dataclass(frozen=True, slots=True)
class StoreAndForwardEntry:
    """A stored advice (e.g. a 0420 reversal) waiting for the acquirer's acknowledgement."""

    entry_id: str
    acquirer: str
    mti: str
    stan: str
    amount_minor: int
    currency: str
    currency_exponent: int
    attempts: int
    created_at: datetime.datetime
    last_attempt_at: datetime.datetime | None


@dataclass(frozen=True, slots=True)
class StoreAndForwardView:
    """The oldest pending advices, at most a limit of them, and how many are pending in all."""

    pending_total: int
    entries: Sequence[StoreAndForwardEntry]


@dataclass(frozen=True, slots=True)
class ReceiptEntry:
    """An e-mailed receipt not sent: waiting for its next attempt, or given up."""

    receipt_id: str
    terminal_id: str
    transaction_id: str
    email_masked: str
    state: str
    attempts: int
    last_error: str
    next_attempt_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class ReceiptsView:
    counts: dict[str, int]  # by state: queued, sent, failed
    entries: Sequence[ReceiptEntry]


class OpsBackend(Protocol):
    """What the console asks of the switch. Calls run on a console worker thread, one at a
    time per session, and must return within seconds; `actor` names the operator for the
    switch's own audit trail. Unknown ids give None (lookups) or ActionResult(ok=False)."""

    def status(self) -> SwitchStatus: ...

    def list_terminals(self) -> Sequence[TerminalInfo]: ...

    def find_terminal(self, terminal_id: str) -> TerminalInfo | None: ...

    def deactivate_terminal(self, terminal_id: str, actor: str) -> ActionResult: ...

    def find_card(self, card_ref: str) -> CardInfo | None: ...

    def block_card(self, card_ref: str, actor: str) -> ActionResult: ...

    def unblock_card(self, card_ref: str, actor: str) -> ActionResult: ...

    def replace_card(self, lost_card_ref: str, new_card_ref: str, actor: str) -> ActionResult: ...

    def day_close_reports(
        self, terminal_id: str, page_size: int, before_sequence: int = 0
    ) -> DayCloseListing | None:
        """The newest page_size closes before before_sequence (0: the newest, and the open period)."""
        ...

    def list_acquirers(self) -> Sequence[AcquirerInfo] | None:
        """None when the switch has no acquirer links configured."""
        ...

    def acquirer_sign_on(self, name: str, actor: str) -> ActionResult: ...

    def acquirer_echo(self, name: str, actor: str) -> ActionResult: ...

    def store_and_forward(self) -> StoreAndForwardView | None:
        """None when the switch has no acquirer links configured."""
        ...

    def store_and_forward_retry(self, actor: str) -> ActionResult: ...

    def receipts(self) -> ReceiptsView | None:
        """None when e-mailed receipts are off (no mail server configured)."""
        ...

    def receipts_retry(self, actor: str) -> ActionResult: ...

    def drain(self, actor: str) -> ActionResult:
        """Start a graceful drain and return at once; status() then reports draining."""
        ...
