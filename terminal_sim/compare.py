"""Two trees of the switch under the same closed loop, interleaved: which answers more, on less CPU.

A `make bench` run takes minutes, and this machine's speed swings by a third over minutes (README,
session 16), so a before run and an after run minutes apart compare the machine as much as the
code. This runs short closed loops of the two trees in the order before, after, after, before,
... (a drift in time falls on both alike), each against a fresh switch started from its tree with
its own SQLite file. The simulator is this tree's, the same for both. Each run is audited.

    git worktree add /tmp/before <commit>
    python -m terminal_sim.compare --before /tmp/before --after . --rounds 3

Per run it prints approvals per second, the CPU per answered request of the switch process and
its journal process together, and the latency p99; the last line is one JSON object with both
trees' runs, medians, and the median of the after/before ratios of the runs paired in each round.

With --open-rate-per-s R each run is the bench's open loop at R flows/s instead (Poisson
arrivals, latency from the intended start): for a change meant for the tail rather than the rate,
compare p99 at one fixed rate. As in `make bench`, the closed loop runs first on the same switch,
unmeasured, so the open loop meets warm cards; that doubles the time of a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from terminal_sim.arguments import flag_problem
from terminal_sim.bench import (
    FLAG_OF_SETTING,
    START_BALANCE_MINOR,
    CpuReading,
    closed_loop,
    ms_per_request,
    open_loop,
    process_tree_cpu_s,
)
from terminal_sim.config import CARDS_MAX, SettingError, SimConfig, check_count, check_not_negative
from terminal_sim.processes import quiet_garbage_collector, start_switch
from terminal_sim.session import SwitchTarget, provision, run_and_audit

SIDES = ("before", "after")
ROUNDS_MAX = 100  # a round is two runs of a switch, half a minute or more: 100 are hours


@dataclass(frozen=True, slots=True)
class RunFigures:
    approved_per_s: float
    cpu_ms_per_request: float
    audit_clean: bool
    p99_ms: float


async def _measured_run(
    target: SwitchTarget, config: SimConfig, cards: int, switch_pid: int, warm_up: SimConfig | None
) -> RunFigures:
    setup = await provision(target, config, cards, START_BALANCE_MINOR)
    warm_audit_clean = True
    if warm_up is not None:  # as `make bench` runs its open loop: on a switch the closed loop warmed
        warmed = await run_and_audit(target, warm_up, setup, progress=None)
        warm_audit_clean = warmed.audit is not None and warmed.audit.clean
    window = CpuReading(switch_pid, process_tree_cpu_s)  # the switch and its journal process
    run = await run_and_audit(target, config, setup, progress=None, on_window_start=window.mark)
    cpu_ms = ms_per_request(window.cpu_s, process_tree_cpu_s(switch_pid), run.fleet.statistics.completed)
    if cpu_ms is None:
        raise SystemExit("no CPU time per request: /proc does not tell, or no request was answered")
    return RunFigures(
        approved_per_s=round(run.fleet.statistics.approved_per_s, 1),
        cpu_ms_per_request=cpu_ms,
        audit_clean=warm_audit_clean and run.audit is not None and run.audit.clean,
        p99_ms=run.fleet.statistics.overall.p99_ms,
    )


def run_once(tree: Path, config: SimConfig, cards: int, warm_up: SimConfig | None = None) -> RunFigures:
    """A fresh switch from `tree` on a temporary SQLite file, provisioned, driven, audited, stopped.

    Given warm_up, that loop runs first, unmeasured (but audited), on the same switch and cards.
    """
    with tempfile.TemporaryDirectory(prefix="txswitch-compare-") as data_dir:
        server = start_switch(Path(data_dir), root=tree)
        try:
            token = (Path(data_dir) / "admin.token").read_text().strip()
            target = SwitchTarget(server.address, token, f"sqlite:///{data_dir}/txswitch.sqlite")
            return trio.run(_measured_run, target, config, cards, server.process.pid, warm_up)
        finally:
            server.stop()


def run_configs(
    terminals: int, duration_s: float, open_rate_per_s: float
) -> tuple[SimConfig, SimConfig | None]:
    """(the measured loop, the warm-up before it): the bench's closed loop alone; or, given a rate,
    its open loop at that rate after its closed loop, as `make bench` runs them."""
    closed = closed_loop(terminals, duration_s)
    return (open_loop(closed, open_rate_per_s), closed) if open_rate_per_s else (closed, None)


def order(rounds: int) -> list[str]:
    """before, after in even rounds; after, before in odd ones."""
    return [side for index in range(rounds) for side in (SIDES if index % 2 == 0 else SIDES[::-1])]


def summary(runs: dict[str, list[RunFigures]]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for side in SIDES:
        report[side] = {
            "approved_per_s": [run.approved_per_s for run in runs[side]],
            "cpu_ms_per_request": [run.cpu_ms_per_request for run in runs[side]],
            "median_approved_per_s": statistics.median(run.approved_per_s for run in runs[side]),
            "median_cpu_ms_per_request": statistics.median(run.cpu_ms_per_request for run in runs[side]),
            "p99_ms": [run.p99_ms for run in runs[side]],
            "median_p99_ms": statistics.median(run.p99_ms for run in runs[side]),
            "audits_clean": all(run.audit_clean for run in runs[side]),
        }
    pairs = list(zip(runs["before"], runs["after"], strict=True))
    report["after_over_before"] = {
        name: _median_ratio([(getattr(b, name), getattr(a, name)) for b, a in pairs])
        for name in ("approved_per_s", "cpu_ms_per_request", "p99_ms")
    }
    return report


def _median_ratio(pairs: list[tuple[float, float]]) -> float | None:
    """The median of after / before over the pairs whose before is not 0 (a CPU reading that did
    not advance a 10 ms tick, a tree that approved nothing); None when none is."""
    ratios = [after / before for before, after in pairs if before]
    return round(statistics.median(ratios), 3) if ratios else None


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line but the trees, naming the flag; None when nothing is."""
    try:
        check_count("--rounds", args.rounds, 1, ROUNDS_MAX)
        check_count("--cards", args.cards, 1, CARDS_MAX)
        check_not_negative("--open-rate-per-s", args.open_rate_per_s)  # 0: the closed loop instead
        run_configs(args.terminals, args.duration_s, args.open_rate_per_s)
    except SettingError as error:
        return flag_problem(error, FLAG_OF_SETTING)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--before", type=Path, required=True, help="the tree (a git worktree) to compare against"
    )
    parser.add_argument(
        "--after", type=Path, default=Path("."), help="the tree with the change (default: here)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="each round runs both trees once")
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--duration-s", type=float, default=12.0, help="the loop of one run")
    parser.add_argument(
        "--open-rate-per-s", type=float, default=0.0, help="an open loop at this many flows/s instead"
    )
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for side, tree in trees.items():
        if not (tree / "switch" / "cli.py").is_file():
            parser.error(f"--{side} {tree} is not a txswitch tree (no switch/cli.py)")
    quiet_garbage_collector()
    config, warm_up = run_configs(args.terminals, args.duration_s, args.open_rate_per_s)
    runs: dict[str, list[RunFigures]] = {side: [] for side in SIDES}
    for number, side in enumerate(order(args.rounds), start=1):
        figures = run_once(trees[side], config, args.cards, warm_up)
        runs[side].append(figures)
        audit = "audit clean" if figures.audit_clean else "AUDIT FOUND VIOLATIONS"
        print(
            f"run {number:2d} {side:6s} {figures.approved_per_s:8.1f} approved/s "
            f"{figures.cpu_ms_per_request:6.3f} ms CPU per request (switch + journal)  "
            f"p99 {figures.p99_ms:7.1f} ms  {audit}",
            flush=True,
        )
    report = summary(runs)
    print(json.dumps(report))
    return 0 if report["before"]["audits_clean"] and report["after"]["audits_clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
