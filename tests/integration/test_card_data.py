"""No PAN, PIN, PIN block, track or CVV-like value reaches the database, the logs or the metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import luhn_check_digit
from terminal_sim.acquirer_host import AcquirerHostConfig
from tests.integration.harness import new_txn
from tests.integration.payment_harness import RESPONSE_TIMEOUT_MS, payment_world, wait_until

SENTINEL_PAN = "49927398716" + "0417"
SENTINEL_PAN = SENTINEL_PAN[:-1] + luhn_check_digit(SENTINEL_PAN[:-1])
SENTINEL_PIN = "73915284"
WRONG_PIN = "73915285"
DISCRETIONARY = "8642097531"  # where track 2 keeps the CVV-like card verification data
SENTINEL_TRACK2 = f"{SENTINEL_PAN}=3012201{DISCRETIONARY}"


def grouped(pan: str) -> str:
    return " ".join(pan[index : index + 4] for index in range(0, len(pan), 4))


def test_sentinel_card_data_is_nowhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = AcquirerHostConfig(pin_cards={SENTINEL_PAN: SENTINEL_PIN})
    pin_blocks: list[bytes] = []
    with payment_world(tmp_path, "sqlite", config) as world:
        terminal, legacy = world.terminal, world.legacy
        assert terminal.pay(1_000, pan=SENTINEL_PAN).response_code == "00"
        for who, pin, code in (
            (terminal, SENTINEL_PIN, "00"),
            (legacy, SENTINEL_PIN, "00"),
            (terminal, WRONG_PIN, "55"),
        ):
            request = who.request(2_000, pan=SENTINEL_PAN, mode=pb.ENTRY_MODE_CHIP, pin=pin)
            pin_blocks.append(request.pin_block)
            assert who.send(request).response_code == code
        assert (
            terminal.pay(
                1_500, pan=SENTINEL_PAN, mode=pb.ENTRY_MODE_MAGSTRIPE, track2=SENTINEL_TRACK2
            ).response_code
            == "00"
        )
        # The paths that log most: a dropped response, a late one, store-and-forward, abort, reversal.
        world.host.call(lambda: world.host.host.drop_next_responses(1))
        assert terminal.pay(1_100, pan=SENTINEL_PAN).response_code == "68"
        world.host.call(lambda: setattr(world.host.host.config, "latency_ms", RESPONSE_TIMEOUT_MS + 200))
        assert terminal.pay(1_200, pan=SENTINEL_PAN).response_code == "68"
        world.host.call(lambda: setattr(world.host.host.config, "latency_ms", 0))
        txn = new_txn()
        assert terminal.pay(1_300, pan=SENTINEL_PAN, txn=txn).response_code == "00"
        assert terminal.abort(txn).response_code == "17"
        txn = new_txn()
        assert terminal.pay(1_400, pan=SENTINEL_PAN, txn=txn).response_code == "00"
        assert terminal.reversal(txn).response_code == "00"
        bad = terminal.request(1_000, pan=SENTINEL_PAN[:-1] + str((int(SENTINEL_PAN[-1]) + 1) % 10))
        with pytest.raises(grpc.RpcError) as caught:
            terminal.send(bad)
        error_details = caught.value.details() or ""
        wait_until(lambda: not world.saf_pending())
        world.audit()
        metrics_text = generate_latest(world.world.server.metrics.registry).decode()
        status_text = str(terminal.status(txn))

    forbidden = {
        "PAN": SENTINEL_PAN,
        "PAN grouped": grouped(SENTINEL_PAN),
        "PAN with a wrong check digit": bad.card.pan,
        "PIN": SENTINEL_PIN,
        "wrong PIN": WRONG_PIN,
        "track 2": SENTINEL_TRACK2,
        "CVV-like discretionary data": DISCRETIONARY,
        **{f"PIN block {index} hex": block.hex() for index, block in enumerate(pin_blocks)},
        **{f"PIN block {index} HEX": block.hex().upper() for index, block in enumerate(pin_blocks)},
    }
    files = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    database = b"".join(content for path, content in files.items() if path.name.startswith("txswitch.sqlite"))
    # Positive control: the scan sees payment rows (BIN and last 4 are allowed, and are there).
    assert SENTINEL_PAN[:6].encode() in database and f"****{SENTINEL_PAN[-4:]}".encode() in database
    logs = "\n".join(
        f"{record.getMessage()} {record.__dict__} {record.exc_text or ''}" for record in caplog.records
    )
    assert sum(record.getMessage() == "transaction" for record in caplog.records) >= 10, "logs captured"
    assert any(record.levelno == logging.DEBUG for record in caplog.records), "DEBUG captured"
    texts = {"logs": logs, "metrics": metrics_text, "error details": error_details, "status": status_text}
    for label, value in forbidden.items():
        for path, content in files.items():
            assert value.encode() not in content, f"{label} in {path.name}"
        for where, text in texts.items():
            assert value not in text, f"{label} in {where}"
    for index, block in enumerate(pin_blocks):
        for path, content in files.items():
            assert block not in content, f"PIN block {index} (bytes) in {path.name}"
