"""The journal process keeps one database connection; when the database drops it, the batch then
in flight is declined whole (nothing of it landed) and the next batch lands on a new connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from switch.domain import ledger
from switch.store.engine import make_engine
from switch.store.journal_process import JournalProcess
from tests.integration.journal_world import (
    MERCHANT,
    PROGRAMME,
    balance,
    card_balance,
    issue,
    make_world,
    redemption,
)
from tests.pg import POSTGRES_URL, postgres_schema


@pytest.fixture
def named_database() -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema's URL whose connections carry an application name of their own."""
    name = f"journal_{uuid.uuid4().hex[:12]}"
    with postgres_schema() as url:
        yield f"{url}&application_name={name}", name


def _drop_connections(application_name: str) -> int:
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"
            return len(conn.execute(text(query), {"name": application_name}).all())
    finally:
        admin.dispose()


def test_a_dropped_connection_declines_its_batch_whole_and_the_next_batch_lands(
    named_database: tuple[str, str],
) -> None:
    url, name = named_database
    engine = make_world(url)
    issue(engine, "crd_1", 500)
    engine.dispose()  # only the journal process's connection carries the name now
    journal = JournalProcess(url)
    journal.start()
    try:
        assert journal.commit([redemption("t1", "crd_1", 100)]).results[0].ok
        assert _drop_connections(name) == 1
        dropped = journal.commit([redemption("t2", "crd_1", 100), redemption("t3", "crd_1", 50)])
        assert dropped.failed and not dropped.in_doubt
        assert [r.ok for r in dropped.results] == [False, False]
        after = journal.commit([redemption("t2", "crd_1", 100)])
        assert after.results[0].ok, after.results[0].problem
    finally:
        journal.stop()
    engine = make_engine(url)
    assert card_balance(engine, "crd_1") == 300  # t1 and t2 once each; t3 never landed
    assert balance(engine, ledger.merchant_payable_account(MERCHANT, PROGRAMME)) == 200
    engine.dispose()
