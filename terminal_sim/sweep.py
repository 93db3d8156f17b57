"""Latency against offered load: the bench's open loop at rising rates, on one switch.

`make bench` measures the open loop at one rate, 70 % of what the closed loop carried. A load
tester also wants to know where the tail starts to grow, and the highest rate at which p99 stays
within a bound. This starts a switch from this tree on a temporary SQLite file, as `make bench`
does, provisions its shop, runs the closed loop once (unmeasured, but audited: it warms the cards
and gives the closed loop's rate), then the open loop at each share of that rate, lowest first.
Each open loop is audited; latency counts from each flow's intended start.

    python -m terminal_sim.sweep --shares 0.1,0.2,0.3,0.4,0.5,0.6,0.7 --p99-ms 15

Per rate it prints one line; at the end a table, `sweep.json` and `sweep.png` (p50, p99 and p99.9
against the offered rate) in --out-dir, and as the last line one JSON object whose
`highest_share_within` is the largest share whose p99 stayed within --p99-ms (0 if none did).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from terminal_sim.arguments import flag_problem, out_dir_problem
from terminal_sim.bench import FLAG_OF_SETTING, START_BALANCE_MINOR, closed_loop, open_loop
from terminal_sim.config import CARDS_MAX, SettingError, SimConfig, check_above_zero, check_count
from terminal_sim.processes import quiet_garbage_collector, start_switch
from terminal_sim.session import RunOutcome, SwitchTarget, provision, run_and_audit


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One open loop: the share of the closed loop's flow rate it was offered, and what it got."""

    share: float
    offered_flows_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    late_starts: int
    audit_clean: bool


def parse_shares(text: str) -> list[float]:
    """ "0.1,0.3,0.2" -> [0.1, 0.2, 0.3]; each share above 0 and at most 1.5 (past the closed loop's rate
    an open loop only measures its own backlog)."""
    try:
        shares = sorted({float(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise ValueError(f"--shares must be numbers separated by commas, got {text!r}") from None
    if not shares:
        raise ValueError("--shares is empty")
    if not all(0 < share <= 1.5 for share in shares):
        raise ValueError(f"--shares must each be above 0 and at most 1.5, got {text!r}")
    return shares


def highest_share_within(points: list[SweepPoint], p99_ms: float) -> float:
    """The largest share whose p99 stayed within p99_ms and whose audit was clean, below the first
    share that did not: a rate past one the switch failed at is no rate to plan with. 0 if none."""
    highest = 0.0
    for point in sorted(points, key=lambda p: p.share):
        if point.p99_ms > p99_ms or not point.audit_clean:
            break
        highest = point.share
    return highest


def point_of(share: float, offered: float, run: RunOutcome) -> SweepPoint:
    statistics = run.fleet.statistics
    return SweepPoint(
        share=share,
        offered_flows_per_s=round(offered, 1),
        requests_per_s=round(statistics.completed_per_s, 1),
        p50_ms=statistics.overall.p50_ms,
        p99_ms=statistics.overall.p99_ms,
        p999_ms=statistics.overall.p999_ms,
        late_starts=run.fleet.late_starts,
        audit_clean=run.audit is not None and run.audit.clean,
    )


async def _sweep(
    target: SwitchTarget, closed: SimConfig, cards: int, shares: list[float]
) -> tuple[float, bool, list[SweepPoint]]:
    setup = await provision(target, closed, cards, START_BALANCE_MINOR)
    warm = await run_and_audit(target, closed, setup, progress=None)
    closed_flows_per_s = warm.fleet.flows_per_s
    approved_per_s = warm.fleet.statistics.approved_per_s
    _say(f"closed loop: {closed_flows_per_s:.1f} flows/s, {approved_per_s:.1f} approved/s")
    points = []
    for share in shares:
        offered = share * closed_flows_per_s
        run = await run_and_audit(target, open_loop(closed, offered), setup, progress=None)
        point = point_of(share, offered, run)
        _say(
            f"share {share:.2f}: {offered:.0f} flows/s offered, p50 {point.p50_ms:.1f} ms, "
            f"p99 {point.p99_ms:.1f} ms, p99.9 {point.p999_ms:.1f} ms, late starts {point.late_starts}"
            + ("" if point.audit_clean else ", AUDIT NOT CLEAN")
        )
        points.append(point)
    warm_clean = warm.audit is not None and warm.audit.clean
    return closed_flows_per_s, warm_clean, points


def _say(message: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {message}", flush=True)


def table(points: list[SweepPoint]) -> str:
    lines = [
        f"{'share':>6} {'flows/s':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'late':>6}"
    ]
    for p in points:
        lines.append(
            f"{p.share:>6.2f} {p.offered_flows_per_s:>8.1f} {p.requests_per_s:>8.1f} {p.p50_ms:>8.1f} "
            f"{p.p99_ms:>8.1f} {p.p999_ms:>9.1f} {p.late_starts:>6}" + ("" if p.audit_clean else "  audit!")
        )
    return "\n".join(lines)


def write_plot(path: Path, points: list[SweepPoint], p99_bound_ms: float) -> None:
    """p50, p99 and p99.9 against the offered rate, on a log scale, with the p99 bound drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p.offered_flows_per_s for p in points]
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot(rates, [p.p50_ms for p in points], marker="o", label="p50")
    axes.plot(rates, [p.p99_ms for p in points], marker="o", label="p99")
    axes.plot(rates, [p.p999_ms for p in points], marker="o", label="p99.9")
    axes.axhline(p99_bound_ms, color="grey", linestyle="--", label=f"p99 bound {p99_bound_ms:g} ms")
    axes.set_yscale("log")
    axes.set_xlabel("offered flows/s (open loop, Poisson)")
    axes.set_ylabel("latency from the intended start (ms)")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(
    closed_flows_per_s: float, warm_clean: bool, points: list[SweepPoint], p99_bound_ms: float
) -> dict[str, Any]:
    return {
        "closed_flows_per_s": round(closed_flows_per_s, 1),
        "p99_bound_ms": p99_bound_ms,
        "highest_share_within": highest_share_within(points, p99_bound_ms),
        "audits_clean": warm_clean and all(point.audit_clean for point in points),
        "points": [asdict(point) for point in points],
    }


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line but --shares, naming the flag; None when nothing is."""
    try:
        closed_loop(args.terminals, args.duration_s)
        check_count("--cards", args.cards, 1, CARDS_MAX)
        check_above_zero("--p99-ms", args.p99_ms)
    except SettingError as error:
        return flag_problem(error, FLAG_OF_SETTING)
    return out_dir_problem("--out-dir", args.out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--shares", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7", help="shares of the closed loop's rate"
    )
    parser.add_argument("--p99-ms", type=float, default=15.0, help="the p99 bound (the issue's target: 15)")
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--duration-s", type=float, default=12.0, help="of each loop")
    parser.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    try:
        shares = parse_shares(args.shares)
    except ValueError as error:
        parser.error(str(error))
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    args.out_dir.mkdir(parents=True, exist_ok=True)  # the switch's log goes there from its start
    quiet_garbage_collector()
    closed = closed_loop(args.terminals, args.duration_s)
    with tempfile.TemporaryDirectory(prefix="txswitch-sweep-") as data_dir:
        server = start_switch(Path(data_dir), log_path=args.out_dir / "sweep-switch.log")
        try:
            token = (Path(data_dir) / "admin.token").read_text().strip()
            target = SwitchTarget(server.address, token, f"sqlite:///{data_dir}/txswitch.sqlite")
            closed_flows_per_s, warm_clean, points = trio.run(_sweep, target, closed, args.cards, shares)
        finally:
            server.stop()
    result = report(closed_flows_per_s, warm_clean, points, args.p99_ms)
    print(table(points))
    (args.out_dir / "sweep.json").write_text(json.dumps(result, indent=2))
    write_plot(args.out_dir / "sweep.png", points, args.p99_ms)
    print(json.dumps(result))
    return 0 if result["audits_clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
