"""Metrics scraped over HTTP from a real switch during a simulated run agree with what terminals saw."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.server import SwitchServer
from terminal_sim.config import FaultShares, SimConfig
from terminal_sim.records import Exchange, Operation, Outcome
from terminal_sim.session import SwitchTarget, provision, run_and_audit
from tests.loopback_switch import switch_on_loopback

SCRAPE_TIMEOUT_S = 5.0
PROMTOOL_TIMEOUT_S = 60.0
RPC_OF = {
    Operation.balance: "Balance",
    Operation.redeem: "Redeem",
    Operation.load: "Load",
    Operation.refund: "Refund",
    Operation.cancel: "Cancel",
    Operation.reversal: "Reversal",
    Operation.status: "TransactionStatus",
    Operation.day_close: "DayClose",
}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        body: bytes = response.read()
    return body.decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def label_values(text: str) -> set[str]:
    return {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }


def expected_code(exchange: Exchange) -> str:
    """The code label the switch must have counted for what this terminal saw."""
    if exchange.outcome is Outcome.failed:
        return str(exchange.grpc_code).lower()
    if exchange.operation in (Operation.status, Operation.day_close) or not exchange.response_code:
        return "OK"
    return exchange.response_code


@pytest.fixture
def switch(tmp_path: Path) -> Iterator[SwitchServer]:
    with switch_on_loopback(tmp_path, metrics_port=0) as server:
        yield server


@pytest.mark.trio
async def test_counters_agree_with_the_simulator_and_labels_hold_no_card_data(switch: SwitchServer) -> None:
    url = switch.ops.metrics_url
    assert url is not None
    target = SwitchTarget(switch.address, switch.admin_token, switch.settings.effective_database_url)
    # No faults: every request the terminals send is answered, so counts must match exactly.
    config = SimConfig(
        terminals=4,
        duration_s=2.0,
        think_time_ms_mean=5.0,
        day_length_s=1.0,
        faults=FaultShares(),
        wrong_pin_share=0.2,
        seed=11,
        channels=2,
    )
    setup = await provision(target, config, card_count=20, start_minor=3_000)
    during: list[str] = []

    async def scrape_mid_run() -> None:
        await trio.sleep(1.5)  # activation plus some of the run
        during.append(await trio.to_thread.run_sync(scrape, url))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scrape_mid_run)
        outcome = await run_and_audit(target, config, setup, progress=None)
    after = await trio.to_thread.run_sync(scrape, url)

    assert outcome.audit is not None and outcome.audit.clean
    mid_total = sum(samples(during[0], "txswitch_requests_total").values())
    assert mid_total > 0

    exchanges = outcome.fleet.exchanges
    seen = collections.Counter((RPC_OF[e.operation], expected_code(e)) for e in exchanges)
    counted = {
        (dict(labels)["rpc"], dict(labels)["code"]): int(value)
        for labels, value in samples(after, "txswitch_requests_total").items()
        if dict(labels)["rpc"] in RPC_OF.values()
    }
    assert counted == dict(seen)
    approved = sum(n for (rpc, code), n in counted.items() if rpc == "Redeem" and code in ("00", "10"))
    assert approved == sum(1 for e in exchanges if e.operation is Operation.redeem and e.approved) > 0
    activations = samples(after, "txswitch_terminal_activations_total")
    assert activations == {(): float(config.terminals)}
    assert (
        samples(after, "txswitch_requests_total")[(("code", "OK"), ("rpc", "Activate"))] == config.terminals
    )
    latency_counts = samples(after, "txswitch_request_duration_seconds_count")
    assert latency_counts[(("rpc", "Redeem"),)] == sum(n for (rpc, _), n in seen.items() if rpc == "Redeem")
    assert set(samples(after, "txswitch_requests_in_flight").values()) == {0.0}

    core = switch.core
    started = samples(after, "txswitch_card_actors_started_total")[()]
    assert started == core.card_actors.statistics().started > 0
    batches = samples(after, "txswitch_journal_batch_entries_count")[()]
    entries = samples(after, "txswitch_journal_batch_entries_sum")[()]
    assert batches == core.writer.statistics().batches
    assert entries == core.writer.statistics().writes
    live = samples(after, "txswitch_actors_live")
    assert live[(("kind", "terminal"),)] == config.terminals
    assert live[(("kind", "card"),)] == core.card_actors.statistics().live
    assert samples(after, "txswitch_terminals_online")[()] == config.terminals
    # The serving switch watches its event loop: a 2 s run holds dozens of 50 ms probes.
    assert samples(after, "txswitch_event_loop_lag_seconds_count")[()] >= 10
    lockouts = samples(after, "txswitch_pin_lockouts_total")
    assert lockouts.get((("kind", "employee"),), 0.0) == core.employee_pins.lockouts

    # No card number, PIN, employee or merchant data in any label, nor anywhere in the text.
    login = setup.login
    secrets = {card.card_number for card in setup.cards} | {card.qr_payload for card in setup.cards}
    secrets |= {login.employee_pin, login.employee_number, login.merchant_email, login.password}
    assert not (label_values(after) & secrets)
    for card in setup.cards:
        assert card.card_number not in after and card.card_number not in during[0]

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("TXSWITCH_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool not found on PATH but TXSWITCH_REQUIRE_PROMTOOL=1")
        return
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=after.encode(),
        capture_output=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode(errors="replace")


def test_refused_requests_are_counted_by_their_status(switch: SwitchServer) -> None:
    """The interceptor reads the status an RPC ended with, on the event loop and on the pool."""
    url = switch.ops.metrics_url
    assert url is not None
    with grpc.insecure_channel(switch.address) as channel:
        terminal = pb_grpc.TerminalStub(channel)
        for _ in range(3):  # on the loop: no credential
            with pytest.raises(grpc.RpcError):
                terminal.Balance(pb.BalanceRequest(), timeout=10)
        with pytest.raises(grpc.RpcError):  # on the pool: a missing field
            terminal.Activate(pb.ActivateRequest(), timeout=10)
        with pytest.raises(grpc.RpcError):  # on the pool, backoffice: a wrong token
            bo_grpc.BackofficeStub(channel).ListTerminals(
                bo.ListTerminalsRequest(), metadata=(("authorization", "Bearer wrong"),), timeout=10
            )
        raw = channel.unary_unary("/txswitch.v1.Terminal/Redeem", None, None)
        with pytest.raises(grpc.RpcError):  # before any handler: not protobuf
            raw(b"\xff\xff\xff\xff", timeout=10)
    expected = {
        (("code", "unauthenticated"), ("rpc", "Balance")): 3,
        (("code", "invalid_argument"), ("rpc", "Activate")): 1,
        (("code", "invalid_argument"), ("rpc", "Redeem")): 1,
        (("code", "unauthenticated"), ("rpc", "ListTerminals")): 1,
    }
    # The status reaches the client before the server's handler has counted it: look again briefly.
    deadline_s = time.monotonic() + 5.0
    while True:
        counted = samples(scrape(url), "txswitch_requests_total")
        seen = {key: counted.get(key, 0.0) for key in expected}
        if seen == expected or time.monotonic() > deadline_s:
            break
        time.sleep(0.02)
    assert seen == expected
