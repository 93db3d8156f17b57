"""The ISO 8583 listener claims its port with the other listeners but answers only once the start has
succeeded. Before, it answered as soon as it was bound, before the sweeps, the acquirer links and
the demo data started: a start refused after it (a fault in one of those) had answered acquirers
already, so "refused, nothing changed" did not hold. Real TCP, a real switch on SQLite."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from protocols.iso8583 import IsoMessage, decode_message, encode_message, frame
from switch.config import Settings
from switch.server import SwitchServer
from tests.integration.harness import on_statement

ECHO: IsoMessage = {"t": "0800", "7": "1207120000", "11": "000001", "70": "301"}
HELD_S = 1.0  # how long an echo sent to a starting switch waits unanswered, at least
CLOSED = "closed"


class StartFaultError(RuntimeError):
    """A fault in what the start starts after binding (here: at the start's own first statement)."""


def answer_within(connection: socket.socket, timeout_s: float) -> IsoMessage | str | None:
    """The switch's answer, CLOSED if it closed the connection, None if it said nothing in time."""
    connection.settimeout(timeout_s)
    try:
        header = connection.recv(2)
        if len(header) < 2:
            return CLOSED
        length = int.from_bytes(header, "big")
        body = b""
        while len(body) < length:
            chunk = connection.recv(length - len(body))
            if not chunk:
                return CLOSED
            body += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return CLOSED
    return decode_message(body)


@pytest.mark.parametrize("refused", [False, True], ids=["started", "refused"])
def test_an_iso_echo_sent_while_the_switch_starts_waits_for_the_start(tmp_path: Path, refused: bool) -> None:
    settings = Settings(
        data_dir=tmp_path, grpc_port=0, metrics_port=-1, console_port=-1, demo_data=False, iso_listen_port=0
    )
    server = SwitchServer(settings)
    starter, held, release = threading.current_thread(), threading.Event(), threading.Event()

    def hold_the_start(*_: Any) -> None:
        """The starting thread's first statement once every listener is bound (the sweeps')."""
        if threading.current_thread() is starter and server.iso_inbound is not None and not held.is_set():
            held.set()
            assert release.wait(30)
            if refused:
                raise StartFaultError("a fault in the start's sweeps")

    answers: list[tuple[IsoMessage | str | None, IsoMessage | str | None]] = []

    def echo_while_held() -> None:
        try:
            assert held.wait(30), "the start never reached its sweeps"
            assert server.iso_inbound is not None
            with socket.create_connection(("127.0.0.1", server.iso_inbound.port), timeout=10) as connection:
                connection.sendall(frame(encode_message(dict(ECHO))))
                while_held = answer_within(connection, HELD_S)
                release.set()
                answers.append((while_held, answer_within(connection, 10)))
        finally:
            release.set()

    prober = threading.Thread(target=echo_while_held)
    prober.start()
    try:
        with on_statement(server.engine, "before", hold_the_start):
            if refused:
                with pytest.raises(StartFaultError):
                    server.start()
            else:
                server.start()
        prober.join(30)
        ((while_held, after),) = answers
        assert while_held is None, f"answered before the start had succeeded: {while_held}"
        if refused:
            assert after == CLOSED, after
        else:
            assert isinstance(after, dict) and (after["t"], after["39"]) == ("0810", "00"), after
    finally:
        if not refused:
            server.stop()
