"""A response is matched to its request by STAN, terminal and response type: a late 0430 that
carries an authorisation's STAN is no answer to that authorisation (real gateway, real TCP host)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from switch.domain.response_codes import ResponseCode
from switch.store.saf import NewReversal, SafStore
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
