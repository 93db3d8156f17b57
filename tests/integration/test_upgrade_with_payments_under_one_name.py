"""Audit session 22: `uq_card_payments_original` is "an index, not a constraint, so databases
created before it get it too" (switch/store/payments.py): `create_schema` creates it at every start.
A database from before it may already hold two payments under one acquirer name (the very bug the
index guards against: two nodes' STAN counters meeting in one second, docs/audits.md session 22).
Creating the unique index then fails, and no node of the upgraded switch can start."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import insert, text

from switch.store.engine import create_schema, make_engine
from switch.store.payments import card_payments
from tests.integration.harness import start_world
from tests.pg import postgres_schema


def payment_row(transaction_id: str, stan: str) -> dict[str, object]:
    return {
        "source": "trm_0123456789abcdef",
        "transaction_id": transaction_id,
        "sequence_number": 1,
        "pan_hash": "0" * 64,
        "bin6": "411111",
        "last4": "1111",
        "entry_mode": "chip",
        "pin_entered": False,
        "acquirer": "acq",
        "acquirer_terminal_id": "T0000001",
        "acquirer_merchant_id": "M00000000000001",
        "original_mti": "0200",
        "stan": stan,
        "transmission": "1206120000",
        "processing_code": "000000",
        "currency_numeric": "978",
        "amount_minor": 1_000,
        "response_code": "00",
        "auth_code": "123456",
        "retrieval_reference": "000000000001",
        "reversal_queued": False,
        "stage": "answered",
        "fingerprint": "f" * 32,
        "merchant_id": "mch_0123456789abcdef",
        "period_number": 1,
        "card_masked": "411111****1111",
        "currency": "EUR",
        "created_at": dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC),
    }


def test_a_database_holding_two_payments_under_one_name_still_starts(tmp_path: Path) -> None:
    with postgres_schema() as url:
        engine = make_engine(url)
        try:
            create_schema(engine)
            with engine.begin() as conn:  # as the database was before the index
                conn.execute(text("DROP INDEX uq_card_payments_original"))
                conn.execute(
                    insert(card_payments),
                    [payment_row("node-a-1", "000042"), payment_row("node-b-1", "000042")],
                )
        finally:
            engine.dispose()
        try:
            world = start_world(tmp_path, url, 0)
        except Exception as error:
            raise AssertionError(
                f"the upgraded switch does not start: {type(error).__name__}: {error}"[:400]
            ) from None
        world.channel.close()
        world.server.stop()
