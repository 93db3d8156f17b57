"""A programme's balance maximum holds for loads on two nodes at once (copies 0 s old here)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.integration.harness import TerminalClient
from tests.integration.nodes.conftest import Nodes

ROUNDS = 10


def test_loads_racing_on_both_nodes_never_take_a_card_past_its_balance_max(nodes: Nodes) -> None:
    cards = [nodes.world.issue(90_000) for _ in range(ROUNDS)]  # the gift programme holds at most 100,000
    over = []
    with ThreadPoolExecutor(2) as pool:
        for card in cards:
            together = threading.Barrier(2)

            def load(
                terminal: TerminalClient, card: str = card, together: threading.Barrier = together
            ) -> str:
                together.wait()
                return terminal.load(card, 10_000).response_code

            codes = list(pool.map(load, [nodes.on_a, nodes.on_b]))
            balance = nodes.on_a.balance(card)
            if balance > 100_000:
                over.append((codes, balance))
    assert not over, f"{len(over)} of {ROUNDS} cards above their programme's maximum: {over[:3]}"
