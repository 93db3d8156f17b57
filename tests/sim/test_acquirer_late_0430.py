"""A 0430 acknowledges only the reversal advice it answers, named by field 37 or field 90 and not by
the STAN alone: an advice gives its STAN back 24 h after its acknowledgement
(`REVERSAL_STAN_HOLD_AFTER_ACK`), and a 0430 of it arriving later must not acknowledge the new advice
under that STAN. One echoing neither acknowledges the advice under its STAN only while that advice
alone holds it, sent less than a hold ago (real gateway, real acquirer host simulator over TCP)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from actors.acquirer_gateway import AcquirerGateway
from actors.acquirer_types import GatewayLimits
from switch.domain.response_codes import ResponseCode
from switch.store.saf import REVERSAL_STAN_HOLD_AFTER_ACK, STATUS_ACKNOWLEDGED, STATUS_PENDING
from terminal_sim.acquirer_host import AcquirerHost, AcquirerHostConfig, OriginalKey
from tests.sim.test_acquirer_gateway import (
    FAST_LIMITS,
    SECURITY,
    authorize,
    gateway_config,
    request,
    running_host,
    sqlite_engine,
    wait_until,
)

# An acquirer that echoes neither field 90 nor 37 in its 0430s: a late one names its advice by its
# STAN only (and field 4).
NO_FIELD90 = AcquirerHostConfig(reversal_answers_echo_field90=False, reversal_answers_echo_field37=False)
# One that echoes the advice's own reference (field 37) but not the original (field 90).
FIELD37_ONLY = AcquirerHostConfig(reversal_answers_echo_field90=False)
# Passes only when a reversal is stored or retry_saf() asks: the test says when an advice goes out.
LIMITS = replace(FAST_LIMITS, saf_retry_interval_ms=60_000, saf_response_timeout_ms=150)
STAN_BEFORE = 500_000  # each authorisation takes 500001, its reversal 500002
ADVICE_STAN = "500002"


class Clock:
    """The gateway's clock, moved by the test: a day passes between two advices."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def started(
    host: AcquirerHost, tmp_path: Path, clock: Clock, limits: GatewayLimits = LIMITS
) -> AcquirerGateway:
    assert host.port is not None
    engine = sqlite_engine(tmp_path)
    gateway = AcquirerGateway(gateway_config({"acq-a": host.port}, limits), engine, SECURITY, clock)
    await trio.to_thread.run_sync(gateway.start)
    assert await trio.to_thread.run_sync(gateway.wait_signed_on, 1_000)
    return gateway


async def timed_out_under_advice_stan(
    gateway: AcquirerGateway,
    host: AcquirerHost,
    transaction_id: str,
    gave_up_s: float = 0.3,
    amount_minor: int = 1_000,
) -> None:
    """An authorisation the host leaves unanswered; its reversal advice goes out under ADVICE_STAN,
    and gave_up_s later the SAF pass no longer waits for its 0430 (unless gave_up_s is 0)."""
    reversals_before = len(host.record().reversals)
    host.drop_next_responses(1)
    gateway._stan = STAN_BEFORE
    outcome = await authorize(gateway, request(amount_minor, transaction_id=transaction_id), 100)
    assert (outcome.response_code, outcome.reversal_queued) == (ResponseCode.acquirer_timeout, True)
    await wait_until(lambda: len(host.record().reversals) == reversals_before + 1)
    await trio.sleep(gave_up_s)


@pytest.mark.trio
async def test_a_0430_a_day_late_does_not_acknowledge_the_new_advice_under_its_stan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    async with running_host() as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.hold_next_reversal_answers(1)  # the 0430 of the first 0420 comes a day late
            await timed_out_under_advice_stan(gateway, host, "t-1")
            clock.now += dt.timedelta(seconds=1)  # its 0421's field 7, and the 0430 echoing it, differ
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its 0421 is acknowledged
            clock.now += REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(hours=1)
            host.ignore_next_reversals(1)  # the new advice is not acknowledged yet
            await timed_out_under_advice_stan(gateway, host, "t-2")
            with caplog.at_level(logging.INFO, logger="actors.acquirer_gateway"):
                assert await host.send_held_reversal_answers(1) == 1
                # The link reads in order: once the echo is answered, the late 0430 has been handled.
                assert await trio.to_thread.run_sync(gateway.echo, "acq-a") is ResponseCode.approved
            entries = {
                entry.transaction_id: entry
                for entry in await trio.to_thread.run_sync(gateway._saf.all_entries)
            }
            assert entries["t-2"].reversal_stan == ADVICE_STAN
            assert (entries["t-1"].status, entries["t-2"].status) == (STATUS_ACKNOWLEDGED, STATUS_PENDING)
            assert f"late 0430 STAN {ADVICE_STAN} answers no pending advice; ignored" in caplog.text
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its own 0430 acknowledges it
        finally:
            await trio.to_thread.run_sync(gateway.stop)


@pytest.mark.trio
async def test_a_0430_a_day_late_is_no_answer_to_the_new_advice_waiting_under_its_stan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The day-late 0430 comes while the new advice waits for its own: its waiter took it.
    clock = Clock()
    waiting = replace(LIMITS, saf_response_timeout_ms=1_000)
    async with running_host() as host:
        gateway = await started(host, tmp_path, clock, waiting)
        try:
            host.hold_next_reversal_answers(1)  # the 0430 of the first 0420 comes a day late
            await timed_out_under_advice_stan(gateway, host, "t-1", gave_up_s=1.2)
            clock.now += dt.timedelta(seconds=1)  # its 0421's field 7, and the 0430 echoing it, differ
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its 0421 is acknowledged
            clock.now += REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(hours=1)
            host.hold_next_reversal_answers(1)  # the new advice's own 0430 does not come
            await timed_out_under_advice_stan(gateway, host, "t-2", gave_up_s=0)
            with caplog.at_level(logging.INFO, logger="actors.acquirer_gateway"):
                assert await host.send_held_reversal_answers(1) == 1  # the first advice's, to the waiter
                # The pass under way ends first; the new advice, still pending, goes out again.
                assert await trio.to_thread.run_sync(gateway.retry_saf) == 1
            entries = await trio.to_thread.run_sync(gateway._saf.all_entries)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    new_original = next(entry for entry in entries if entry.transaction_id == "t-2")
    assert new_original.reversal_stan == ADVICE_STAN
    (sent_twice,) = [
        reversal
        for reversal in host.record().reversals
        if reversal.key.transmission_datetime == new_original.original_transmission
    ]
    assert sent_twice.mtis == ("0420", "0421")
    assert f"0430 STAN {ADVICE_STAN} names another advice; not its acknowledgement" in caplog.text


async def late_0430_handled(gateway: AcquirerGateway, host: AcquirerHost) -> None:
    """Send the 0430 held back; the link reads in order, so once the echo is answered it was handled."""
    assert await host.send_held_reversal_answers(1) == 1
    assert await trio.to_thread.run_sync(gateway.echo, "acq-a") is ResponseCode.approved


@pytest.mark.trio
async def test_a_late_0430_without_field_90_acknowledges_the_advice_holding_its_stan(tmp_path: Path) -> None:
    # Sent under its STAN moments ago, and no other advice holds it: the 0430 can only be its own.
    # Ignored, the advice went out as 0421 again and again, each answered after the wait as well.
    clock = Clock()
    async with running_host(NO_FIELD90) as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.hold_next_reversal_answers(1)  # its 0430 comes after the SAF pass stopped waiting
            await timed_out_under_advice_stan(gateway, host, "t-1")
            clock.now += dt.timedelta(minutes=5)
            await late_0430_handled(gateway, host)
            (entry,) = await trio.to_thread.run_sync(gateway._saf.all_entries)
            assert (entry.reversal_stan, entry.status) == (ADVICE_STAN, STATUS_ACKNOWLEDGED)
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 0  # nothing goes out again
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    (advice,) = host.record().reversals
    assert advice.mtis == ("0420",)


@pytest.mark.trio
async def test_a_0430_without_field_90_later_than_the_hold_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The advice last went out more than a hold ago: the 0430 may be an older advice's, which gave
    # the STAN back, so it acknowledges nothing and the advice goes out again.
    clock = Clock()
    async with running_host(NO_FIELD90) as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.hold_next_reversal_answers(1)
            await timed_out_under_advice_stan(gateway, host, "t-1")
            clock.now += REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(seconds=1)
            with caplog.at_level(logging.INFO, logger="actors.acquirer_gateway"):
                await late_0430_handled(gateway, host)
            (entry,) = await trio.to_thread.run_sync(gateway._saf.all_entries)
            assert entry.status == STATUS_PENDING
            assert f"late 0430 STAN {ADVICE_STAN} without field 90 ignored" in caplog.text
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its 0421, answered in time
        finally:
            await trio.to_thread.run_sync(gateway.stop)


@pytest.mark.trio
async def test_each_advice_carries_a_field_37_of_its_own_in_its_0420_and_every_0421(tmp_path: Path) -> None:
    clock = Clock()
    async with running_host() as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.ignore_next_reversals(1)  # the first 0420 goes unanswered: it goes again as 0421
            for transaction_id in ("t-1", "t-2"):
                host.drop_next_responses(1)
                outcome = await authorize(gateway, request(1_000, transaction_id=transaction_id), 100)
                assert outcome.reversal_queued
            await wait_until(lambda: len(host.record().reversals) == 2)
            await trio.sleep(0.3)
            await trio.to_thread.run_sync(gateway.retry_saf)  # the first one's 0421, if not sent yet
            assert await trio.to_thread.run_sync(gateway.saf_pending) == ()
            entries = {
                entry.transaction_id: entry
                for entry in await trio.to_thread.run_sync(gateway._saf.all_entries)
            }
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    sent = {reversal.key: reversal for reversal in host.record().reversals}
    first, second = (
        sent[OriginalKey(entry.terminal_id, entry.original_stan, entry.original_transmission)]
        for entry in (entries["t-1"], entries["t-2"])
    )
    reference = entries["t-1"].retrieval_reference
    assert reference is not None and len(reference) == 12
    assert (first.mtis, first.retrieval_references) == (("0420", "0421"), (reference, reference))
    assert second.retrieval_references == (entries["t-2"].retrieval_reference,)
    assert entries["t-2"].retrieval_reference not in (None, reference)


@pytest.mark.trio
async def test_a_0430_echoing_field_37_acknowledges_its_advice_even_later_than_the_hold(
    tmp_path: Path,
) -> None:
    # Without field 90 the STAN alone could not say, a hold after the send, whose 0430 it was; field
    # 37 names this advice and no other, so the advice stops going out.
    clock = Clock()
    async with running_host(FIELD37_ONLY) as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.hold_next_reversal_answers(1)
            await timed_out_under_advice_stan(gateway, host, "t-1")
            clock.now += REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(seconds=1)
            await late_0430_handled(gateway, host)
            (entry,) = await trio.to_thread.run_sync(gateway._saf.all_entries)
            assert entry.status == STATUS_ACKNOWLEDGED
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 0  # nothing goes out again
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    (advice,) = host.record().reversals
    assert advice.mtis == ("0420",)


@pytest.mark.trio
async def test_a_0430_a_day_late_echoing_field_37_does_not_acknowledge_the_new_advice_under_its_stan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Both advices are of 10.00 and the host echoes no field 90: the STAN and field 4 agree with the
    # new advice, which went out moments ago and alone holds the STAN. Field 37 is the first one's.
    clock = Clock()
    async with running_host(FIELD37_ONLY) as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.hold_next_reversal_answers(1)  # the 0430 of the first 0420 comes a day late
            await timed_out_under_advice_stan(gateway, host, "t-1")
            clock.now += dt.timedelta(seconds=1)
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its 0421 is acknowledged
            clock.now += REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(hours=1)
            host.ignore_next_reversals(1)  # the new advice is not acknowledged yet
            await timed_out_under_advice_stan(gateway, host, "t-2")
            with caplog.at_level(logging.INFO, logger="actors.acquirer_gateway"):
                await late_0430_handled(gateway, host)
            entries = {
                entry.transaction_id: entry
                for entry in await trio.to_thread.run_sync(gateway._saf.all_entries)
            }
            assert entries["t-2"].reversal_stan == ADVICE_STAN
            assert (entries["t-1"].status, entries["t-2"].status) == (STATUS_ACKNOWLEDGED, STATUS_PENDING)
            assert f"late 0430 STAN {ADVICE_STAN} answers no pending advice; ignored" in caplog.text
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its own 0430 acknowledges it
        finally:
            await trio.to_thread.run_sync(gateway.stop)


@pytest.mark.trio
async def test_a_0430_a_day_late_echoing_only_field_4_does_not_acknowledge_a_new_advice_of_another_amount(
    tmp_path: Path,
) -> None:
    # An acquirer echoing neither field 37 nor 90: the STAN agrees with the new advice, sent moments
    # ago and alone holding it, but field 4 is the first one's. (Of one amount, nothing tells them
    # apart: that 0430 acknowledges the new advice.)
    clock = Clock()
    async with running_host(NO_FIELD90) as host:
        gateway = await started(host, tmp_path, clock)
        try:
            host.hold_next_reversal_answers(1)  # the 0430 of the first 0420 comes a day late
            await timed_out_under_advice_stan(gateway, host, "t-1", amount_minor=1_000)
            clock.now += dt.timedelta(seconds=1)
            assert await trio.to_thread.run_sync(gateway.retry_saf) == 1  # its 0421 is acknowledged
            clock.now += REVERSAL_STAN_HOLD_AFTER_ACK + dt.timedelta(hours=1)
            host.ignore_next_reversals(1)  # the new advice is not acknowledged yet
            await timed_out_under_advice_stan(gateway, host, "t-2", amount_minor=2_000)
            await late_0430_handled(gateway, host)
            entries = {
                entry.transaction_id: entry
                for entry in await trio.to_thread.run_sync(gateway._saf.all_entries)
            }
            assert entries["t-2"].reversal_stan == ADVICE_STAN
            assert (entries["t-1"].status, entries["t-2"].status) == (STATUS_ACKNOWLEDGED, STATUS_PENDING)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
