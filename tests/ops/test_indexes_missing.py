"""A unique index left out at start (old rows break it, `create_schema`) is shown to the operator: a
gauge per index on /metrics and a line in the console's `status`, until a start creates it."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert, text

from switch.store.engine import MissingIndexes, create_schema, make_engine
from switch.store.payments import card_payments
from tests.integration.test_upgrade_with_payments_under_one_name import payment_row
from tests.ops.conftest import Keys, console_world_with
from tests.pg import postgres_schema

INDEX = "uq_card_payments_original"
GAUGE = "txswitch_schema_index_missing"
SCRAPE_TIMEOUT_S = 5.0


def gauge_by_index(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        body = response.read().decode()
    return {
        sample.labels["index"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == GAUGE
    }


def database_from_before_the_index(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    url = f"sqlite:///{data_dir / 'txswitch.sqlite'}"
    break_the_index(url)
    return url


def break_the_index(url: str) -> None:
    """Two payments under one acquirer name, as a database from before the index could hold."""
    engine = make_engine(url)
    try:
        create_schema(engine)
        with engine.begin() as conn:
            conn.execute(text(f"DROP INDEX {INDEX}"))
            conn.execute(
                insert(card_payments), [payment_row("node-a-1", "000042"), payment_row("node-b-1", "000042")]
            )
    finally:
        engine.dispose()


def test_an_index_left_out_at_start_is_on_metrics_and_status_until_a_start_creates_it(
    keys: Keys, tmp_path: Path
) -> None:
    url = database_from_before_the_index(tmp_path / "data")
    worlds = console_world_with(keys, tmp_path, metrics_port=0)
    console = next(worlds)
    try:
        metrics_url = console.world.server.ops.metrics_url
        assert metrics_url is not None
        assert gauge_by_index(metrics_url) == {INDEX: 1.0}
        (status,) = console.run(console.keys.viewer, "status")
        assert status.exit_status == 0, status
        assert f"indexes missing     {INDEX} (rows break it; see the log)" in status.stdout, status.stdout

        # The operator resolves the rows; a start (here another node's) creates the index.
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(delete(card_payments).where(card_payments.c.transaction_id == "node-b-1"))
            assert create_schema(engine) == ()
        finally:
            engine.dispose()
        assert gauge_by_index(metrics_url) == {INDEX: 0.0}
        (status,) = console.run(console.keys.viewer, "status")
        assert "indexes missing     none" in status.stdout, status.stdout
    finally:
        next(worlds, None)


def test_a_clean_start_reports_no_index_missing(keys: Keys, tmp_path: Path) -> None:
    worlds = console_world_with(keys, tmp_path, metrics_port=0)
    console = next(worlds)
    try:
        metrics_url = console.world.server.ops.metrics_url
        assert metrics_url is not None
        assert gauge_by_index(metrics_url) == {}
        (status,) = console.run(console.keys.viewer, "status")
        assert "indexes missing     none" in status.stdout, status.stdout
    finally:
        next(worlds, None)


def test_on_postgresql_the_index_left_out_is_named_and_found_once_created() -> None:
    with postgres_schema() as url:
        break_the_index(url)
        engine = make_engine(url)
        try:
            left_out = create_schema(engine)
            assert left_out == (INDEX,)
            indexes = MissingIndexes(engine, left_out)
            assert indexes.missing() == (INDEX,)
            with engine.begin() as conn:
                conn.execute(delete(card_payments).where(card_payments.c.transaction_id == "node-b-1"))
            assert create_schema(engine) == ()
            assert indexes.missing() == ()
            assert indexes.left_out == (INDEX,)
        finally:
            engine.dispose()
