"""SIGTERM to `txswitch serve` in the middle of a simulated run loses no approval."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from terminal_sim.auditor import audit, format_report
from terminal_sim.cards import CardPopulation
from terminal_sim.config import SimConfig
from terminal_sim.fleet import run_fleet
from terminal_sim.ledger_source import journal_mark, open_engine, read_card_balances, read_ledger_snapshot
from terminal_sim.records import Outcome
from terminal_sim.session import SwitchTarget, provision
from tests.serve import serve_process

EXIT_TIMEOUT_S = 30.0
SIGTERM_AFTER_FIRST_ENTRY_S = 0.3  # the run is under way: the stop hits transactions in flight
SERVE = (
    "--metrics-port",
    "-1",
    "--console-port",
    "-1",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(data_dir: Path, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`txswitch serve` as a real process; yields once it listens, kills it if a test fails."""
    with serve_process([*SERVE, "--data-dir", str(data_dir), "--grpc-port", str(port)], log_path) as served:
        yield served[0]


def entries_after(database_url: str, mark: int) -> int:
    engine = open_engine(database_url)
    try:
        return journal_mark(engine) - mark
    finally:
        engine.dispose()


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(EXIT_TIMEOUT_S)


@pytest.mark.trio
async def test_sigterm_mid_run_drains_and_the_audit_after_restart_is_clean(tmp_path: Path) -> None:
    data_dir, port, log_path = tmp_path / "data", free_port(), tmp_path / "switch.log"
    address = f"127.0.0.1:{port}"
    config = SimConfig(
        terminals=6, duration_s=4.0, think_time_ms_mean=5.0, day_length_s=1.0, terminal_timeout_s=1.0, seed=5
    )
    with serve(data_dir, port, log_path) as process:
        token = (data_dir / "admin.token").read_text().strip()
        target = SwitchTarget(address, token, f"sqlite:///{data_dir / 'txswitch.sqlite'}")
        setup = await provision(target, config, card_count=20, start_minor=3_000)
        engine = open_engine(target.database_url)
        card_ids = [card.card_id for card in setup.cards]
        start_balances = read_card_balances(engine, card_ids)
        mark = journal_mark(engine)
        engine.dispose()
        exit_codes: list[int] = []

        async def terminate_mid_run() -> None:
            # After the run's first journal entry, not after a fixed time: on a busy machine the
            # terminals' activations alone can take longer than that time.
            while await trio.to_thread.run_sync(entries_after, target.database_url, mark) == 0:
                await trio.sleep(0.05)
            await trio.sleep(SIGTERM_AFTER_FIRST_ENTRY_S)
            exit_codes.append(await trio.to_thread.run_sync(stop, process))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(terminate_mid_run)
            population = CardPopulation(setup.cards, config.zipf_exponent)
            fleet = await run_fleet(address, config, setup.login, population, progress=None)
    assert exit_codes == [0], log_path.read_text()[-2000:]
    assert "txswitch stopped" in log_path.with_suffix(".out").read_text()

    exchanges = fleet.exchanges
    assert sum(e.approved for e in exchanges) > 0
    assert any(e.outcome is not Outcome.answered for e in exchanges)  # the stop did hit the run

    with serve(data_dir, port, log_path) as restarted:
        engine = open_engine(target.database_url)
        try:
            snapshot = read_ledger_snapshot(
                engine,
                start_balances=start_balances,
                terminal_ids={e.terminal_id for e in exchanges},
                after_entry_id=mark,
            )
        finally:
            engine.dispose()
        report = audit(exchanges, snapshot)
        assert stop(restarted) == 0
    assert report.clean, "\n".join(format_report(report))
    assert report.transactions_checked > 0

    # The switch logged one JSON line per transaction, with no card number in any of them.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    transactions = [line for line in lines if line.get("message") == "transaction"]
    assert transactions and {"terminal_id", "transaction_id", "response_code", "latency_ms"} <= set(
        transactions[0]
    )
    text = log_path.read_text()
    assert not any(card.card_number in text for card in setup.cards)
