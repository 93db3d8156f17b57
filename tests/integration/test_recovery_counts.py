"""A payment left in flight is counted once (`Acquiring.recoveries`, txswitch_payment_recoveries_total)
however many nodes find it: the one whose recovery reverses it counts it, and a node that found it
too and lost the race counts nothing (real SQLite file shared by two nodes, gateways not started)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from actors.acquirer_types import AcquirerEndpoint, BinRange, GatewayConfig, GatewayLimits
from switch.acquiring import Acquiring, AcquiringConfig, PaymentNode
from switch.domain.cvm import CvmPolicy
from switch.security import KeyAlgorithm, KeyUsage, MasterKey, SecurityModule
from switch.store.engine import create_schema, make_engine
from switch.store.payments import STAGE_ANSWERED, STAGE_RECOVERED, PaymentStore, card_payments
from tests.actors.test_payment_recovery import pending
from tests.integration.harness import on_statement

NOW = dt.datetime(2026, 11, 22, 6, 30, tzinfo=dt.UTC)
SENT_AT = NOW - dt.timedelta(hours=1)  # older than any node's grace for another's payments


def node(engine: Engine, node_id: str) -> Acquiring:
    security = SecurityModule(MasterKey(bytes(range(32))))
    transport_key = security.import_key(bytes(16), "ttk", KeyUsage.terminal_transport, KeyAlgorithm.aes128)
    gateway = GatewayConfig(
        (AcquirerEndpoint("acq-a", "127.0.0.1", 1),), (BinRange("4", "4", "acq-a"),), GatewayLimits()
    )
    config = AcquiringConfig(gateway, transport_key, 5_000, CvmPolicy())
    return Acquiring(config, engine, security, bytes(32), lambda: NOW, node=PaymentNode(node_id, True))


def counted(acquiring: Acquiring) -> dict[tuple[str, str], int]:
    return {key: total for key, total in acquiring.recoveries().items() if total}


def recover_meanwhile(node_a: Acquiring, engine: Engine) -> None:
    """node-a restarts on the data directory of node-dead and its start recovers the payment."""
    assert node_a.recover_pending(NOW - dt.timedelta(seconds=30), own_too=True) == 1


def answer_meanwhile(_node_a: Acquiring, engine: Engine) -> None:
    """node-dead was not dead: its answer (here its row's stage) is stored first."""
    with engine.begin() as conn:
        conn.execute(update(card_payments).values(stage=STAGE_ANSWERED, response_code="00"))


Meanwhile = Callable[[Acquiring, Engine], None]


@pytest.mark.parametrize(
    ("meanwhile", "stage", "counted_a", "counted_b"),
    [
        (recover_meanwhile, STAGE_RECOVERED, {("own", "reversed"): 1}, {}),
        (answer_meanwhile, STAGE_ANSWERED, {}, {("other", "answered_meanwhile"): 1}),
    ],
)
def test_a_payment_found_by_two_nodes_at_once_is_counted_once(
    tmp_path: Path,
    meanwhile: Meanwhile,
    stage: str,
    counted_a: dict[tuple[str, str], int],
    counted_b: dict[tuple[str, str], int],
) -> None:
    url = f"sqlite:///{tmp_path / 'switch.sqlite'}"
    engine_a, engine_b = make_engine(url), make_engine(url)
    create_schema(engine_a)
    try:
        assert PaymentStore(engine_a, "node-dead").record_pending(pending("000000"), SENT_AT) is None
        node_a, node_b = node(engine_a, "node-dead"), node(engine_b, "node-b")
        done: list[bool] = []

        def then(_cursor: Any, statement: str, _parameters: Any) -> None:
            # Right after node-b's sweep read the pending payments, before it resolves any of them.
            if not done and statement.lstrip().upper().startswith("SELECT") and "stage" in statement:
                done.append(True)
                meanwhile(node_a, engine_a)

        with on_statement(engine_b, "after", then):
            assert node_b.recover_pending(NOW - dt.timedelta(seconds=30)) == 0  # it had read it pending

        assert done == [True]
        details = node_a.payments.details("trm_1", "t-1")
        assert details is not None and details.stage == stage
        assert (counted(node_a), counted(node_b)) == (counted_a, counted_b)
    finally:
        engine_a.dispose()
        engine_b.dispose()
