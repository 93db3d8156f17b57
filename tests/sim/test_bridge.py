"""The trio-grpc bridge against a real grpc server on loopback."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
import trio

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from terminal_sim.bridge import TrioGrpcBridge, open_channel, rpc_code
from tests.sim.conftest import LoopbackServer

CALL_TIMEOUT_S = 5.0


def _client_threads() -> set[int | None]:
    """Threads outside the in-process server's worker pool."""
    return {
        thread.ident for thread in threading.enumerate() if not thread.name.startswith("ThreadPoolExecutor")
    }


def _balance(payload: str = "card") -> pb.BalanceRequest:
    return pb.BalanceRequest(card=pb.CardRef(qr_payload=payload))


@pytest.mark.trio
@pytest.mark.parametrize("batch_wakeups", [True, False])
async def test_call_returns_the_reply(slow_server: LoopbackServer, batch_wakeups: bool) -> None:
    bridge = TrioGrpcBridge(batch_wakeups=batch_wakeups)
    with open_channel(slow_server.address) as channel:
        stub = pb_grpc.TerminalStub(channel)
        reply = await bridge.call(stub.Balance, _balance(), timeout_s=CALL_TIMEOUT_S)
    assert reply.response_code == "00"
    stats = bridge.statistics()
    assert (stats.calls_started, stats.calls_completed, stats.in_flight) == (1, 1, 0)


@pytest.mark.trio
async def test_many_calls_in_flight_all_complete(slow_server: LoopbackServer) -> None:
    bridge = TrioGrpcBridge()
    replies: list[str] = []
    with open_channel(slow_server.address) as channel:
        stub = pb_grpc.TerminalStub(channel)

        async def one() -> None:
            reply = await bridge.call(stub.Balance, _balance(), timeout_s=CALL_TIMEOUT_S)
            replies.append(reply.response_code)

        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(one)
    assert replies == ["00"] * 64
    stats = bridge.statistics()
    assert stats.calls_completed == 64
    assert stats.in_flight == 0
    # Batching: never more wakeups than completions.
    assert stats.wakeup_batches_run <= 64


@pytest.mark.trio
async def test_trio_cancellation_cancels_the_grpc_call(slow_server: LoopbackServer) -> None:
    bridge = TrioGrpcBridge()
    with open_channel(slow_server.address) as channel:
        stub = pb_grpc.TerminalStub(channel)
        started_s = time.monotonic()
        with trio.move_on_after(0.1) as scope:
            await bridge.call(stub.Balance, _balance("sleep:3"), timeout_s=CALL_TIMEOUT_S)
        waited_s = time.monotonic() - started_s
        assert scope.cancelled_caught
        assert waited_s < 1.0
        # The server sees the cancellation well before its 3 s sleep ends.
        with trio.fail_after(2):
            while slow_server.state.cancelled_calls == 0:
                await trio.sleep(0.01)
    stats = bridge.statistics()
    assert (stats.calls_cancelled, stats.calls_completed, stats.in_flight) == (1, 0, 0)


@pytest.mark.trio
async def test_grpc_deadline_raises_rpc_error(slow_server: LoopbackServer) -> None:
    bridge = TrioGrpcBridge()
    with open_channel(slow_server.address) as channel:
        stub = pb_grpc.TerminalStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            await bridge.call(stub.Balance, _balance("sleep:2"), timeout_s=0.05)
    assert rpc_code(raised.value) is grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.trio
async def test_pinned_channel_starts_no_thread_per_call(slow_server: LoopbackServer) -> None:
    bridge = TrioGrpcBridge()
    with open_channel(slow_server.address) as channel:
        stub = pb_grpc.TerminalStub(channel)
        await bridge.call(stub.Balance, _balance(), timeout_s=CALL_TIMEOUT_S)
        threads_before = _client_threads()
        for _ in range(50):
            await bridge.call(stub.Balance, _balance(), timeout_s=CALL_TIMEOUT_S)
        threads_after = _client_threads()
    assert threads_after == threads_before


def test_closing_a_pinned_channel_lets_its_spin_thread_go(slow_server: LoopbackServer) -> None:
    before = _client_threads()
    with open_channel(slow_server.address) as channel:
        pb_grpc.TerminalStub(channel).Balance(_balance(), timeout=CALL_TIMEOUT_S)
        assert len(_client_threads() - before) == 1  # the pinned spin thread
    deadline_s = time.monotonic() + 2.0
    while _client_threads() - before and time.monotonic() < deadline_s:
        time.sleep(0.01)
    assert not _client_threads() - before
