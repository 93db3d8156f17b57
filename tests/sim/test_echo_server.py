"""The echo server refuses a bad command line by naming the flag, before it listens or when it cannot."""

from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from terminal_sim import echo_server
from tests.ipv6 import ipv6_loopback_works


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "-1"], "--port must be from 0 (any free port) to 65535, not -1"),
        (["--port", "70000"], "--port must be from 0 (any free port) to 65535, not 70000"),
        (["--host", ""], "--host must be a host name or IP address, as 127.0.0.1, not ''"),
        (["--host", " ::1"], "--host must be a host name or IP address, as 127.0.0.1, not ' ::1'"),
    ],
)
@pytest.mark.timeout(10)  # a port let through is served (70000 as 4464) until the test is stopped
def test_a_bad_flag_is_refused_by_name_before_it_listens(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        echo_server.main(argv)
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.echo_server: error: {message}"


@pytest.mark.timeout(30)  # a host let through is served until the test is stopped
def test_a_host_it_cannot_listen_on_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        echo_server.main(["--host", "nohost.invalid", "--port", "0"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "python -m terminal_sim.echo_server: error: cannot listen on nohost.invalid:0, set by --host and "
        "--port: "
    )


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback on this machine")
@pytest.mark.timeout(30)
def test_an_ipv6_host_is_listened_on_and_named_in_brackets() -> None:
    command = [sys.executable, "-m", "terminal_sim.echo_server", "--host", "::1", "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        said = server.stdout.readline()
        assert said.startswith("echo-server listening on [::1]:"), said
        address = said.split()[-1]
        with grpc.insecure_channel(address) as channel:
            answer = pb_grpc.TerminalStub(channel).Balance(pb.BalanceRequest(), timeout=10)
        assert answer.response_code == "00"
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.timeout(60)
def test_a_taken_port_is_refused_in_its_own_lines_only() -> None:
    """grpc's core printed its own "add_port.cc:83] Failed to add port ..." line above the refusal."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "terminal_sim.echo_server", "--port", str(port)]
        refused = subprocess.run(command, check=False, capture_output=True, text=True, timeout=50)
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("usage: python -m terminal_sim.echo_server"), refused.stderr
    assert lines[-1].startswith(
        f"python -m terminal_sim.echo_server: error: cannot listen on 127.0.0.1:{port}, set by --host and "
    ), refused.stderr
    assert len(lines) == 2, refused.stderr
