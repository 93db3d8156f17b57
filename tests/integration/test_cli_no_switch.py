"""`txswitch admin` and `txswitch balance` with no switch at their target say so, and how to get one,
as `txswitch-sim` does: a newcomer who ran them before `make run` (or beside a switch on another port)
got only grpc's "UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:...".
Real gRPC clients at a loopback port where nothing listens."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from switch import cli


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (
            ["admin", "--data-dir", "{data}", "--target", "{target}", "check-ledger"],
            "txswitch admin check-ledger",
        ),
        (
            [
                "admin",
                "--data-dir",
                "{data}",
                "--target",
                "{target}",
                "export-transactions",
                "from_date=2026-01-01",
            ],
            "txswitch admin export-transactions",
        ),
        (["balance", "--target", "{target}", "6000010890767292"], "txswitch balance"),
    ],
)
def test_no_switch_at_the_target_is_said_with_what_to_do(
    command: list[str], prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "admin.token").write_text("token")
    target = f"127.0.0.1:{unused_port()}"
    assert cli.main([part.format(data=tmp_path, target=target) for part in command]) == 1
    printed = capsys.readouterr()
    expected = (
        f"{prefix}: no switch answers at {target}: start one (make run), or give its address with --target"
    )
    assert printed.err.startswith(expected), printed.err
    assert printed.err.count("\n") == 1, printed.err
    assert printed.out == ""
