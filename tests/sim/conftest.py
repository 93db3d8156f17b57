"""Fixtures for the simulator tests: a real grpc Terminal server on loopback, and a real switch."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.server import SwitchServer
from tests.loopback_switch import switch_on_loopback

SLOW_PREFIX = "sleep:"
SERVER_WORKERS = 16


@dataclass
class SlowServicerState:
    cancelled_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SlowBalanceServicer(pb_grpc.TerminalServicer):
    """Balance answers at once, or after `sleep:<seconds>` given as the QR payload."""

    def __init__(self, state: SlowServicerState) -> None:
        self.state = state

    def Balance(self, request: pb.BalanceRequest, context: grpc.ServicerContext) -> pb.BalanceResponse:
        payload = request.card.qr_payload
        if payload.startswith(SLOW_PREFIX):
            deadline_s = time.monotonic() + float(payload.removeprefix(SLOW_PREFIX))
            while time.monotonic() < deadline_s:
                if not context.is_active():
                    with self.state.lock:
                        self.state.cancelled_calls += 1
                    return pb.BalanceResponse()
                time.sleep(0.005)
        return pb.BalanceResponse(response_code="00", card_status="active")


@dataclass
class LoopbackServer:
    address: str
    state: SlowServicerState


@pytest.fixture
def slow_server() -> Iterator[LoopbackServer]:
    state = SlowServicerState()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS))
    # Only Balance is needed here; the abstract rest answers UNIMPLEMENTED if ever called.
    servicer = SlowBalanceServicer(state)  # type: ignore[abstract]
    pb_grpc.add_TerminalServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield LoopbackServer(f"127.0.0.1:{port}", state)
    finally:
        server.stop(grace=None)


@pytest.fixture
def running_switch(tmp_path: Path) -> Iterator[SwitchServer]:
    with switch_on_loopback(tmp_path) as server:
        yield server


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """compare.main and sweep.main quiet this process's garbage collector, as a simulator run does
    (frozen, with high thresholds); undone after, so later tests see Python's own."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
