"""The secrets of the data directory: made whole on first start, never taken empty. An audit found an
empty admin.token (what a crash while it was written could leave) opened the backoffice to calls
with no token at all. Real `txswitch serve` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from switch.secret_files import secret_file
from tests.serve import REPO_ROOT, serve_process

QUIET = ("--metrics-port", "-1", "--console-port", "-1", "--grpc-port", "0")


@pytest.mark.parametrize("name", ["admin.token", "card_hash.key", "master.key"])
def test_an_empty_secret_file_is_refused_by_name(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("\n")
    command = [sys.executable, "-m", "switch.cli", "serve", "--data-dir", str(tmp_path), *QUIET]
    refused = subprocess.run(
        command, check=False, cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"{tmp_path / name} is empty" in refused.stderr


def test_the_backoffice_refuses_a_call_without_a_token(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), *QUIET]
    with (
        serve_process(args, tmp_path / "serve.log") as (_process, address),
        grpc.insecure_channel(address) as channel,
    ):
        with pytest.raises(grpc.RpcError) as refused:
            bo_grpc.BackofficeStub(channel).CheckLedger(bo.CheckLedgerRequest(), timeout=15)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    token = (tmp_path / "admin.token").read_text()
    assert token.strip() and (tmp_path / "admin.token").stat().st_mode & 0o777 == 0o600


def test_a_secret_is_made_once_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "some.key"
    assert secret_file(path, "first") == "first"
    assert secret_file(path, "second") == "first"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["some.key"]  # no temporary file left
