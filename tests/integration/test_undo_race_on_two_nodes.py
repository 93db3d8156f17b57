"""Audit session 22: `PaymentStore.undo` counts the takings left before it checks that the sale is
still approved. When another node cancelled the sale between this node's read of its status and
its undo, the sale no longer counts in the takings, so the check finds "refunds to cards were paid
from this sale" (there are none) instead of PAYMENT_CHANGED: an abort that would have answered the
cancelled payment is refused 12, telling the cashier to refund instead."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.integration.harness import on_statement
from tests.integration.nodes.test_payments_on_two_nodes import cancel, payments_and_node_b


@contextmanager
def paused_at_refund_lock(engine: Engine) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The next `pg_advisory_xact_lock` on this engine (PaymentStore.undo's refund lock) waits."""
    reached, release = threading.Event(), threading.Event()

    def before(_cursor: Any, statement: str, _parameters: Any) -> None:
        if "pg_advisory_xact_lock" in statement and not reached.is_set():
            reached.set()
            release.wait(15)

    with on_statement(engine, "before", before):
        try:
            yield reached, release
        finally:
            release.set()


def test_an_abort_overtaken_by_a_cancel_on_the_other_node_answers_the_cancelled_payment(
    tmp_path: Path,
) -> None:
    with payments_and_node_b(tmp_path) as (paying, _, on_b):
        on_a = paying.terminal
        sale = on_a.pay(1_000)
        assert sale.response_code == "00", sale.message
        acquiring_a = paying.world.server.acquiring
        assert acquiring_a is not None
        with paused_at_refund_lock(acquiring_a.payments._engine) as (reached, release):
            result: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: result.update(answer=on_a.abort(sale.transaction_id)))
            thread.start()
            assert reached.wait(10), "node A's abort never reached its undo"
            cancelled = cancel(on_b, sale.transaction_id)  # node B cancels it meanwhile
            assert cancelled.response_code == "00", cancelled.message
            release.set()
            thread.join(20)
            aborted = result["answer"]
        # In order (the cancel first), an abort answers the payment as it stands: cancelled.
        serial = on_a.abort(sale.transaction_id)
        assert "refund" not in serial.message, serial.message
        assert (aborted.response_code, aborted.message) == (serial.response_code, serial.message), (
            f"abort overtaken by the cancel: {aborted.response_code} {aborted.message!r}; "
            f"after it: {serial.response_code} {serial.message!r}"
        )
