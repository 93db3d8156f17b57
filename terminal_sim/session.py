"""One run end to end: provision a shop on the switch, run the fleet, read the ledger, audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from terminal_sim.auditor import AuditReport, audit
from terminal_sim.cards import CardPopulation
from terminal_sim.config import SimConfig
from terminal_sim.fleet import FleetResult, ProgressSink, run_fleet, stderr_progress
from terminal_sim.ledger_source import (
    journal_mark,
    open_engine,
    read_card_balances,
    read_ledger_snapshot,
)
from terminal_sim.provision import ShopSetup, provision_shop

# Requests the terminals gave up on may still be committing when the fleet stops.
SETTLE_S = 1.0


def settle_s(fleet: FleetResult) -> float:
    """How long to wait before reading the ledger: SETTLE_S when a request ended without a reply
    (timed out, abandoned, failed, cancelled) or the fleet stopped early; none when every request was
    answered, as the switch answers only after its commit returns (ARCHITECTURE.md, Durability)."""
    return SETTLE_S if fleet.unanswered or fleet.stopped_early else 0.0


@dataclass(frozen=True)
class SwitchTarget:
    address: str
    admin_token: str
    database_url: str


@dataclass(frozen=True)
class RunOutcome:
    fleet: FleetResult
    audit: AuditReport | None
    cards: int


async def provision(target: SwitchTarget, config: SimConfig, card_count: int, start_minor: int) -> ShopSetup:
    employees = min(config.employees, config.terminals)  # more would never sign anything
    return await provision_shop(
        target.address, target.admin_token, card_count, start_minor, seed=config.seed, employees=employees
    )


async def run_and_audit(
    target: SwitchTarget,
    config: SimConfig,
    setup: ShopSetup,
    *,
    progress: ProgressSink | None = stderr_progress,
    on_window_start: Callable[[], None] | None = None,
    on_window_end: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run the fleet on an already provisioned shop and audit the ledger afterwards."""
    engine = open_engine(target.database_url)
    try:
        card_ids = [card.card_id for card in setup.cards]
        start_balances = read_card_balances(engine, card_ids)
        mark = journal_mark(engine)
        population = CardPopulation(setup.cards, config.zipf_exponent)
        fleet = await run_fleet(
            target.address,
            config,
            setup.login,
            population,
            progress=progress,
            on_window_start=on_window_start,
            on_window_end=on_window_end,
        )
        if (wait_s := settle_s(fleet)) > 0:
            await trio.sleep(wait_s)
        snapshot = read_ledger_snapshot(
            engine,
            start_balances=start_balances,
            terminal_ids={exchange.terminal_id for exchange in fleet.exchanges},
            after_entry_id=mark,
        )
    finally:
        engine.dispose()
    return RunOutcome(fleet, audit(fleet.exchanges, snapshot), len(setup.cards))
