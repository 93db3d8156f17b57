"""The acquirer host simulator refuses a bad command line by naming the flag, before it listens."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from terminal_sim import acquirer_host
from tests.ipv6 import ipv6_loopback_works

EPHEMERAL = ["--port", "0"]  # so that a row let through does not take the well-known 8583


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "-1"], "--port must be from 0 (any free port) to 65535, not -1"),
        (["--port", "70000"], "--port must be from 0 (any free port) to 65535, not 70000"),
        (["--host", ""], "--host must be a host name or IP address, as 127.0.0.1, not ''"),
        (["--latency-ms", "-5"], "--latency-ms must be from 0 to 60,000, not -5"),
        (["--latency-ms", "1000000000"], "--latency-ms must be from 0 to 60,000, not 1000000000"),
        (["--drop-share", "1.5"], "--drop-share must be from 0 to 1, not 1.5"),
        (["--drop-share", "nan"], "--drop-share must be from 0 to 1, not nan"),
        (["--amount-limit-minor", "-1"], "--amount-limit-minor must be at least 0, not -1"),
        (
            ["--zone-key-hex", "zz"],
            "--zone-key-hex must be 32 hex digits (a 16-byte AES key), not 2 characters",
        ),
        (
            ["--zone-key-hex", "00"],
            "--zone-key-hex must be 32 hex digits (a 16-byte AES key), not 2 characters",
        ),
        (
            ["--zone-key-hex", "G" * 32],
            "--zone-key-hex must be 32 hex digits (a 16-byte AES key), not 32 characters",
        ),
    ],
)
@pytest.mark.timeout(10)  # a port or share let through is served until the test is stopped
def test_a_bad_flag_is_refused_by_name_before_it_listens(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        acquirer_host.main([*EPHEMERAL, *argv])
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.acquirer_host: error: {message}"


def test_a_zone_key_is_never_repeated_in_the_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    key_one_digit_short = acquirer_host.TEST_ZONE_KEY_HEX[:-1]
    with pytest.raises(SystemExit):
        acquirer_host.main([*EPHEMERAL, "--zone-key-hex", key_one_digit_short])
    assert key_one_digit_short not in capsys.readouterr().err


@pytest.mark.timeout(30)  # a host let through is served until the test is stopped
def test_a_host_it_cannot_listen_on_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        acquirer_host.main([*EPHEMERAL, "--host", "nohost.invalid"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "python -m terminal_sim.acquirer_host: error: cannot listen on nohost.invalid:0, set by --host and "
        "--port: "
    )


@pytest.mark.parametrize(
    ("host", "family", "named"),
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
        pytest.param(
            "::1",
            socket.AF_INET6,
            "[::1]",
            marks=pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback on this machine"),
        ),
    ],
)
@pytest.mark.timeout(30)
def test_a_taken_port_is_refused_in_one_line(
    host: str, family: socket.AddressFamily, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(family) as taker:
        taker.bind((host, 0))
        taker.listen()
        port = taker.getsockname()[1]
        with pytest.raises(SystemExit) as refused:
            acquirer_host.main(["--host", host, "--port", str(port)])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m terminal_sim.acquirer_host: error: cannot listen on {named}:{port}, set by --host and "
        f"--port: {os.strerror(errno.EADDRINUSE)}"
    )


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback on this machine")
@pytest.mark.timeout(30)
def test_an_ipv6_host_is_named_in_brackets() -> None:
    command = [sys.executable, "-m", "terminal_sim.acquirer_host", "--host", "::1", "--port", "0"]
    host = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert host.stdout is not None
        said = host.stdout.readline()
        assert " listening on [::1]:" in said, said
        with socket.create_connection(("::1", int(said.rpartition(":")[2])), timeout=10):
            pass
    finally:
        host.terminate()
        host.wait(10)
