"""A switch killed (SIGKILL) while an authorisation is in flight reverses it after its restart."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from switch.admin import Admin
from switch.store.engine import create_schema, make_engine
from switch.store.payments import STAGE_PENDING, STAGE_RECOVERED, card_payments
from switch.store.repository import Store
from switch.store.saf import SafStore
from terminal_sim.acquirer_host import AcquirerHostConfig, HostThread, OriginalKey
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, new_txn
from tests.integration.payment_harness import (
    MASTER_KEY_HEX,
    acquirers_file,
    activate,
    wait_until,
)
from tests.pg import postgres_schema
from tests.serve import serve_process

CARD_HASH_KEY_HEX = "22" * 32
# Long enough that the kill surely lands while the host still sits on the authorisation.
HOST_LATENCY_MS = 30_000
RESPONSE_TIMEOUT_MS_CRASH = 60_000


def switch_environment(settings_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TXSWITCH_ACQUIRERS_FILE": str(settings_file),
        "TXSWITCH_MASTER_KEY_HEX": MASTER_KEY_HEX,
        "TXSWITCH_CARD_HASH_KEY_HEX": CARD_HASH_KEY_HEX,
    }


@contextmanager
def serve(
    data_dir: Path, database_url: str, settings_file: Path, log_path: Path, metrics: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`txswitch serve` as a real process on an ephemeral port; yields it and its gRPC address.
    With metrics, /metrics on an ephemeral port too (`recoveries_counted` reads it)."""
    args = ["--data-dir", str(data_dir), "--database-url", database_url]
    args += ["--grpc-port", "0", "--metrics-port", "0" if metrics else "-1", "--console-port", "-1"]
    with serve_process(args, log_path, switch_environment(settings_file)) as served:
        yield served


RECOVERIES = "txswitch_payment_recoveries_total"
NONE_RECOVERED = {
    (node, outcome): 0.0 for node in ("own", "other") for outcome in ("reversed", "answered_meanwhile")
}


def recoveries_counted(log_path: Path) -> dict[tuple[str, str], float]:
    """txswitch_payment_recoveries_total by (node, outcome), scraped from the switch `serve` started
    with metrics and log_path (its standard output names the metrics URL)."""
    url = log_path.with_suffix(".out").read_text().split("metrics: ", 1)[1].split()[0]
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.labels["node"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == RECOVERIES
    }


def prepare(
    data_dir: Path,
    database_url: str,
    host_port: int,
    response_timeout_ms: int = RESPONSE_TIMEOUT_MS_CRASH,
    other_node_grace_ms: int = 30_000,
) -> Path:
    """A database with a merchant, and an acquirers file whose response timeout outlasts the kill."""
    data_dir.mkdir()
    engine = make_engine(database_url)
    create_schema(engine)
    admin = Admin(Store(engine), bytes.fromhex(CARD_HASH_KEY_HEX))
    admin.add_location(admin.create_merchant("Shop", MERCHANT_EMAIL, MERCHANT_PASSWORD), "Shop")
    engine.dispose()
    return acquirers_file(
        data_dir.parent / "acquirers.toml",
        host_port,
        response_timeout_ms=response_timeout_ms,
        other_node_grace_ms=other_node_grace_ms,
    )


def payment_stages(database_url: str, txn: str) -> list[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            query = select(card_payments.c.stage).where(card_payments.c.transaction_id == txn)
            return list(conn.execute(query).scalars())
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'txswitch.sqlite'}"
        return
    with postgres_schema() as url:
        yield url


def test_a_payment_in_flight_when_the_switch_is_killed_is_reversed_and_never_authorised_again(
    tmp_path: Path, database_url: str
) -> None:
    data_dir, log_path = tmp_path / "data", tmp_path / "switch.log"
    with HostThread(AcquirerHostConfig(latency_ms=HOST_LATENCY_MS)) as host:
        assert host.host.port is not None
        settings_file = prepare(data_dir, database_url, host.host.port)
        txn = new_txn()
        with serve(data_dir, database_url, settings_file, log_path) as (process, address):
            channel = grpc.insecure_channel(address)
            terminal = activate(channel, "A77-crash")
            request = terminal.request(1_000, txn=txn)
            in_flight = terminal.stub.Pay.future(request, metadata=terminal.metadata, timeout=20)
            wait_until(lambda: len(host.record().authorizations) == 1)
            # The row was durable before the 0100 left: the host has it, the switch has no answer yet.
            assert payment_stages(database_url, txn) == [STAGE_PENDING]
            assert not in_flight.done()
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            assert in_flight.exception() is not None  # the terminal never got an answer
            channel.close()
        (authorization,) = host.record().authorizations
        assert authorization.response_code == "00"  # the acquirer approved it: money held at the card
        key: OriginalKey = authorization.key

        def fast() -> None:
            host.host.config.latency_ms = 0

        host.call(fast)
        with serve(data_dir, database_url, settings_file, log_path, metrics=True) as (_, address):
            # Its predecessor's (the same node.id) payment, recovered by the start, once.
            assert recoveries_counted(log_path) == {**NONE_RECOVERED, ("own", "reversed"): 1.0}
            channel = grpc.insecure_channel(address)
            terminal.stub = type(terminal.stub)(channel)
            wait_until(lambda: key in host.record().reversed_keys(), timeout_s=10)
            (reversal,) = host.record().reversals
            assert reversal.matched_original and reversal.mtis[0] in ("0420", "0421")
            engine = make_engine(database_url)
            wait_until(lambda: not SafStore(engine).pending(), timeout_s=10)
            engine.dispose()
            assert payment_stages(database_url, txn) == [STAGE_RECOVERED]

            status = terminal.status(txn)
            assert status.found and status.status == "declined"
            assert status.transaction.response_code == "68"
            replay = terminal.send(request)
            assert (replay.response_code, replay.status) == ("68", "declined")
            assert replay == status.transaction
            assert len(host.record().authorizations) == 1  # the replay was not authorised again
            assert host.record().approved_not_reversed() == frozenset()
            channel.close()


def test_a_payment_left_in_flight_by_a_killed_node_is_reversed_by_a_node_that_runs(tmp_path: Path) -> None:
    """Several nodes on PostgreSQL: a start leaves other nodes' young payments alone, so it is the
    live node's sweep that reverses what a node that died left behind, without that node's restart."""
    with (
        postgres_schema() as database_url,
        HostThread(AcquirerHostConfig(latency_ms=HOST_LATENCY_MS)) as host,
    ):
        assert host.host.port is not None
        data_a, data_b = tmp_path / "data", tmp_path / "node-b"
        settings_a = prepare(data_a, database_url, host.host.port)
        data_b.mkdir()
        settings_b = acquirers_file(
            tmp_path / "acquirers-b.toml", host.host.port, response_timeout_ms=4_000, other_node_grace_ms=0
        )
        txn = new_txn()
        with serve(data_a, database_url, settings_a, tmp_path / "a.log") as (process, address):
            channel = grpc.insecure_channel(address)
            terminal = activate(channel, "A77-crash")
            in_flight = terminal.stub.Pay.future(terminal.request(1_000, txn=txn), metadata=terminal.metadata)
            wait_until(lambda: len(host.record().authorizations) == 1)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            assert in_flight.exception() is not None
            channel.close()
        (authorization,) = host.record().authorizations
        with serve(data_b, database_url, settings_b, tmp_path / "b.log", metrics=True) as (_, address):
            wait_until(lambda: authorization.key in host.record().reversed_keys(), timeout_s=20)
            assert payment_stages(database_url, txn) == [STAGE_RECOVERED]
            # By node B's sweep (or its start), a moment after its commit queued the reversal.
            wait_until(lambda: recoveries_counted(tmp_path / "b.log") != NONE_RECOVERED)
            assert recoveries_counted(tmp_path / "b.log") == {**NONE_RECOVERED, ("other", "reversed"): 1.0}
            channel = grpc.insecure_channel(address)
            terminal.stub = type(terminal.stub)(channel)
            status = terminal.status(txn)
            assert status.found and status.transaction.response_code == "68"
            channel.close()
        assert host.record().approved_not_reversed() == frozenset()
