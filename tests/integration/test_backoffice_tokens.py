"""Every Backoffice RPC is behind the admin token (ConfirmTopUp the PSP's too), whatever else is
shown: no token, a wrong one, a portal session, the PSP's; and the admin token opens no portal call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from tests.integration.harness import ADMIN_TOKEN, World, world_fixture
from tests.integration.test_portal import refusal, sign_in, stub

PSP_TOKEN = "test-psp-token"
BACKOFFICE = bo.DESCRIPTOR.services_by_name["Backoffice"]
PSP_METHODS = {"ConfirmTopUp"}


@pytest.fixture(params=["sqlite"])  # the token is checked before any read
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=0, psp_token=PSP_TOKEN)


def called(world: World, method: MethodDescriptor, authorization: str) -> grpc.StatusCode:
    """The status of the method called with an empty request and this authorization ("": none)."""
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{BACKOFFICE.full_name}/{method.name}"
    kind = world.channel.unary_stream if method.server_streaming else world.channel.unary_unary
    call = kind(
        path,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    metadata = (("authorization", authorization),) if authorization else ()
    try:
        answer = call(request_type(), metadata=metadata, timeout=20)
        if method.server_streaming:
            list(answer)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# One row per credential that must open no admin call.
WRONG: list[tuple[str, Callable[[str], str]]] = [
    ("none", lambda _session: ""),
    ("empty bearer", lambda _session: "Bearer "),
    ("wrong token of the same length", lambda _session: "Bearer " + "x" * len(ADMIN_TOKEN)),
    ("the token and more", lambda _session: f"Bearer {ADMIN_TOKEN}x"),
    ("a prefix of the token", lambda _session: f"Bearer {ADMIN_TOKEN[:-1]}"),
    ("the token without Bearer", lambda _session: ADMIN_TOKEN),
    ("the token in lower-case bearer", lambda _session: f"bearer {ADMIN_TOKEN}"),
    ("the merchant's portal session", lambda session: session),
]


def test_no_backoffice_call_opens_without_the_admin_token(world: World) -> None:
    session = dict(sign_in(world))["authorization"]
    opened = [
        (case, method.name)
        for case, authorization in WRONG
        for method in BACKOFFICE.methods
        if called(world, method, authorization(session)) is not grpc.StatusCode.UNAUTHENTICATED
    ]
    assert opened == []
    psp = [
        method.name
        for method in BACKOFFICE.methods
        if called(world, method, f"Bearer {PSP_TOKEN}") is not grpc.StatusCode.UNAUTHENTICATED
    ]
    assert psp == sorted(PSP_METHODS)


def test_the_admin_token_opens_no_portal_call(world: World) -> None:
    admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    code, _ = refusal(stub(world).ListTerminals, bo.ListTerminalsRequest(), metadata=admin, timeout=20)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    code, _ = refusal(stub(world).SignOut, portal.SignOutRequest(), metadata=admin, timeout=20)
    assert code is grpc.StatusCode.UNAUTHENTICATED
