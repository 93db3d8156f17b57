"""A listener that cannot bind (its port held by another process) stops the switch before it serves:
one line naming the listener, its address and the setting, exit 2, and nothing half started left
answering. Before, `serve` ended in a traceback after gRPC had begun answering, and a compare or
bench switch beside a `make run` one answered "cannot schedule new futures after interpreter
shutdown" to its own provisioning (its metrics port was the default)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from switch.config import Settings
from switch.listening import CannotListenError
from switch.server import SwitchServer
from tests.ipv6 import ipv6_loopback_works
from tests.serve import run_to_exit


def serve(tmp_path: Path, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "switch.cli", "serve", "--data-dir", str(tmp_path / "data"), *args]
    return run_to_exit(command, {**os.environ, **environment})


@pytest.mark.parametrize(
    ("listener", "setting"),
    [
        (
            "gRPC (terminals, backoffice, portal and cardholders)",
            "grpc_port (--grpc-port, TXSWITCH_GRPC_PORT)",
        ),
        ("metrics", "metrics_port (--metrics-port, TXSWITCH_METRICS_PORT)"),
        ("ISO 8583", "iso_listen_port (TXSWITCH_ISO_LISTEN_PORT)"),
    ],
)
def test_serve_names_the_listener_whose_port_is_taken_and_stops(
    tmp_path: Path, taken_port: int, listener: str, setting: str
) -> None:
    ports = {"--grpc-port": "0", "--metrics-port": "-1"}
    environment = {}
    if listener == "metrics":
        ports["--metrics-port"] = str(taken_port)
    elif listener == "ISO 8583":
        environment["TXSWITCH_ISO_LISTEN_PORT"] = str(taken_port)
    else:
        ports["--grpc-port"] = str(taken_port)
    finished = serve(tmp_path, *(item for pair in ports.items() for item in pair), **environment)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr, finished.stderr[-2000:]
    expected = f"txswitch serve: cannot listen for {listener} on 127.0.0.1:{taken_port}, set by {setting}: "
    assert expected in finished.stderr, finished.stderr[-2000:]
    assert "txswitch listening" not in finished.stdout


def test_a_serve_refused_for_a_taken_port_prints_only_its_own_line(tmp_path: Path, taken_port: int) -> None:
    """grpc's core printed its own "E... add_port.cc:83] Failed to add port to server: ..." above it."""
    master_key = {"TXSWITCH_MASTER_KEY_HEX": "11" * 32}  # else a warning that the key lies in the data dir
    finished = serve(tmp_path, "--grpc-port", str(taken_port), "--metrics-port", "-1", **master_key)
    assert finished.returncode == 2, finished.stderr[-2000:]
    setting = "grpc_port (--grpc-port, TXSWITCH_GRPC_PORT)"
    listener = f"gRPC (terminals, backoffice, portal and cardholders) on 127.0.0.1:{taken_port}"
    expected = f"txswitch serve: cannot listen for {listener}, set by {setting}: "
    assert finished.stderr.startswith(expected), finished.stderr[-2000:]
    assert finished.stderr.count("\n") == 1, finished.stderr[-2000:]


def test_a_server_that_cannot_listen_leaves_nothing_answering_and_its_data_dir_free(
    tmp_path: Path, taken_port: int
) -> None:
    settings = Settings(
        data_dir=tmp_path, grpc_port=0, metrics_port=taken_port, console_port=-1, demo_data=False
    )
    server = SwitchServer(settings)
    with pytest.raises(CannotListenError, match=f"cannot listen for metrics on 127.0.0.1:{taken_port}"):
        server.start()
    assert server.grpc_port > 0, "gRPC had bound before the metrics port was tried"
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=1)
    # Stopped as a whole: the node lock and the journal are free for the next start.
    again = SwitchServer(settings.with_overrides(metrics_port=-1))
    again.start()
    again.stop()


def test_a_refused_start_frees_its_grpc_port_in_the_process_that_embeds_it(
    tmp_path: Path, taken_port: int
) -> None:
    """grpc.aio kept a bound, never started server's socket listening until the process ended: after
    a start refused for a taken metrics port, the gRPC port stayed taken in a test's or embedder's
    process, and a switch started there again on it was refused."""
    settings = Settings(
        data_dir=tmp_path, grpc_port=0, metrics_port=taken_port, console_port=-1, demo_data=False
    )
    server = SwitchServer(settings)
    with pytest.raises(CannotListenError, match="cannot listen for metrics"):
        server.start()
    assert server.grpc_port > 0, "gRPC had bound before the metrics port was tried"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.bind(("127.0.0.1", server.grpc_port))  # OSError (address in use) while grpc holds it
        again.listen()
    second = SwitchServer(settings.with_overrides(grpc_port=server.grpc_port, metrics_port=-1))
    second.start()
    try:
        assert second.grpc_port == server.grpc_port
        with grpc.insecure_channel(second.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        second.stop()


def test_a_second_switch_on_a_running_switchs_grpc_port_is_refused(tmp_path: Path) -> None:
    """grpc binds with SO_REUSEPORT unless told not to: a second switch (another data directory, a
    test's or a bench's server on the default port) shared 50051 with `make run`'s, and the kernel
    handed each new connection to either, so `txswitch admin` was refused the admin token and
    `txswitch balance` found no such card about every other call."""
    first = SwitchServer(
        Settings(data_dir=tmp_path / "first", grpc_port=0, metrics_port=-1, console_port=-1, demo_data=False)
    )
    first.start()
    try:
        second = SwitchServer(
            Settings(
                data_dir=tmp_path / "second",
                grpc_port=first.grpc_port,
                metrics_port=-1,
                console_port=-1,
                demo_data=False,
            )
        )
        try:
            with pytest.raises(
                CannotListenError, match=f"cannot listen for gRPC .* on 127.0.0.1:{first.grpc_port}"
            ):
                second.start()
        finally:
            if second.grpc_port > 0:  # it started, sharing the port: stop it too
                second.stop()
    finally:
        first.stop()


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_a_switch_on_an_ipv6_host_listens_and_names_its_address_in_brackets(
    tmp_path: Path, host: str
) -> None:
    """Session 25's walk: `TXSWITCH_GRPC_HOST=::1` was joined as ::1:<port>, which grpc reads as no
    address, so the switch could not start on an IPv6 host; one given in brackets already works too."""
    settings = Settings(data_dir=tmp_path, grpc_host=host, grpc_port=0, metrics_port=-1, demo_data=False)
    server = SwitchServer(settings)
    server.start()
    try:
        assert server.address == f"[::1]:{server.grpc_port}"
        with grpc.insecure_channel(server.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        server.stop()
