"""Runs a fleet of terminals, one trio task each, under a load model, with a progress line."""

from __future__ import annotations

import contextlib
import random
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass

import trio

from protocols.wire import terminal_pb2_grpc as pb_grpc
from terminal_sim.bridge import BridgeStatistics, TrioGrpcBridge, open_channel
from terminal_sim.cards import CardPopulation
from terminal_sim.config import LoadModel, ShopLogin, SimConfig
from terminal_sim.load_models import ClosedLoop, OpenLoop, Pacer
from terminal_sim.metrics import Recorder, RecorderStatistics
from terminal_sim.records import Exchange
from terminal_sim.terminal import RECOVERY_ATTEMPTS_MAX, RunContext, RunFullError, SimTerminal

PROGRESS_INTERVAL_S = 1.0
# After the end, terminals finish what they started: a request, its recovery, a day close.
DRAIN_GRACE_S_MIN = 5.0

ProgressSink = Callable[[str], None]


@dataclass(frozen=True)
class FleetResult:
    statistics: RecorderStatistics
    activation: RecorderStatistics
    exchanges: tuple[Exchange, ...]
    bridge: BridgeStatistics
    late_starts: int  # open loop: transactions that started after their intended time
    flows_started: int  # shop flows (a redemption is Balance then Redeem: two requests)
    stopped_early: str = ""
    unanswered: int = 0  # requests (activations too) that ended without a reply

    @property
    def flows_per_s(self) -> float:
        window_s = self.statistics.window_s
        return self.flows_started / window_s if window_s > 0 else 0.0


def stderr_progress(line: str) -> None:
    """Overwrite one line on a terminal; print a line per update when piped."""
    if sys.stderr.isatty():
        sys.stderr.write("\r" + line.ljust(100))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _pacer(config: SimConfig, index: int, start_s: float) -> Pacer:
    rng = random.Random(config.seed * 7_919 + index)
    if config.load_model is LoadModel.open:
        return OpenLoop(config.target_rate_per_s / config.terminals, rng, start_s)
    return ClosedLoop(config.think_time_ms_mean / 1000, rng)


async def _progress(recorder: Recorder, sink: ProgressSink, interval_s: float) -> None:
    previous_completed = 0
    while True:
        await trio.sleep(interval_s)
        now = recorder.progress(trio.current_time())
        rate = (now.completed - previous_completed) / interval_s
        previous_completed = now.completed
        last = recorder.last_second()  # its p99 was read once, when the second closed
        p99_ms = last.p99_ms if last is not None else 0.0
        sink(
            f"t={now.elapsed_s:5.1f}s rate={rate:7.0f}/s approved={now.approved:8d} "
            f"p99={p99_ms:7.2f}ms errors={now.errors}"
        )


async def _activate_all(terminals: list[SimTerminal], concurrency_max: int) -> None:
    limiter = trio.CapacityLimiter(concurrency_max)

    async def activate(terminal: SimTerminal) -> None:
        async with limiter:
            await terminal.activate()

    async with trio.open_nursery() as nursery:
        for terminal in terminals:
            nursery.start_soon(activate, terminal)


async def _drive(terminal: SimTerminal, pacer: Pacer, context: RunContext) -> None:
    try:
        await terminal.run(pacer)
    except RunFullError as error:
        # Everyone stops at their next transaction; what was sent is still audited.
        context.end_s = min(context.end_s, trio.current_time())
        context.stopped_early = str(error)


async def run_fleet(
    address: str,
    config: SimConfig,
    login: ShopLogin,
    cards: CardPopulation,
    *,
    progress: ProgressSink | None = stderr_progress,
    on_window_start: Callable[[], None] | None = None,
    on_window_end: Callable[[], None] | None = None,
) -> FleetResult:
    """Activate every terminal, then run them all for config.duration_s.

    `on_window_start` is called once, when activation is over and the measured run begins: what
    it reads then (a process's CPU, say) leaves the activations' password checks out.
    `on_window_end` is called once, when the last terminal has stopped.
    """
    bridge = TrioGrpcBridge()
    with contextlib.ExitStack() as stack:
        channels = [stack.enter_context(open_channel(address)) for _ in range(config.channels)]
        stubs = [pb_grpc.TerminalStub(channel) for channel in channels]
        activation = Recorder(trio.current_time())
        context = RunContext(config, login, cards, bridge, activation, secrets.token_hex(4))
        terminals = [
            SimTerminal(index, stubs[index % len(stubs)], context) for index in range(config.terminals)
        ]
        await _activate_all(terminals, config.activation_concurrency_max)
        activation.finish(trio.current_time())
        if on_window_start is not None:
            on_window_start()
        start_s = trio.current_time()
        context.recorder = Recorder(start_s, window_s=config.duration_s)
        context.end_s = start_s + config.duration_s
        pacers = [_pacer(config, index, start_s) for index in range(config.terminals)]
        grace_s = max(
            DRAIN_GRACE_S_MIN,
            config.terminal_timeout_s * (RECOVERY_ATTEMPTS_MAX + 2) + config.switched_off_s,
        )
        with trio.move_on_after(config.duration_s + grace_s) as deadline:
            async with trio.open_nursery() as nursery:
                if progress is not None:
                    nursery.start_soon(_progress, context.recorder, progress, PROGRESS_INTERVAL_S)
                async with trio.open_nursery() as fleet:
                    for terminal, pacer in zip(terminals, pacers, strict=True):
                        fleet.start_soon(_drive, terminal, pacer, context)
                nursery.cancel_scope.cancel()
        if on_window_end is not None:
            on_window_end()
        context.recorder.finish(trio.current_time())
        if progress is not None and sys.stderr.isatty():
            sys.stderr.write("\n")
    stopped = context.stopped_early or ("drain deadline hit" if deadline.cancelled_caught else "")
    return FleetResult(
        statistics=context.recorder.statistics(),
        activation=activation.statistics(),
        exchanges=tuple(context.exchanges),
        bridge=bridge.statistics(),
        late_starts=sum(p.late_starts for p in pacers if isinstance(p, OpenLoop)),
        flows_started=context.flows_started,
        stopped_early=stopped,
        unanswered=context.unanswered,
    )
