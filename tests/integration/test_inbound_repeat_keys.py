"""The journal holds an inbound sale's (acquirer, field 41, STAN, field 37) for a day, across nodes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import Engine, event, func, select, update

from switch.store.journal import InboundResend, TransactionRecord, Write, commit_batch
from switch.store.schema import INBOUND_REPEAT_WINDOW, inbound_repeat_keys, inbound_resends, transactions

SOURCE = "iso:4711"
REFERENCE = "000000500001"


@pytest.fixture
def engine(schema_engine: Engine) -> Engine:
    return schema_engine


def sale(field_7: str, *, reference: str = REFERENCE, kind: str = "redemption") -> TransactionRecord:
    """A declined inbound sale's row (no entry: the key is what is tested, not the money)."""
    return TransactionRecord(
        source=SOURCE,
        transaction_id=f"THIRD001:000001:{field_7}",
        transaction_type=kind,
        fingerprint="f",
        currency="EUR",
        result="insufficient_funds",
        status="declined",
        mti="0200",
        retrieval_reference=reference,
    )


def stored_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(transactions.c.transaction_id).order_by("transaction_pk")).scalars())


def key_holder(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(inbound_repeat_keys.c.transaction_id)).scalar()


# One row per second write after a sale under field 7 1121120000: whether it lands beside it.
SECOND_WRITES = [
    ("a resend under a new field 7", sale("1121120005"), False),
    ("a tombstone under another field 7", sale("1121120005", kind="tombstone"), False),
    ("another field 37", sale("1121120005", reference="000000500002"), True),
    ("a reversal's row, under field 37", sale("1121120005", kind="reversal"), True),
]


@pytest.mark.parametrize(("case", "second", "lands"), SECOND_WRITES, ids=[row[0] for row in SECOND_WRITES])
def test_a_second_sale_under_the_key_is_a_conflict_and_stores_nothing(
    engine: Engine, case: str, second: TransactionRecord, lands: bool
) -> None:
    first = sale("1121120000")
    assert commit_batch(engine, [Write(record=first)]).results[0].ok
    result = commit_batch(engine, [Write(record=second)]).results[0]
    assert (result.ok, result.conflict) == (lands, not lands), case
    expected = [first.transaction_id, second.transaction_id] if lands else [first.transaction_id]
    assert stored_ids(engine) == expected
    assert key_holder(engine) == first.transaction_id


def test_a_key_held_longer_than_the_window_is_another_days_and_is_replaced(engine: Engine) -> None:
    first = sale("1121120000")
    assert commit_batch(engine, [Write(record=first)]).results[0].ok
    with engine.begin() as conn:
        old = dt.datetime.now(dt.UTC) - INBOUND_REPEAT_WINDOW - dt.timedelta(minutes=1)
        conn.execute(update(inbound_repeat_keys).values(created_at=old))
    next_day = sale("1122120000")
    assert commit_batch(engine, [Write(record=next_day)]).results[0].ok
    assert key_holder(engine) == next_day.transaction_id
    assert stored_ids(engine) == [first.transaction_id, next_day.transaction_id]


def test_a_batch_with_a_conflicting_sale_stores_the_others(engine: Engine) -> None:
    first = sale("1121120000")
    assert commit_batch(engine, [Write(record=first)]).results[0].ok
    other = dataclasses.replace(first, transaction_id="THIRD002:000001:1121120000")  # another key
    outcome = commit_batch(engine, [Write(record=sale("1121120005")), Write(record=other)])
    assert [(r.ok, r.conflict) for r in outcome.results] == [(False, True), (True, False)]
    assert stored_ids(engine) == [first.transaction_id, "THIRD002:000001:1121120000"]


def test_a_resend_stored_again_lands_in_its_batch_and_keeps_one_row(engine: Engine) -> None:
    """A resend repeated a third time writes its inbound_resends row again: it is kept as it was,
    and its batch lands as one transaction (a conflict sent the batch write by write)."""
    first = sale("1121120000")
    resend = InboundResend(SOURCE, "THIRD001:000001:1121120005", first.transaction_id)
    assert commit_batch(engine, [Write(record=first), Write(resend=resend)]).results[1].ok
    other = dataclasses.replace(first, transaction_id="THIRD002:000001:1121120000")  # another key
    transactions_begun: list[object] = []
    count = transactions_begun.append  # one bound method: event.remove finds the one listened
    event.listen(engine, "begin", count)
    try:
        outcome = commit_batch(engine, [Write(resend=resend), Write(record=other)])
    finally:
        event.remove(engine, "begin", count)
    assert [(r.ok, r.conflict) for r in outcome.results] == [(True, False), (True, False)]
    assert len(transactions_begun) == 1
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(inbound_resends)).scalar()
        named = conn.execute(select(inbound_resends.c.first_transaction_id)).scalar()
    assert (rows, named) == (1, first.transaction_id)
    assert stored_ids(engine) == [first.transaction_id, other.transaction_id]
