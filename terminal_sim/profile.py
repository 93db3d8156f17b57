"""`make profile`: where the switch spends its CPU under a closed-loop run.

The switch runs in this process under yappi (CPU clock, every thread); the simulator runs in a
child process, so only the switch is measured. py-spy is the first tool to reach for, but it
cannot keep up with one thread per live card actor. The profile covers the measuring window only
(from the simulator's "measuring window started" line to its end), not set-up or provisioning.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yappi
from sqlalchemy import Engine, event

from actors.journal_writer import JournalStatistics
from switch.cli import tune_garbage_collection
from switch.config import Settings, from_environment
from switch.server import SwitchServer
from terminal_sim.arguments import flag_problem, out_dir_problem
from terminal_sim.bench import FLAG_OF_SETTING, closed_loop, idle_share, machine_cpu_ticks, process_cpu_s
from terminal_sim.cli import WINDOW_START_LINE
from terminal_sim.config import CARDS_MAX, SettingError, check_count
from terminal_sim.processes import free_port

TOP_MAX = 1_000  # functions listed; a profile's tail past a few dozen is noise

# Where a function's own time is counted: the first of these its file path contains.
PARTS = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("grpc", "/grpc/"),
    ("pykka", "/pykka/"),
    ("prometheus", "/prometheus_client/"),
    ("threading and queues", "/threading.py"),
    ("threading and queues", "/queue.py"),
    ("threading and queues", "/concurrent/futures/"),
    ("switch", "/switch/"),
    ("actors", "/actors/"),
    ("protocols", "/protocols/"),
    ("ops", "/ops/"),
)


def part_of(path: str) -> str:
    return next((name for name, marker in PARTS if marker in path), "other")


def run_simulator(args: argparse.Namespace, address: str, data_dir: Path, started: threading.Event) -> int:
    command = [
        sys.executable,
        "-m",
        "terminal_sim.cli",
        "--target",
        address,
        "--data-dir",
        str(data_dir),
        "--terminals",
        str(args.terminals),
        "--cards",
        str(args.cards),
        "--duration-s",
        str(args.duration_s),
        "--think-ms",
        "0",
        "--day-length-s",
        str(args.duration_s * 10),  # no day close inside the window
        "--out-dir",
        str(args.out_dir / "sim"),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        if run_began(line):
            started.set()
        if not line.startswith("t="):
            print(f"  sim: {line.rstrip()}", flush=True)
    return child.wait()


def run_began(line: str) -> bool:
    """Whether the simulator's output line marks the start of its measured run. Its progress lines
    come every PROGRESS_INTERVAL_S from the start, so a run shorter than that printed none and was
    taken for a run that never began; the window-start line comes in every run."""
    return line.rstrip("\n") == WINDOW_START_LINE or line.startswith("t=")


def switch_settings(data_dir: Path, grpc_port: int) -> Settings:
    """The profiled switch's settings: the profile's own choices, then TXSWITCH_* variables for the
    rest. A variable for one of its own is not read: the simulator finds the switch's admin token
    and database in data_dir, a fresh directory, and the switch must not take the usual ports."""
    own: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": "",  # the SQLite file in data_dir
        "grpc_port": grpc_port,
        "metrics_port": -1,
        "console_port": -1,
        "demo_data": False,
    }
    return from_environment(Settings().with_overrides(**own), given=own.keys())


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is. The simulator
    would refuse most of these too, but only after the switch was started and made its database."""
    try:
        closed_loop(args.terminals, args.duration_s)
        check_count("--cards", args.cards, 1, CARDS_MAX)
        check_count("--top", args.top, 1, TOP_MAX)
    except SettingError as error:
        return flag_problem(error, FLAG_OF_SETTING)
    return out_dir_problem("--out-dir", args.out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--terminals", type=int, default=200)
    parser.add_argument("--cards", type=int, default=2_000)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25, help="functions listed by their own CPU time")
    parser.add_argument("--out-dir", type=Path, default=Path("profile-out"))
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="txswitch-profile-") as tmp:
        data_dir = Path(tmp)
        settings = switch_settings(data_dir, free_port())
        server = SwitchServer(settings)
        statements = StatementCounts(server.engine)  # before the switch's threads use its engine
        server.start()
        tune_garbage_collection(settings)
        started = threading.Event()
        outcome: list[int] = []
        simulator = threading.Thread(
            target=lambda: outcome.append(run_simulator(args, server.address, data_dir, started))
        )
        simulator.start()
        while not started.wait(0.2):
            if not simulator.is_alive():
                server.stop()
                print("the simulator ended before its run began", file=sys.stderr)
                return 1
        yappi.set_clock_type("cpu")
        cpu_before_s = process_cpu_s(os.getpid())
        machine_before = machine_cpu_ticks()
        writer_before = server.core.writer.statistics()
        names = ThreadNames()
        names.start()
        statements.start()
        yappi.start(builtins=False, profile_threads=True)
        simulator.join()
        yappi.stop()
        names.stop()
        statements.stop()
        writer_after = server.core.writer.statistics()
        machine_after = machine_cpu_ticks()
        cpu_after_s = process_cpu_s(os.getpid())
        server.stop()
    stats = yappi.get_func_stats()
    stats.save(str(args.out_dir / "switch.pstat"), type="pstat")
    sim_report = json.loads((args.out_dir / "sim" / "sim-report.json").read_text())
    requests = int(sim_report["requests"])
    report(stats, args.top, cpu_before_s, cpu_after_s, requests)
    report_threads(yappi.get_thread_stats(), names.by_ident, requests)
    statements.report(requests)
    report_waiting(writer_before, writer_after, machine_before, machine_after)
    return outcome[0] if outcome else 1


class ThreadNames:
    """Thread names by ident, sampled while the run goes: card actors come and go."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.by_ident: dict[int, str] = {}
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="profile-thread-names", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._record()

    def _sample(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._record()

    def _record(self) -> None:
        for thread in threading.enumerate():
            if thread.ident is not None:
                self.by_ident[thread.ident] = thread.name


class StatementCounts:
    """SQL statements the switch ran in the measuring window, by kind of thread and statement: what
    each request reads.

    Its listener is added once, before the switch starts, and never removed: SQLAlchemy keeps an
    engine's listeners in a deque that every statement iterates, and one added or removed while
    other threads run statements fails theirs ("deque mutated during iteration"). The window is
    a flag instead (start, stop)."""

    def __init__(self, engine: Engine) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._counting = threading.Event()
        event.listen(engine, "before_cursor_execute", self._count)

    def start(self) -> None:
        self._counting.set()

    def stop(self) -> None:
        self._counting.clear()

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if self._counting.is_set():
            self.counts[(thread_kind(threading.current_thread().name), " ".join(statement.split())[:60])] += 1

    def report(self, requests: int) -> None:
        if not requests:
            return
        total = sum(self.counts.values())
        print(f"\nSQL statements per request: {total / requests:.3f} (executemany counts once)")
        for (kind, statement), count in self.counts.most_common(12):
            print(f"  {count / requests:6.3f}  {kind:16s} {statement}")


def thread_kind(name: str) -> str:
    """'CardActor-17 (...)' and 'grpc_3' to 'CardActor' and 'grpc'; grpcio's poller runs _serve."""
    if name.endswith("(_serve)"):
        return "grpcio poller"
    return re.sub(r"[-_ ]?\d+.*$", "", name)


def report_threads(threads: yappi.YThreadStats, names: dict[int, str], requests: int) -> None:
    """CPU per request answered, by kind of thread: which hand-off of a transaction costs what."""
    by_kind: collections.Counter[str] = collections.Counter()
    for thread in threads:
        by_kind[thread_kind(names.get(thread.tid, "unknown"))] += thread.ttot
    if not requests:
        return
    print("\nCPU per request by kind of thread (under the profiler):")
    for kind, seconds in by_kind.most_common():
        if seconds * 1000 / requests >= 0.001:
            print(f"  {kind:28s} {seconds * 1000 / requests:6.3f} ms")


def report_waiting(
    before: JournalStatistics,
    after: JournalStatistics,
    machine_before: tuple[int, int] | None,
    machine_after: tuple[int, int] | None,
) -> None:
    """Whether the switch waits rather than works: the journal writer's wall against its CPU."""
    batches = after.batches - before.batches
    if batches:
        wall_ms = (after.busy_s - before.busy_s) * 1000 / batches
        cpu_ms = (after.busy_cpu_s - before.busy_cpu_s) * 1000 / batches
        writes = (after.writes - before.writes) / batches
        print(
            f"journal writer: {batches} batches of {writes:.1f} writes; per batch {wall_ms:.2f} ms "
            f"wall, {cpu_ms:.2f} ms of its own CPU"
        )
    share = idle_share(machine_before, machine_after)
    if share is not None:
        print(f"machine idle over the run (all cores, simulator included): {100 * share:.0f} %")


def report(
    stats: yappi.YFuncStats,
    top: int,
    cpu_before_s: float | None,
    cpu_after_s: float | None,
    requests: int,
) -> None:
    own_s: collections.Counter[str] = collections.Counter()
    rows = []
    for function in stats:
        own_s[part_of(function.module)] += function.tsub
        rows.append((function.tsub, function.ncall, f"{function.module}:{function.lineno} {function.name}"))
    total_s = sum(own_s.values()) or 1.0
    print(f"\nPython CPU under the profiler: {total_s:.2f} s; own time by part:")
    for name, seconds in own_s.most_common():
        print(f"  {name:22s} {seconds:7.2f} s  {100 * seconds / total_s:5.1f} %")
    print(f"\nTop {top} functions by own CPU time (s, calls):")
    for seconds, calls, where in sorted(rows, reverse=True)[:top]:
        print(f"  {seconds:7.3f} {calls:8d}  {where[-100:]}")
    if cpu_before_s is not None and cpu_after_s is not None and requests:
        used_s = cpu_after_s - cpu_before_s
        print(
            f"\nswitch process CPU (user + system, profiler included) over the run: {used_s:.2f} s "
            f"for {requests} requests, {used_s * 1000 / requests:.2f} ms each"
        )


if __name__ == "__main__":
    sys.exit(main())
