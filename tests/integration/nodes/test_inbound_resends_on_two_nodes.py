"""An inbound sale and its resend under a new field 7 reaching two nodes at once: charged once,
and given back once by a reversal naming the resend's field 7 on either node."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from protocols.iso8583 import IsoMessage, encode_message, frame
from switch.server import SwitchServer
from tests.integration.nodes.conftest import Nodes
from tests.integration.test_inbound_iso import balance, ledger_clean, read_answer, reversal_of
from tests.integration.test_inbound_repeats import RESENT_WHEN, sale

ROUNDS = 20


def ask(server: SwitchServer, message: IsoMessage, start: threading.Barrier) -> IsoMessage:
    """The answer of `server`'s inbound listener, the message sent once every sender is connected."""
    listener = server.iso_inbound
    assert listener is not None
    with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
        start.wait(timeout=30)
        sock.sendall(frame(encode_message(message)))
        return read_answer(sock)


def test_a_sale_and_its_resend_on_two_nodes_at_once_move_money_once_and_get_one_answer(
    iso_nodes: Nodes,
) -> None:
    world, node_b = iso_nodes.world, iso_nodes.node_b
    cards = [world.issue(1_000) for _ in range(ROUNDS)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for round_number, card in enumerate(cards):
            first = sale(card, 300)
            resent = {**first, "7": RESENT_WHEN}
            start = threading.Barrier(2)
            on_a = pool.submit(ask, world.server, first, start)
            on_b = pool.submit(ask, node_b, resent, start)
            answers = {(answer["39"], answer.get("38", "")) for answer in (on_a.result(), on_b.result())}
            assert len(answers) == 1 and next(iter(answers))[0] == "00", (round_number, answers)
            assert balance(world, card) == 700, round_number  # taken once, not 600 for a 300 sale
            # Whichever node stored it, the resend's field 7 names the sale without field 37
            reversal = reversal_of(resent, kind="0420")
            assert ask((world.server, node_b)[round_number % 2], reversal, threading.Barrier(1))["39"] == "00"
            assert balance(world, card) == 1_000, round_number
    ledger_clean(world)
