"""A start recovering a payment left in flight queues its reversal advice under a STAN no other
node's advice holds on that acquirer terminal (real SQLite file, a gateway not yet started)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine

from actors.acquirer_gateway import STAN_ATTEMPTS_MAX
from actors.acquirer_types import AcquirerEndpoint, BinRange, GatewayConfig, GatewayLimits
from switch.acquiring import Acquiring, AcquiringConfig
from switch.domain.cvm import CvmPolicy
from switch.security import KeyAlgorithm, KeyUsage, MasterKey, SecurityModule
from switch.store.engine import create_schema, make_engine
from switch.store.saf import REVERSAL_STAN_HOLD_AFTER_ACK, NewReversal, SafStore, StanInUseError
from tests.actors.test_payment_recovery import pending

NOW = dt.datetime(2026, 11, 22, 6, 30, tzinfo=dt.UTC)


def acquiring_on(tmp_path: Path) -> tuple[Engine, Acquiring]:
    """Acquiring over a fresh SQLite file, its gateway not started (one acquirer, acq-a)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'switch.sqlite'}")
    create_schema(engine)
    security = SecurityModule(MasterKey(bytes(range(32))))
    transport_key = security.import_key(bytes(16), "ttk", KeyUsage.terminal_transport, KeyAlgorithm.aes128)
    gateway = GatewayConfig(
        (AcquirerEndpoint("acq-a", "127.0.0.1", 1),), (BinRange("4", "4", "acq-a"),), GatewayLimits()
    )
    acquiring = Acquiring(
        AcquiringConfig(gateway, transport_key, 5_000, CvmPolicy()), engine, security, bytes(32), lambda: NOW
    )
    return engine, acquiring


def test_a_recovered_payments_advice_whose_stan_another_advice_holds_goes_under_the_next(
    tmp_path: Path,
) -> None:
    engine, acquiring = acquiring_on(tmp_path)
    details = pending("000000")
    assert acquiring.payments.record_pending(details, NOW) is None
    # Another node's advice on the same acquirer terminal holds STAN 400001.
    elsewhere = NewReversal(
        "acq-a", details.acquirer_terminal_id, details.acquirer_merchant_id, "t-other", "0200", "000777",
        "1122063000", "400001", "000000", 500, "978", "timeout",
    )  # fmt: skip
    saf = SafStore(engine)
    assert saf.enqueue(elsewhere, NOW)
    acquiring.gateway._stan = 400_000  # not started: the counter is this thread's to set
    assert acquiring.recover_pending() == 1
    ours = [entry for entry in saf.all_entries() if entry.transaction_id == details.transaction_id]
    assert [(entry.original_stan, entry.reversal_stan) for entry in ours] == [("000042", "400002")]
    assert acquiring.payments.pending() == ()
    engine.dispose()


def test_a_recovery_that_finds_every_stan_held_changes_nothing_and_says_so(tmp_path: Path) -> None:
    """Every STAN tried held by other advices: the payment stays pending for a later sweep (whose
    loop catches the error, `Acquiring._sweep`), and no advice of ours is stored."""
    engine, acquiring = acquiring_on(tmp_path)
    details = pending("000000")
    assert acquiring.payments.record_pending(details, NOW) is None
    saf = SafStore(engine)
    for offset in range(1, STAN_ATTEMPTS_MAX + 1):
        elsewhere = NewReversal(
            "acq-a", details.acquirer_terminal_id, details.acquirer_merchant_id, f"t-other-{offset}", "0200",
            f"{offset:06d}", "1122063000", f"{400_000 + offset:06d}", "000000", 500, "978", "timeout",
        )  # fmt: skip
        assert saf.enqueue(elsewhere, NOW)
    acquiring.gateway._stan = 400_000
    with pytest.raises(StanInUseError, match=details.transaction_id):
        acquiring.recover_pending()
    assert [entry for entry in saf.all_entries() if entry.transaction_id == details.transaction_id] == []
    assert [found.transaction_id for found in acquiring.payments.pending()] == [details.transaction_id]
    engine.dispose()


def test_advices_acknowledged_long_ago_give_their_stans_back_to_a_recovery(tmp_path: Path) -> None:
    """As the STAN counter comes round, it meets advices acknowledged long before: before session
    24 they held their STANs for ever, and a recovery meeting eight of them in a row failed."""
    engine, acquiring = acquiring_on(tmp_path)
    details = pending("000000")
    assert acquiring.payments.record_pending(details, NOW) is None
    saf = SafStore(engine)
    long_ago = NOW - 2 * REVERSAL_STAN_HOLD_AFTER_ACK
    for offset in range(1, STAN_ATTEMPTS_MAX + 1):
        earlier = NewReversal(
            "acq-a", details.acquirer_terminal_id, details.acquirer_merchant_id, f"t-old-{offset}", "0200",
            f"{offset:06d}", "1120063000", f"{400_000 + offset:06d}", "000000", 500, "978", "timeout",
        )  # fmt: skip
        assert saf.enqueue(earlier, long_ago)
    for entry in saf.pending():
        assert saf.acknowledge(entry.saf_id, long_ago)
    acquiring.gateway._stan = 400_000
    assert acquiring.recover_pending() == 1
    ours = [entry for entry in saf.all_entries() if entry.transaction_id == details.transaction_id]
    assert [(entry.original_stan, entry.reversal_stan, entry.status) for entry in ours] == [
        ("000042", "400001", "pending")
    ]
    assert acquiring.payments.pending() == ()
    engine.dispose()
