"""Only the busy terminal methods are registered with grpc's core, each with several pending accepts;
every method is still served."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protocols.serving import BUSY_METHODS, BusyMethodsRegistered
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.server import SERVICE_NAMES
from terminal_sim import accept_cost
from terminal_sim.echo_server import EchoTerminalServicer
from tests.asyncio_wait import until
from tests.loopback_switch import switch_on_loopback

CALL_TIMEOUT_S = 5.0


def test_only_the_busy_methods_are_registered() -> None:
    async def scenario() -> list[str]:
        server = BusyMethodsRegistered(aio.server())
        pb_grpc.add_TerminalServicer_to_server(EchoTerminalServicer(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        await server.stop(None)
        return server.registered

    registered = asyncio.run(scenario())
    assert sorted(registered) == sorted(BUSY_METHODS)
    assert "/txswitch.v1.Terminal/Activate" not in registered


def test_methods_left_unregistered_are_still_served() -> None:
    async def scenario() -> tuple[str, str, int, grpc.StatusCode]:
        server = BusyMethodsRegistered(aio.server())
        pb_grpc.add_TerminalServicer_to_server(EchoTerminalServicer(), server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                terminal = pb_grpc.TerminalStub(channel)
                balance = await terminal.Balance(pb.BalanceRequest(), timeout=CALL_TIMEOUT_S)  # registered
                activation = await terminal.Activate(  # by name, through the generic handler
                    pb.ActivateRequest(device_name="till-1"), timeout=CALL_TIMEOUT_S
                )
                checked = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
                )
                unknown = channel.unary_unary(
                    "/txswitch.v1.Terminal/NoSuchMethod",
                    request_serializer=bytes,
                    response_deserializer=bytes,
                )
                with pytest.raises(aio.AioRpcError) as refused:
                    await unknown(b"", timeout=CALL_TIMEOUT_S)
        finally:
            await server.stop(None)
        return balance.response_code, activation.terminal_id, checked.status, refused.value.code()

    balance_code, terminal_id, health_status, unknown_code = asyncio.run(scenario())
    assert balance_code == "00"
    assert terminal_id == "echo-till-1"
    assert health_status == health_pb2.HealthCheckResponse.SERVING
    assert unknown_code == grpc.StatusCode.UNIMPLEMENTED


def test_the_switch_serves_reflection_and_health_by_name(tmp_path: Path) -> None:
    with switch_on_loopback(tmp_path) as switch, grpc.insecure_channel(switch.address) as channel:
        asked = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([asked]), timeout=CALL_TIMEOUT_S
        )
        listed = {service.name for answer in answers for service in answer.list_services_response.service}
        checked = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAMES[0]), timeout=CALL_TIMEOUT_S
        )
    assert set(SERVICE_NAMES) <= listed
    assert checked.status == health_pb2.HealthCheckResponse.SERVING


def test_accept_cost_reports_both_servers_cpu_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert accept_cost.main(["--calls", "400", "--threads", "2", "--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for mode in accept_cost.MODES:
        assert len(report[f"{mode}_us_per_call"]) == 1
        assert report[f"{mode}_median_us"] > 0


class HeldBalance(EchoTerminalServicer):
    """Balance answers only once released, so the calls stay in progress until then."""

    def __init__(self) -> None:
        self.inside = 0
        self.release = asyncio.Event()

    async def Balance(
        self, request: pb.BalanceRequest, context: aio.ServicerContext[object, object]
    ) -> pb.BalanceResponse:
        self.inside += 1
        await self.release.wait()
        return await super().Balance(request, context)


class CountingInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts the calls grpc asks it about, by method."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.seen[details.method] = self.seen.get(details.method, 0) + 1
        return await continuation(details)


def test_accept_tasks_take_calls_and_hand_them_through_the_interceptors_to_the_handler() -> None:
    calls = 40

    async def scenario() -> tuple[int, int, int, list[str], dict[str, int], int]:
        counting = CountingInterceptor()
        servicer = HeldBalance()
        server = BusyMethodsRegistered(
            aio.server(interceptors=[counting]), interceptors=[counting], accepts_per_method=4
        )
        pb_grpc.add_TerminalServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        accepting = server.accepting
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                balance = pb_grpc.TerminalStub(channel).Balance
                waiting = [
                    asyncio.ensure_future(balance(pb.BalanceRequest(), timeout=CALL_TIMEOUT_S))
                    for _ in range(calls)
                ]
                await until(lambda: servicer.inside == calls)  # every call is in, none answered
                servicer.release.set()
                answers = [answer.response_code for answer in await asyncio.gather(*waiting)]
        finally:
            await server.stop(None)
        return accepting, server.accepted, servicer.inside, answers, counting.seen, server.accepting

    accepting, accepted, inside, answers, seen, accepting_after = asyncio.run(scenario())
    assert accepting == 3 * len(BUSY_METHODS)  # three per method besides grpc.aio's own
    assert 1 <= accepted <= calls  # the accept tasks took some of the calls, grpc.aio the rest
    assert inside == calls
    assert answers == ["00"] * calls
    assert seen == {"/txswitch.v1.Terminal/Balance": calls}  # each call once through the interceptor
    assert accepting_after == 0  # stopped, the accept tasks end


def test_one_accept_per_method_is_grpc_aio_alone() -> None:
    async def scenario() -> tuple[int, int, str]:
        server = BusyMethodsRegistered(aio.server(), accepts_per_method=1)
        pb_grpc.add_TerminalServicer_to_server(EchoTerminalServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = await pb_grpc.TerminalStub(channel).Balance(
                    pb.BalanceRequest(), timeout=CALL_TIMEOUT_S
                )
        finally:
            await server.stop(None)
        return server.accepting, server.accepted, answer.response_code

    assert asyncio.run(scenario()) == (0, 0, "00")


def test_fewer_than_one_accept_per_method_is_refused_by_name() -> None:
    async def scenario() -> None:
        BusyMethodsRegistered(aio.server(), accepts_per_method=0)

    with pytest.raises(ValueError, match="accepts per method must be 1 or more, not 0"):
        asyncio.run(scenario())
