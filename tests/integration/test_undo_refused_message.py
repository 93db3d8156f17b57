"""Audit session 22: a cancel of a sale that card refunds were paid from is refused naming the
takings left and the sale; `refunds_paid_from_sale_problem` (switch/store/payments.py) formats
them with `{left}` and `{sale}`, so the terminal's message shows Python reprs
("Money(amount_minor=0, currency='EUR')") where every other message shows "0.00 EUR"."""

from __future__ import annotations

from pathlib import Path

from tests.integration.nodes.test_payments_on_two_nodes import cancel, refund_to_card
from tests.integration.payment_harness import payment_world


def test_the_refusal_of_a_cancel_names_the_amounts_as_money(tmp_path: Path) -> None:
    with payment_world(tmp_path, "sqlite") as paying:
        terminal = paying.terminal
        sale = terminal.pay(1_000)
        assert sale.response_code == "00", sale.message
        assert refund_to_card(terminal, 1_000).response_code == "00"
        refused = cancel(terminal, sale.transaction_id)
        assert refused.response_code == "12", refused.message
        assert "refunds to cards were paid from this sale" in refused.message
        assert "Money(" not in refused.message, refused.message
        assert "0.00 EUR" in refused.message and "10.00 EUR" in refused.message, refused.message
