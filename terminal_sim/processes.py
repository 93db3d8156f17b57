"""Child processes the simulator drives: the echo server and the switch, each on a free port."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def quiet_garbage_collector() -> None:
    """The simulator measures latency: its own collector pauses must not land in the figures."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 10)


@dataclass
class ChildServer:
    """A server in a child process; `address` is host:port for grpc."""

    process: subprocess.Popen[bytes]
    address: str
    metrics_url: str = ""  # a switch's /metrics, on a port of its own

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        return self.process.returncode


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll until something accepts on host:port; fail fast when the child died."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout_s} s")


HERE = Path(__file__).resolve().parent.parent  # the tree this simulator runs from


def _child_env(root: Path = HERE) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_echo_server(host: str = "127.0.0.1") -> ChildServer:
    port = free_port(host)
    command = [sys.executable, "-m", "terminal_sim.echo_server", "--host", host, "--port", str(port)]
    process = subprocess.Popen(command, env=_child_env(), stdout=subprocess.DEVNULL)
    wait_for_port(host, port, process, STARTUP_TIMEOUT_S)
    return ChildServer(process, f"{host}:{port}")


def start_switch(
    data_dir: Path, host: str = "127.0.0.1", log_path: Path | None = None, root: Path = HERE
) -> ChildServer:
    """`txswitch serve` from the tree at `root` on a free port; its output goes to log_path (or is dropped).

    The child runs in `root`: `python -m` puts its working directory ahead of PYTHONPATH, and runs
    `switch.cli` as the txswitch program (grpc core's own log quiet, as `txswitch` has it). Its
    metrics are on a free port too, and its console off: a switch from `make run`, or another
    test's, may hold the defaults, and a switch that cannot listen where told does not start.
    """
    port = free_port(host)
    metrics_port = free_port(host)
    command = [
        sys.executable,
        "-m",
        "switch.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--grpc-port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--console-port",
        "-1",
    ]
    sink = log_path.open("wb") if log_path is not None else subprocess.DEVNULL
    process = subprocess.Popen(command, env=_child_env(root), cwd=root, stdout=sink, stderr=subprocess.STDOUT)
    wait_for_port(host, port, process, STARTUP_TIMEOUT_S)
    return ChildServer(process, f"{host}:{port}", f"http://{host}:{metrics_port}/metrics")
