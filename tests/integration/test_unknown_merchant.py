"""An unknown merchant id is named (`merchant_id 'x': no such merchant`, NOT_FOUND) as the report,
the location changes and the day closes do, not answered with an empty list that reads as "this
merchant has no terminals"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from tests.integration.harness import World, world_fixture


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def test_the_terminals_of_an_unknown_merchant_are_not_found(world: World) -> None:
    request = bo.ListTerminalsRequest(merchant_id="mer_nowhere")
    with pytest.raises(grpc.RpcError) as refused:
        listed = world.backoffice.ListTerminals(request, metadata=world.admin_metadata, timeout=20)
        pytest.fail(f"answered {len(listed.terminals)} terminals for a merchant that does not exist")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
