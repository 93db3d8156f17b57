"""The real AcquirerGateway against the real acquirer host simulator, over TCP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from sqlalchemy import Engine, create_engine

from actors.acquirer_gateway import AcquirerGateway
from actors.acquirer_types import (
    AcquirerEndpoint,
    AuthorizationRequest,
    AuthorizationResult,
    BinRange,
    CardData,
    CardEntryMode,
    GatewayConfig,
    GatewayLimits,
    GatewayStatistics,
    LinkState,
    PinData,
)
from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode
from switch.security import (
    KeyAlgorithm,
    KeyUsage,
    MasterKey,
    PinBlockFormat,
    SecurityModule,
)
from switch.security.pinpad import encipher_pin_block
from terminal_sim.acquirer_host import (
    TEST_ZONE_KEY_HEX,
    AcquirerHost,
    AcquirerHostConfig,
    OriginalKey,
)

VISA_PAN = "4761739001010119"  # a simulator test card with PIN 1234
MASTERCARD_PAN = "5413330089020011"  # PIN 4321
TERMINAL_PIN_KEY = bytes(range(16))
FAST_LIMITS = GatewayLimits(
    response_timeout_ms_default=500,
    connect_timeout_ms=500,
    reconnect_delay_ms=30,
    network_timeout_ms=500,
    echo_interval_ms=60_000,
    saf_retry_interval_ms=80,
    saf_response_timeout_ms=150,
)
SECURITY = SecurityModule(MasterKey(bytes(range(32))))
ZONE_KEY = SECURITY.import_key(
    bytes.fromhex(TEST_ZONE_KEY_HEX), "zone-sim", KeyUsage.zone_pin, KeyAlgorithm.aes128
)
TPK = SECURITY.import_key(TERMINAL_PIN_KEY, "tpk-1", KeyUsage.terminal_pin, KeyAlgorithm.aes128)


def request(
    amount_minor: int = 1_000,
    pan: str = VISA_PAN,
    pin: str | None = None,
    terminal_id: str = "TERM0001",
    transaction_id: str = "t-1",
) -> AuthorizationRequest:
    pin_data = None
    if pin is not None:
        block = encipher_pin_block(pin, pan, TERMINAL_PIN_KEY, PinBlockFormat.ISO_4)
        pin_data = PinData(block, TPK)
    return AuthorizationRequest(
        transaction_id=transaction_id,
        terminal_id=terminal_id,
        merchant_id="MERCHANT0000001",
        amount=Money(amount_minor, "EUR"),
        card=CardData(
            pan=pan, expiry_yymm="2812", entry_mode=CardEntryMode.chip, emv_tlv_hex="9F2608AABBCCDDEEFF0011"
        ),
        pin=pin_data,
    )


def key_of(result: AuthorizationRequest, outcome: AuthorizationResult) -> OriginalKey:
    return OriginalKey(result.terminal_id, outcome.stan, outcome.transmission_datetime)


@asynccontextmanager
async def running_host(config: AcquirerHostConfig | None = None) -> AsyncIterator[AcquirerHost]:
    host = AcquirerHost(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve, 0)
        yield host
        nursery.cancel_scope.cancel()


def sqlite_engine(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'saf.db'}")


def gateway_config(ports: dict[str, int], limits: GatewayLimits = FAST_LIMITS) -> GatewayConfig:
    acquirers = tuple(
        AcquirerEndpoint(name, "127.0.0.1", port, zone_pin_key=ZONE_KEY) for name, port in ports.items()
    )
    names = list(ports)
    routes = (BinRange("4", "4", names[0]), BinRange("5", "5", names[-1]))
    return GatewayConfig(acquirers=acquirers, routes=routes, limits=limits)


async def start_gateway(config: GatewayConfig, engine: Engine) -> AcquirerGateway:
    gateway = AcquirerGateway(config, engine, SECURITY)
    await trio.to_thread.run_sync(gateway.start)
    assert await trio.to_thread.run_sync(gateway.wait_signed_on, 1_000)
    return gateway


async def authorize(
    gateway: AcquirerGateway, req: AuthorizationRequest, timeout_ms: int = 500
) -> AuthorizationResult:
    return await trio.to_thread.run_sync(gateway.authorize, req, timeout_ms)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 1.5) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.01)


async def statistics_when(
    gateway: AcquirerGateway, condition: Callable[[GatewayStatistics], bool]
) -> GatewayStatistics:
    with trio.fail_after(1.5):
        while True:
            stats = await trio.to_thread.run_sync(gateway.statistics)
            if condition(stats):
                return stats
            await trio.sleep(0.02)


async def saf_drained(gateway: AcquirerGateway) -> None:
    with trio.fail_after(1.5):
        while await trio.to_thread.run_sync(gateway.saf_pending):
            await trio.sleep(0.02)


@pytest.mark.trio
async def test_sign_on_and_echo(tmp_path: Path) -> None:
    async with running_host() as host:
        assert host.port is not None
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), sqlite_engine(tmp_path))
        try:
            assert await trio.to_thread.run_sync(gateway.echo, "acq-a") is ResponseCode.approved
            assert await trio.to_thread.run_sync(gateway.sign_on, "acq-a") is ResponseCode.approved
            stats = await trio.to_thread.run_sync(gateway.statistics)
            assert stats.links[0].state is LinkState.signed_on
            assert stats.saf_depth == 0
            assert host.record().network_messages == 3  # sign-on at connect, echo, sign-on
        finally:
            await trio.to_thread.run_sync(gateway.stop)


RULE_CASES = [
    ("approved", request(1_000), ResponseCode.approved),
    ("amount rule: cents 51", request(1_051), ResponseCode.exceeds_balance),
    ("over the amount limit", request(2_000_000), ResponseCode.exceeds_amount_limit),
    ("right PIN via zone key", request(1_000, pin="1234"), ResponseCode.approved),
    ("wrong PIN", request(1_000, pin="9999"), ResponseCode.incorrect_pin),
    ("second acquirer by BIN", request(1_000, MASTERCARD_PAN, pin="4321"), ResponseCode.approved),
    ("no BIN route", request(1_000, "6011000990139424"), ResponseCode.issuer_unavailable),
]


@pytest.mark.trio
async def test_rules_pin_and_routing(tmp_path: Path) -> None:
    async with running_host() as host_a, running_host() as host_b:
        assert host_a.port is not None and host_b.port is not None
        config = gateway_config({"acq-a": host_a.port, "acq-b": host_b.port})
        gateway = await start_gateway(config, sqlite_engine(tmp_path))
        try:
            for index, (name, case_request, expected) in enumerate(RULE_CASES):
                req = replace(case_request, transaction_id=f"t-{index}")
                outcome = await authorize(gateway, req)
                assert outcome.response_code is expected, name
                assert not outcome.reversal_queued, name
        finally:
            await trio.to_thread.run_sync(gateway.stop)
        masked_a = {a.masked_pan for a in host_a.record().authorizations}
        masked_b = {a.masked_pan for a in host_b.record().authorizations}
        assert masked_a == {"476173****0119"} and masked_b == {"541333****0011"}


@pytest.mark.trio
async def test_many_requests_in_flight_are_multiplexed(tmp_path: Path) -> None:
    request_count, latency_ms = 30, 200
    async with running_host(AcquirerHostConfig(latency_ms=latency_ms)) as host:
        assert host.port is not None
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), sqlite_engine(tmp_path))
        outcomes: dict[int, AuthorizationResult] = {}

        async def one(index: int) -> None:
            req = request(1_000 + index * 100, terminal_id=f"TERM{index % 3:04d}")
            outcomes[index] = await authorize(gateway, req, 1_000)

        started = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                for index in range(request_count):
                    nursery.start_soon(one, index)
            elapsed_s = time.monotonic() - started
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    # Serially this would take 30 x 200 ms = 6 s, and each request past the 5th would time out
    # (1 s). The bound leaves room for a loaded machine (1.5 s was seen with the gateway's stop
    # counted in, on four test workers), and still needs at least four in flight at once.
    assert elapsed_s < 1.5
    assert all(outcome.approved for outcome in outcomes.values())
    assert len({(o.stan, o.acquirer) for o in outcomes.values()}) == request_count
    approved_amounts = sorted(a.amount_minor for a in host.record().authorizations)
    assert approved_amounts == [1_000 + index * 100 for index in range(request_count)]


@pytest.mark.trio
async def test_timeout_stores_0420_and_repeats_0421_until_acknowledged(tmp_path: Path) -> None:
    async with running_host() as host:
        assert host.port is not None
        host.drop_next_responses(1)
        host.ignore_next_reversals(2)
        engine = sqlite_engine(tmp_path)
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), engine)
        try:
            req = request(1_000)
            outcome = await authorize(gateway, req, 100)
            assert outcome.response_code is ResponseCode.acquirer_timeout
            assert outcome.reversal_queued
            await saf_drained(gateway)
            stats = await statistics_when(gateway, lambda s: s.reversals_acknowledged == 1)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    record = host.record()
    (reversal,) = record.reversals
    assert reversal.key == key_of(req, outcome)
    assert reversal.mtis == ("0420", "0421", "0421")
    assert reversal.matched_original
    assert record.approved_not_reversed() == frozenset()
    assert stats.timeouts == 1 and stats.reversals_acknowledged == 1 and stats.saf_depth == 0


@pytest.mark.trio
async def test_late_approval_is_reversed_never_approved(tmp_path: Path) -> None:
    async with running_host(AcquirerHostConfig(latency_ms=250)) as host:
        assert host.port is not None
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), sqlite_engine(tmp_path))
        try:
            req = request(1_000)
            outcome = await authorize(gateway, req, 80)
            assert outcome.response_code is ResponseCode.acquirer_timeout
            assert not outcome.approved
            # The approval arrives after the timeout; the reversal must stand against it.
            await wait_until(lambda: key_of(req, outcome) in host.record().reversed_keys())
            await saf_drained(gateway)
            stats = await statistics_when(gateway, lambda s: s.late_responses >= 1)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    record = host.record()
    assert key_of(req, outcome) in record.approved_keys()
    assert record.approved_not_reversed() == frozenset()
    # The late 0210, and perhaps a late 0430 too (the host delays those as well).
    assert stats.late_responses >= 1 and stats.timeouts == 1


@pytest.mark.trio
async def test_restart_resends_pending_reversal_from_sqlite(tmp_path: Path) -> None:
    slow_saf = replace(FAST_LIMITS, saf_retry_interval_ms=60_000)
    async with running_host() as host:
        assert host.port is not None
        host.drop_next_responses(1)
        host.ignore_next_reversals(1)
        first = await start_gateway(gateway_config({"acq-a": host.port}, slow_saf), sqlite_engine(tmp_path))
        try:
            req = request(1_000)
            outcome = await authorize(first, req, 100)
            assert outcome.reversal_queued
            await wait_until(lambda: len(host.record().reversals) == 1)
        finally:
            await trio.to_thread.run_sync(first.stop)
        pending = await trio.to_thread.run_sync(first.saf_pending)
        assert len(pending) == 1 and pending[0].attempts == 1
        stored = repr(pending[0])
        assert VISA_PAN not in stored and "2812" not in stored

        # A new process: a new gateway and engine on the same SQLite file.
        second = await start_gateway(gateway_config({"acq-a": host.port}), sqlite_engine(tmp_path))
        try:
            await saf_drained(second)
        finally:
            await trio.to_thread.run_sync(second.stop)
    (reversal,) = host.record().reversals
    assert reversal.key == key_of(req, outcome)
    assert reversal.mtis == ("0420", "0421")
    assert (tmp_path / "saf.db").read_bytes().find(VISA_PAN.encode()) == -1


@pytest.mark.trio
async def test_disconnect_reverses_in_flight_and_reconnects(tmp_path: Path) -> None:
    async with running_host(AcquirerHostConfig(latency_ms=300)) as host:
        assert host.port is not None
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), sqlite_engine(tmp_path))
        try:
            req = request(1_000)
            outcomes: list[AuthorizationResult] = []

            async def in_flight() -> None:
                outcomes.append(await authorize(gateway, req, 1_000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                await wait_until(lambda: len(host.record().authorizations) == 1)
                await host.disconnect_all()
            (outcome,) = outcomes
            assert outcome.response_code is ResponseCode.acquirer_timeout
            assert outcome.reversal_queued
            assert await trio.to_thread.run_sync(gateway.wait_signed_on, 1_000)
            host.config.latency_ms = 0
            second = request(2_000, transaction_id="t-2")
            after = await authorize(gateway, second)
            assert after.approved
            await saf_drained(gateway)
            stats = await trio.to_thread.run_sync(gateway.statistics)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    assert stats.links[0].connects == 2
    assert host.record().approved_not_reversed() == {key_of(second, after)}


@pytest.mark.trio
async def test_dropped_responses_audit_clean(tmp_path: Path) -> None:
    request_count = 24
    async with running_host(AcquirerHostConfig(drop_share=0.3, seed=7)) as host:
        assert host.port is not None
        gateway = await start_gateway(gateway_config({"acq-a": host.port}), sqlite_engine(tmp_path))
        outcomes: list[tuple[AuthorizationRequest, AuthorizationResult]] = []

        async def one(index: int) -> None:
            req = request(1_000 + index * 100, transaction_id=f"t-{index}")
            outcomes.append((req, await authorize(gateway, req, 150)))

        try:
            async with trio.open_nursery() as nursery:
                for index in range(request_count):
                    nursery.start_soon(one, index)
            await saf_drained(gateway)
        finally:
            await trio.to_thread.run_sync(gateway.stop)
    record = host.record()
    timed_out = [(r, o) for r, o in outcomes if o.response_code is ResponseCode.acquirer_timeout]
    approved = {key_of(r, o) for r, o in outcomes if o.approved}
    assert record.dropped_responses == len(timed_out) > 0
    # The auditor's rules: each approval has exactly one standing acquirer approval,
    # each timed-out one a reversal.
    assert record.approved_not_reversed() == approved
    assert {key_of(r, o) for r, o in timed_out} <= record.reversed_keys()


@pytest.mark.trio
async def test_link_down_declines_91_without_reversal(tmp_path: Path) -> None:
    async with running_host() as host:
        assert host.port is not None
        unused_port = host.port
    # The host is gone: nothing listens on its port any more.
    gateway = AcquirerGateway(gateway_config({"acq-a": unused_port}), sqlite_engine(tmp_path), SECURITY)
    await trio.to_thread.run_sync(gateway.start)
    try:
        outcome = await authorize(gateway, request(1_000))
        stats = await trio.to_thread.run_sync(gateway.statistics)
    finally:
        await trio.to_thread.run_sync(gateway.stop)
    assert outcome.response_code is ResponseCode.issuer_unavailable
    assert not outcome.reversal_queued
    assert stats.saf_depth == 0 and stats.links[0].state is not LinkState.signed_on
