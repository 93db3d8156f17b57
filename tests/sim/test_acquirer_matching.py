"""A response is matched to its request by STAN, terminal and response type: a late 0430 that
carries an authorisation's STAN is no answer to that authorisation, and a 0430 come while an advice
waits under its STAN is its answer only if every field it echoes agrees (real gateway, real TCP host)."""

from __future__ import annotations

import datetime as dt
import logging
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import MetricsServer, SwitchMetrics
from ops.runtime import AcquirerFeed
from switch.domain.response_codes import ResponseCode
from switch.store.saf import STATUS_ACKNOWLEDGED, NewReversal, SafStore
from terminal_sim.acquirer_host import AcquirerHostConfig
from tests.sim.test_acquirer_gateway import (
    FAST_LIMITS,
    authorize,
    gateway_config,
    request,
    running_host,
    sqlite_engine,
    start_gateway,
)
from tests.sim.test_acquirer_late_0430 import ADVICE_STAN, Clock, started, timed_out_under_advice_stan


@pytest.mark.trio
async def test_a_late_0430_with_an_authorisations_stan_does_not_answer_it(tmp_path: Path) -> None:
    # A stored reversal keeps its STAN while it is repeated; the STAN counter starts anywhere and
    # wraps after 999999, so a new authorisation on the terminal can get that STAN.
    limits = replace(FAST_LIMITS, saf_retry_interval_ms=60_000, saf_response_timeout_ms=150)
    async with running_host(AcquirerHostConfig(latency_ms=600)) as host:
        assert host.port is not None
        host.drop_next_responses(1)
        gateway = await start_gateway(gateway_config({"acq-a": host.port}, limits), sqlite_engine(tmp_path))
        try:
            first = await authorize(gateway, request(1_000, transaction_id="t-1"), 100)
            assert first.response_code is ResponseCode.acquirer_timeout
            (pending,) = await trio.to_thread.run_sync(gateway.saf_pending)
            await trio.sleep(0.25)  # the 0420 went out; the SAF pass gave up on it after 150 ms
            gateway._stan = int(pending.reversal_stan) - 1  # the counter reaches the reversal's STAN
            # Cents 51: the host declines. Its 0210 comes 600 ms after the 0200, the 0430 before it.
            second = await authorize(gateway, request(1_051, transaction_id="t-2"), 2_000)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    assert second.stan == pending.reversal_stan
    assert second.response_code is ResponseCode.exceeds_balance, second


@pytest.mark.trio
async def test_a_timeouts_reversal_whose_stan_another_nodes_advice_holds_goes_under_the_next(
    tmp_path: Path,
) -> None:
    # Another node's advice on the terminal holds STAN 500002 (nodes count their STANs apart). This
    # gateway's counter reaches it for the reversal of its own timed-out authorisation: before, both
    # advices were stored under one name; now the reversal is stored, and sent, under the next STAN.
    engine = sqlite_engine(tmp_path)
    saf = SafStore(engine)
    saf.create_table()
    elsewhere = NewReversal(
        "acq-a", "TERM0001", "MERCHANT0000001", "t-other", "0200", "000777", "1121120000", "500002",
        "000000", 500, "978", "timeout",
    )  # fmt: skip
    assert await trio.to_thread.run_sync(saf.enqueue, elsewhere, dt.datetime.now(dt.UTC))
    async with running_host() as host:
        assert host.port is not None
        host.drop_next_responses(1)
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), engine)
        try:
            gateway._stan = 500_000  # the authorisation takes 500001, its reversal 500002
            outcome = await authorize(gateway, request(1_000, transaction_id="t-1"), 100)
            entries = await trio.to_thread.run_sync(saf.all_entries)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    assert (outcome.response_code, outcome.stan, outcome.reversal_queued) == (
        ResponseCode.acquirer_timeout,
        "500001",
        True,
    )
    ours = [entry for entry in entries if entry.transaction_id == "t-1"]
    assert [entry.reversal_stan for entry in ours] == ["500003"]


# A 0430 come while the advice waits under its STAN (and field 41): the fields the host changes in
# it, and the field named as disagreeing (None: it is the advice's answer). The advice is of 10.00.
IN_TIME_CASES: list[tuple[str, dict[str, str | None], str | None]] = [
    ("every field echoed", {}, None),
    ("only fields 11 and 41 echoed", {"4": None, "37": None, "90": None}, None),
    ("another amount, no field 90", {"4": "000000000999", "90": None}, "4"),
    ("another field 37, no field 90", {"37": "000000000999", "90": None}, "37"),
    ("another amount, field 90 echoed", {"4": "000000000999"}, "4"),
    ("another field 37, field 90 echoed", {"37": "000000000999"}, "37"),
]


@pytest.mark.trio
@pytest.mark.parametrize(("case", "changed", "field"), IN_TIME_CASES, ids=[row[0] for row in IN_TIME_CASES])
async def test_a_0430_in_time_answers_the_waiting_advice_only_if_its_fields_agree(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    changed: dict[str, str | None],
    field: str | None,
) -> None:
    # Before, any 0430 without field 90 under the advice's STAN was taken as its answer.
    async with running_host() as host:
        gateway = await started(host, tmp_path, Clock())
        try:
            host.change_next_reversal_answer(changed)  # the 0430 of its 0420 only
            with caplog.at_level(logging.INFO, logger="actors.acquirer_gateway"):
                await timed_out_under_advice_stan(gateway, host, "t-1", gave_up_s=0)
                await trio.to_thread.run_sync(
                    gateway.retry_saf
                )  # after the pass under way; a 0421 if pending
            refused = (await trio.to_thread.run_sync(gateway.statistics)).reversal_answers_refused
            (entry,) = await trio.to_thread.run_sync(gateway._saf.all_entries)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    (advice,) = host.record().reversals
    assert advice.mtis == (("0420",) if field is None else ("0420", "0421"))
    assert (entry.status, refused) == (STATUS_ACKNOWLEDGED, 0 if field is None else 1)
    refusal = f"0430 STAN {ADVICE_STAN} names another advice; not its acknowledgement (field {field} differs)"
    assert (refusal in caplog.text) is (field is not None)


REFUSED_METRIC = "txswitch_acquirer_reversal_answers_refused_total"


def scraped_refusals(url: str) -> float:
    """The refused-0430 counter as Prometheus reads it from the real /metrics endpoint."""
    with urllib.request.urlopen(url, timeout=5.0) as response:
        body = response.read().decode()
    samples = [sample for family in text_string_to_metric_families(body) for sample in family.samples]
    (value,) = [sample.value for sample in samples if sample.name == REFUSED_METRIC]
    return value


@pytest.mark.trio
async def test_a_refused_0430_is_counted_once_on_the_metrics_endpoint(tmp_path: Path) -> None:
    # Before, GatewayStatistics counted refused 0430s but no metric exported them.
    metrics = SwitchMetrics()
    server = MetricsServer(metrics, port=0)
    url = f"http://127.0.0.1:{server.start()}/metrics"
    try:
        async with running_host() as host:
            gateway = await started(host, tmp_path, Clock())
            metrics.add_refresh(AcquirerFeed(gateway, metrics))
            try:
                before = await trio.to_thread.run_sync(scraped_refusals, url)
                host.change_next_reversal_answer({"4": "000000000999"})  # its 0430 names another amount
                await timed_out_under_advice_stan(gateway, host, "t-1", gave_up_s=0)
                await trio.to_thread.run_sync(gateway.retry_saf)  # the 0421 is taken: nothing more refused
                first = await trio.to_thread.run_sync(scraped_refusals, url)
                second = await trio.to_thread.run_sync(scraped_refusals, url)
            finally:
                await trio.to_thread.run_sync(gateway.stop)
    finally:
        server.stop()
    assert (before, first, second) == (0, 1, 1)


QUEUED_METRIC = "txswitch_acquirer_reversals_queued_total"
ACKNOWLEDGED_METRIC = "txswitch_acquirer_reversals_acknowledged_total"


def scraped(url: str, names: tuple[str, ...]) -> tuple[float, ...]:
    """The named unlabelled counters as Prometheus reads them from the real /metrics endpoint."""
    with urllib.request.urlopen(url, timeout=5.0) as response:
        body = response.read().decode()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    return tuple(values[name] for name in names)


async def scraped_once_settled(
    url: str, names: tuple[str, ...], wanted: tuple[float, ...]
) -> tuple[float, ...]:
    """A scrape once it shows wanted (the SAF pass takes the 0430 on its own time), or after 5 s."""
    deadline = trio.current_time() + 5.0
    while (values := await trio.to_thread.run_sync(scraped, url, names)) != wanted:
        if trio.current_time() > deadline:
            return values
        await trio.sleep(0.05)
    return values


@pytest.mark.trio
async def test_a_reversal_queued_then_acknowledged_is_counted_once_each_on_the_metrics_endpoint(
    tmp_path: Path,
) -> None:
    # Before, GatewayStatistics counted queued and acknowledged reversals but no metric exported them.
    names = (QUEUED_METRIC, ACKNOWLEDGED_METRIC)
    metrics = SwitchMetrics()
    server = MetricsServer(metrics, port=0)
    url = f"http://127.0.0.1:{server.start()}/metrics"
    try:
        async with running_host() as host:
            gateway = await started(host, tmp_path, Clock())
            metrics.add_refresh(AcquirerFeed(gateway, metrics))
            try:
                before = await trio.to_thread.run_sync(scraped, url, names)
                await timed_out_under_advice_stan(gateway, host, "t-1", gave_up_s=0)  # its 0430 agrees
                first = await scraped_once_settled(url, names, (1, 1))
                second = await trio.to_thread.run_sync(scraped, url, names)
                pending = await trio.to_thread.run_sync(gateway.saf_pending)
            finally:
                await trio.to_thread.run_sync(gateway.stop)
    finally:
        server.stop()
    assert (before, first, second, pending) == ((0, 0), (1, 1), (1, 1), ())
