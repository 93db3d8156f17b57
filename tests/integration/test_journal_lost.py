"""`txswitch serve` whose journal process dies exits at once; the write it held moved nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.cli import EXIT_JOURNAL_LOST
from switch.demo import DEMO_EMAIL, DEMO_LOCATION, DEMO_PASSWORD
from tests.serve import serve_process

EXIT_TIMEOUT_S = 20.0
RPC_TIMEOUT_S = 10.0

Metadata = tuple[tuple[str, str], ...]


@contextmanager
def serve(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`txswitch serve` with its demo data as a real process on an ephemeral port."""
    quiet = ["--grpc-port", "0", "--metrics-port", "-1", "--console-port", "-1"]
    args = ["--demo", "--data-dir", str(data_dir), *quiet]
    with serve_process(args, data_dir / "serve.log") as served:
        yield served


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def journal_pid(switch_pid: int) -> int:
    """The journal process: the child of the switch's forkserver."""
    grandchildren = [pid for child in children(switch_pid) for pid in children(child)]
    assert len(grandchildren) == 1, grandchildren
    return grandchildren[0]


def terminal(address: str, channel_stack: list[grpc.Channel]) -> tuple[pb_grpc.TerminalStub, Metadata]:
    channel = grpc.insecure_channel(address)
    channel_stack.append(channel)
    stub = pb_grpc.TerminalStub(channel)
    activation = stub.Activate(
        pb.ActivateRequest(
            merchant_email=DEMO_EMAIL, password=DEMO_PASSWORD, device_name="till-1", location=DEMO_LOCATION
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return stub, (("authorization", f"Bearer {activation.credential}"),)


def redeem(
    stub: pb_grpc.TerminalStub, metadata: Metadata, card_number: str, txn: str
) -> pb.TransactionResponse:
    request = pb.RedeemRequest(
        transaction_id=txn,
        card=pb.CardRef(card_number=card_number),
        amount=pb.Amount(amount_minor=100, currency="EUR"),
    )
    response: pb.TransactionResponse = stub.Redeem(request, metadata=metadata, timeout=RPC_TIMEOUT_S)
    return response


def balance_minor(stub: pb_grpc.TerminalStub, metadata: Metadata, card_number: str) -> int:
    request = pb.BalanceRequest(card=pb.CardRef(card_number=card_number))
    return int(stub.Balance(request, metadata=metadata, timeout=RPC_TIMEOUT_S).balance.amount_minor)


@pytest.mark.slow
def test_a_switch_whose_journal_process_dies_exits_and_the_write_in_doubt_moved_nothing(
    tmp_path: Path,
) -> None:
    channels: list[grpc.Channel] = []
    try:
        with serve(tmp_path) as (process, address):
            card = json.loads((tmp_path / "demo_cards.json").read_text())[0]["card_number"]
            stub, metadata = terminal(address, channels)
            start_minor = balance_minor(stub, metadata, card)
            assert redeem(stub, metadata, card, "before-loss").response_code == "00"
            os.kill(journal_pid(process.pid), signal.SIGKILL)
            with pytest.raises(grpc.RpcError):
                redeem(stub, metadata, card, "in-doubt")  # the switch exits with it unanswered
            assert process.wait(timeout=EXIT_TIMEOUT_S) == EXIT_JOURNAL_LOST
        assert "journal lost" in (tmp_path / "serve.out").read_text()
        with serve(tmp_path) as (_process, address):
            stub, metadata = terminal(address, channels)
            before, in_doubt = (
                stub.TransactionStatus(
                    pb.TransactionStatusRequest(transaction_id=txn), metadata=metadata, timeout=RPC_TIMEOUT_S
                )
                for txn in ("before-loss", "in-doubt")
            )
            assert (before.found, before.status) == (True, "approved")
            assert (in_doubt.found, in_doubt.status) == (False, "unknown")
            assert balance_minor(stub, metadata, card) == start_minor - 100
            assert redeem(stub, metadata, card, "after-restart").response_code == "00"
    finally:
        for channel in channels:
            channel.close()
