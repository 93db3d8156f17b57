"""A real /metrics scrape answers within a bound while a lock holds what the database's gauges read
(a migration's, a long transaction's): those keep their last values and say how old they are."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.integration.harness import start_world
from tests.integration.test_location_changes import ask, shop
from tests.pg import postgres_schema

WAIT_S = 0.2  # metrics_database_wait_s: how long a scrape waits for the database's gauges
SCRAPE_S_MAX = WAIT_S + 1.5  # a scrape answers within this, the database locked or not
SETTLED_S_MAX = 10.0
FRESH_S = WAIT_S / 2  # younger than any read the lock held
PENDING = "txswitch_location_changes_pending"
AGE = "txswitch_database_read_age_seconds"


def scraped(url: str) -> dict[str, float]:
    """The unlabelled samples of one real scrape, which must answer within SCRAPE_S_MAX."""
    with urllib.request.urlopen(url, timeout=SCRAPE_S_MAX) as response:
        body = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


def timed_scrape(url: str) -> tuple[dict[str, float], float]:
    started_s = time.monotonic()
    samples = scraped(url)
    return samples, time.monotonic() - started_s


@contextmanager
def table_locked(database_url: str, table: str) -> Iterator[None]:
    """Another connection holds an ACCESS EXCLUSIVE lock on the table (as ALTER TABLE takes it):
    every read of it waits until the block ends."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_a_scrape_answers_while_a_lock_holds_the_databases_gauges(tmp_path: Path) -> None:
    """Session 28: each scrape counted the location changes waiting in the database while holding
    the refresh lock, so a table lock stalled every metric of that scrape, and every scrape behind
    it, until the lock went. The database's gauges are read off the scrape now."""
    with postgres_schema() as database_url:
        world = start_world(tmp_path, database_url, 1, metrics_port=0, metrics_database_wait_s=WAIT_S)
        try:
            url = world.server.ops.metrics_url
            assert url is not None
            ask(world, shop(world).location_id, "Shop Centre")
            before, _ = timed_scrape(url)
            assert before[PENDING] == 1.0 and before[AGE] < SCRAPE_S_MAX, before
            with table_locked(database_url, "location_changes"):
                first, first_s = timed_scrape(url)
                second, second_s = timed_scrape(url)  # behind a read that hangs already
            assert first_s < SCRAPE_S_MAX and second_s < SCRAPE_S_MAX, (first_s, second_s)
            assert first[PENDING] == second[PENDING] == 1.0  # the last values, kept
            assert "txswitch_terminals_online" in second  # every other metric answered
            assert second[AGE] >= first_s, (first, second)  # older than the locked scrape took
            # The lock gone, a scrape's read is fresh again: younger than the read the lock held,
            # which began at the first locked scrape, at least WAIT_S before the second answered.
            deadline_s = time.monotonic() + SETTLED_S_MAX
            while (after := scraped(url))[AGE] >= FRESH_S and time.monotonic() < deadline_s:
                time.sleep(0.05)
            assert after[AGE] < FRESH_S and after[PENDING] == 1.0, (second, after)
        finally:
            world.channel.close()
            world.server.stop()
