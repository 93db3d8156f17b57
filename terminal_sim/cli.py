"""The `txswitch-sim` command: a fleet of simulated terminals against a running switch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import trio

from terminal_sim.arguments import flag_problem, out_dir_problem, target_problem
from terminal_sim.auditor import format_report
from terminal_sim.cards import CardPopulation, synthetic_cards
from terminal_sim.config import (
    CARDS_MAX,
    FaultShares,
    LoadModel,
    SettingError,
    ShopLogin,
    SimConfig,
    check_above_zero,
    check_count,
)
from terminal_sim.fleet import run_fleet
from terminal_sim.processes import quiet_garbage_collector, start_echo_server
from terminal_sim.report import report_json, table, write_json, write_plot
from terminal_sim.session import RunOutcome, SwitchTarget, provision, run_and_audit

SWITCH_WAIT_S = 5.0  # how long the simulator waits for the switch to answer before it gives up
CONNECT_TIMEOUT_MAX_S = 86_400.0  # a day: more is a typo (and 1e300 overflowed the wait)

START_BALANCE_MINOR = 5_000
# Printed when activation is over and the measured run begins: `make profile` starts its window on
# it (the first progress line comes a second later, never in a run shorter than that).
WINDOW_START_LINE = "measuring window started"

FLAG_OF_SETTING = {
    "terminals": "--terminals",
    "duration_s": "--duration-s",
    "target_rate_per_s": "--rate-per-s",
    "think_time_ms_mean": "--think-ms",
    "day_length_s": "--day-length-s",
    "duplicate": "--duplicate-share",
    "timeout": "--timeout-share",
    "abandon": "--abandon-share",
    "wrong_pin_share": "--wrong-pin-share",
    "employees": "--employees",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="txswitch-sim", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="the switch's data dir")
    parser.add_argument("--target", default="127.0.0.1:50051", help="the switch's grpc address")
    parser.add_argument(
        "--connect-timeout-s",
        type=float,
        default=SWITCH_WAIT_S,
        help=f"how long to wait for the switch at --target to answer (default: {SWITCH_WAIT_S:g})",
    )
    parser.add_argument("--database-url", default="", help="default: the SQLite file in data-dir")
    parser.add_argument("--echo", action="store_true", help="run against the echo server instead")
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--cards", type=int, default=200)
    parser.add_argument("--load-model", choices=[m.value for m in LoadModel], default="closed")
    parser.add_argument("--rate-per-s", type=float, default=200.0, help="open loop target rate")
    parser.add_argument("--think-ms", type=float, default=200.0, help="closed loop mean think")
    parser.add_argument("--day-length-s", type=float, default=10.0)
    parser.add_argument("--duplicate-share", type=float, default=0.02)
    parser.add_argument("--timeout-share", type=float, default=0.02)
    parser.add_argument("--abandon-share", type=float, default=0.01)
    parser.add_argument("--wrong-pin-share", type=float, default=0.02)
    parser.add_argument("--employees", type=int, default=50, help="who sign refunds, round robin")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("sim-out"))
    return parser


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    try:
        config_from(args)
        check_count("--cards", args.cards, 1, CARDS_MAX)
        check_above_zero("--connect-timeout-s", args.connect_timeout_s)
        if args.connect_timeout_s > CONNECT_TIMEOUT_MAX_S:  # a wait past it overflows the clock
            raise SettingError(
                ("--connect-timeout-s",),
                f"must be at most {CONNECT_TIMEOUT_MAX_S:g}, not {args.connect_timeout_s:g}",
            )
    except SettingError as error:
        return flag_problem(error, FLAG_OF_SETTING)
    return target_problem("--target", args.target) or out_dir_problem("--out-dir", args.out_dir)


def config_from(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        terminals=args.terminals,
        duration_s=args.duration_s,
        load_model=LoadModel(args.load_model),
        think_time_ms_mean=args.think_ms,
        target_rate_per_s=args.rate_per_s,
        faults=FaultShares(args.duplicate_share, args.timeout_share, args.abandon_share),
        wrong_pin_share=args.wrong_pin_share,
        employees=args.employees,
        day_length_s=args.day_length_s,
        seed=args.seed,
    )


async def _run_switch(args: argparse.Namespace, config: SimConfig) -> RunOutcome:
    token_path = args.data_dir / "admin.token"
    if not token_path.exists():
        raise SystemExit(f"no {token_path}: start the switch first (make run)")
    database_url = args.database_url or f"sqlite:///{args.data_dir / 'txswitch.sqlite'}"
    target = SwitchTarget(args.target, token_path.read_text().strip(), database_url)
    print(f"provisioning a simulator shop with {args.cards} cards on {args.target}", flush=True)
    setup = await provision(target, config, args.cards, START_BALANCE_MINOR)
    print(f"running {config.terminals} terminals for {config.duration_s:.0f} s", flush=True)
    return await run_and_audit(target, config, setup, on_window_start=_print_window_start)


def _print_window_start() -> None:
    print(WINDOW_START_LINE, flush=True)


async def _run_echo(args: argparse.Namespace, config: SimConfig, address: str) -> RunOutcome:
    login = ShopLogin("echo@txswitch.example", "echo", "Echo", "1001", "1234")
    cards = CardPopulation(synthetic_cards(args.cards, config.seed), config.zipf_exponent)
    fleet = await run_fleet(address, config, login, cards)
    return RunOutcome(fleet, None, args.cards)


def _switch_listens(target: str, wait_s: float = SWITCH_WAIT_S) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=wait_s)
        except grpc.FutureTimeoutError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    config = config_from(args)
    quiet_garbage_collector()
    if args.echo:
        server = start_echo_server()
        try:
            outcome = trio.run(_run_echo, args, config, server.address)
        finally:
            server.stop()
    else:
        if not _switch_listens(args.target, args.connect_timeout_s):
            print(
                f"txswitch-sim: no switch answers at {args.target}: start one (make run), or give "
                "its address with --target (with make: make sim SIM_TARGET=<host>:<port>)",
                file=sys.stderr,
            )
            return 2
        outcome = trio.run(_run_switch, args, config)
    statistics = outcome.fleet.statistics
    print(table(statistics))
    if outcome.fleet.stopped_early:
        print(f"stopped early: {outcome.fleet.stopped_early}")
    if outcome.audit is not None:
        print("\n".join(format_report(outcome.audit)))
    document = report_json(outcome.fleet, outcome.audit, {"terminals": config.terminals})
    json_path, plot_path = args.out_dir / "sim-report.json", args.out_dir / "sim-report.png"
    write_json(json_path, document)
    write_plot(plot_path, statistics, f"{config.terminals} terminals, {config.load_model.value} loop")
    print(f"report: {json_path}  plot: {plot_path}")
    return 0 if outcome.audit is None or outcome.audit.clean else 1


if __name__ == "__main__":
    sys.exit(main())
