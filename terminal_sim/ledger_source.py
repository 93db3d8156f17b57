"""Reads the auditor's ledger snapshot from the switch's database (schema in switch/store)."""

from __future__ import annotations

import collections
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TypeVar

from sqlalchemy import Engine, create_engine, func, select

from switch.store.schema import accounts, journal_entries, postings, transactions
from terminal_sim.ledger import (
    CardBalance,
    JournalEntry,
    LedgerSnapshot,
    LedgerTransaction,
    Posting,
    TransactionKey,
)

QUERY_CHUNK_MAX = 500  # bound on the parameters of one IN (...) query
ENTRY_PREFIX = "txn"  # txn:<terminal id>:<transaction id>, see actors/card_actor.entry_key
UNDO_PREFIX = "undo"  # undo:<terminal id>:<original id>: a cancel's or reversal's entry
TRANSACTION_OPERATIONS = {"redemption": "redeem"}  # switch's type name -> simulator operation

T = TypeVar("T")


def card_account_id(card_id: str) -> str:
    return f"card:{card_id}"  # switch.domain.ledger.card_account


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), QUERY_CHUNK_MAX):
        yield items[start : start + QUERY_CHUNK_MAX]


def open_engine(database_url: str) -> Engine:
    return create_engine(database_url)


def journal_mark(engine: Engine) -> int:
    """The highest journal entry id now: entries after it belong to the run that starts."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(journal_entries.c.entry_id))).scalar() or 0)


def read_card_balances(engine: Engine, card_ids: Collection[str]) -> dict[str, int]:
    by_account = {card_account_id(card_id): card_id for card_id in card_ids}
    balances: dict[str, int] = {}
    with engine.connect() as conn:
        for chunk in _chunks(sorted(by_account)):
            rows = conn.execute(
                select(accounts.c.account_id, accounts.c.balance_minor).where(
                    accounts.c.account_id.in_(chunk)
                )
            )
            for account_id, balance_minor in rows:
                balances[by_account[account_id]] = int(balance_minor)
    return balances


def _read_transactions(
    engine: Engine, terminal_ids: Collection[str]
) -> dict[TransactionKey, LedgerTransaction]:
    row = transactions.c
    found: dict[TransactionKey, LedgerTransaction] = {}
    with engine.connect() as conn:
        for chunk in _chunks(sorted(terminal_ids)):
            query = select(
                row.source,
                row.transaction_id,
                row.transaction_type,
                row.status,
                row.card_id,
                row.approved_minor,
                row.original_transaction_id,
            ).where(row.source.in_(chunk))
            for source, txn_id, txn_type, status, card_id, approved, original in conn.execute(query):
                found[(source, txn_id)] = LedgerTransaction(
                    terminal_id=source,
                    transaction_id=txn_id,
                    operation=TRANSACTION_OPERATIONS.get(txn_type, txn_type),
                    status=status,
                    card_id=card_id,
                    amount_approved_minor=int(approved),
                    original_transaction_id=original or None,
                )
    return found


def _read_entries(engine: Engine, after_entry_id: int) -> list[tuple[int, str, list[Posting]]]:
    entry, posting = journal_entries.c, postings.c
    grouped: dict[int, list[Posting]] = collections.defaultdict(list)
    keys: dict[int, str] = {}
    with engine.connect() as conn:
        query = (
            select(entry.entry_id, entry.idempotency_key, posting.account_id, posting.amount_minor)
            .join(postings, posting.entry_id == entry.entry_id)
            .where(entry.entry_id > after_entry_id)
            .order_by(entry.entry_id, posting.posting_id)
        )
        for entry_id, key, account_id, amount_minor in conn.execute(query):
            keys[entry_id] = key
            grouped[entry_id].append(Posting(account_id, int(amount_minor)))
    return [(entry_id, keys[entry_id], grouped[entry_id]) for entry_id in sorted(keys)]


def _map_entry(
    entry_id: int,
    idempotency_key: str,
    entry_postings: list[Posting],
    cancels: Mapping[TransactionKey, str],
    forward_ids: Mapping[TransactionKey, str],
) -> JournalEntry:
    """Give each entry the key of the terminal transaction that caused it.

    The switch keys a cancel's and a reversal's entry alike by the original (undo:<terminal>:
    <original>). A cancel has an id of its own, so its entry goes to the cancel's key; a
    reversal has none, so its entry stays with the original.
    """
    prefix, _, rest = idempotency_key.partition(":")
    terminal_id, _, transaction_id = rest.rpartition(":")
    if prefix == ENTRY_PREFIX and terminal_id:
        return JournalEntry(str(entry_id), entry_id, tuple(entry_postings), terminal_id, transaction_id)
    if prefix == UNDO_PREFIX and terminal_id:
        original = (terminal_id, transaction_id)
        owner = cancels.get(original, transaction_id)
        return JournalEntry(
            str(entry_id),
            entry_id,
            tuple(entry_postings),
            terminal_id,
            owner,
            reverses_entry_id=forward_ids.get(original, f"unknown:{transaction_id}"),
        )
    return JournalEntry(str(entry_id), entry_id, tuple(entry_postings))


def read_ledger_snapshot(
    engine: Engine,
    *,
    start_balances: Mapping[str, int],
    terminal_ids: Collection[str],
    after_entry_id: int,
) -> LedgerSnapshot:
    """The run's ledger: entries after after_entry_id, the run's cards and terminals.

    start_balances maps card id to its balance read (read_card_balances) when the run began.
    """
    end_balances = read_card_balances(engine, list(start_balances))
    stored = _read_transactions(engine, terminal_ids)
    cancels: dict[TransactionKey, str] = {
        (t.terminal_id, t.original_transaction_id): t.transaction_id
        for t in stored.values()
        if t.operation == "cancel" and t.original_transaction_id and t.status == "approved"
    }
    raw = _read_entries(engine, after_entry_id)
    forward_ids: dict[TransactionKey, str] = {}
    for entry_id, key, _ in raw:
        prefix, _, rest = key.partition(":")
        terminal_id, _, transaction_id = rest.rpartition(":")
        if prefix == ENTRY_PREFIX and terminal_id:
            forward_ids[(terminal_id, transaction_id)] = str(entry_id)
    entries = tuple(
        _map_entry(entry_id, key, entry_postings, cancels, forward_ids)
        for entry_id, key, entry_postings in raw
    )
    cards = {
        card_id: CardBalance(
            card_id, card_account_id(card_id), start_minor, end_balances.get(card_id, start_minor)
        )
        for card_id, start_minor in start_balances.items()
    }
    return LedgerSnapshot(cards=cards, entries=entries, transactions=stored)
