"""Beyond the configured number of calls in progress, the switch's interceptor answers RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from ops.grpc_interceptors import EdgeInterceptor
from ops.metrics import SwitchMetrics
from tests.asyncio_wait import until

SERVICE = "txswitch.test.Admission"
CALL_TIMEOUT_S = 10.0
LIMIT = 2


class Held:
    """A handler that answers only once released, so its calls stay in progress."""

    def __init__(self) -> None:
        self.inside = 0
        self.release = asyncio.Event()

    async def hold(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        self.inside += 1
        await self.release.wait()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def scenario(metrics: SwitchMetrics) -> list[tuple[str, str]]:
    held = Held()
    handler = grpc.unary_unary_rpc_method_handler(
        held.hold,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )
    server = grpc.aio.server(interceptors=[EdgeInterceptor(metrics, threading.Event(), LIMIT)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Hold": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rounds: list[tuple[str, str]] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/Hold",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            for _ in range(2):  # the second round shows the refused call left no count behind
                held.inside, held.release = 0, asyncio.Event()
                within = [
                    asyncio.ensure_future(call(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S))
                    for _ in range(LIMIT)
                ]
                await until(lambda: held.inside == LIMIT)
                try:
                    await call(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
                    rounds.append(("OK", ""))
                except grpc.aio.AioRpcError as refused:
                    rounds.append((refused.code().name, refused.details() or ""))
                held.release.set()
                answers = await asyncio.gather(*within)
                assert [answer.status for answer in answers] == [
                    health_pb2.HealthCheckResponse.SERVING
                ] * LIMIT
    finally:
        await server.stop(None)
    return rounds


def test_calls_beyond_the_limit_are_refused_and_counted_and_the_count_comes_back_down() -> None:
    metrics = SwitchMetrics()
    rounds = asyncio.run(scenario(metrics))
    refusal = (
        "RESOURCE_EXHAUSTED",
        f"the switch is answering {LIMIT} requests already, its limit; retry shortly",
    )
    assert rounds == [refusal, refusal]
    assert (
        metrics.registry.get_sample_value(
            "txswitch_requests_total", {"rpc": "Hold", "code": "resource_exhausted"}
        )
        == 2
    )
    assert (
        metrics.registry.get_sample_value("txswitch_requests_total", {"rpc": "Hold", "code": "OK"})
        == 2 * LIMIT
    )
