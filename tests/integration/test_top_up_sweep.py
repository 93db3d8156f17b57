"""A top-up left confirming is finished by the switch's own sweep, once: the PSP that gave up after
an UNAVAILABLE (its load's outcome not known in time) or a switch stopped mid-load left it there,
and before session 24 it waited for the operator to confirm it again by hand.

Real gRPC on loopback, the SQLite file and PostgreSQL; the sweep on its own thread, as served.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text, update

from switch.domain.programmes import ProgrammeKind
from switch.store.repository import REPLACED_CHAIN_LINKS_MAX
from switch.store.schema import terminals, top_ups, transactions
from tests.integration.harness import World, world_fixture
from tests.integration.test_card_replacement import replace
from tests.integration.test_receipts import wait_until
from tests.integration.test_top_ups import balance, balance_of, confirm, start

SWEEP_INTERVAL_S = 0.2
GRACE_S = 600.0


def swept_world(request: pytest.FixtureRequest, tmp_path: Path, **settings: object) -> Iterator[World]:
    """A world whose sweep runs every SWEEP_INTERVAL_S on top-ups confirming for GRACE_S."""
    yield from world_fixture(
        request,
        tmp_path,
        terminals=1,
        top_up_sweep_interval_s=SWEEP_INTERVAL_S,
        top_up_confirming_grace_s=GRACE_S,
        **settings,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from swept_world(request, tmp_path)


def left_confirming(world: World, top_up_id: str, paid_minor: int, minutes_ago: float) -> None:
    """As a confirmation that took the top-up and never finished leaves it."""
    confirmed_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(top_ups)
            .where(top_ups.c.top_up_id == top_up_id)
            .values(
                status="confirming",
                psp_reference=f"p-{top_up_id}",
                amount_paid_minor=paid_minor,
                amount_paid_currency="EUR",
                confirmed_at=confirmed_at,
                reason="",
            )
        )


def statuses(world: World) -> dict[str, str]:
    with world.server.core.store.engine.connect() as conn:
        return dict(conn.execute(select(top_ups.c.top_up_id, top_ups.c.status)).all())


def loads_of(world: World, top_up_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        found = select(transactions.c.transaction_id).where(transactions.c.transaction_id == top_up_id)
        return len(conn.execute(found).all())


def test_a_top_up_left_confirming_is_finished_by_the_sweep_and_loads_once(world: World) -> None:
    not_loaded, loaded, wrong, young = (world.issue(0, world.benefit_programme) for _ in range(4))
    unloaded = start(world, not_loaded, 1_000)  # the switch stopped before its load
    made = start(world, loaded, 500)  # loaded, but the answer never stored as loaded
    assert confirm(world, made.top_up_id, f"p-{made.top_up_id}", 180).status == "loaded"
    short = start(world, wrong, 500)  # the PSP told 1.00 of 1.80: refund_due
    recent = start(world, young, 500)  # a live confirmation's load may still be under way
    left_confirming(world, unloaded.top_up_id, 360, 30)
    left_confirming(world, made.top_up_id, 180, 30)
    left_confirming(world, short.top_up_id, 100, 30)
    left_confirming(world, recent.top_up_id, 180, 1)
    expected = {
        unloaded.top_up_id: "loaded",
        made.top_up_id: "loaded",
        short.top_up_id: "refund_due",
        recent.top_up_id: "confirming",
    }
    wait_until(lambda: statuses(world) == expected)
    # Swept again, and by hand at once: nothing more moves.
    assert world.server.core.top_ups.finish_confirming() == 0
    assert [balance(world, card) for card in (not_loaded, loaded, wrong, young)] == [1_000, 500, 0, 0]
    assert (loads_of(world, unloaded.top_up_id), loads_of(world, made.top_up_id)) == (1, 1)
    assert statuses(world)[recent.top_up_id] == "confirming"
    # Counted as waiting (txswitch_top_ups_waiting): the young one confirming, the short one owed.
    world.server.core.top_ups.count_waiting()
    waiting = world.server.core.top_ups.waiting()
    assert waiting is not None and (waiting.confirming, waiting.refund_due) == (1, 1), waiting
    assert 60 <= waiting.oldest_confirming_waited_s < 60 + 30, waiting
    assert 0 < waiting.oldest_refund_due_waited_s < 30, waiting
    # The PSP's own confirmation sent again later gets the sweep's answer.
    assert confirm(world, unloaded.top_up_id, f"p-{unloaded.top_up_id}", 360).status == "loaded"
    assert balance(world, not_loaded) == 1_000
    assert world.ledger().unbalanced_entries == 0


SWEPT_MAX = 2


@pytest.fixture(params=["sqlite", "postgres"])
def small_sweeps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from swept_world(request, tmp_path, top_ups_swept_max=SWEPT_MAX)


def test_top_ups_that_never_load_leave_the_sweep_to_newer_ones(small_sweeps: World) -> None:
    """Audit after session 24: each sweep took the oldest top_ups_swept_max confirming top-ups; as
    many that never load (their load not known every time) took every sweep, and a newer one was
    never reached. A try that leaves a top-up confirming puts its next try off (twice as far each
    time), and the sweep takes the longest waiting first."""
    world = small_sweeps
    core = world.server.core
    bus = core.admin.create_programme(
        "Bus", ProgrammeKind.benefit, "EUR", "600104", balance_max_minor=100_000, copay=(180, 500)
    )
    stuck_cards = [world.issue(0, world.benefit_programme) for _ in range(SWEPT_MAX + 1)]
    stuck = [start(world, card, 500) for card in stuck_cards]
    # The taxi programme's loads are refused before they are made (not stored): never loaded yet.
    # Its terminal off in the database (the switch refuses to switch its own terminals off), its
    # actor, if any, stopped so that the next one reads it.
    taxi = core.online_top_up_terminal(world.benefit_programme)
    with core.store.engine.begin() as conn:
        conn.execute(update(terminals).where(terminals.c.terminal_id == taxi).values(active=False))
    core.terminal_actors.stop(taxi)
    for minutes_ago, top_up in enumerate(stuck, start=30):
        left_confirming(world, top_up.top_up_id, 180, minutes_ago)
    newer_card = world.issue(0, bus)
    newer = start(world, newer_card, 500)
    left_confirming(world, newer.top_up_id, 180, 20)
    wait_until(lambda: statuses(world)[newer.top_up_id] == "loaded")
    assert balance_of(world, newer_card) == 500  # a programme the shop does not take: 58 at its counter
    assert [statuses(world)[top_up.top_up_id] for top_up in stuck] == ["confirming"] * len(stuck)
    assert [balance(world, card) for card in stuck_cards] == [0] * len(stuck)
    with core.store.engine.connect() as conn:
        tries = conn.execute(
            select(top_ups.c.sweep_attempts, top_ups.c.next_sweep_at).where(
                top_ups.c.top_up_id.in_([top_up.top_up_id for top_up in stuck])
            )
        ).all()
    assert all(attempts >= 1 and next_at is not None for attempts, next_at in tries), tries


@pytest.fixture(params=["postgres"])
def pg_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from swept_world(request, tmp_path)


def test_a_top_up_the_sweep_cannot_judge_is_put_off_and_leaves_the_others_their_turn(pg_world: World) -> None:
    """A top-up whose judging fails for another reason than a load not known yet (here its card's
    row is gone, the foreign key bypassed as a restore gone wrong might) ended the whole sweep, every
    sweep, the oldest first: the others were never finished. Now it is logged and put off as one
    whose load is not known yet is. PostgreSQL only: it can bypass the foreign key for the test."""
    world = pg_world
    broken_card, card = world.issue(0, world.benefit_programme), world.issue(0, world.benefit_programme)
    broken, fine = start(world, broken_card, 500), start(world, card, 500)
    left_confirming(world, broken.top_up_id, 180, 30)
    left_confirming(world, fine.top_up_id, 180, 20)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        gone = update(top_ups).where(top_ups.c.top_up_id == broken.top_up_id).values(card_id="card_gone")
        conn.execute(gone)
    wait_until(lambda: statuses(world)[fine.top_up_id] == "loaded")
    assert statuses(world)[broken.top_up_id] == "confirming"
    assert balance(world, card) == 500 and balance(world, broken_card) == 0
    with world.server.core.store.engine.connect() as conn:
        attempts = conn.execute(
            select(top_ups.c.sweep_attempts).where(top_ups.c.top_up_id == broken.top_up_id)
        ).scalar_one()
    assert attempts >= 1


def top_ups_counted(world: World, event: str) -> float:
    """txswitch_top_ups_total of the benefit programme and `event`, from the server's own registry."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(world.server.metrics.exposition().decode())
        for sample in family.samples
        if sample.name == "txswitch_top_ups_total"
        and sample.labels == {"programme": world.benefit_programme, "event": event}
    )


def test_a_top_up_on_a_chain_of_replacements_past_the_walks_bound_ends_refund_due(world: World) -> None:
    """Audit after session 25: the card that replaced a top-up's card is looked for along the chain
    of replacements at most REPLACED_CHAIN_LINKS_MAX links on; for a longer chain the walk is refused,
    and the top-up stayed confirming, tried again by every sweep for ever (and each confirmation sent
    again answered FAILED_PRECONDITION). It ends refund_due with the reason, counted so, and no card
    of the chain is loaded."""
    chain = [world.issue(0, world.benefit_programme) for _ in range(REPLACED_CHAIN_LINKS_MAX + 3)]
    swept, confirmed = start(world, chain[0], 500), start(world, chain[0], 1_000)
    for replaced, replacement in itertools.pairwise(chain):
        replace(world, replaced, replacement)
    left_confirming(world, swept.top_up_id, 180, 30)
    wait_until(lambda: statuses(world)[swept.top_up_id] == "refund_due")
    answer = confirm(world, confirmed.top_up_id, "p-chain", 360)
    assert answer.status == "refund_due"
    with world.server.core.store.engine.connect() as conn:
        reasons = dict(conn.execute(select(top_ups.c.top_up_id, top_ups.c.reason)).all())
    for top_up in (swept, confirmed):
        reason = reasons[top_up.top_up_id]
        assert reason.startswith("card not loaded: the chain of replacements from card "), reason
        assert f"longer than {REPLACED_CHAIN_LINKS_MAX + 1} links" in reason, reason
        assert all(number not in reason for number in chain)
        assert loads_of(world, top_up.top_up_id) == 0
    assert answer.reason == reasons[confirmed.top_up_id]
    assert top_ups_counted(world, "refund_due") == 2
    assert [balance(world, card) for card in chain] == [0] * len(chain)
    assert world.ledger().unbalanced_entries == 0
