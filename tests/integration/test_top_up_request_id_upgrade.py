"""A database made before session 24 kept `top_ups.request_id` unique over all top-ups beside the
per-card `uq_top_ups_card_request` the start adds, so there two cards could not use one request id.
The switch's start takes the old constraint away: on SQLite by making the table again, on PostgreSQL
by dropping it. Real switch restarts on the SQLite file and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Connection, Engine, inspect, select, text

from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import cardholder_pb2 as ch
from switch.server import SwitchServer
from switch.store.engine import make_engine
from switch.store.schema import top_ups
from tests.integration.harness import World, world_fixture
from tests.integration.test_top_ups import PSP_TOKEN, confirm, holder, start


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1, psp_token=PSP_TOKEN)


def as_session_23_made_it(conn: Connection) -> None:
    """top_ups with request_id unique over all top-ups, as `unique=True` on the column made it."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE top_ups ADD CONSTRAINT top_ups_request_id_key UNIQUE (request_id)"))
        return
    # SQLite adds no constraint to a table: the table is made again with it, its rows and indexes too.
    made = "SELECT sql FROM sqlite_master WHERE tbl_name = 'top_ups' AND type = :type AND sql IS NOT NULL"
    table_sql = conn.execute(text(made), {"type": "table"}).scalar_one()
    index_sqls = list(conn.execute(text(made), {"type": "index"}).scalars())
    conn.execute(text("CREATE TABLE top_ups_rows AS SELECT * FROM top_ups"))
    conn.execute(text("DROP TABLE top_ups"))
    conn.execute(text(table_sql.rstrip().removesuffix(")") + ",\n\tUNIQUE (request_id)\n)"))
    conn.execute(text("INSERT INTO top_ups SELECT * FROM top_ups_rows"))
    conn.execute(text("DROP TABLE top_ups_rows"))
    for index_sql in index_sqls:
        conn.execute(text(index_sql))


def unique_request_ids(engine: Engine) -> list[tuple[str, ...]]:
    """The column lists of top_ups' unique constraints and indexes that hold request_id."""
    inspector = inspect(engine)
    found = [tuple(each["column_names"]) for each in inspector.get_unique_constraints("top_ups")]
    found += [
        tuple(str(column) for column in each["column_names"])
        for each in inspector.get_indexes("top_ups")
        if each["unique"]
    ]
    if engine.dialect.name == "sqlite":  # an inline UNIQUE's autoindex, which the inspector leaves out
        with engine.connect() as conn:
            for row in conn.execute(text("PRAGMA index_list(top_ups)")).all():
                if row.origin == "u":
                    columns = conn.execute(text(f"PRAGMA index_info({row.name})")).all()
                    found.append(tuple(column.name for column in columns))
    return sorted({columns for columns in found if "request_id" in columns})


def indexes(engine: Engine) -> dict[str, tuple[tuple[str, ...], bool]]:
    """top_ups' indexes made by name (not a constraint's own): their columns, and whether unique."""
    found = inspect(engine).get_indexes("top_ups")
    return {
        str(index["name"]): (tuple(str(column) for column in index["column_names"]), bool(index["unique"]))
        for index in found
        if "duplicates_constraint" not in index
    }


def rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(top_ups).order_by(top_ups.c.top_up_id)).mappings()]


def stopped(world: World) -> None:
    world.channel.close()
    world.server.stop()


def started_again(world: World) -> None:
    """The world's switch started again on its database: world then talks to the new one."""
    world.server = SwitchServer(world.server.settings)
    world.server.start()
    world.channel = grpc.insecure_channel(world.server.address)
    world.backoffice = bo_grpc.BackofficeStub(world.channel)


def test_an_older_databases_request_id_unique_over_all_top_ups_is_taken_away_at_start(world: World) -> None:
    mine, theirs = world.issue(0, world.benefit_programme), world.issue(0, world.benefit_programme)
    loaded = start(world, theirs, 500, "order-1")
    assert confirm(world, loaded.top_up_id, "p-before", 180).status == "loaded"
    pending = start(world, theirs, 1_000, "order-2")
    url = world.server.settings.effective_database_url
    stopped(world)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            as_session_23_made_it(conn)
        assert ("request_id",) in unique_request_ids(engine)  # the old database, as it was
        before, rows_before = indexes(engine), rows(engine)
        started_again(world)
        assert unique_request_ids(engine) == [("card_id", "request_id")]
        assert (indexes(engine), rows(engine)) == (before, rows_before)  # every row, every column
        keys = inspect(engine).get_foreign_keys("top_ups")
        assert sorted(key["referred_table"] for key in keys) == ["cards", "programmes"]
    finally:
        engine.dispose()
    own = start(world, mine, 500, "order-1")  # the id another card used: the holder's own top-up
    assert own.top_up_id != loaded.top_up_id and own.card_masked[-4:] == mine[-4:]
    assert confirm(world, own.top_up_id, "p-after", 180).status == "loaded"
    # The rows from before are kept whole: a start sent again finds its top-up, which still loads.
    assert start(world, theirs, 1_000, "order-2").top_up_id == pending.top_up_id
    assert start(world, theirs, 500, "order-1").top_up_id == loaded.top_up_id
    shown = holder(world).GetTopUp(ch.TopUpRequest(top_up_id=loaded.top_up_id), timeout=20)
    assert (shown.status, shown.amount.amount_minor, shown.holder_pays.amount_minor) == ("loaded", 500, 180)
    assert confirm(world, pending.top_up_id, "p-pending", 360).status == "loaded"
    stopped(world)
    started_again(world)  # a start on the upgraded database changes nothing more
    assert start(world, mine, 500, "order-1").top_up_id == own.top_up_id
    assert world.ledger().unbalanced_entries == 0
