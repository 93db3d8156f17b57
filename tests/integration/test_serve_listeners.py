"""`txswitch serve` prints where everything listens (README, Operations): a real process, each
printed address then connected to."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from switch.demo import DEMO_EMAIL
from tests.pg import postgres_schema
from tests.serve import serve_process

ZONE_KEY_HEX = bytes(range(16)).hex()
PRINTED_WITHIN_S = 20.0


def printed_at_start(out_path: Path) -> str:
    """What serve printed up to its data directory's line, which follows every address."""
    deadline_s = time.monotonic() + PRINTED_WITHIN_S
    while "data in " not in (printed := out_path.read_text()):
        assert time.monotonic() < deadline_s, printed
        time.sleep(0.05)
    return printed


def test_the_iso_8583_listener_is_printed_with_its_port(tmp_path: Path) -> None:
    # Port 0 (any): without the printed line an operator had no way to find it.
    env = {
        **os.environ,
        "TXSWITCH_ISO_LISTEN_PORT": "0",
        "TXSWITCH_ISO_INBOUND_ACQUIRERS": f"4711:{DEMO_EMAIL}:{ZONE_KEY_HEX}",
    }
    args = ["--data-dir", str(tmp_path), "--demo", "--metrics-port", "-1", "--grpc-port", "0"]
    with serve_process(args, tmp_path / "serve.log", env) as (_process, _address):
        printed = printed_at_start(tmp_path / "serve.out")
        lines = [line for line in printed.splitlines() if line.startswith("ISO 8583 inbound: ")]
        assert len(lines) == 1, printed
        host, _, port = lines[0].split()[3].rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0, lines
        with socket.create_connection((host, int(port)), timeout=10):
            pass


def test_no_iso_8583_listener_is_printed_as_off(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "--metrics-port", "-1", "--grpc-port", "0"]
    with serve_process(args, tmp_path / "serve.log") as (_process, _address):
        printed = printed_at_start(tmp_path / "serve.out")
    assert "ISO 8583 inbound: off\n" in printed, printed


def test_the_database_is_printed_with_its_password_hidden(tmp_path: Path) -> None:
    # PostgreSQL here trusts loopback: the password is taken and never asked for.
    with postgres_schema() as schema_url:
        url = schema_url.replace("postgres@", "postgres:s3cret-pw@", 1)
        args = ["--data-dir", str(tmp_path), "--metrics-port", "-1", "--grpc-port", "0"]
        args += ["--database-url", url]
        with serve_process(args, tmp_path / "serve.log") as (_process, _address):
            printed = printed_at_start(tmp_path / "serve.out")
    database_lines = [line for line in printed.splitlines() if line.startswith("data in ")]
    assert len(database_lines) == 1 and "postgres:***@127.0.0.1" in database_lines[0], printed
    assert "s3cret-pw" not in printed + (tmp_path / "serve.log").read_text()
