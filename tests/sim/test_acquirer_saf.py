"""The SAF store on SQLite and PostgreSQL, and the BIN routing table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from actors.acquirer_routing import BinRoutingTable
from actors.acquirer_types import BinRange
from switch.store.saf import NewReversal, SafStore
from tests.pg import postgres_schema

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def reversal(stan: str = "000001", acquirer: str = "acq-a") -> NewReversal:
    return NewReversal(
        acquirer=acquirer,
        terminal_id="TERM0001",
        merchant_id="MERCHANT0000001",
        transaction_id="t-1",
        original_mti="0200",
        original_stan=stan,
        original_transmission="1121120000",
        reversal_stan="000900",
        processing_code="000000",
        amount_minor=1_250,
        currency_numeric="978",
        reason="timeout",
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafStore]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'saf.db'}"
        else:
            url = stack.enter_context(postgres_schema())
        engine = create_engine(url)
        saf = SafStore(engine)
        saf.create_table()
        yield saf
        engine.dispose()


def test_enqueue_is_idempotent_per_original(store: SafStore) -> None:
    assert store.enqueue(reversal(), NOW)
    assert not store.enqueue(reversal(), NOW)
    assert store.enqueue(reversal("000002"), NOW)
    assert store.enqueue(reversal(acquirer="acq-b"), NOW)
    assert store.depth() == 3
    assert [e.original_stan for e in store.pending("acq-a")] == ["000001", "000002"]


def test_attempts_make_repeats_and_acknowledge_once(store: SafStore) -> None:
    store.enqueue(reversal(), NOW)
    (entry,) = store.pending()
    assert not entry.is_repeat
    store.record_attempt(entry.saf_id, NOW)
    (entry,) = store.pending()
    assert entry.is_repeat and entry.attempts == 1
    assert store.acknowledge(entry.saf_id, NOW)
    assert not store.acknowledge(entry.saf_id, NOW)
    assert store.pending() == () and store.depth() == 0
    assert len(store.all_entries()) == 1


def test_acknowledge_by_advice_stan(store: SafStore) -> None:
    store.enqueue(reversal(), NOW)
    assert not store.acknowledge_by_stan("acq-a", "TERM0001", "000901", NOW)
    assert store.acknowledge_by_stan("acq-a", "TERM0001", "000900", NOW)
    assert store.depth() == 0


def test_a_late_acknowledgement_names_one_advice_or_none(store: SafStore) -> None:
    # Two nodes count their STANs apart: two pending advices of one terminal may share a reversal
    # STAN. Before, a late 0430 for one marked both acknowledged, and the other never went out.
    store.enqueue(reversal("000001"), NOW)
    store.enqueue(reversal("000002"), NOW)  # another original, the same reversal STAN 000900
    assert not store.acknowledge_by_stan("acq-a", "TERM0001", "000900", NOW)
    assert store.depth() == 2  # both go out again, and are acknowledged one by one in turn
    first, _ = store.pending()
    assert store.acknowledge(first.saf_id, NOW)
    assert store.acknowledge_by_stan("acq-a", "TERM0001", "000900", NOW)  # now it names one
    assert store.depth() == 0


ROUTES = (
    BinRange("4", "4", "visa-acquirer"),
    BinRange("476173", "476173", "special"),
    BinRange("51", "55", "mc-acquirer"),
    BinRange("2221", "2720", "mc-acquirer"),
)
ROUTE_CASES = [
    ("4761739001010119", "special"),
    ("4111111111111111", "visa-acquirer"),
    ("5413330089020011", "mc-acquirer"),
    ("2223000048400011", "mc-acquirer"),
    ("5612345678901234", None),
    ("6011000990139424", None),
    ("", None),
]


@pytest.mark.parametrize(("pan", "acquirer"), ROUTE_CASES)
def test_bin_routing(pan: str, acquirer: str | None) -> None:
    assert BinRoutingTable(ROUTES).route(pan) == acquirer
