"""The terminal directory caches a terminal's credential hash and state; a read that began before a
deactivation (or a re-activation) and is cached after the directory forgot the terminal outlives it.

README: "a deactivated terminal is served nowhere"; a re-activated terminal's new credential counts
(switch/core.py terminal_activated). The interleaving is made deterministic by pausing one SQL read
(tests/integration/harness.on_statement: never a listener added to a running switch's engine).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, on_statement

TERMINAL_READ = "FROM terminals JOIN locations"


@contextmanager
def first_terminal_read_paused(world: World) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The next read of a terminal's row (by any thread) stops after it has read, until released."""
    engine = world.server.core.store.engine
    lock, armed = threading.Lock(), [True]
    reached, release = threading.Event(), threading.Event()

    def after(_cursor: Any, statement: str, _parameters: Any) -> None:
        with lock:
            mine = armed[0] and TERMINAL_READ in statement
            if mine:
                armed[0] = False
        if mine:
            reached.set()
            release.wait(10)

    with on_statement(engine, "after", after):
        try:
            yield reached, release
        finally:
            release.set()


def test_a_terminal_deactivated_while_its_credential_was_being_checked_stays_refused(world: World) -> None:
    terminal = world.terminals[0]  # not yet authenticated since activation: the directory reads it
    card = world.issue(1_000)
    with first_terminal_read_paused(world) as (reached, release):
        in_flight = threading.Thread(
            target=lambda: terminal.stub.XReport(pb.XReportRequest(), metadata=terminal.metadata, timeout=20)
        )
        in_flight.start()
        assert reached.wait(10), "the XReport's credential check read the terminal"
        world.backoffice.DeactivateTerminal(
            bo.TerminalRequest(terminal_id=terminal.terminal_id), metadata=world.admin_metadata, timeout=20
        )
        release.set()
        in_flight.join(20)
    # The deactivation has been answered and the call that was on its way has ended: from now on the
    # terminal is served nowhere.
    with pytest.raises(grpc.RpcError) as refused:
        terminal.balance(card)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_terminal_re_activated_while_its_old_credential_was_being_checked_takes_the_new_one(
    world: World,
) -> None:
    old = world.terminals[0]
    card = world.issue(1_000)
    with first_terminal_read_paused(world) as (reached, release):
        in_flight = threading.Thread(
            target=lambda: old.stub.XReport(pb.XReportRequest(), metadata=old.metadata, timeout=20)
        )
        in_flight.start()
        assert reached.wait(10)
        new = world.activate("A77-0")  # the same device activated anew: a new credential
        release.set()
        in_flight.join(20)
    assert new.terminal_id == old.terminal_id
    assert new.balance(card) == 1_000  # the new credential is the terminal's now
    with pytest.raises(grpc.RpcError) as refused:
        old.balance(card)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
