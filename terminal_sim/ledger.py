"""A snapshot of the switch's ledger, as plain frozen records the auditor can check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TransactionKey = tuple[str, str]  # (terminal_id, transaction_id)


@dataclass(frozen=True)
class LedgerTransaction:
    """A terminal transaction as the switch stored it.

    status is the switch's own word: approved, declined, reversed, voided, refunded, ...
    """

    terminal_id: str
    transaction_id: str
    operation: str  # redeem, load, refund, cancel, ...
    status: str
    card_id: str | None
    amount_approved_minor: int = 0
    original_transaction_id: str | None = None

    @property
    def key(self) -> TransactionKey:
        return (self.terminal_id, self.transaction_id)


@dataclass(frozen=True)
class Posting:
    account_id: str
    amount_minor: int  # signed: what this entry adds to the account's balance


@dataclass(frozen=True)
class JournalEntry:
    """One atomic money movement. sequence orders entries as they were committed.

    terminal_id and transaction_id name the terminal transaction that caused the entry. A
    Reversal has no id of its own, so its entry carries the reversed transaction's key; a Cancel
    or Refund has its own id and its entry carries that. An entry that undoes another sets
    reverses_entry_id. Entries not caused by a terminal (backoffice, settlement) leave keys None.
    """

    entry_id: str
    sequence: int
    postings: tuple[Posting, ...]
    terminal_id: str | None = None
    transaction_id: str | None = None
    reverses_entry_id: str | None = None

    @property
    def key(self) -> TransactionKey | None:
        if self.terminal_id is None or self.transaction_id is None:
            return None
        return (self.terminal_id, self.transaction_id)


@dataclass(frozen=True)
class CardBalance:
    card_id: str
    account_id: str
    start_minor: int  # balance when the run started
    end_minor: int  # balance when the snapshot was read


@dataclass(frozen=True)
class LedgerSnapshot:
    """The ledger of one run: entries committed after the run started, cards it may touch.

    transactions is None when the source cannot list terminal transactions (the checks that
    need them are then reported as skipped, never as passed).
    """

    cards: Mapping[str, CardBalance]
    entries: tuple[JournalEntry, ...]
    transactions: Mapping[TransactionKey, LedgerTransaction] | None = field(default=None)
