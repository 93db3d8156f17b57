"""A drain asked while the switch is still starting (the ops console answers from before gRPC
serves: `drain` typed then) is kept: the start's end set health to SERVING over it, so a load
balancer sent terminals to a node that answered each of them UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switch.config import Settings
from switch.server import SERVICE_NAMES, SwitchServer
from tests.integration.harness import ADMIN_TOKEN


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SwitchServer]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url="",
        grpc_port=0,
        metrics_port=-1,
        console_port=-1,
        demo_data=False,
        card_hash_key_hex="11" * 32,
        admin_token=ADMIN_TOKEN,
    )
    server = SwitchServer(settings)
    try:
        yield server
    finally:
        server.stop()


def test_a_drain_asked_before_the_switch_serves_keeps_health_not_serving(server: SwitchServer) -> None:
    server.drain()  # as the console's `drain` does, typed while the start is still under way
    server.start()
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICE_NAMES):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING, name
    assert server.draining.is_set()
