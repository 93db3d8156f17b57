"""A terminal deactivated and activated again is served again, on every node."""

from __future__ import annotations

import time

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, TerminalClient
from tests.integration.nodes.conftest import Nodes


def activate_again(stub: pb_grpc.TerminalStub) -> pb.ActivateResponse:
    request = pb.ActivateRequest(
        merchant_email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD, device_name="A77-0", location="Shop"
    )
    response: pb.ActivateResponse = stub.Activate(request, timeout=20)
    return response


def test_a_terminal_deactivated_on_node_a_and_activated_again_on_node_b_is_served_on_node_a(
    nodes: Nodes,
) -> None:
    card = nodes.world.issue(1_000)
    assert nodes.on_a.redeem(card, 100).response_code == "00"  # node A's terminal actor is live
    nodes.on_a_as_admin("DeactivateTerminal", bo.TerminalRequest(terminal_id=nodes.on_a.terminal_id))
    again = activate_again(nodes.on_b.stub)  # the same device: the same terminal, a new credential
    assert again.terminal_id == nodes.on_a.terminal_id
    time.sleep(1.2)  # older than any copy may be
    on_b = TerminalClient(nodes.on_b.stub, again.credential, again.terminal_id)
    on_a = TerminalClient(nodes.on_a.stub, again.credential, again.terminal_id)
    assert on_b.redeem(card, 100).response_code == "00"
    answer = on_a.redeem(card, 100)
    assert answer.response_code == "00", f"node A: {answer.response_code} {answer.message}"


def test_a_terminal_deactivated_and_activated_again_on_one_node_is_served(nodes: Nodes) -> None:
    card = nodes.world.issue(1_000)
    assert nodes.on_a.redeem(card, 100).response_code == "00"
    nodes.on_a_as_admin("DeactivateTerminal", bo.TerminalRequest(terminal_id=nodes.on_a.terminal_id))
    again = activate_again(nodes.on_a.stub)
    answer = TerminalClient(nodes.on_a.stub, again.credential, again.terminal_id).redeem(card, 100)
    assert answer.response_code == "00", f"{answer.response_code} {answer.message}"
