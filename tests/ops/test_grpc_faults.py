"""A fault of the switch's own ends with INTERNAL and a log reference, over a real gRPC server."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ops.grpc_interceptors import EdgeInterceptor
from ops.metrics import SwitchMetrics

SECRET = "INSERT INTO employees ... pin_hash=pbkdf2$s3cret"  # what a database error would carry
SERVICE = "txswitch.test.Faults"


def failing(request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
    raise RuntimeError(SECRET)


async def failing_async(
    request: health_pb2.HealthCheckRequest, context: Any
) -> health_pb2.HealthCheckResponse:
    raise RuntimeError(SECRET)


def refusing(request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort returns no further")


def handler(behavior: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )


async def call_each(metrics: SwitchMetrics) -> dict[str, tuple[grpc.StatusCode, str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        server = grpc.aio.server(
            migration_thread_pool=pool, interceptors=[EdgeInterceptor(metrics, threading.Event())]
        )
        methods = {"Sync": handler(failing), "Async": handler(failing_async), "Refuse": handler(refusing)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        answers: dict[str, tuple[grpc.StatusCode, str]] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for name in methods:
                    call = channel.unary_unary(
                        f"/{SERVICE}/{name}",
                        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                        response_deserializer=health_pb2.HealthCheckResponse.FromString,
                    )
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await call(health_pb2.HealthCheckRequest(), timeout=10)
                    answers[name] = (raised.value.code(), raised.value.details() or "")
        finally:
            # A grace, not None: the last call's answer can reach the client before its task on
            # the server has ended, and a stop without grace cancels that task, which grpc then
            # logs as an unhandled error (once in a full `make test`, session 18).
            await server.stop(5)
    return answers


def test_a_fault_of_ours_answers_internal_with_a_reference_to_the_log_and_nothing_of_the_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = SwitchMetrics()
    with caplog.at_level(logging.ERROR, logger="ops.grpc_interceptors"):
        answers = asyncio.run(call_each(metrics))
    assert answers["Refuse"] == (grpc.StatusCode.NOT_FOUND, "no such thing")  # a status is kept as is
    references = []
    for rpc in ("Sync", "Async"):
        code, details = answers[rpc]
        assert code is grpc.StatusCode.INTERNAL
        found = re.fullmatch(
            rf"internal error in {rpc}; the switch logged it as ref ([0-9a-f]{{8}})", details
        )
        assert found is not None, details
        references.append(found.group(1))
    logged = [record for record in caplog.records if record.exc_info is not None]
    assert [record.getMessage() for record in logged] == [
        f"Sync failed (ref {references[0]})",
        f"Async failed (ref {references[1]})",
    ]
    assert all(SECRET in str(record.exc_info[1]) for record in logged if record.exc_info)
    for rpc, label in (("Sync", "internal"), ("Async", "internal"), ("Refuse", "not_found")):
        assert metrics.registry.get_sample_value("txswitch_requests_total", {"rpc": rpc, "code": label}) == 1
