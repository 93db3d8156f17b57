"""Demo data only when asked for: an audit found `txswitch serve` gave an empty database the
well-known demo logins unless `--no-demo` was passed, so a production switch started without the
flag let anyone sign in as the demo merchant. Real `txswitch serve` processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from switch.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.serve import REPO_ROOT, serve_process

QUIET = ("--metrics-port", "-1", "--console-port", "-1", "--grpc-port", "0")
RPC_TIMEOUT_S = 20.0


def sign_in_demo(address: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        try:
            portal_grpc.PortalStub(channel).SignIn(
                portal.SignInRequest(email=DEMO_EMAIL, password=DEMO_PASSWORD), timeout=RPC_TIMEOUT_S
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("flags", "demo"),
    [
        ((), False),  # the default: a production start gets no well-known login
        (("--no-demo",), False),  # the flag of before still starts, and means what it meant
        (("--demo",), True),  # what `make run` passes
    ],
)
def test_serve_makes_demo_data_only_with_demo(tmp_path: Path, flags: tuple[str, ...], demo: bool) -> None:
    args = ["--data-dir", str(tmp_path), *QUIET, *flags]
    with serve_process(args, tmp_path / "serve.log") as (_process, address):
        code = sign_in_demo(address)
    printed = (tmp_path / "serve.out").read_text()
    assert code is (grpc.StatusCode.OK if demo else grpc.StatusCode.UNAUTHENTICATED)
    assert ("demo merchant:" in printed) is demo
    assert (tmp_path / "demo_cards.json").exists() is demo


def test_demo_and_no_demo_together_are_refused() -> None:
    command = [sys.executable, "-m", "switch.cli", "serve", "--demo", "--no-demo"]
    refused = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "not allowed with argument" in refused.stderr


def test_make_run_starts_the_switch_with_demo_data() -> None:
    # The README promises `make run` prints the demo logins; -n prints what it would run.
    dry = subprocess.run(
        ["make", "-n", "run", "DATA_DIR=somewhere"],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "txswitch serve --data-dir somewhere --demo" in dry.stdout
