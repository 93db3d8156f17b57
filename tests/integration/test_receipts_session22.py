"""Receipts, as the session 22 audit found them (each test failed before its fix): a real switch
on loopback gRPC, SQLite, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from terminal_sim.processes import free_port
from tests.integration.harness import TerminalClient, World, start_world
from tests.integration.test_receipts import (
    CUSTOMER,
    Mailbox,
    body_of,
    send_receipt,
    stored_receipts,
    wait_until,
)


@contextmanager
def running(controller: Controller) -> Iterator[None]:
    controller.start()
    try:
        yield
    finally:
        controller.stop()


@contextmanager
def shop_with(mailbox: Mailbox, tmp_path: Path, **overrides: object) -> Iterator[World]:
    """A switch on SQLite whose receipts go to an aiosmtpd server with this handler."""
    port = free_port()
    controller_kwargs = overrides.pop("controller_kwargs", {})
    assert isinstance(controller_kwargs, dict)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **controller_kwargs)
    with running(controller):
        world = start_world(tmp_path, "", 2, smtp_host="127.0.0.1", smtp_port=port, **overrides)
        try:
            yield world
        finally:
            world.channel.close()
            world.server.stop()


def test_a_declined_foreign_currency_sale_is_not_receipted_as_zero_euros(tmp_path: Path) -> None:
    """The terminal asked 1000 JPY of a EUR card and was declined 12; the receipt must not state
    an amount of 0.00 EUR that nobody asked for (either the asked 1000 JPY, or no amount)."""
    mailbox = Mailbox()
    with shop_with(mailbox, tmp_path) as world:
        terminal = world.terminals[0]
        answer = terminal.redeem(world.issue(5_000), 1_000, "yen-1", currency="JPY")
        assert answer.response_code == "12"
        send_receipt(terminal, "yen-1")
        wait_until(lambda: mailbox.messages)
        (message,) = mailbox.messages
        body = body_of(message)
        assert "0.00 EUR" not in str(message["Subject"]), message["Subject"]
        assert "Amount        0.00 EUR" not in body, body
        assert "Amount        1000 JPY" in body or "Amount        -" in body, body


class CheckingMailbox(Mailbox):
    """A mail server that asks for a login and refuses the switch's (wrong) password."""


def refuse_every_login(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=False, handled=False)


def test_a_wrong_mail_account_password_does_not_give_up_every_customers_receipt(tmp_path: Path) -> None:
    """A 535 on AUTH is the switch's own misconfiguration, not a refused mailbox: the receipt must
    wait (and be retried once the operator mends the password), not be given up and its address
    forgotten at the first attempt."""
    mailbox = CheckingMailbox()
    with shop_with(
        mailbox,
        tmp_path,
        smtp_username="switch",
        smtp_password="wrong-password",
        receipt_retry_s=60,
        controller_kwargs={
            "authenticator": refuse_every_login,
            "auth_required": True,
            "auth_require_tls": False,
        },
    ) as world:
        terminal = world.terminals[0]
        terminal.redeem(world.issue(5_000), 1_250, "sale-1")
        send_receipt(terminal, "sale-1")
        wait_until(
            lambda: (
                stored_receipts(world)[0]["attempts"] >= 1 or stored_receipts(world)[0]["state"] != "queued"
            )
        )
        (row,) = stored_receipts(world)
        assert "535" in row["last_error"], row["last_error"]
        assert (row["state"], row["recipient"]) == ("queued", CUSTOMER), (row["state"], row["recipient"])


class QuitRefusingMailbox(Mailbox):
    """Takes the message (250 after DATA), then answers QUIT with a temporary error."""

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return "421 4.3.2 closing connection"


def test_a_receipt_the_server_took_is_not_sent_again_because_of_the_quit_answer(tmp_path: Path) -> None:
    """Once the server answered 250 to the message's DATA, the customer has it: what the server
    says to QUIT afterwards must not make the mailer send it again (or call it failed)."""
    mailbox = QuitRefusingMailbox()
    with shop_with(mailbox, tmp_path, receipt_retry_s=0.2) as world:
        terminal = world.terminals[0]
        terminal.redeem(world.issue(5_000), 1_250, "sale-1")
        send_receipt(terminal, "sale-1")
        wait_until(lambda: mailbox.messages)
        time.sleep(1.5)  # several retry periods of 0.2 s
        assert len(mailbox.messages) == 1, f"the customer got the receipt {len(mailbox.messages)} times"
        (row,) = stored_receipts(world)
        assert row["state"] == "sent", (row["state"], row["last_error"])


def test_a_merchant_name_with_a_line_break_neither_injects_a_header_nor_jams_the_receipt(
    tmp_path: Path,
) -> None:
    """The merchant's name goes into the Subject header. A line break in it (a name pasted with
    a newline) makes EmailMessage raise ValueError, which the mailer does not catch: the receipt
    stays queued forever, never counted as an attempt, never sent, never given up."""
    mailbox = Mailbox()
    with shop_with(mailbox, tmp_path, smtp_timeout_s=0.5, receipt_retry_s=0.2) as world:
        admin = world.server.core.admin
        email, password = "bakery@example.test", "bakery-password"
        merchant_id = admin.create_merchant("Bakery\r\nBcc: thief@evil.example", email, password)
        admin.add_location(merchant_id, "Markt")
        admin.join_programme(merchant_id, world.gift_programme, 0)
        stub = pb_grpc.TerminalStub(world.channel)
        activated = stub.Activate(
            pb.ActivateRequest(
                merchant_email=email, password=password, device_name="A77-b", location="Markt"
            ),
            timeout=20,
        )
        terminal = TerminalClient(stub, activated.credential, activated.terminal_id)
        assert terminal.redeem(world.issue(5_000), 1_250, "sale-b").response_code == "00"
        send_receipt(terminal, "sale-b")
        deadline = time.monotonic() + 8  # longer than the claim's lease (2 * 0.5 + 5 s)
        while time.monotonic() < deadline and not mailbox.messages:
            time.sleep(0.05)
        (row,) = stored_receipts(world)
        assert mailbox.messages, (
            f"receipt never reached the mail server: state={row['state']} attempts={row['attempts']}"
        )
        (message,) = mailbox.messages
        assert message["Bcc"] is None
        assert mailbox.envelopes == [(world.server.settings.smtp_sender, [CUSTOMER])]


def test_the_receipt_of_a_reversal_can_be_asked_with_the_id_the_terminal_was_given(tmp_path: Path) -> None:
    """A reversal is an answered transaction of the terminal; its answer names it 'reversal:<id>'
    and the renderer has a REVERSAL title, yet SendReceipt refuses that id as malformed."""
    mailbox = Mailbox()
    with shop_with(mailbox, tmp_path) as world:
        terminal = world.terminals[0]
        terminal.redeem(world.issue(5_000), 1_250, "sale-1")
        reversal = terminal.reversal("sale-1")
        assert (reversal.response_code, reversal.transaction_id) == ("00", "reversal:sale-1")
        try:
            send_receipt(terminal, reversal.transaction_id)
        except grpc.RpcError as refused:
            pytest.fail(f"SendReceipt refused the reversal's id: {refused.code()} {refused.details()}")
        wait_until(lambda: mailbox.messages)
        assert "REVERSAL" in body_of(mailbox.messages[0])


def test_a_cancelled_sales_receipt_does_not_read_as_an_approved_payment(tmp_path: Path) -> None:
    """The sale was cancelled (money back on the card) before the receipt was asked; its e-mail's
    subject reads exactly like that of a standing payment and its body says '00 Approved' first."""
    mailbox = Mailbox()
    with shop_with(mailbox, tmp_path) as world:
        terminal = world.terminals[0]
        terminal.redeem(world.issue(5_000), 1_250, "sale-1")
        assert terminal.cancel("sale-1", txn="void-1").response_code == "00"
        send_receipt(terminal, "sale-1")
        wait_until(lambda: mailbox.messages)
        subject = str(mailbox.messages[0]["Subject"])
        assert "cancel" in subject.lower(), subject
