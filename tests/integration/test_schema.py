"""Starting on a database from an earlier version: additive columns are added, others refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, inspect, select, text

from switch.store.engine import SchemaMismatchError, create_schema, make_engine
from switch.store.schema import employees, merchants
from tests.pg import postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        engine = make_engine(url or f"sqlite:///{tmp_path / 'old.sqlite'}")
        create_schema(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(merchants),
                {
                    "merchant_id": "mer_1",
                    "name": "Shop",
                    "email": "shop@example.test",
                    "password_hash": "x",
                    "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                },
            )
            conn.execute(
                insert(employees),
                {
                    "employee_id": "emp_1",
                    "merchant_id": "mer_1",
                    "employee_number": "7",
                    "name": "Ann",
                    "role": "manager",
                    "pin_hash": "y",
                    "failed_tries": 0,
                },
            )
        try:
            yield engine
        finally:
            engine.dispose()


def test_a_column_added_since_is_created_and_existing_rows_get_its_default(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE employees DROP COLUMN active"))  # as the first release had it
    assert "active" not in {c["name"] for c in inspect(engine).get_columns("employees")}
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(select(employees.c.employee_id, employees.c.active)).all() == [("emp_1", True)]
    create_schema(engine)  # a second start changes nothing


def test_a_missing_column_without_a_default_is_refused_by_name(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE employees DROP COLUMN role"))
    with pytest.raises(SchemaMismatchError, match=r"employees\.role is missing and has no default"):
        create_schema(engine)
