"""Bank-card payment flows for the simulator: contactless, chip and magstripe, with PIN and aborts,
against the acquirer host simulator; and the payments audit (terminal vs switch vs acquirer)."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import trio
from sqlalchemy import create_engine, select

from ops.logs import holds_card_number
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.security import KeyAlgorithm, KeyUsage, MasterKey, PinBlockFormat, SecurityModule
from switch.security.pinpad import encipher_pin_block, unwrap_delivered_pin_key
from switch.store.payments import card_payments
from switch.store.schema import transactions
from terminal_sim.acquirer_host import TEST_PIN_CARDS, TEST_ZONE_KEY_HEX, HostRecord, OriginalKey
from terminal_sim.bridge import TrioGrpcBridge, open_channel, rpc_code

TRANSPORT_KEY: Final = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # the fleet's test TTK
EXPIRY_YYMM: Final = "3012"
CONTACTLESS_NO_PIN_LIMIT_MINOR: Final = 5_000
PAY_DEADLINE_S: Final = 20.0
APPROVED: Final = frozenset({"00", "10"})
TIMEOUT_CODES: Final = frozenset({"68", "91"})
AUDIT_FIELDS: Final = ("unmatched_approvals", "missing_reversals", "double_spends", "lost_approvals")
NO_PIN_PANS: Final = ("4111111111111111", "4000056655665556", "5555555555554444")
EMV: Final = pb.EmvData(
    application_cryptogram="1A2B3C4D5E6F7081",
    cryptogram_information="80",
    atc="0042",
    unpredictable_number="DEADBEEF",
    tvr="0000008000",
    aid="A0000000031010",
)
MODES: Final = (pb.ENTRY_MODE_CONTACTLESS, pb.ENTRY_MODE_CHIP, pb.ENTRY_MODE_MAGSTRIPE)
PAYMENT_ROUTES: Final = (("4", "5"),)  # BIN prefixes the simulated acquirer takes
# The employee whose PIN allows the card refunds of the simulated shop.
REFUND_EMPLOYEE: Final = pb.EmployeeAuth(employee_number="1", pin="2580")


@dataclass(frozen=True)
class PaymentMix:
    contactless: float = 0.6
    chip: float = 0.3
    magstripe: float = 0.1
    abort_share: float = 0.05  # the customer cancels after the answer came (reversal at the acquirer)
    refund_share: float = 0.05  # refunds to the card presented (processing code 20), employee PIN
    amount_minor_max: int = 12_000


@dataclass
class PaymentRecord:
    """What one terminal saw of one payment."""

    transaction_id: str
    terminal_id: str
    mode: int
    amount_minor: int
    with_pin: bool
    code: str = ""  # response code, or the gRPC status name when the call failed
    authorization_code: str = ""
    latency_s: float = 0.0
    aborted: bool = False  # aborted, or (a refund whose answer was lost) reversed
    abort_code: str = ""
    kind: str = "payment"  # or "refund"


@dataclass
class PaymentRun:
    records: list[PaymentRecord] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def approved(self) -> list[PaymentRecord]:
        return [r for r in self.records if r.code in APPROVED]

    def latency_ms(self) -> dict[str, float]:
        latencies = sorted(r.latency_s * 1000 for r in self.records if r.latency_s > 0)
        return {
            name: round(_percentile(latencies, q), 2)
            for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
        }


def _percentile(sorted_values: list[float], quantile: float) -> float:
    """Nearest rank, as the HdrHistograms of the other phases read it (int(q*n) took one rank
    above: the p99 of 100 values was their maximum, the median of two the larger)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(quantile * len(sorted_values) - 1e-9)  # 0.999 * 1000 must not round up a rank
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def write_acquirers_file(
    path: Path, master_key_hex: str, host_port: int, response_timeout_ms: int = 1_000
) -> Path:
    """The switch's acquirers file pointing at the host simulator, keys wrapped under the master key."""
    security = SecurityModule(MasterKey.from_hex(master_key_hex))
    zone = security.import_key(
        bytes.fromhex(TEST_ZONE_KEY_HEX), "zpk-sim", KeyUsage.zone_pin, KeyAlgorithm.aes128
    )
    transport = security.import_key(
        TRANSPORT_KEY, "ttk-fleet", KeyUsage.terminal_transport, KeyAlgorithm.aes128
    )
    routes = "\n".join(
        f'[[routes]]\nlow = "{low}"\nhigh = "{high}"\nacquirer = "acq-sim"\n' for low, high in PAYMENT_ROUTES
    )
    path.write_text(
        f"""terminal_transport_key = "{transport.to_text()}"
response_timeout_ms = {response_timeout_ms}

[cvm]
contactless_no_pin_limits_minor = {{ EUR = {CONTACTLESS_NO_PIN_LIMIT_MINOR} }}

[limits]
saf_retry_interval_ms = 100

[[acquirers]]
name = "acq-sim"
host = "127.0.0.1"
port = {host_port}
zone_pin_key = "{zone.to_text()}"

{routes}"""
    )
    return path


@dataclass
class _PayTerminal:
    terminal_id: str
    metadata: tuple[tuple[str, str], ...]
    pin_key: bytes
    pin_format: PinBlockFormat
    sequence_number: int = 0


def provision_payment_shop(address: str, admin_token: str, email: str, password: str) -> None:
    """A merchant with one location whose terminals take card payments."""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(address) as channel:
        stub = bo_grpc.BackofficeStub(channel)
        merchant = stub.CreateMerchant(
            bo.CreateMerchantRequest(name="Card shop", email=email, password=password),
            metadata=metadata,
            timeout=20,
        )
        stub.AddLocation(
            bo.AddLocationRequest(merchant_id=merchant.merchant_id, name="Till"),
            metadata=metadata,
            timeout=20,
        )
        stub.AddEmployee(
            bo.AddEmployeeRequest(
                merchant_id=merchant.merchant_id,
                employee_number=REFUND_EMPLOYEE.employee_number,
                name="Till manager",
                pin=REFUND_EMPLOYEE.pin,
                role="manager",
            ),
            metadata=metadata,
            timeout=20,
        )


def _activate(
    stub: pb_grpc.TerminalStub, email: str, password: str, location: str, index: int
) -> _PayTerminal:
    response = stub.Activate(
        pb.ActivateRequest(
            merchant_email=email,
            password=password,
            device_name=f"pay-{index}-{uuid.uuid4().hex[:6]}",
            location=location,
            legacy_pin_pad=index % 4 == 3,  # some legacy PIN pads: format 0 under TDES
        ),
        timeout=20,
    )
    return _PayTerminal(
        response.terminal_id,
        (("authorization", f"Bearer {response.credential}"),),
        unwrap_delivered_pin_key(TRANSPORT_KEY, response.pin_key_wrapped),
        PinBlockFormat(response.pin_block_format),
    )


def _choose_card(rng: random.Random, needs_pin: bool) -> tuple[str, str | None]:
    if needs_pin or rng.random() < 0.3:
        pan, pin = rng.choice(sorted(TEST_PIN_CARDS.items()))
        return pan, pin
    return rng.choice(NO_PIN_PANS), None


def payment_request(
    terminal: _PayTerminal, rng: random.Random, mix: PaymentMix
) -> tuple[pb.PayRequest, bool]:
    mode = rng.choices(MODES, weights=(mix.contactless, mix.chip, mix.magstripe))[0]
    amount_minor = (
        rng.randrange(100, mix.amount_minor_max) // 100 * 100
    )  # whole euros: no decline-by-cents rule
    needs_pin = mode == pb.ENTRY_MODE_CHIP or (
        mode == pb.ENTRY_MODE_CONTACTLESS and amount_minor > CONTACTLESS_NO_PIN_LIMIT_MINOR
    )
    pan, pin = _choose_card(rng, needs_pin)
    card = pb.BankCard(pan=pan, expiry_yymm=EXPIRY_YYMM, entry_mode=mode)
    if mode == pb.ENTRY_MODE_CHIP:
        card.emv.CopyFrom(EMV)
    if mode == pb.ENTRY_MODE_MAGSTRIPE:
        card.track2 = f"{pan}={EXPIRY_YYMM}2010000000000"
    terminal.sequence_number += 1
    request = pb.PayRequest(
        transaction_id=payment_transaction_id(),
        sequence_number=terminal.sequence_number,
        amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
        card=card,
    )
    with_pin = needs_pin and pin is not None
    if with_pin:
        assert pin is not None
        request.pin_block = encipher_pin_block(pin, pan, terminal.pin_key, terminal.pin_format)
        request.pin_block_format = int(terminal.pin_format)
    return request, with_pin


async def _call(bridge: TrioGrpcBridge, method: Any, request: Any, metadata: Any) -> tuple[Any, str]:
    try:
        return await bridge.call(method, request, metadata=metadata, timeout_s=PAY_DEADLINE_S), ""
    except grpc.RpcError as error:
        code = rpc_code(error)
        return None, code.name if code is not None else "UNKNOWN"


async def _pay_loop(
    bridge: TrioGrpcBridge,
    stub: pb_grpc.TerminalStub,
    terminal: _PayTerminal,
    mix: PaymentMix,
    seed: int,
    end_s: float,
    run: PaymentRun,
    employee: pb.EmployeeAuth,
) -> None:
    rng = random.Random(seed)
    sales_minor: list[int] = []  # this terminal's approved sales not yet refunded
    while trio.current_time() < end_s:
        request, with_pin = payment_request(terminal, rng, mix)
        if sales_minor and rng.random() < mix.refund_share:
            # Goods brought back: all or part of one earlier sale, so the shop refunds only what it
            # took (the switch refuses a refund over the terminal's takings with 61). Whole euros
            # less keep the sale's cents, which the host simulator does not decline.
            sale_minor = sales_minor.pop(rng.randrange(len(sales_minor)))
            request.amount.amount_minor = sale_minor - 100 * rng.randint(0, (sale_minor - 1) // 100)
            run.records.append(await _refund(bridge, stub, terminal, request, employee))
            continue
        record = PaymentRecord(
            request.transaction_id,
            terminal.terminal_id,
            request.card.entry_mode,
            request.amount.amount_minor,
            with_pin,
        )
        started = time.perf_counter()
        response, failure = await _call(bridge, stub.Pay, request, terminal.metadata)
        record.latency_s = time.perf_counter() - started
        record.code = failure or response.response_code
        record.authorization_code = "" if response is None else response.authorization_code
        if rng.random() < mix.abort_share or failure:
            # The customer cancels (or the terminal lost the answer): abort undoes any approval.
            abort, abort_failure = await _call(
                bridge, stub.Abort, pb.AbortRequest(transaction_id=request.transaction_id), terminal.metadata
            )
            record.aborted = not abort_failure
            record.abort_code = abort_failure or abort.response_code
        elif response is not None and record.code in APPROVED:
            sales_minor.append(response.approved.amount_minor)
        run.records.append(record)


async def _refund(
    bridge: TrioGrpcBridge,
    stub: pb_grpc.TerminalStub,
    terminal: _PayTerminal,
    payment: pb.PayRequest,
    employee: pb.EmployeeAuth,
) -> PaymentRecord:
    """The same card data sent back as a refund; a lost answer is reversed, as a terminal does."""
    request = pb.CardRefundRequest(
        transaction_id=payment.transaction_id,
        sequence_number=payment.sequence_number,
        amount=payment.amount,
        card=payment.card,
        employee=employee,
    )
    record = PaymentRecord(
        request.transaction_id,
        terminal.terminal_id,
        request.card.entry_mode,
        request.amount.amount_minor,
        False,
        kind="refund",
    )
    started = time.perf_counter()
    response, failure = await _call(bridge, stub.RefundCard, request, terminal.metadata)
    record.latency_s = time.perf_counter() - started
    record.code = failure or response.response_code
    record.authorization_code = "" if response is None else response.authorization_code
    if failure:
        reversal = pb.ReversalRequest(original_transaction_id=request.transaction_id)
        reversed_, reversal_failure = await _call(bridge, stub.Reversal, reversal, terminal.metadata)
        record.aborted = not reversal_failure
        record.abort_code = reversal_failure or reversed_.response_code
    return record


async def run_payments(
    address: str,
    email: str,
    password: str,
    terminals: int,
    duration_s: float,
    mix: PaymentMix,
    *,
    location: str = "Till",
    seed: int = 7,
    employee: pb.EmployeeAuth = REFUND_EMPLOYEE,
) -> PaymentRun:
    """Closed loop: each terminal pays, waits for the answer, sometimes aborts, and pays again."""
    run = PaymentRun()
    bridge = TrioGrpcBridge()
    with open_channel(address) as channel:
        stub = pb_grpc.TerminalStub(channel)
        activated = [
            await trio.to_thread.run_sync(_activate, stub, email, password, location, index)
            for index in range(terminals)
        ]
        started = trio.current_time()
        end_s = started + duration_s
        async with trio.open_nursery() as nursery:
            for index, terminal in enumerate(activated):
                nursery.start_soon(
                    _pay_loop, bridge, stub, terminal, mix, seed * 1_000 + index, end_s, run, employee
                )
        run.duration_s = trio.current_time() - started
    return run


# --- audit ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchPayments:
    """The switch's stored payments and card refunds, keyed as the acquirer names them."""

    standing: dict[str, OriginalKey]  # transaction id -> key, status approved
    timed_out: dict[str, OriginalKey]  # answered acquirer_timeout / issuer_unavailable
    statuses: dict[str, str]  # transaction id -> status


def read_switch_payments(database_url: str) -> SwitchPayments:
    engine = create_engine(database_url)
    query = select(
        transactions.c.transaction_id,
        transactions.c.status,
        transactions.c.result,
        card_payments.c.acquirer_terminal_id,
        card_payments.c.stan,
        card_payments.c.transmission,
    ).join(
        card_payments,
        (transactions.c.source == card_payments.c.source)
        & (transactions.c.transaction_id == card_payments.c.transaction_id),
    )
    standing: dict[str, OriginalKey] = {}
    timed_out: dict[str, OriginalKey] = {}
    statuses: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            for txn, status, result, terminal, stan, transmission in conn.execute(
                query.where(transactions.c.transaction_type.in_(("payment", "refund")))
            ):
                key = OriginalKey(terminal, stan, transmission)
                statuses[txn] = status
                if status == "approved":
                    standing[txn] = key
                if result in ("acquirer_timeout", "issuer_unavailable"):
                    timed_out[txn] = key
    finally:
        engine.dispose()
    return SwitchPayments(standing, timed_out, statuses)


def audit_payments(run: PaymentRun, switch: SwitchPayments, host: HostRecord) -> dict[str, int]:
    """Counters that must all be 0: terminal outcomes, the switch's rows and the acquirer's record agree."""
    host_standing = host.approved_not_reversed()
    switch_keys = set(switch.standing.values())
    unmatched = len(switch_keys ^ host_standing)
    missing_reversals = len(set(switch.timed_out.values()) - host.reversed_keys())
    approvals_per_key: dict[OriginalKey, int] = {}
    for authorization in host.authorizations:
        if authorization.response_code in APPROVED:
            approvals_per_key[authorization.key] = approvals_per_key.get(authorization.key, 0) + 1
    double = sum(count - 1 for count in approvals_per_key.values() if count > 1)
    double += len(switch.standing) - len(switch_keys)  # two payments on one acquirer authorisation
    lost = sum(
        1
        for record in run.records
        if record.code in APPROVED
        and not record.aborted
        and switch.statuses.get(record.transaction_id) != "approved"
    )
    return {
        "unmatched_approvals": unmatched,
        "missing_reversals": missing_reversals,
        "double_spends": double,
        "lost_approvals": lost,
    }


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables for a child switch, restored afterwards."""
    import os

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def payment_transaction_id() -> str:
    """A random id, drawn again when its digits hold a card number (about one uuid4 in 185): the
    switch refuses such an id, which it would store in clear."""
    while True:
        transaction_id = uuid.uuid4().hex
        if not holds_card_number(transaction_id):
            return transaction_id
