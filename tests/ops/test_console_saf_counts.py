"""The console and /metrics count every stored advice, past the listing's limit, and agree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from switch.store.engine import writing
from switch.store.saf import SAF_PENDING_LIMIT_MAX, NewReversal, SafStore
from terminal_sim.processes import free_port
from tests.integration.payment_harness import MASTER_KEY_HEX, acquirers_file
from tests.ops.conftest import ConsoleWorld, Keys, console_world_with

ADVICES_STORED = SAF_PENDING_LIMIT_MAX + 7
ACQUIRER = "acq-sim"


def _advice(number: int) -> NewReversal:
    return NewReversal(
        ACQUIRER, "TID00001", "MID000000000001", f"t-{number}", "0200", f"{number:06d}", "1207063000",
        f"{500_000 + number:06d}", "000000", 500, "978", "timeout",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pending(
    request: pytest.FixtureRequest, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleWorld]:
    """A switch holding request.param pending advices, for the module's tests that only read it: storing
    1007 of them and starting a switch took over 2 s per test."""
    stored: int = request.param
    tmp_path = tmp_path_factory.mktemp(f"pending-{stored}")
    # Nothing listens at the acquirer's address: the advices stay pending for the whole module.
    settings_file = acquirers_file(tmp_path / "acquirers.toml", free_port())
    # The switch's start waited acquirer_sign_on_wait_ms (2 s) for a sign-on that cannot come.
    worlds = console_world_with(
        keys,
        tmp_path,
        acquirers_file=settings_file,
        master_key_hex=MASTER_KEY_HEX,
        acquirer_sign_on_wait_ms=0,
    )
    console = next(worlds)
    try:
        now = dt.datetime.now(dt.UTC)
        # One transaction, as the switch writes (writing()): engine.begin() on SQLite committed, and
        # synced, each advice's savepoint on its own.
        with writing(console.world.server.core.store.engine) as connection:
            for number in range(1, stored + 1):
                assert SafStore.enqueue_within(connection, _advice(number), now)
        yield console
    finally:
        next(worlds, None)  # the generator goes on past its yield: it stops the switch


@pytest.mark.parametrize("pending", [ADVICES_STORED], indirect=True)
def test_status_acquirers_and_metrics_count_every_pending_advice(pending: ConsoleWorld) -> None:
    server = pending.world.server
    status, acquirers = pending.run(pending.keys.viewer, "status", "acquirers status")
    assert f"store-and-forward   {ADVICES_STORED} pending" in status.stdout, status.stdout
    row = next(line for line in acquirers.stdout.splitlines() if line.startswith(ACQUIRER))
    assert row.split()[-1] == str(ADVICES_STORED), acquirers.stdout
    depth = server.ops.metrics.registry.get_sample_value(
        "txswitch_store_and_forward_queue_depth", {"acquirer": ACQUIRER}
    )
    assert depth == ADVICES_STORED


SAF_LISTS = [
    # (advices stored, the line after the listing, or None when every advice is listed); the switch
    # with ADVICES_STORED first, so that the test above and this one share it (pytest runs them in order)
    (
        ADVICES_STORED,
        f"{ADVICES_STORED - SAF_PENDING_LIMIT_MAX} more pending, not listed: {ADVICES_STORED} in all, "
        f"the oldest {SAF_PENDING_LIMIT_MAX} shown",
    ),
    (3, None),
]


@pytest.mark.parametrize(
    ("pending", "stored", "note"),
    [(stored, stored, note) for stored, note in SAF_LISTS],
    indirect=["pending"],
)
def test_saf_list_says_how_many_more_are_pending_than_it_lists(
    pending: ConsoleWorld, stored: int, note: str | None
) -> None:
    (listed,) = pending.run(pending.keys.viewer, "saf list")
    assert listed.exit_status == 0, listed.stderr
    lines = listed.stdout.rstrip("\n").splitlines()
    rows = [line for line in lines if line.split()[:2] and line.split()[1] == ACQUIRER]
    assert len(rows) == min(stored, SAF_PENDING_LIMIT_MAX)
    if note is None:
        assert "more pending" not in listed.stdout, lines[-1]
    else:
        assert lines[-1] == note
