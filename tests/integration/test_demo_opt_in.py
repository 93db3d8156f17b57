"""Demo data only when asked for: an audit found `txswitch serve` gave an empty database the
well-known demo logins unless `--no-demo` was passed, so a production switch started without the
flag let anyone sign in as the demo merchant. Real `txswitch serve` processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from switch.demo import (
    DEMO_CASHIER_NUMBER,
    DEMO_CASHIER_PASSWORD,
    DEMO_EMAIL,
    DEMO_EMPLOYEE_NUMBER,
    DEMO_EMPLOYEE_PIN,
    DEMO_LOCATION,
    DEMO_PASSWORD,
)
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
        # The demo lines follow the listening line (after a password check): read them before the
        # process is killed, or a kill landing first reads as "no demo lines".
        printed = printed_up_to(tmp_path / "serve.out", "demo portal user" if demo else "data in ")
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


def banner(out_path: Path) -> str:
    """What the process printed, once it printed the demo lines (they follow the listening line)."""
    return printed_up_to(out_path, "demo portal user")


def printed_up_to(out_path: Path, marker: str) -> str:
    """What the process printed, once `marker` is among it."""
    deadline_s = time.monotonic() + RPC_TIMEOUT_S
    while marker not in out_path.read_text():
        assert time.monotonic() < deadline_s, out_path.read_text()
        time.sleep(0.05)
    return out_path.read_text()


def change_the_demo_data(address: str, admin_token: str, merchant_id: str) -> None:
    """What an operator may do after the first start: rename the location (approved), change the
    merchant's password, the manager's PIN and the cashier's password."""
    admin = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(address) as channel:
        backoffice = bo_grpc.BackofficeStub(channel)
        listed = backoffice.ListLocations(
            bo.ListLocationsRequest(merchant_id=merchant_id), metadata=admin, timeout=RPC_TIMEOUT_S
        )
        (location,) = listed.locations
        asked = backoffice.AskLocationChange(
            bo.AskLocationChangeRequest(
                merchant_id=merchant_id, location_id=location.location_id, name="Market Square"
            ),
            metadata=admin,
            timeout=RPC_TIMEOUT_S,
        )
        backoffice.DecideLocationChange(
            bo.DecideLocationChangeRequest(change_id=asked.change_id, approve=True),
            metadata=admin,
            timeout=RPC_TIMEOUT_S,
        )
        for change in (
            bo.UpdateEmployeeRequest(
                merchant_id=merchant_id, employee_number=DEMO_EMPLOYEE_NUMBER, pin="9876"
            ),
            bo.UpdateEmployeeRequest(
                merchant_id=merchant_id, employee_number=DEMO_CASHIER_NUMBER, password="till-2-secret"
            ),
        ):
            backoffice.UpdateEmployee(change, metadata=admin, timeout=RPC_TIMEOUT_S)
        portals = portal_grpc.PortalStub(channel)
        session = portals.SignIn(
            portal.SignInRequest(email=DEMO_EMAIL, password=DEMO_PASSWORD), timeout=RPC_TIMEOUT_S
        )
        portals.ChangePassword(
            portal.ChangePasswordRequest(current_password=DEMO_PASSWORD, new_password="bakery-2-secret"),
            metadata=(("authorization", f"Bearer {session.token}"),),
            timeout=RPC_TIMEOUT_S,
        )


def test_the_demo_banner_prints_the_location_and_logins_as_they_are_now(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), *QUIET, "--demo"]
    with serve_process(args, tmp_path / "serve.log") as (process, address):
        first = banner(tmp_path / "serve.out")
        merchant_id = re.search(r"merchant_id (\S+)\)", first)
        assert merchant_id is not None, first
        change_the_demo_data(address, (tmp_path / "admin.token").read_text().strip(), merchant_id[1])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=RPC_TIMEOUT_S) == 0
    assert f"{DEMO_EMAIL} / {DEMO_PASSWORD} " in first and f"at {DEMO_LOCATION};" in first
    assert f"manager PIN {DEMO_EMPLOYEE_PIN}," in first
    assert f"cashier@txswitch.example / {DEMO_CASHIER_PASSWORD}" in first
    with serve_process(args, tmp_path / "serve.log"):
        again = banner(tmp_path / "serve.out")
    assert DEMO_LOCATION not in again and "at Market Square;" in again
    assert DEMO_PASSWORD not in again and f"{DEMO_EMAIL} / password changed since the first start" in again
    assert f"manager PIN {DEMO_EMPLOYEE_PIN}" not in again
    assert f"{DEMO_EMPLOYEE_NUMBER} manager (PIN changed since the first start)" in again
    # The cashier's login changed: its password is not checked (one password check at start is enough).
    assert f"{DEMO_CASHIER_PASSWORD} as set at the first start, if unchanged" in again
