"""The open periods a journal batch reads: each terminal named, whatever the number named (the read
is built per power of two, the last terminal repeated to fill it), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, update

from switch.store.engine import writing
from switch.store.periods import open_periods, open_periods_by_device
from switch.store.schema import terminals
from tests.integration.journal_world import (
    MERCHANT,
    NOW,
    TERMINAL,
    database_url,  # noqa: F401  (fixture)
    make_world,
)

OTHERS = [f"trm_{n}" for n in range(2, 11)]  # period n, device A77-n


@pytest.mark.parametrize("named", [1, 2, 3, 4, 5, 9, 10])
def test_every_terminal_named_is_read_with_its_own_period_and_device(
    database_url: str,  # noqa: F811
    named: int,
) -> None:
    engine = make_world(database_url)
    with engine.begin() as conn:
        conn.execute(
            insert(terminals),
            [
                {
                    "terminal_id": terminal_id,
                    "merchant_id": MERCHANT,
                    "location_id": "loc_1",
                    "device_name": f"A77-{terminal_id}",
                    "credential_hash": "-",
                    "period_number": int(terminal_id.removeprefix("trm_")),
                    "period_opened_at": NOW,
                    "activated_at": NOW,
                }
                for terminal_id in OTHERS
            ],
        )
        conn.execute(update(terminals).where(terminals.c.terminal_id == TERMINAL).values(period_number=7))
    wanted = [*[TERMINAL, *OTHERS][: named - 1], "not-a-terminal"]  # a source that is no terminal
    with writing(engine) as conn:
        # Sources repeat (a batch's writes of one terminal), in any order.
        read = open_periods_by_device(conn, list(reversed(wanted)) + wanted)
        periods = open_periods(conn, wanted)
    expected = {TERMINAL: (7, "A77")} | {t: (int(t.removeprefix("trm_")), f"A77-{t}") for t in OTHERS}
    assert read == {t: expected[t] for t in wanted if t in expected}
    assert periods == {t: period for t, (period, _) in read.items()}
    assert len(read) == named - 1
    engine.dispose()
