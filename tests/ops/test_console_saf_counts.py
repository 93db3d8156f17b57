"""The console and /metrics count every stored advice, past the listing's limit, and agree."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from switch.store.saf import SAF_PENDING_LIMIT_MAX, NewReversal, SafStore
from terminal_sim.processes import free_port
from tests.integration.payment_harness import MASTER_KEY_HEX, acquirers_file
from tests.ops.conftest import Keys, console_world_with

ADVICES_STORED = SAF_PENDING_LIMIT_MAX + 7
ACQUIRER = "acq-sim"


def _advice(number: int) -> NewReversal:
    return NewReversal(
        ACQUIRER, "TID00001", "MID000000000001", f"t-{number}", "0200", f"{number:06d}", "1207063000",
        f"{500_000 + number:06d}", "000000", 500, "978", "timeout",
    )  # fmt: skip


def test_status_acquirers_and_metrics_count_every_pending_advice(keys: Keys, tmp_path: Path) -> None:
    # Nothing listens at the acquirer's address: the advices stay pending for the whole test.
    settings_file = acquirers_file(tmp_path / "acquirers.toml", free_port())
    for console in console_world_with(
        keys, tmp_path, acquirers_file=settings_file, master_key_hex=MASTER_KEY_HEX
    ):
        server = console.world.server
        now = dt.datetime.now(dt.UTC)
        with server.core.store.engine.begin() as connection:
            for number in range(1, ADVICES_STORED + 1):
                assert SafStore.enqueue_within(connection, _advice(number), now)
        status, acquirers = console.run(console.keys.viewer, "status", "acquirers status")
        assert f"store-and-forward   {ADVICES_STORED} pending" in status.stdout, status.stdout
        row = next(line for line in acquirers.stdout.splitlines() if line.startswith(ACQUIRER))
        assert row.split()[-1] == str(ADVICES_STORED), acquirers.stdout
        depth = server.ops.metrics.registry.get_sample_value(
            "txswitch_store_and_forward_queue_depth", {"acquirer": ACQUIRER}
        )
        assert depth == ADVICES_STORED


SAF_LISTS = [
    # (advices stored, the line after the listing, or None when every advice is listed)
    (3, None),
    (
        ADVICES_STORED,
        f"{ADVICES_STORED - SAF_PENDING_LIMIT_MAX} more pending, not listed: {ADVICES_STORED} in all, "
        f"the oldest {SAF_PENDING_LIMIT_MAX} shown",
    ),
]


@pytest.mark.parametrize(("stored", "note"), SAF_LISTS)
def test_saf_list_says_how_many_more_are_pending_than_it_lists(
    keys: Keys, tmp_path: Path, stored: int, note: str | None
) -> None:
    settings_file = acquirers_file(tmp_path / "acquirers.toml", free_port())  # nobody answers
    for console in console_world_with(
        keys, tmp_path, acquirers_file=settings_file, master_key_hex=MASTER_KEY_HEX
    ):
        now = dt.datetime.now(dt.UTC)
        with console.world.server.core.store.engine.begin() as connection:
            for number in range(1, stored + 1):
                assert SafStore.enqueue_within(connection, _advice(number), now)
        (listed,) = console.run(console.keys.viewer, "saf list")
        assert listed.exit_status == 0, listed.stderr
        lines = listed.stdout.rstrip("\n").splitlines()
        rows = [line for line in lines if line.split()[:2] and line.split()[1] == ACQUIRER]
        assert len(rows) == min(stored, SAF_PENDING_LIMIT_MAX)
        if note is None:
            assert "more pending" not in listed.stdout, lines[-1]
        else:
            assert lines[-1] == note
