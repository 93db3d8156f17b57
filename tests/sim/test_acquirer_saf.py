"""The SAF store on SQLite and PostgreSQL, and the BIN routing table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from actors.acquirer_routing import BinRoutingTable
from actors.acquirer_types import BinRange
from switch.store.engine import writing
from switch.store.saf import (
    REVERSAL_STAN_HOLD_AFTER_ACK,
    AdviceAnswer,
    NewReversal,
    SafStore,
    StanInUseError,
)
from tests.pg import postgres_schema

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def reversal(stan: str = "000001", acquirer: str = "acq-a", reversal_stan: str = "000900") -> NewReversal:
    return NewReversal(
        acquirer=acquirer,
        terminal_id="TERM0001",
        merchant_id="MERCHANT0000001",
        transaction_id="t-1",
        original_mti="0200",
        original_stan=stan,
        original_transmission="1121120000",
        reversal_stan=reversal_stan,
        processing_code="000000",
        amount_minor=1_250,
        currency_numeric="978",
        reason="timeout",
    )


def answer(
    stan: str = "000001", reversal_stan: str = "000900", amount_minor: int | None = 1_250
) -> AdviceAnswer:
    """What a 0430 echoes of the advice reversal(stan, reversal_stan=...) sends."""
    return AdviceAnswer("acq-a", "TERM0001", reversal_stan, "0200", stan, "1121120000", amount_minor)


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
    assert store.enqueue(reversal("000002", reversal_stan="000901"), NOW)
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


# A 0430 acknowledges the advice only if it names it: its STAN, the original (field 90) and, when
# echoed, its amount (field 4). One row per answer; only the last names the advice.
ANSWER_CASES = [
    ("another advice STAN", answer(reversal_stan="000901"), False),
    ("another original STAN", answer(stan="000002"), False),
    ("another original field 7", replace(answer(), original_transmission="1121120001"), False),
    ("another original MTI", replace(answer(), original_mti="0100"), False),
    ("another terminal", replace(answer(), terminal_id="TERM0002"), False),
    ("another amount", answer(amount_minor=1_251), False),
    ("no amount echoed", answer(amount_minor=None), True),
    ("the advice", answer(), True),
]


@pytest.mark.parametrize(("case", "said", "acknowledged"), ANSWER_CASES, ids=[row[0] for row in ANSWER_CASES])
def test_an_answer_acknowledges_the_advice_it_names(
    store: SafStore, case: str, said: AdviceAnswer, acknowledged: bool
) -> None:
    store.enqueue(reversal(), NOW)
    assert store.acknowledge_answer(said, NOW) is acknowledged
    assert store.depth() == (0 if acknowledged else 1)


def test_each_advice_is_stored_with_a_field_37_of_its_own(store: SafStore) -> None:
    # A 0430 echoing field 37 names one advice: the reference is unique, 12 characters (an-12).
    assert store.enqueue(reversal("000001"), NOW)
    assert store.enqueue(reversal("000002", reversal_stan="000901"), NOW)
    assert store.enqueue(reversal("000001", acquirer="acq-b"), NOW)
    references = [entry.retrieval_reference for entry in store.pending()]
    assert all(reference is not None and len(reference) == 12 for reference in references)
    assert len(set(references)) == 3
    first = store.pending()[0]
    store.record_attempt(first.saf_id, NOW)
    assert store.pending()[0].retrieval_reference == first.retrieval_reference  # a repeat carries it


# A late 0430's field 37 names the pending advice with that reference on that terminal, or none.
# One row per case: (acquirer, terminal, reference) asked, found.
REFERENCE_CASES = [
    ("the advice", ("acq-a", "TERM0001", "{own}"), True),
    ("another terminal", ("acq-a", "TERM0002", "{own}"), False),
    ("another acquirer", ("acq-b", "TERM0001", "{own}"), False),
    ("another reference", ("acq-a", "TERM0001", "999999999999"), False),
]


@pytest.mark.parametrize(("case", "asked", "found"), REFERENCE_CASES, ids=[row[0] for row in REFERENCE_CASES])
def test_a_reference_names_the_pending_advice_that_carries_it(
    store: SafStore, case: str, asked: tuple[str, str, str], found: bool
) -> None:
    store.enqueue(reversal(), NOW)
    (entry,) = store.pending()
    acquirer, terminal_id, reference = asked
    named = store.pending_by_reference(acquirer, terminal_id, reference.format(own=entry.retrieval_reference))
    assert named == (entry if found else None)
    assert store.acknowledge(entry.saf_id, NOW)
    assert store.pending_by_reference("acq-a", "TERM0001", str(entry.retrieval_reference)) is None


def test_an_advice_stan_in_use_on_the_terminal_is_refused_for_another_original(store: SafStore) -> None:
    # Two nodes count their STANs apart, so two advices of one terminal could take one STAN, and a
    # late 0430 then named neither (or, before session 22, both). The row reserves the name now:
    # the second is refused with StanInUseError and goes under another STAN.
    assert store.enqueue(reversal("000001"), NOW)
    with pytest.raises(StanInUseError):
        store.enqueue(reversal("000002"), NOW)  # another original, the same reversal STAN 000900
    assert not store.enqueue(reversal("000001"), NOW)  # the same original: stored already, not a clash
    assert store.enqueue(reversal("000002", reversal_stan="000901"), NOW)
    assert store.enqueue(reversal("000003", acquirer="acq-b"), NOW)  # another acquirer's name
    assert [e.reversal_stan for e in store.pending("acq-a")] == ["000900", "000901"]
    assert store.acknowledge_answer(answer("000001"), NOW)  # it names one advice


def test_an_advice_stan_in_use_is_refused_inside_the_callers_transaction(store: SafStore) -> None:
    assert store.enqueue(reversal("000001"), NOW)
    engine = store._engine
    with pytest.raises(StanInUseError), writing(engine) as conn:
        SafStore.enqueue_within(conn, reversal("000002"), NOW)
    with writing(engine) as conn:
        assert not SafStore.enqueue_within(conn, reversal("000001"), NOW)
        assert SafStore.enqueue_within(conn, reversal("000002", reversal_stan="000901"), NOW)
    assert store.depth() == 2


# How long after its acknowledgement an advice still holds its STAN: a late or repeated 0430 of it
# must find no other pending advice under that name. One row per state of the advice holding it.
HOLDER_CASES = [
    ("pending", None, False),
    ("acknowledged just now", NOW, False),
    ("acknowledged within the hold", NOW - REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(seconds=1), False),
    ("acknowledged a hold ago", NOW - REVERSAL_STAN_HOLD_AFTER_ACK, True),
    ("acknowledged long ago", NOW - 400 * REVERSAL_STAN_HOLD_AFTER_ACK, True),
]


@pytest.mark.parametrize(
    ("holder", "acknowledged_at", "stored"), HOLDER_CASES, ids=[row[0] for row in HOLDER_CASES]
)
def test_an_advice_holds_its_stan_until_a_while_after_its_acknowledgement(
    store: SafStore, holder: str, acknowledged_at: dt.datetime | None, stored: bool
) -> None:
    # Before session 24 an acknowledged advice held its STAN for ever: as the counter came round,
    # more and more tries collided, and eight in a row answered 96 with no advice stored.
    assert store.enqueue(reversal("000001"), NOW - 400 * REVERSAL_STAN_HOLD_AFTER_ACK)
    if acknowledged_at is not None:
        (entry,) = store.pending()
        assert store.acknowledge(entry.saf_id, acknowledged_at)
    if stored:
        assert store.enqueue(reversal("000002"), NOW)  # another original, the same reversal STAN 000900
        assert [e.original_stan for e in store.pending()] == ["000002"]
        assert not store.acknowledge_answer(answer("000001"), NOW)  # the first one's 0430 names it not
        assert store.acknowledge_answer(answer("000002"), NOW)  # its own does
        assert store.pending() == ()
    else:
        with pytest.raises(StanInUseError):
            store.enqueue(reversal("000002"), NOW)
        assert [e.original_stan for e in store.pending()] == (["000001"] if acknowledged_at is None else [])


def test_a_stan_given_back_is_taken_by_one_advice_only(store: SafStore) -> None:
    store.enqueue(reversal("000001"), NOW - 2 * REVERSAL_STAN_HOLD_AFTER_ACK)
    (entry,) = store.pending()
    assert store.acknowledge(entry.saf_id, NOW - 2 * REVERSAL_STAN_HOLD_AFTER_ACK)
    assert store.enqueue(reversal("000002"), NOW)
    with pytest.raises(StanInUseError):
        store.enqueue(reversal("000003"), NOW)  # the name is the second advice's now
    assert [e.original_stan for e in store.pending()] == ["000002"]


@pytest.mark.postgres
def test_two_nodes_on_one_postgres_database_never_store_two_advices_under_one_name() -> None:
    """Two engines on one schema, as two nodes have them; each node's STAN counter at one value."""
    with postgres_schema() as url:
        engine_a, engine_b = create_engine(url), create_engine(url)
        try:
            node_a, node_b = SafStore(engine_a), SafStore(engine_b)
            node_a.create_table()
            assert node_a.enqueue(reversal("000001"), NOW)
            with pytest.raises(StanInUseError):
                node_b.enqueue(reversal("000002"), NOW)
            assert node_b.enqueue(reversal("000002", reversal_stan="000901"), NOW)
            assert sorted(e.reversal_stan for e in node_a.pending()) == ["000900", "000901"]
        finally:
            engine_a.dispose()
            engine_b.dispose()


def test_a_late_acknowledgement_names_one_advice_or_none_on_a_database_from_before_the_index(
    store: SafStore,
) -> None:
    # Rows stored before `uq_acquirer_saf_reversal_held` may share a reversal STAN (its creation is left
    # out then): a late 0430 for one must not mark both acknowledged, nor the other.
    with store._engine.begin() as conn:
        conn.execute(text("DROP INDEX uq_acquirer_saf_reversal_held"))
    store.enqueue(reversal("000001"), NOW)
    store.enqueue(reversal("000002"), NOW)  # another original, the same reversal STAN 000900
    assert store.acknowledge_answer(answer("000001"), NOW)  # field 90 names one of the two
    assert [entry.original_stan for entry in store.pending()] == ["000002"]
    assert store.acknowledge_answer(answer("000002"), NOW)
    assert store.depth() == 0


HOLD = REVERSAL_STAN_HOLD_AFTER_ACK
# A late 0430 echoing no field 90 names the advice by field 41 and its STAN (and field 4, if echoed):
# it acknowledges the pending advice under them only if that one went out less than a hold ago and
# no other advice holds the STAN. One row per case: (terminal, STAN, amount), last send, acknowledged.
HELD_STAN_CASES = [
    ("sent moments ago", ("TERM0001", "000900", None), NOW - dt.timedelta(seconds=1), True),
    ("sent just within the hold", ("TERM0001", "000900", None), NOW - HOLD + dt.timedelta(seconds=1), True),
    ("its amount echoed", ("TERM0001", "000900", 1_250), NOW, True),
    ("sent a hold ago", ("TERM0001", "000900", None), NOW - HOLD, False),
    ("never sent", ("TERM0001", "000900", None), None, False),
    ("another amount echoed", ("TERM0001", "000900", 1_251), NOW, False),
    ("another STAN", ("TERM0001", "000901", None), NOW, False),
    ("another terminal", ("TERM0002", "000900", None), NOW, False),
]


@pytest.mark.parametrize(
    ("case", "said", "sent_at", "acknowledged"), HELD_STAN_CASES, ids=[row[0] for row in HELD_STAN_CASES]
)
def test_an_answer_without_field_90_acknowledges_the_advice_that_alone_holds_its_stan(
    store: SafStore,
    case: str,
    said: tuple[str, str, int | None],
    sent_at: dt.datetime | None,
    acknowledged: bool,
) -> None:
    store.enqueue(reversal(), NOW - 2 * HOLD)
    (entry,) = store.pending()
    if sent_at is not None:
        store.record_attempt(entry.saf_id, sent_at)
    assert store.acknowledge_held_stan("acq-a", *said, NOW) is acknowledged
    assert store.depth() == (0 if acknowledged else 1)


def test_an_answer_without_field_90_acknowledges_no_advice_that_gave_its_stan_back(store: SafStore) -> None:
    store.enqueue(reversal("000001"), NOW - 2 * HOLD)
    (first,) = store.pending()
    store.record_attempt(first.saf_id, NOW - 2 * HOLD)
    assert store.acknowledge(first.saf_id, NOW - 2 * HOLD)
    assert not store.acknowledge_held_stan("acq-a", "TERM0001", "000900", None, NOW)  # acknowledged
    assert store.enqueue(reversal("000002"), NOW)  # takes the STAN 000900 given back
    assert not store.acknowledge_held_stan("acq-a", "TERM0001", "000900", None, NOW)  # not sent yet
    (second,) = store.pending()
    store.record_attempt(second.saf_id, NOW)
    assert store.acknowledge_held_stan("acq-a", "TERM0001", "000900", None, NOW)
    assert [entry.acknowledged_at is not None for entry in store.all_entries()] == [True, True]


def test_an_answer_without_field_90_acknowledges_none_of_two_advices_sharing_its_stan(
    store: SafStore,
) -> None:
    # Rows stored before `uq_acquirer_saf_reversal_held` may share a STAN: it cannot tell which it answers.
    with store._engine.begin() as conn:
        conn.execute(text("DROP INDEX uq_acquirer_saf_reversal_held"))
    store.enqueue(reversal("000001"), NOW)
    store.enqueue(reversal("000002"), NOW)
    for entry in store.pending():
        store.record_attempt(entry.saf_id, NOW)
    assert not store.acknowledge_held_stan("acq-a", "TERM0001", "000900", None, NOW)
    assert store.depth() == 2


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
