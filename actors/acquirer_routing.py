"""BIN-range routing: which acquirer link carries a card's authorisation."""

from __future__ import annotations

from collections.abc import Iterable

from actors.acquirer_types import BinRange


class BinRoutingTable:
    """The most specific range holding a PAN wins: longest bounds first, then the narrowest."""

    def __init__(self, ranges: Iterable[BinRange]) -> None:
        self._ranges = sorted(ranges, key=lambda entry: (-len(entry.low), int(entry.high) - int(entry.low)))

    def route(self, pan: str) -> str | None:
        """The acquirer name for `pan`, or None when no range holds it."""
        for entry in self._ranges:
            prefix = pan[: len(entry.low)]
            if len(prefix) == len(entry.low) and entry.low <= prefix <= entry.high:
                return entry.acquirer
        return None

    @property
    def acquirers(self) -> frozenset[str]:
        return frozenset(entry.acquirer for entry in self._ranges)
