"""`txswitch serve` binds every listener before it writes or sends anything: a start refused because a
port is taken (exit 2) has made no demo data and sent no reversal advice. Before, the demo data was
written and the acquirer links started (a pending 0420 went out) before the listeners bound.
Real processes: the switch, an acquirer address on TCP, a socket holding the port."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from switch.store.engine import create_schema, make_engine
from switch.store.saf import NewReversal, SafStore
from switch.store.schema import merchants
from tests.integration.payment_harness import MASTER_KEY_HEX, acquirers_file
from tests.serve import run_to_exit

PENDING_ADVICE = NewReversal(
    "acq-sim", "TID00001", "MID000000000001", "t-left-by-a-restart", "0200", "000042", "1207063000",
    "400001", "000000", 500, "978", "switch_restart",
)  # fmt: skip


def database_with_a_pending_advice(data_dir: Path) -> str:
    """A schema and nothing else (no merchant: `--demo` would fill it), one reversal advice pending."""
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'txswitch.sqlite'}"
    engine = make_engine(url)
    try:
        create_schema(engine)
        assert SafStore(engine).enqueue(PENDING_ADVICE, dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()
    return url


def merchants_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(merchants)).scalar_one())
    finally:
        engine.dispose()


def acquirer_port(listener: socket.socket) -> int:
    port: int = listener.getsockname()[1]
    return port


def connected(listener: socket.socket) -> bool:
    """Whether a connection to the non-blocking listener was ever made (it is accepted and closed)."""
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def serve(args: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_to_exit([sys.executable, "-m", "switch.cli", "serve", *args], {**os.environ, **environment})


@pytest.mark.parametrize("taken", ["--grpc-port", "--metrics-port", "TXSWITCH_ISO_LISTEN_PORT"])
def test_a_serve_refused_for_a_taken_port_wrote_no_demo_data_and_sent_no_advice(
    tmp_path: Path, taken_port: int, taken: str
) -> None:
    data_dir = tmp_path / "data"
    url = database_with_a_pending_advice(data_dir)
    # The acquirer: a listening socket nobody accepts on. A link the switch opens is complete (in
    # this socket's queue) once its connect() returns, so once the process has exited, an accept()
    # that finds nothing shows that no link was opened, and no 0420 sent, without waiting for one.
    with socket.create_server(("127.0.0.1", 0)) as acquirer:
        acquirer.setblocking(False)
        environment = {
            "TXSWITCH_ACQUIRERS_FILE": str(
                acquirers_file(tmp_path / "acquirers.toml", acquirer_port(acquirer))
            ),
            "TXSWITCH_MASTER_KEY_HEX": MASTER_KEY_HEX,
        }
        ports = {"--grpc-port": "0", "--metrics-port": "0", "--console-port": "-1"}
        if taken.startswith("--"):
            ports[taken] = str(taken_port)
        else:
            environment[taken] = str(taken_port)
        args = ["--data-dir", str(data_dir), "--database-url", url, "--demo"]
        finished = serve([*args, *(item for pair in ports.items() for item in pair)], environment)
        assert finished.returncode == 2, finished.stderr[-2000:]
        assert f":{taken_port}, set by " in finished.stderr, finished.stderr[-2000:]
        assert "Traceback" not in finished.stderr, finished.stderr[-2000:]  # stopped before it started
        assert not connected(acquirer), "a refused start opened the acquirer link (to send the pending 0420)"
    assert merchants_count(url) == 0, "a refused start wrote the demo data"
    assert not (data_dir / "demo_cards.json").exists()


def test_a_serve_refused_for_a_taken_port_on_a_new_data_dir_made_no_demo_data(
    tmp_path: Path, taken_port: int
) -> None:
    data_dir = tmp_path / "new"
    args = ["--data-dir", str(data_dir), "--demo", "--grpc-port", str(taken_port), "--metrics-port", "-1"]
    finished = serve(args, {})
    assert finished.returncode == 2, finished.stderr[-2000:]
    database = data_dir / "txswitch.sqlite"
    assert not database.exists() or merchants_count(f"sqlite:///{database}") == 0
    assert not (data_dir / "demo_cards.json").exists()
