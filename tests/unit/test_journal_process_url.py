"""Which databases a journal process can open: every one but an in-memory SQLite database."""

from __future__ import annotations

import pytest

from switch.store.journal_forkserver import can_serve


@pytest.mark.parametrize(
    ("database_url", "shareable"),
    [
        ("sqlite:///var/txswitch.sqlite", True),
        ("sqlite:////tmp/data/txswitch.sqlite", True),
        ("sqlite://", False),
        ("sqlite:///:memory:", False),
        ("sqlite:///file:journal?mode=memory&cache=shared&uri=true", False),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", True),
    ],
)
def test_a_journal_process_serves_every_database_but_one_in_memory(
    database_url: str, shareable: bool
) -> None:
    assert can_serve(database_url) is shareable
