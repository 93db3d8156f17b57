"""One advice (0220, 0420) for one original reaching two nodes at once, as an acquirer's store and
forward resends it over another link: the money moves once, by the database's conditional update
of the original, since each node's locks hold only its own requests."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from protocols.iso8583 import IsoMessage, encode_message, format_amount, frame
from switch.server import SwitchServer
from tests.integration.nodes.conftest import Nodes
from tests.integration.nodes.test_inbound_resends_on_two_nodes import ask
from tests.integration.test_inbound_iso import (
    answers_or_none,
    authorisation,
    balance,
    completion_of,
    financial,
    ledger_clean,
    reversal_of,
    unanswered_total,
)

ROUNDS = 6
ANSWER_WAIT_S = 30.0


def unanswered_on(server: SwitchServer) -> int:
    listener = server.iso_inbound
    assert listener is not None
    return unanswered_total(listener)


def unanswered_on_both(nodes: Nodes) -> int:
    return unanswered_on(nodes.world.server) + unanswered_on(nodes.node_b)


def ask_or_none(server: SwitchServer, message: IsoMessage, start: threading.Barrier) -> IsoMessage | None:
    """`ask`, but None for an advice the node left unanswered (`answers_or_none`)."""
    listener = server.iso_inbound
    assert listener is not None
    with socket.create_connection(("127.0.0.1", listener.port), timeout=ANSWER_WAIT_S) as sock:
        left_before = unanswered_total(listener)
        start.wait(timeout=ANSWER_WAIT_S)
        sock.sendall(frame(encode_message(message)))
        return answers_or_none(listener, [sock], left_before)[0]


def repeat_of(advice: IsoMessage) -> IsoMessage:
    """The 0221/0421 of an 0220/0420."""
    return {**advice, "t": advice["t"][:3] + "1"}


def on_both_at_once(
    nodes: Nodes, pool: ThreadPoolExecutor, message: IsoMessage, on_b: IsoMessage | None = None
) -> list[str | None]:
    """The answers (field 39, None: unanswered) of node A to `message` and of node B to `on_b` (by
    default its repeat), sent to both at once."""
    start = threading.Barrier(2)
    futures = [
        pool.submit(ask_or_none, nodes.world.server, message, start),
        pool.submit(ask_or_none, nodes.node_b, on_b or repeat_of(message), start),
    ]
    return [None if answer is None else answer["39"] for answer in (f.result() for f in futures)]


def test_one_advice_on_two_nodes_at_once_is_answered_on_both_and_moves_money_once(iso_nodes: Nodes) -> None:
    """The node whose write lost to the other's (the original changed meanwhile, or the completion's
    place held) left its copy unanswered in nearly every round, so the alert on unanswered advices
    fired for one advice sent on two links; it now answers as a repeat is answered. Two completions
    of one key but other final amounts are not one advice: the one not taken stays unanswered."""
    world = iso_nodes.world
    with ThreadPoolExecutor(max_workers=2) as pool:
        for round_number in range(ROUNDS):
            card = world.issue(1_000)
            sale = financial(card, 300)  # 0200: reversed by the advice
            assert ask(world.server, sale, threading.Barrier(1))["39"] == "00"
            original = authorisation(card, 400)  # 0100: completed, then the sale voided
            assert ask(world.server, original, threading.Barrier(1))["39"] == "00"
            assert balance(world, card) == 300
            completion = completion_of(original, 250)
            steps = [
                (reversal_of(sale, kind="0420"), 600),  # the 0200's 3.00 back, once
                (completion, 750),  # 1.50 of the 0100's 4.00 back, once
                (reversal_of(completion, kind="0420"), 1_000),  # the final 2.50 back: the sale voided
            ]
            for advice, after in steps:
                codes = on_both_at_once(iso_nodes, pool, advice)
                assert codes == ["00", "00"], (round_number, advice["t"], codes)
                assert balance(world, card) == after, (round_number, advice["t"], codes)
            # None left unanswered but the one of each earlier round's two completions
            assert unanswered_on_both(iso_nodes) == round_number
            other = authorisation(card, 400)
            assert ask(world.server, other, threading.Barrier(1))["39"] == "00"
            on_a = completion_of(other, 250)
            on_b = {**on_a, "t": "0221", "4": format_amount(300)}  # the same key (41, STAN, field 7)
            codes = on_both_at_once(iso_nodes, pool, on_a, on_b)
            assert sorted(codes, key=str) == ["00", None], (round_number, codes)
            after = 750 if codes[0] == "00" else 700  # 1.50 or 1.00 of the 4.00 back, once
            assert balance(world, card) == after, (round_number, codes)
            assert unanswered_on_both(iso_nodes) == round_number + 1
    ledger_clean(world)
