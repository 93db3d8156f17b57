"""`make bench`: the echo ceiling, then the durable switch closed and open loop; JSON last line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio
from sqlalchemy import create_engine

from switch.store.saf import SafStore
from terminal_sim.acquirer_host import AcquirerHostConfig, HostThread
from terminal_sim.arguments import flag_problem, out_dir_problem
from terminal_sim.auditor import AuditReport, format_report
from terminal_sim.cards import CardPopulation, synthetic_cards
from terminal_sim.config import (
    CARDS_MAX,
    TERMINALS_MAX,
    FaultShares,
    LoadModel,
    SettingError,
    ShopLogin,
    SimConfig,
    check_above_zero,
    check_count,
)
from terminal_sim.fleet import FleetResult, run_fleet
from terminal_sim.payments import (
    PaymentMix,
    audit_payments,
    environment,
    provision_payment_shop,
    read_switch_payments,
    run_payments,
    write_acquirers_file,
)
from terminal_sim.processes import quiet_garbage_collector, start_echo_server, start_switch
from terminal_sim.report import report_json, table, write_json, write_plot
from terminal_sim.session import SwitchTarget, provision, run_and_audit

START_BALANCE_MINOR = 5_000
OPEN_LOOP_SHARE = 0.7
HEADLINE_AUDIT = ("double_spends", "lost_approvals", "ledger_imbalances", "negative_balances")
# The closed loop's one shop day lasts the run, so a bad --duration-s is also a bad day_length_s.
FLAG_OF_SETTING = {"terminals": "--terminals", "duration_s": "--duration-s", "day_length_s": "--duration-s"}


def closed_loop(terminals: int, duration_s: float) -> SimConfig:
    """The benchmark's closed loop: no think time, no faults, one shop day closed at its end."""
    return SimConfig(
        terminals=terminals,
        duration_s=duration_s,
        load_model=LoadModel.closed,
        think_time_ms_mean=0.0,
        faults=FaultShares(),
        day_length_s=duration_s,
    )


def open_loop(closed: SimConfig, rate_per_s: float) -> SimConfig:
    """The benchmark's open loop: the closed loop's fleet, at rate_per_s flows/s with Poisson arrivals."""
    return replace(closed, load_model=LoadModel.open, target_rate_per_s=rate_per_s, seed=closed.seed + 1)


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _latency(fleet: FleetResult) -> dict[str, float]:
    overall = fleet.statistics.overall
    return {"p50": overall.p50_ms, "p99": overall.p99_ms, "p999": overall.p999_ms}


def _audit_counters(audit: AuditReport | None) -> dict[str, int]:
    counters = audit.counters() if audit is not None else {}
    return {name: counters.get(name, -1) for name in HEADLINE_AUDIT}


def _show(name: str, fleet: FleetResult, audit: AuditReport | None, out_dir: Path) -> None:
    print(f"--- {name} ---")
    print(table(fleet.statistics))
    if audit is not None:
        print("\n".join(format_report(audit)))
    write_json(out_dir / f"{name}.json", report_json(fleet, audit))
    write_plot(out_dir / f"{name}.png", fleet.statistics, name)


def measure_ceiling(config: SimConfig, cards: int, out_dir: Path) -> EchoRun:
    """The simulator against the echo server, with the CPU per request answered on each side."""
    run = against_echo(config, cards)
    _show("ceiling", run.fleet, None, out_dir)
    return run


def measure_echo_open_loop(opened: SimConfig, cards: int, out_dir: Path) -> FleetResult:
    """The switch's open loop (same rate, fleet and seed) against the echo server: the latency that
    the simulator, gRPC and the machine add by themselves, below which no switch can answer."""
    fleet = against_echo(opened, cards).fleet
    _show("echo-open", fleet, None, out_dir)
    return fleet


@dataclass(frozen=True, slots=True)
class EchoRun:
    """A run against the echo server, and the CPU milliseconds per request answered of the echo server
    and of the simulator (this process, all its threads: trio's and grpc's)."""

    fleet: FleetResult
    server_ms_per_request: float | None
    simulator_ms_per_request: float | None


def against_echo(config: SimConfig, cards: int) -> EchoRun:
    """A run against a fresh echo server."""
    server = start_echo_server()
    try:
        login = ShopLogin("echo@txswitch.example", "echo", "Echo", "1001", "1234")
        population = CardPopulation(synthetic_cards(cards, config.seed), config.zipf_exponent)
        server_before_s, simulator_before_s = process_cpu_s(server.process.pid), process_cpu_s(os.getpid())
        fleet = trio.run(run_fleet, server.address, config, login, population)
        server_after_s, simulator_after_s = process_cpu_s(server.process.pid), process_cpu_s(os.getpid())
    finally:
        server.stop()
    completed = fleet.statistics.completed
    return EchoRun(
        fleet,
        ms_per_request(server_before_s, server_after_s, completed),
        ms_per_request(simulator_before_s, simulator_after_s, completed),
    )


def ms_per_request(before_s: float | None, after_s: float | None, requests: int) -> float | None:
    """CPU milliseconds per request between two readings; None without readings or requests."""
    if before_s is None or after_s is None or not requests:
        return None
    return round((after_s - before_s) * 1000 / requests, 3)


def process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds a process has used so far; None where /proc does not tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_s(pid: int) -> float | None:
    """process_cpu_s of a process and of all its descendants (the switch and its journal process)."""
    own = process_cpu_s(pid)
    if own is None:
        return None
    return own + sum(process_tree_cpu_s(child) or 0.0 for child in _children(pid))


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.extend(int(child) for child in (task / "children").read_text().split())
    except OSError:
        pass  # gone meanwhile, or no /proc
    return children


def machine_cpu_ticks() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all cores since boot; None where /proc does not tell."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def idle_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of all cores' time spent idle between two machine_cpu_ticks readings."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


class CpuReading:
    """A process's CPU and the machine's ticks, read when `mark` is called: at the measured run's
    start, after activation, and at its end.

    Activating 200 terminals checks 200 passwords (scrypt, about 70 ms of a core each): several
    seconds of the switch's CPU that no request of the run causes.
    """

    def __init__(self, pid: int, cpu: Callable[[int], float | None] = process_cpu_s) -> None:
        self._pid = pid
        self._cpu = cpu
        self.cpu_s: float | None = None
        self.machine: tuple[int, int] | None = None

    def mark(self) -> None:
        self.cpu_s, self.machine = self._cpu(self._pid), machine_cpu_ticks()


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Over the closed loop: CPU milliseconds per answered request of the switch's process, of its
    journal process (and any other child), and of the simulator; and how idle the machine was."""

    switch_ms_per_request: float | None
    journal_ms_per_request: float | None
    simulator_ms_per_request: float | None
    machine_idle_share: float | None


def _cpu_readings(switch_pid: int) -> list[CpuReading]:
    """The switch process, the switch with its journal process, and the simulator (this process)."""
    return [CpuReading(switch_pid), CpuReading(switch_pid, process_tree_cpu_s), CpuReading(os.getpid())]


def _marker(readings: list[CpuReading]) -> Callable[[], None]:
    def mark() -> None:
        for reading in readings:
            reading.mark()

    return mark


async def _switch_runs(
    target: SwitchTarget, closed: SimConfig, cards: int, switch_pid: int
) -> tuple[Any, Any, SimConfig, CpuUse]:
    _say(f"provisioning {cards} cards")
    setup = await provision(target, closed, cards, START_BALANCE_MINOR)
    _say("switch, closed loop")
    readings, ends = _cpu_readings(switch_pid), _cpu_readings(switch_pid)
    closed_run = await run_and_audit(
        target, closed, setup, on_window_start=_marker(readings), on_window_end=_marker(ends)
    )
    completed = closed_run.fleet.statistics.completed
    switch_ms, tree_ms, simulator_ms = (
        ms_per_request(start.cpu_s, end.cpu_s, completed) for start, end in zip(readings, ends, strict=True)
    )
    rate_per_s = OPEN_LOOP_SHARE * closed_run.fleet.flows_per_s
    opened = open_loop(closed, rate_per_s)
    _say(f"switch, open loop at {rate_per_s:.0f} flows/s")
    open_run = await run_and_audit(target, opened, setup)
    journal_ms = None if tree_ms is None or switch_ms is None else round(tree_ms - switch_ms, 3)
    cpu = CpuUse(switch_ms, journal_ms, simulator_ms, idle_share(readings[0].machine, ends[0].machine))
    return closed_run, open_run, opened, cpu


def measure_switch(closed: SimConfig, cards: int, out_dir: Path) -> tuple[Any, Any, SimConfig, CpuUse]:
    with tempfile.TemporaryDirectory(prefix="txswitch-bench-") as data_dir:
        server = start_switch(Path(data_dir), log_path=out_dir / "switch.log")
        _say(f"switch metrics: {server.metrics_url}")
        try:
            token = (Path(data_dir) / "admin.token").read_text().strip()
            target = SwitchTarget(server.address, token, f"sqlite:///{data_dir}/txswitch.sqlite")
            closed_run, open_run, opened, cpu = trio.run(
                _switch_runs, target, closed, cards, server.process.pid
            )
        finally:
            server.stop()
    _show("switch-closed", closed_run.fleet, closed_run.audit, out_dir)
    _show("switch-open", open_run.fleet, open_run.audit, out_dir)
    return closed_run, open_run, opened, cpu


PAYMENT_MASTER_KEY_HEX = "6B" * 32  # a throwaway switch: its keys die with the temporary data dir
PAYMENT_EMAIL = "cards@txswitch.example"
PAYMENT_PASSWORD = "card-shop"
PAYMENT_HOST = AcquirerHostConfig(latency_ms=2, drop_share=0.01, seed=11)
SAF_DRAIN_S = 15.0


def measure_payments(terminals: int, duration_s: float, out_dir: Path) -> dict[str, Any]:
    """Payments through the switch to the acquirer host simulator, then the three-way audit."""
    with tempfile.TemporaryDirectory(prefix="txswitch-pay-") as data_dir, HostThread(PAYMENT_HOST) as host:
        assert host.host.port is not None
        acquirers = write_acquirers_file(
            Path(data_dir) / "acquirers.toml", PAYMENT_MASTER_KEY_HEX, host.host.port
        )
        with environment(
            TXSWITCH_ACQUIRERS_FILE=str(acquirers),
            TXSWITCH_MASTER_KEY_HEX=PAYMENT_MASTER_KEY_HEX,
            TXSWITCH_METRICS_PORT="-1",
            TXSWITCH_CONSOLE_PORT="-1",
        ):
            server = start_switch(Path(data_dir), log_path=out_dir / "switch-payments.log")
        url = f"sqlite:///{data_dir}/txswitch.sqlite"
        try:
            token = (Path(data_dir) / "admin.token").read_text().strip()
            provision_payment_shop(server.address, token, PAYMENT_EMAIL, PAYMENT_PASSWORD)
            run = trio.run(
                run_payments,
                server.address,
                PAYMENT_EMAIL,
                PAYMENT_PASSWORD,
                terminals,
                duration_s,
                PaymentMix(),
            )
            deadline = time.monotonic() + SAF_DRAIN_S
            while _saf_pending(url) and time.monotonic() < deadline:
                time.sleep(0.1)  # aborts and timeouts reach the acquirer through store-and-forward
            audit = audit_payments(run, read_switch_payments(url), host.record())
        finally:
            server.stop()
    return {
        "approved_per_s": round(len(run.approved) / run.duration_s, 1) if run.duration_s else 0.0,
        "payments": len(run.records),
        "approved": len(run.approved),
        "aborted": sum(1 for r in run.records if r.aborted),
        "card_refunds": sum(1 for r in run.records if r.kind == "refund"),
        "latency_ms": run.latency_ms(),
        "audit": audit,
        "terminals": terminals,
        "host": {"latency_ms": PAYMENT_HOST.latency_ms, "drop_share": PAYMENT_HOST.drop_share},
    }


def _saf_pending(url: str) -> int:
    engine = create_engine(url)
    try:
        return len(SafStore(engine).pending())
    finally:
        engine.dispose()


def ratio_the_cores_allow(
    cpu: CpuUse, requests_per_s: float, approved_per_s: float, ceiling_rps: float, cores: int
) -> float | None:
    """The `ratio` at which the closed loop's CPU per request (switch, journal and simulator) would
    keep every core busy: no switch with those costs, in however many processes, gets above it on
    this machine. None without the readings."""
    parts = (cpu.switch_ms_per_request, cpu.journal_ms_per_request, cpu.simulator_ms_per_request)
    ms_per_request = sum(part or 0.0 for part in parts)
    if None in parts or ms_per_request <= 0 or not requests_per_s or not ceiling_rps:
        return None
    approved_share = approved_per_s / requests_per_s
    return round(cores * 1000 / ms_per_request * approved_share / ceiling_rps, 3)


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    try:
        closed_loop(args.terminals, args.duration_s)
        check_count("--cards", args.cards, 1, CARDS_MAX)
        check_count("--payment-terminals", args.payment_terminals, 1, TERMINALS_MAX)
        check_above_zero("--payment-duration-s", args.payment_duration_s)
    except SettingError as error:
        return flag_problem(error, FLAG_OF_SETTING)
    return out_dir_problem("--out-dir", args.out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m terminal_sim.bench", description=__doc__)
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    parser.add_argument("--payment-terminals", type=int, default=32)
    parser.add_argument("--payment-duration-s", type=float, default=15.0)
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    quiet_garbage_collector()
    closed = closed_loop(args.terminals, args.duration_s)
    started_s = time.monotonic()
    _say(f"ceiling: echo server, {args.terminals} terminals, closed loop")
    echo = measure_ceiling(closed, args.cards, args.out_dir)
    ceiling = echo.fleet
    _say("switch with durable storage")
    closed_run, open_run, opened, cpu = measure_switch(closed, args.cards, args.out_dir)
    _say(f"echo server, the same open loop at {opened.target_rate_per_s:.0f} flows/s")
    echo_open = measure_echo_open_loop(opened, args.cards, args.out_dir)
    _say(f"payments: {args.payment_terminals} terminals against the acquirer host simulator")
    payments = measure_payments(args.payment_terminals, args.payment_duration_s, args.out_dir)
    ceiling_rps = ceiling.statistics.completed_per_s
    approved_per_s = closed_run.fleet.statistics.approved_per_s
    result = {
        "approved_per_s": round(approved_per_s, 1),
        "ceiling_rps": round(ceiling_rps, 1),
        "ratio": round(approved_per_s / ceiling_rps, 3) if ceiling_rps else 0.0,
        "latency_ms": _latency(closed_run.fleet),
        "audit": _audit_counters(closed_run.audit),
        "open_loop": {
            "target_flows_per_s": round(opened.target_rate_per_s, 1),
            "requests_per_s": round(open_run.fleet.statistics.completed_per_s, 1),
            "approved_per_s": round(open_run.fleet.statistics.approved_per_s, 1),
            "late_starts": open_run.fleet.late_starts,
            "latency_ms": _latency(open_run.fleet),
            "audit": _audit_counters(open_run.audit),
            # The same open loop against the echo server: the simulator's and gRPC's own latency.
            "echo_latency_ms": _latency(echo_open),
            "echo_late_starts": echo_open.late_starts,
        },
        "payments": payments,
        # The switch process's CPU (user + system) over the closed loop, per request answered.
        "switch_cpu_ms_per_request": cpu.switch_ms_per_request,
        # The same for the echo server over the ceiling run: what the gRPC layer alone costs.
        "ceiling_server_cpu_ms_per_request": echo.server_ms_per_request,
        # The switch's journal process, and the simulator itself, over the closed loop; and the
        # simulator over the ceiling run. With the switch's, the CPU a request takes of the 2 cores.
        "journal_cpu_ms_per_request": cpu.journal_ms_per_request,
        "simulator_cpu_ms_per_request": cpu.simulator_ms_per_request,
        "ceiling_simulator_cpu_ms_per_request": echo.simulator_ms_per_request,
        "ratio_the_cores_allow": ratio_the_cores_allow(
            cpu,
            closed_run.fleet.statistics.completed_per_s,
            approved_per_s,
            ceiling_rps,
            os.cpu_count() or 1,
        ),
        # Idle share of both cores over the closed loop: above 0 with the switch saturated means it
        # waits (one Python process: its threads take turns), not that the machine is full.
        "machine_idle_share": cpu.machine_idle_share,
        "terminals": args.terminals,
        "cards": args.cards,
        "duration_s": args.duration_s,
        "wall_s": round(time.monotonic() - started_s, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
