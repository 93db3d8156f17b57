"""How long a running switch takes to answer, seen from a connection of its own.

While the simulator loads a switch, its latencies mix the switch's time with the simulator's own
(its trio loop, the bridge, flows started late). This probe separates the two. It signs in a
terminal of its own and asks a Balance every interval with grpcio's plain blocking client: its
own process, one call at a time, no trio. The card number is one no switch issues, so the switch
answers 14 (unknown card) after one indexed lookup, without a card actor. What the probe sees
above the switch's own `txswitch_request_duration_seconds{rpc="Balance"}` is time spent in gRPC
and the event loop's queues, before and after the handler. Like the simulator, it leaves its
merchant and terminal behind in the switch's database.

    python -m terminal_sim.switch_probe --target 127.0.0.1:50051 --data-dir var --seconds 15
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from dataclasses import asdict
from pathlib import Path

import grpc

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.domain.cards import luhn_check_digit
from terminal_sim.arguments import target_problem
from terminal_sim.config import SettingError, check_above_zero, check_not_negative
from terminal_sim.metrics import LatencySummary, new_histogram

CALL_TIMEOUT_S = 10.0
PROBE_LOCATION = "Probe"
# 16 digits that pass the switch's card-number checks, under a prefix no programme here issues.
UNKNOWN_CARD = "999999000000000" + luhn_check_digit("999999000000000")


def sign_in(channel: grpc.Channel, admin_token: str) -> str:
    """A probe merchant and terminal of its own (fresh per run); the terminal's credential."""
    admin = bo_grpc.BackofficeStub(channel)
    metadata = (("authorization", f"Bearer {admin_token}"),)
    email = f"probe-{secrets.token_hex(4)}@txswitch.example"
    password = secrets.token_urlsafe(12)
    merchant = admin.CreateMerchant(
        bo.CreateMerchantRequest(name="Latency probe", email=email, password=password),
        metadata=metadata,
        timeout=CALL_TIMEOUT_S,
    )
    admin.AddLocation(
        bo.AddLocationRequest(merchant_id=merchant.merchant_id, name=PROBE_LOCATION),
        metadata=metadata,
        timeout=CALL_TIMEOUT_S,
    )
    activation = pb_grpc.TerminalStub(channel).Activate(
        pb.ActivateRequest(
            merchant_email=email, password=password, device_name="latency-probe", location=PROBE_LOCATION
        ),
        timeout=CALL_TIMEOUT_S,
    )
    return activation.credential


def probe(
    channel: grpc.Channel, credential: str, seconds: float, interval_s: float
) -> tuple[LatencySummary, str]:
    """The latencies of a Balance every interval_s for seconds, and the last response code."""
    terminal = pb_grpc.TerminalStub(channel)
    metadata = (("authorization", f"Bearer {credential}"),)
    request = pb.BalanceRequest(card=pb.CardRef(card_number=UNKNOWN_CARD))
    histogram = new_histogram()
    response_code = ""
    deadline_s = time.monotonic() + seconds
    while time.monotonic() < deadline_s:
        started_ns = time.perf_counter_ns()
        answer = terminal.Balance(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        histogram.record_value(max(1, (time.perf_counter_ns() - started_ns) // 1000))
        response_code = answer.response_code
        time.sleep(interval_s)
    return LatencySummary.of(histogram), response_code


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    try:
        check_above_zero("--seconds", args.seconds)  # infinity probed for ever, NaN not at all
        check_not_negative("--interval-ms", args.interval_ms)  # time.sleep fails on NaN and infinity
    except SettingError as error:
        return str(error)
    return target_problem("--target", args.target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.switch_probe",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--target", default="127.0.0.1:50051", help="the switch's grpc address")
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="holds the switch's admin.token")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--interval-ms", type=float, default=50.0, help="pause between calls")
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    token_path = args.data_dir / "admin.token"
    try:
        admin_token = token_path.read_text().strip()
    except OSError as error:
        print(f"switch_probe: cannot read the admin token: {error}", file=sys.stderr)
        return 2
    with grpc.insecure_channel(args.target) as channel:
        try:
            credential = sign_in(channel, admin_token)
            latency, response_code = probe(channel, credential, args.seconds, args.interval_ms / 1000)
        except grpc.RpcError as error:
            print(f"switch_probe: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps({**asdict(latency), "response_code": response_code}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
