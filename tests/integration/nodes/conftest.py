"""Two switch nodes on one PostgreSQL database: what one does counts on the other (session 21 audit)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocols.wire import backoffice_pb2_grpc as bo_grpc
from switch.server import SwitchServer
from tests.integration.harness import MERCHANT_EMAIL, TerminalClient, World, second_node, start_world
from tests.integration.test_inbound_iso import ACQUIRER, ZONE_KEY
from tests.pg import postgres_schema


@dataclass
class Nodes:
    world: World
    node_b: SwitchServer
    on_a: TerminalClient
    on_b: TerminalClient
    backoffice_b: bo_grpc.BackofficeStub

    def on_b_as_admin(self, method: str, request: object) -> Any:
        return getattr(self.backoffice_b, method)(request, metadata=self.world.admin_metadata, timeout=20)

    def on_a_as_admin(self, method: str, request: object) -> Any:
        return getattr(self.world.backoffice, method)(request, metadata=self.world.admin_metadata, timeout=20)


def two_nodes(tmp_path: Path, max_age_s: float = 0.0, **overrides: object) -> Iterator[Nodes]:
    with postgres_schema() as url:
        world = start_world(
            tmp_path, url, 2, several_nodes="auto", shared_copy_max_age_s=max_age_s, **overrides
        )
        try:
            with second_node(world, tmp_path / "node-b") as b:
                yield Nodes(world, b.server, world.terminals[0], b.terminal, b.backoffice)
        finally:
            world.channel.close()
            world.server.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path)


@pytest.fixture
def iso_nodes(tmp_path: Path) -> Iterator[Nodes]:
    """Two nodes that take inbound ISO 8583 from ACQUIRER, each on a free port."""
    acquirers = f"{ACQUIRER}:{MERCHANT_EMAIL}:{ZONE_KEY.hex()}"
    yield from two_nodes(tmp_path, iso_listen_port=0, iso_inbound_acquirers=acquirers)
