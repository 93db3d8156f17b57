"""Two activations of one device at the same moment leave the working credential with the PIN key
delivered beside it (audit: the credential and the PIN key were stored in two transactions, so one
activation's credential could end up paired with the other's key; the terminal holding the working
credential then had every PIN block refused as a wrong PIN, which blocks card PINs).

The interleaving is made deterministic with hooks on the switch's own engine (tests/integration/harness
on_statement, on_transaction: never a listener added to a running switch's engine): the first
activation, having stored its credential, waits at its next transaction while the second runs whole.
Real gRPC on loopback and a real acquirer host; SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.security import KeyAlgorithm
from switch.security.keys import check_value
from switch.store.keys import KeyStore
from tests.integration.harness import (
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    TerminalClient,
    World,
    on_statement,
    on_transaction,
    sqlite_lock_waits,
    world_fixture,
)
from tests.integration.payment_harness import PaymentWorld, PayTerminal, activate, payment_world
from tests.integration.test_portal import sign_in, stub
from tests.integration.test_portal_races import MANAGER_EMAIL, MANAGER_PASSWORD, add_manager, in_thread
from tests.pg import LockWaits, backend_pid

PAUSE_S_MAX = 5.0


@pytest.fixture(params=["sqlite", "postgres"])
def paying(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PaymentWorld]:
    with payment_world(tmp_path, request.param) as world:
        yield world


@contextmanager
def first_paused_after_its_credential(
    paying: PaymentWorld, second_done: threading.Event
) -> Iterator[threading.Event]:
    """reached: the first activation to store a credential has begun its next transaction, where it
    waits until second_done (at most PAUSE_S_MAX: a fix that keeps the second waiting still ends)."""
    engine = paying.world.server.core.store.engine
    armed = threading.Event()
    armed.set()
    reached = threading.Event()
    mine = threading.local()

    def after_execute(_cursor: Any, statement: str, _parameters: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE TERMINALS SET CREDENTIAL_HASH") and armed.is_set():
            armed.clear()
            mine.held = True

    def on_commit() -> None:
        if getattr(mine, "held", False):
            mine.held = False
            mine.committed = True

    def on_begin() -> None:
        if getattr(mine, "committed", False):
            mine.committed = False
            reached.set()
            second_done.wait(PAUSE_S_MAX)

    with (
        on_statement(engine, "after", after_execute),
        on_transaction(engine, "commit", on_commit),
        on_transaction(engine, "begin", on_begin),
    ):
        try:
            yield reached
        finally:
            second_done.set()


def works(terminal: PayTerminal) -> bool:
    try:
        terminal.x_report()
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        return False
    return True


def test_two_activations_of_one_device_at_once_pair_the_working_credential_with_its_key(
    paying: PaymentWorld,
) -> None:
    channel = paying.world.channel
    device = "A77-pay"  # activated once already: both re-activate it
    answers: dict[str, PayTerminal] = {}

    def activation(name: str) -> None:
        answers[name] = activate(channel, device)

    second_done = threading.Event()
    with first_paused_after_its_credential(paying, second_done) as reached:
        first = threading.Thread(target=activation, args=("first",))
        first.start()
        assert reached.wait(10), "the first activation did not store its credential"
        activation("second")
        second_done.set()
        first.join(20)
    assert set(answers) == {"first", "second"}
    working = [name for name, terminal in answers.items() if works(terminal)]
    assert len(working) == 1, working
    terminal = answers[working[0]]
    delivered = check_value(terminal.pin_key, KeyAlgorithm.aes128)
    stored = KeyStore(paying.world.server.engine).get(f"tpk.{terminal.terminal_id}")
    acquiring = paying.world.server.acquiring
    assert acquiring is not None and stored is not None
    in_use = acquiring.terminal_pin_key(terminal.terminal_id)
    assert in_use is not None
    assert (stored.check_value, in_use.check_value) == (delivered, delivered), (
        f"the {working[0]} activation's credential works, but the PIN key kept is another's"
    )


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=0)


@contextmanager
def first_paused_after_its_insert(world: World, second_email: str) -> Iterator[threading.Event]:
    """reached: the first activation to insert a terminal has done so and waits, before its commit,
    until another thread has read whether the device exists, or until the activation signing in
    as second_email waits for a lock the first holds (its thread polling for SQLite's write lock;
    its PostgreSQL backend blocked by the first's, pg_blocking_pids), the sure sign that it cannot
    read before the first commits (a fix that keeps it from that read waited out PAUSE_S_MAX here,
    5 s a test); at most PAUSE_S_MAX."""
    engine = world.server.core.store.engine
    postgres = engine.dialect.name == "postgresql"
    first: list[int] = []
    reached, second_read, second_waits = threading.Event(), threading.Event(), threading.Event()
    second_threads: set[int] = set()  # those that looked second_email's login up: its activation's
    first_backend: list[int] = []  # the first's, on PostgreSQL
    second_backend: list[int] = []  # the backend of the second's latest statement (PostgreSQL)
    lock_waits = LockWaits() if postgres else None

    def before_execute(cursor: Any, _statement: str, parameters: Any) -> None:
        if second_email in str(parameters) and threading.get_ident() not in first:
            second_threads.add(threading.get_ident())
        if postgres and threading.get_ident() in second_threads:
            second_backend[:] = [backend_pid(cursor)]

    def the_second_waits() -> bool:
        if lock_waits is None:
            return second_waits.is_set()
        return bool(second_backend) and lock_waits.blocked_by(second_backend, first_backend[0])

    def after_execute(cursor: Any, statement: str, _parameters: Any) -> None:
        text = " ".join(statement.upper().split())
        if text.startswith("INSERT INTO TERMINALS") and not first:
            first.append(threading.get_ident())
            if postgres:
                first_backend.append(backend_pid(cursor))
            reached.set()
            deadline_s = time.monotonic() + PAUSE_S_MAX
            while not second_read.wait(0.005) and time.monotonic() < deadline_s:
                if the_second_waits():
                    return
        elif (
            text.startswith("SELECT TERMINALS.TERMINAL_ID FROM TERMINALS")
            and "DEVICE_NAME" in text
            and first
            and threading.get_ident() != first[0]
        ):
            second_read.set()

    def lock_taken() -> None:
        if threading.get_ident() in second_threads:
            second_waits.set()

    with (
        on_statement(engine, "before", before_execute),
        on_statement(engine, "after", after_execute),
        sqlite_lock_waits(lock_taken),
    ):
        try:
            yield reached
        finally:
            second_read.set()
            if lock_waits is not None:
                lock_waits.close()


def test_two_first_activations_of_a_new_device_by_two_logins_make_one_terminal(world: World) -> None:
    """Audit after session 23: on PostgreSQL both read that the device had no terminal, both inserted
    one, and the second's insert met the unique (location, device) key: INTERNAL."""
    add_manager(world)
    terminal = pb_grpc.TerminalStub(world.channel)

    def activation(email: str, password: str) -> Callable[[], pb.ActivateResponse]:
        request = pb.ActivateRequest(
            merchant_email=email, password=password, device_name="till-new", location="Shop"
        )
        return lambda: terminal.Activate(request, timeout=20)

    with first_paused_after_its_insert(world, MANAGER_EMAIL) as reached:
        first, first_out = in_thread(activation(MERCHANT_EMAIL, MERCHANT_PASSWORD))
        assert reached.wait(10), "the first activation did not insert the device's terminal"
        second, second_out = in_thread(activation(MANAGER_EMAIL, MANAGER_PASSWORD))
        second.join(30)
        first.join(30)
    assert "answer" in first_out and "answer" in second_out, (first_out, second_out)
    answers = (first_out["answer"], second_out["answer"])
    assert answers[0].terminal_id == answers[1].terminal_id  # one terminal for the device
    listed = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=sign_in(world), timeout=20)
    assert [t.device_name for t in listed.terminals].count("till-new") == 1
    # The credential that works is the one given last (the second's), and only that one.
    card = world.issue(100)
    working = []
    for answer in answers:
        client = TerminalClient(terminal, answer.credential, answer.terminal_id)
        try:
            client.balance(card)
            working.append(answer)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    assert working == [answers[1]]
