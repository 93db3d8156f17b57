"""A running switch pointed at the acquirer host simulator over TCP, and terminals that pay."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import Engine, create_engine, select

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.security import KeyAlgorithm, KeyUsage, MasterKey, PinBlockFormat, SecurityModule
from switch.security.pinpad import encipher_pin_block, unwrap_delivered_pin_key
from switch.store.payments import card_payments
from switch.store.saf import SafEntry, SafStore
from switch.store.schema import transactions
from terminal_sim.acquirer_host import TEST_ZONE_KEY_HEX, AcquirerHostConfig, HostThread, OriginalKey
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, new_txn, start_world
from tests.pg import postgres_schema

MASTER_KEY_HEX = "5A" * 32
TRANSPORT_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
RESPONSE_TIMEOUT_MS = 400
VISA_PIN_PAN = "4761739001010119"  # the host simulator's test card with PIN 1234
VISA_PAN = "4111111111111111"
MASTERCARD_PAN = "5413330089020011"  # PIN 4321
EXPIRY = "3012"
EMV = pb.EmvData(
    application_cryptogram="1A2B3C4D5E6F7081",
    cryptogram_information="80",
    atc="0042",
    unpredictable_number="DEADBEEF",
    tvr="0000008000",
    aid="A0000000031010",
)


def acquirers_file(
    path: Path,
    port: int,
    saf_retry_interval_ms: int = 100,
    *,
    response_timeout_ms: int = RESPONSE_TIMEOUT_MS,
    other_node_grace_ms: int = 30_000,
) -> Path:
    security = SecurityModule(MasterKey.from_hex(MASTER_KEY_HEX))
    zone = security.import_key(
        bytes.fromhex(TEST_ZONE_KEY_HEX), "zpk-sim", KeyUsage.zone_pin, KeyAlgorithm.aes128
    )
    transport = security.import_key(
        TRANSPORT_KEY, "ttk-fleet", KeyUsage.terminal_transport, KeyAlgorithm.aes128
    )
    path.write_text(
        f"""
terminal_transport_key = "{transport.to_text()}"
response_timeout_ms = {response_timeout_ms}
other_node_grace_ms = {other_node_grace_ms}

[cvm]
contactless_no_pin_limits_minor = {{ EUR = 5000 }}

[limits]
connect_timeout_ms = 500
reconnect_delay_ms = 50
network_timeout_ms = 500
saf_retry_interval_ms = {saf_retry_interval_ms}
saf_response_timeout_ms = 200

[[acquirers]]
name = "acq-sim"
host = "127.0.0.1"
port = {port}
zone_pin_key = "{zone.to_text()}"

[[routes]]
low = "4"
high = "5"
acquirer = "acq-sim"
"""
    )
    return path


@dataclass
class PayTerminal:
    stub: pb_grpc.TerminalStub
    credential: str
    terminal_id: str
    pin_key: bytes
    pin_format: PinBlockFormat
    sequence_number: int = 0

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    def request(
        self,
        amount_minor: int,
        pan: str = VISA_PAN,
        mode: pb.EntryMode.ValueType = pb.ENTRY_MODE_CONTACTLESS,
        pin: str | None = None,
        txn: str = "",
        track2: str = "",
    ) -> pb.PayRequest:
        self.sequence_number += 1
        card = pb.BankCard(pan=pan, expiry_yymm=EXPIRY, entry_mode=mode, track2=track2)
        if mode == pb.ENTRY_MODE_CHIP:
            card.emv.CopyFrom(EMV)
        request = pb.PayRequest(
            transaction_id=txn or new_txn(),
            sequence_number=self.sequence_number,
            amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
            card=card,
        )
        if pin is not None:
            request.pin_block = encipher_pin_block(pin, pan, self.pin_key, self.pin_format)
            request.pin_block_format = int(self.pin_format)
        return request

    def pay(self, amount_minor: int, **options: object) -> pb.TransactionResponse:
        return self.send(self.request(amount_minor, **options))  # type: ignore[arg-type]

    def send(self, request: pb.PayRequest) -> pb.TransactionResponse:
        return self.stub.Pay(request, metadata=self.metadata, timeout=20)

    def abort(self, txn: str) -> pb.TransactionResponse:
        return self.stub.Abort(pb.AbortRequest(transaction_id=txn), metadata=self.metadata, timeout=20)

    def reversal(self, original: str) -> pb.TransactionResponse:
        return self.stub.Reversal(
            pb.ReversalRequest(original_transaction_id=original), metadata=self.metadata, timeout=20
        )

    def status(self, txn: str) -> pb.TransactionStatusResponse:
        return self.stub.TransactionStatus(
            pb.TransactionStatusRequest(transaction_id=txn), metadata=self.metadata, timeout=20
        )

    def x_report(self) -> pb.DayCloseReport:
        return self.stub.XReport(pb.XReportRequest(), metadata=self.metadata, timeout=20)

    def day_close(self) -> pb.DayCloseReport:
        return self.stub.DayClose(pb.DayCloseRequest(close_id=new_txn()), metadata=self.metadata, timeout=20)


def activate(channel: grpc.Channel, device_name: str, legacy: bool = False) -> PayTerminal:
    stub = pb_grpc.TerminalStub(channel)
    response = stub.Activate(
        pb.ActivateRequest(
            merchant_email=MERCHANT_EMAIL,
            password=MERCHANT_PASSWORD,
            device_name=device_name,
            location="Shop",
            legacy_pin_pad=legacy,
        ),
        timeout=20,
    )
    pin_key = unwrap_delivered_pin_key(TRANSPORT_KEY, response.pin_key_wrapped)
    return PayTerminal(
        stub, response.credential, response.terminal_id, pin_key, PinBlockFormat(response.pin_block_format)
    )


@dataclass
class PaymentWorld:
    world: World
    host: HostThread
    terminal: PayTerminal
    legacy: PayTerminal
    settings_file: Path
    engines: list[Engine] = field(default_factory=list)

    def engine(self) -> Engine:
        engine = create_engine(self.world.server.settings.effective_database_url)
        self.engines.append(engine)
        return engine

    def approved_keys(self) -> frozenset[OriginalKey]:
        """The switch's payments and card refunds that stand as approved, named as the acquirer names them."""
        return self._keys(transactions.c.status == "approved")

    def keys_answered(self, response_code: str) -> frozenset[OriginalKey]:
        return self._keys(transactions.c.result == response_code)

    def _keys(self, condition: object) -> frozenset[OriginalKey]:
        query = (
            select(card_payments.c.acquirer_terminal_id, card_payments.c.stan, card_payments.c.transmission)
            .join(
                transactions,
                (transactions.c.source == card_payments.c.source)
                & (transactions.c.transaction_id == card_payments.c.transaction_id),
            )
            .where(transactions.c.transaction_type.in_(("payment", "refund")), condition)  # type: ignore[arg-type]
        )
        with self.engine().connect() as conn:
            return frozenset(OriginalKey(t, s, d) for t, s, d in conn.execute(query))

    def saf_pending(self) -> tuple[SafEntry, ...]:
        return SafStore(self.engine()).pending()

    def names(self, *transaction_ids: str) -> list[tuple[str, str, str]]:
        """How the acquirer names each payment: (field 41, STAN, field 7), in the order asked."""
        c = card_payments.c
        query = select(c.transaction_id, c.acquirer_terminal_id, c.stan, c.transmission).where(
            c.transaction_id.in_(transaction_ids)
        )
        with self.engine().connect() as conn:
            found = {txn: (t, s, d) for txn, t, s, d in conn.execute(query)}
        return [found[txn] for txn in transaction_ids]

    def stages(self, transaction_id: str) -> list[str]:
        """The stage of each acquirer-side row under this id (pending, answered, recovered)."""
        query = select(card_payments.c.stage).where(card_payments.c.transaction_id == transaction_id)
        with self.engine().connect() as conn:
            return list(conn.execute(query).scalars())

    def audit(self) -> None:
        """Every approved payment has exactly one standing acquirer approval; every timeout a reversal."""
        record = self.host.record()
        assert record.approved_not_reversed() == self.approved_keys()
        assert self.keys_answered("acquirer_timeout") <= record.reversed_keys()


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@contextmanager
def payment_world(
    tmp_path: Path,
    database: str,
    host_config: AcquirerHostConfig | None = None,
    response_timeout_ms: int = RESPONSE_TIMEOUT_MS,
    other_node_grace_ms: int = 30_000,
) -> Iterator[PaymentWorld]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if database == "postgres" else ""
        host = stack.enter_context(HostThread(host_config))
        assert host.host.port is not None
        settings_file = acquirers_file(
            tmp_path / "acquirers.toml",
            host.host.port,
            response_timeout_ms=response_timeout_ms,
            other_node_grace_ms=other_node_grace_ms,
        )
        world = start_world(
            tmp_path, url, terminals=0, acquirers_file=settings_file, master_key_hex=MASTER_KEY_HEX
        )
        payment = PaymentWorld(
            world,
            host,
            activate(world.channel, "A77-pay"),
            activate(world.channel, "A77-legacy", legacy=True),
            settings_file,
        )
        try:
            yield payment
        finally:
            payment.world.channel.close()
            payment.world.server.stop()
            for engine in payment.engines:
                engine.dispose()


def measure(payments: int, terminals: int, latency_ms: int, database: str) -> dict[str, float]:
    """Closed loop: `terminals` terminals pay one after another against a host with `latency_ms`."""
    import statistics
    import tempfile
    import threading

    latencies_ms: list[float] = []
    approved = [0]
    lock = threading.Lock()
    with (
        tempfile.TemporaryDirectory() as directory,
        payment_world(Path(directory), database, AcquirerHostConfig(latency_ms=latency_ms)) as world,
    ):
        fleet = [activate(world.world.channel, f"A77-bench-{index}") for index in range(terminals)]

        def run(terminal: PayTerminal, count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                code = terminal.pay(1_000).response_code
                with lock:
                    latencies_ms.append((time.perf_counter() - started) * 1000)
                    approved[0] += code == "00"

        threads = [threading.Thread(target=run, args=(t, payments // terminals)) for t in fleet]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed_s = time.perf_counter() - started
        wait_until(lambda: not world.saf_pending(), timeout_s=30)
        world.audit()
    quantiles = statistics.quantiles(latencies_ms, n=100)
    return {
        "approved_per_s": round(approved[0] / elapsed_s, 1),
        "latency_ms_p50": round(quantiles[49], 2),
        "latency_ms_p99": round(quantiles[98], 2),
        "approved": approved[0],
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="measure payments through gRPC and the acquirer simulator")
    parser.add_argument("--payments", type=int, default=2_000)
    parser.add_argument("--terminals", type=int, default=16)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    arguments = parser.parse_args()
    print(
        json.dumps(measure(arguments.payments, arguments.terminals, arguments.latency_ms, arguments.database))
    )
