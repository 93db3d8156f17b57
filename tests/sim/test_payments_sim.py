"""Smoke: simulated terminals pay against a real switch and the acquirer host simulator; clean audit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from sqlalchemy import create_engine

from switch.store.saf import SafStore
from terminal_sim.acquirer_host import AcquirerHostConfig, HostThread
from terminal_sim.payments import (
    APPROVED,
    AUDIT_FIELDS,
    PaymentMix,
    audit_payments,
    read_switch_payments,
    run_payments,
    write_acquirers_file,
)
from tests.integration.harness import EMPLOYEE, MERCHANT_EMAIL, MERCHANT_PASSWORD, World, start_world

MASTER_KEY_HEX = "3C" * 32
SAF_DRAIN_S = 10.0


@pytest.fixture
def payment_switch(tmp_path: Path) -> Iterator[tuple[World, HostThread]]:
    # Some responses dropped: those payments time out and must be reversed through store-and-forward.
    with HostThread(AcquirerHostConfig(drop_share=0.05, latency_ms=1, seed=3)) as host:
        assert host.host.port is not None
        acquirers = write_acquirers_file(
            tmp_path / "acquirers.toml", MASTER_KEY_HEX, host.host.port, response_timeout_ms=300
        )
        world = start_world(tmp_path, "", 0, acquirers_file=acquirers, master_key_hex=MASTER_KEY_HEX)
        try:
            yield world, host
        finally:
            world.channel.close()
            world.server.stop()


def _saf_pending(world: World) -> int:
    engine = create_engine(world.server.settings.effective_database_url)
    try:
        return len(SafStore(engine).pending())
    finally:
        engine.dispose()


@pytest.mark.trio
async def test_payment_run_has_a_clean_audit(payment_switch: tuple[World, HostThread]) -> None:
    world, host = payment_switch
    mix = PaymentMix(abort_share=0.1, refund_share=0.15)
    run = await run_payments(
        world.server.address,
        MERCHANT_EMAIL,
        MERCHANT_PASSWORD,
        4,
        2.0,
        mix,
        location="Shop",
        employee=EMPLOYEE,
    )
    assert len(run.approved) > 20, [r.code for r in run.records][:20]
    assert any(r.with_pin for r in run.approved)
    assert any(r.aborted for r in run.records)
    refunds = [r for r in run.records if r.kind == "refund"]
    assert refunds and all(r.code in APPROVED or r.aborted or r.code in ("68", "91") for r in refunds), [
        (r.code, r.abort_code) for r in refunds
    ]
    assert {r.mode for r in run.records} == {1, 2, 3}
    deadline = time.monotonic() + SAF_DRAIN_S
    while await trio.to_thread.run_sync(_saf_pending, world) and time.monotonic() < deadline:
        await trio.sleep(0.05)  # aborts and timeouts reach the acquirer through store-and-forward
    url = world.server.settings.effective_database_url
    switch = await trio.to_thread.run_sync(read_switch_payments, url)
    audit = audit_payments(run, switch, await trio.to_thread.run_sync(host.record))
    assert switch.timed_out, "no dropped response: the reversal check had nothing to check"
    assert set(audit) == set(AUDIT_FIELDS)
    assert audit == dict.fromkeys(AUDIT_FIELDS, 0)
    approved_ids = {r.transaction_id for r in run.records if r.code in APPROVED and not r.aborted}
    assert approved_ids <= set(switch.standing)
