"""What grpc.aio's accept costs the server per call: every method registered, or the busy ones only.

grpc.aio waits on one pending accept per registered method (see `protocols/serving.py`). This
measures what that costs on its own, without the switch's work or the machine's noise around a
closed loop: a server process with the switch's services (the echo servicer answering Terminal,
the others never called) and a client sending Balances from a few threads. Each round starts one
server that registers every method, as the generated code does, and one that registers only
`BUSY_METHODS`, in turn, and reads the server process's CPU over the same number of calls.

    python -m terminal_sim.accept_cost --calls 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import threading
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protocols.serving import BusyMethodsRegistered
from protocols.wire import backoffice_pb2_grpc, cardholder_pb2_grpc, portal_pb2_grpc, terminal_pb2_grpc
from protocols.wire import terminal_pb2 as pb
from terminal_sim.bench import process_cpu_s
from terminal_sim.config import SettingError, check_count
from terminal_sim.echo_server import EchoTerminalServicer
from terminal_sim.switch_probe import UNKNOWN_CARD

MODES = ("every", "busy")
CALL_TIMEOUT_S = 10.0
CALLS_MAX = 1_000_000  # per server and round: a few minutes of one core at the echo's speed
THREADS_MAX = 256  # one blocking call in flight each; past a few dozen they only queue in grpc
ROUNDS_MAX = 100  # each round starts two server processes


def _unimplemented(servicer_class: Any) -> Any:
    """The generated base servicer: every method answers UNIMPLEMENTED (its stub calls them abstract)."""
    return servicer_class()


async def _serve(mode: str) -> None:
    plain = aio.server()
    # One accept per method, grpc.aio's own, so the two servers differ in what they register only.
    server: aio.Server = BusyMethodsRegistered(plain, accepts_per_method=1) if mode == "busy" else plain
    terminal_pb2_grpc.add_TerminalServicer_to_server(EchoTerminalServicer(), server)
    backoffice_pb2_grpc.add_BackofficeServicer_to_server(
        _unimplemented(backoffice_pb2_grpc.BackofficeServicer), server
    )
    portal_pb2_grpc.add_PortalServicer_to_server(_unimplemented(portal_pb2_grpc.PortalServicer), server)
    cardholder_pb2_grpc.add_CardholderServicer_to_server(
        _unimplemented(cardholder_pb2_grpc.CardholderServicer), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection((reflection.SERVICE_NAME,), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)  # the parent reads the port from this line
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def _send(port: int, calls: int, threads: int) -> None:
    """`calls` Balances over one channel, from `threads` threads each waiting for its answer."""
    request = pb.BalanceRequest(card=pb.CardRef(card_number=UNKNOWN_CARD))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        balance = terminal_pb2_grpc.TerminalStub(channel).Balance

        def run(count: int) -> None:
            for _ in range(count):
                balance(request, timeout=CALL_TIMEOUT_S)

        workers = [threading.Thread(target=run, args=(calls // threads,)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


def _measure(mode: str, calls: int, threads: int) -> float:
    """The server's CPU per call, in µs, over `calls` Balances after a warm-up."""
    command = [sys.executable, "-m", "terminal_sim.accept_cost", "--serve", mode]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            _send(port, calls // 10, threads)  # warm-up: connections, caches
            before = process_cpu_s(server.pid)
            _send(port, calls, threads)
            after = process_cpu_s(server.pid)
        finally:
            server.terminate()
    if before is None or after is None:
        raise SystemExit("this system's /proc does not give a process's CPU time")
    return (after - before) / (calls // threads * threads) * 1e6


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    try:
        check_count("--calls", args.calls, 1, CALLS_MAX)
        check_count("--threads", args.threads, 1, THREADS_MAX)
        check_count("--rounds", args.rounds, 1, ROUNDS_MAX)
    except SettingError as error:
        return str(error)
    if args.calls < args.threads:  # each thread makes calls // threads of them: none would be measured
        return f"--calls must be at least --threads ({args.threads}), not {args.calls}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.accept_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=20_000, help="Balances per server, after a warm-up")
    parser.add_argument("--threads", type=int, default=16, help="client threads, one call in flight each")
    parser.add_argument("--rounds", type=int, default=5, help="each round measures both servers in turn")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            results[mode].append(round(_measure(mode, args.calls, args.threads), 1))
    report: dict[str, Any] = {f"{mode}_us_per_call": results[mode] for mode in MODES}
    report |= {f"{mode}_median_us": statistics.median(results[mode]) for mode in MODES}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
