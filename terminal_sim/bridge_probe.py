"""Tail latency of the trio-grpc bridge at fixed calls in flight against the echo server."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import trio
from hdrh.histogram import HdrHistogram

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from terminal_sim.arguments import target_problem
from terminal_sim.bridge import TrioGrpcBridge, open_channel
from terminal_sim.config import SettingError, check_above_zero, check_count, check_not_negative
from terminal_sim.processes import start_echo_server

LATENCY_US_MAX = 60_000_000
CALL_TIMEOUT_S = 10.0
IN_FLIGHT_MAX = 1_024  # one trio task and one grpc call each; the bridge's tail is long gone by then


@dataclass(frozen=True)
class ProbeResult:
    in_flight: int
    calls: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    wakeups_per_call: float


async def _worker(
    bridge: TrioGrpcBridge,
    stub: pb_grpc.TerminalStub,
    histogram: HdrHistogram,
    deadline_s: float,
) -> None:
    request = pb.BalanceRequest(card=pb.CardRef(qr_payload="probe"))
    metadata = (("authorization", "Bearer probe"),)
    while trio.current_time() < deadline_s:
        started_ns = time.perf_counter_ns()
        await bridge.call(stub.Balance, request, metadata=metadata, timeout_s=CALL_TIMEOUT_S)
        histogram.record_value(max(1, (time.perf_counter_ns() - started_ns) // 1000))


async def probe_in_flight(
    address: str,
    in_flight: int,
    duration_s: float,
    *,
    batch_wakeups: bool,
    pin_spin_thread: bool,
    warmup_s: float,
) -> ProbeResult:
    bridge = TrioGrpcBridge(batch_wakeups=batch_wakeups)
    with open_channel(address, pin_spin_thread=pin_spin_thread) as channel:
        stub = pb_grpc.TerminalStub(channel)
        warm = HdrHistogram(1, LATENCY_US_MAX, 3)
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(_worker, bridge, stub, warm, trio.current_time() + warmup_s)
        histogram = HdrHistogram(1, LATENCY_US_MAX, 3)
        before = bridge.statistics()
        started_s = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(_worker, bridge, stub, histogram, started_s + duration_s)
        elapsed_s = trio.current_time() - started_s
        after = bridge.statistics()
    calls = histogram.get_total_count()
    wakeups = after.wakeup_batches_run - before.wakeup_batches_run
    return ProbeResult(
        in_flight=in_flight,
        calls=calls,
        rps=calls / elapsed_s,
        p50_ms=histogram.get_value_at_percentile(50) / 1000,
        p90_ms=histogram.get_value_at_percentile(90) / 1000,
        p99_ms=histogram.get_value_at_percentile(99) / 1000,
        p999_ms=histogram.get_value_at_percentile(99.9) / 1000,
        max_ms=histogram.get_max_value() / 1000,
        wakeups_per_call=wakeups / max(1, calls),
    )


def format_row(result: ProbeResult) -> str:
    return (
        f"{result.in_flight:>9} {result.rps:>8.0f} {result.p50_ms:>8.3f} {result.p90_ms:>8.3f} "
        f"{result.p99_ms:>8.3f} {result.p999_ms:>8.3f} {result.max_ms:>8.3f} "
        f"{result.wakeups_per_call:>6.2f}"
    )


async def _main(args: argparse.Namespace) -> None:
    if args.switch_interval_s is not None:
        sys.setswitchinterval(args.switch_interval_s)
    print(" in_flight      rps   p50_ms   p90_ms   p99_ms  p999_ms   max_ms wk/call")
    results = []
    for in_flight in args.in_flight:
        result = await probe_in_flight(
            args.address,
            in_flight,
            args.duration_s,
            batch_wakeups=not args.no_batch,
            pin_spin_thread=not args.no_pin,
            warmup_s=args.warmup_s,
        )
        results.append(result)
        print(format_row(result), flush=True)
    print(json.dumps([asdict(r) for r in results]))


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    for in_flight in args.in_flight:
        try:
            check_count("--in-flight", in_flight, 1, IN_FLIGHT_MAX)
        except SettingError as error:
            return f"--in-flight must each {error.rule.removeprefix('must ')}"
    try:
        check_above_zero("--duration-s", args.duration_s)
        check_not_negative("--warmup-s", args.warmup_s)
        if args.switch_interval_s is not None:  # NaN is taken as 10**13 s: threads never switch
            check_above_zero("--switch-interval-s", args.switch_interval_s)
    except SettingError as error:
        return str(error)
    return None if args.address is None else target_problem("--address", args.address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m terminal_sim.bridge_probe", description=__doc__)
    parser.add_argument("--address", help="host:port of a running echo server (default: spawn one)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--no-batch", action="store_true", help="one trio wakeup per completion")
    parser.add_argument("--no-pin", action="store_true", help="let grpc stop its spin thread")
    parser.add_argument("--switch-interval-s", type=float, default=None)
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    server = None
    if args.address is None:
        server = start_echo_server()
        args.address = server.address
    try:
        trio.run(_main, args)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
