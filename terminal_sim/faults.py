"""Faults a real terminal causes, chosen per money request from configured shares."""

from __future__ import annotations

import enum
import random

from terminal_sim.config import FaultShares


class Fault(enum.StrEnum):
    none = "none"
    duplicate = "duplicate"  # the same request sent twice
    timeout = "timeout"  # the terminal stops waiting, then asks or reverses
    abandon = "abandon"  # the terminal is switched off mid-request


class Recovery(enum.StrEnum):
    status = "status"  # ask TransactionStatus, reverse if the switch has no answer
    reversal = "reversal"  # reverse at once


def choose_fault(shares: FaultShares, rng: random.Random) -> Fault:
    point = rng.random()
    for fault, share in (
        (Fault.duplicate, shares.duplicate),
        (Fault.timeout, shares.timeout),
        (Fault.abandon, shares.abandon),
    ):
        if point < share:
            return fault
        point -= share
    return Fault.none


def choose_recovery(rng: random.Random) -> Recovery:
    return Recovery.status if rng.random() < 0.5 else Recovery.reversal
