"""Shared setup for the journal audit: a real database (SQLite file or PostgreSQL schema) with one
programme, a merchant and its terminal, and cards issued through the journal itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from switch.domain import ledger
from switch.domain.ledger import AccountKind
from switch.domain.programmes import ProgrammeKind
from switch.store.engine import create_schema, make_engine
from switch.store.journal import CardIssue, TransactionRecord, Write, commit_batch
from switch.store.schema import (
    accounts,
    cards,
    locations,
    merchant_programmes,
    merchants,
    programmes,
    terminals,
)

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
MERCHANT = "mer_1"
PROGRAMME = "prg_1"
TERMINAL = "trm_1"
CEILING = 1_000


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    from tests.pg import postgres_schema

    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'journal.sqlite'}"
        else:
            yield stack.enter_context(postgres_schema())


def make_world(database_url: str) -> Engine:
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(programmes),
            {
                "programme_id": PROGRAMME,
                "name": "Gift",
                "kind": ProgrammeKind.gift,
                "currency": "EUR",
                "card_prefix": "600001",
                "balance_max_minor": CEILING,
            },
        )
        conn.execute(
            insert(merchants),
            {
                "merchant_id": MERCHANT,
                "name": "Shop",
                "email": "s@x",
                "password_hash": "-",
                "created_at": NOW,
            },
        )
        conn.execute(insert(merchant_programmes), {"merchant_id": MERCHANT, "programme_id": PROGRAMME})
        conn.execute(insert(locations), {"location_id": "loc_1", "merchant_id": MERCHANT, "name": "Shop"})
        conn.execute(
            insert(terminals),
            {
                "terminal_id": TERMINAL,
                "merchant_id": MERCHANT,
                "location_id": "loc_1",
                "device_name": "A77",
                "credential_hash": "-",
                "period_number": 1,
                "period_opened_at": NOW,
                "activated_at": NOW,
            },
        )
        conn.execute(
            insert(accounts),
            [
                {"account_id": account, "kind": kind, "currency": "EUR", "balance_minor": 0}
                for account, kind in (
                    (ledger.merchant_payable_account(MERCHANT, PROGRAMME), AccountKind.merchant_payable),
                    (ledger.programme_float_account(PROGRAMME), AccountKind.programme_float),
                    (ledger.funder_account(PROGRAMME), AccountKind.funder),
                )
            ],
        )
    return engine


def issue(engine: Engine, card_id: str, load_minor: int = 0) -> None:
    """A card issued (and loaded) by one journal write, as the backoffice does."""
    entry = None
    if load_minor:
        entry = ledger.load_entry(f"issue:{card_id}", "EUR", card_id, PROGRAMME, load_minor, 0, CEILING)
    write = Write(
        card_issue=CardIssue(
            card_id, PROGRAMME, f"hash-{card_id}", "6000********0001", dt.date(2030, 1, 1), "EUR"
        ),
        entry=entry,
    )
    outcome = commit_batch(engine, [write])
    assert outcome.results[0].ok, outcome.results[0].problem


def record(txn: str, kind: str, card: str, amount_minor: int, original: str = "") -> TransactionRecord:
    return TransactionRecord(
        source=TERMINAL,
        transaction_id=txn,
        transaction_type=kind,
        fingerprint="f" * 32,
        currency="EUR",
        result="approved",
        status="approved",
        card_id=card,
        merchant_id=MERCHANT,
        requested_minor=amount_minor,
        approved_minor=amount_minor,
        period_number=1,
        original_transaction_id=original,
    )


def redemption(txn: str, card: str, amount_minor: int) -> Write:
    entry = ledger.redemption_entry(
        f"txn:{TERMINAL}:{txn}", "EUR", card, amount_minor, merchant_id=MERCHANT, programme_id=PROGRAMME
    )
    return Write(record=record(txn, "redemption", card, amount_minor), entry=entry)


def balance(engine: Engine, account: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(accounts.c.balance_minor).where(accounts.c.account_id == account)
            ).scalar_one()
        )


def card_balance(engine: Engine, card: str) -> int:
    return balance(engine, ledger.card_account(card))


def card_row(engine: Engine, card: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(select(cards.c.status, cards.c.replaced_by).where(cards.c.card_id == card)).one()
    return row.status.value, row.replaced_by


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]
