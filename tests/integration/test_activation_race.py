"""Two activations of one device at the same moment leave the working credential with the PIN key
delivered beside it (audit: the credential and the PIN key were stored in two transactions, so one
activation's credential could end up paired with the other's key; the terminal holding the working
credential then had every PIN block refused as a wrong PIN, which blocks card PINs).

The interleaving is made deterministic with SQLAlchemy events on the switch's own engine: the first
activation, having stored its credential, waits at its next transaction while the second runs whole.
Real gRPC on loopback and a real acquirer host; SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import event

from switch.security import KeyAlgorithm
from switch.security.keys import check_value
from switch.store.keys import KeyStore
from tests.integration.payment_harness import PaymentWorld, PayTerminal, activate, payment_world

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

    def after_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE TERMINALS SET CREDENTIAL_HASH") and armed.is_set():
            armed.clear()
            mine.held = True

    def on_commit(_conn: Any) -> None:
        if getattr(mine, "held", False):
            mine.held = False
            mine.committed = True

    def on_begin(_conn: Any) -> None:
        if getattr(mine, "committed", False):
            mine.committed = False
            reached.set()
            second_done.wait(PAUSE_S_MAX)

    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "begin", on_begin)
    try:
        yield reached
    finally:
        second_done.set()
        event.remove(engine, "after_cursor_execute", after_execute)
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "begin", on_begin)


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
