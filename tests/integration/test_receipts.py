"""E-mailed receipts through a real SMTP server on loopback (aiosmtpd), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.receipts import Receipts
from switch.server import SwitchServer
from switch.store.schema import receipts
from terminal_sim.processes import free_port
from tests.images import tiny_png
from tests.integration.harness import (
    ADMIN_TOKEN,
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    TerminalClient,
    World,
    start_world,
    world_fixture,
)

CUSTOMER = "jane.doe@example.com"
MANAGER_EMAIL, MANAGER_PASSWORD = "sam@example.test", "office-password"


class Mailbox:
    """An aiosmtpd handler: keeps what it accepts; refuses recipients at nobody@..."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@contextmanager
def mail_server() -> Iterator[tuple[int, Mailbox]]:
    """A real SMTP server on a free loopback port, and the mailbox of what it took."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, Mailbox]]:
    with mail_server() as (port, mailbox):
        for world in world_fixture(
            request, tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_sender="bonnen@shop.example"
        ):
            yield world, mailbox


def send_receipt(terminal: TerminalClient, txn: str, address: str = CUSTOMER) -> pb.SendReceiptResponse:
    request = pb.SendReceiptRequest(transaction_id=txn, email=address)
    response: pb.SendReceiptResponse = terminal.stub.SendReceipt(
        request, metadata=terminal.metadata, timeout=20
    )
    return response


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def stored_receipts(world: World) -> list[dict[str, Any]]:
    with world.server.core.store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(receipts).order_by(receipts.c.created_at))]


def body_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_a_receipt_reaches_the_customer_with_the_masked_card_and_the_shops_lines(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    world.backoffice.SetReceiptLayout(
        bo.ReceiptLayout(
            merchant_id=world.merchant_id, header="Stationsplein 1, Utrecht", footer="Returns within 14 days."
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    terminal = world.terminals[0]
    card = world.issue(5_000)
    sale = terminal.redeem(card, 1_250, "sale-1")
    answer = send_receipt(terminal, "sale-1")
    assert answer.email_masked == "j***@example.com" and answer.receipt_id.startswith("rcp_")
    assert CUSTOMER not in answer.message
    wait_until(lambda: mailbox.messages)
    (message,) = mailbox.messages
    assert mailbox.envelopes == [("bonnen@shop.example", [CUSTOMER])]
    assert (message["To"], message["From"]) == (CUSTOMER, "bonnen@shop.example")
    assert message["Subject"] == "Receipt Shop: gift card payment 12.50 EUR"
    body = body_of(message)
    for line in (
        "Shop",
        "Stationsplein 1, Utrecht",
        "GIFT CARD PAYMENT",
        "A77-0",
        "sale-1",
        sale.card_masked,
        "12.50 EUR",
        f"Auth. code    {sale.authorization_code}",
        "Balance left  37.50 EUR",
        "Result        00 Approved",
        "Returns within 14 days.",
    ):
        assert line in body, line
    assert card not in message.as_string()
    # Once sent, only the masked address is kept.
    (row,) = stored_receipts(world)
    wait_until(lambda: stored_receipts(world)[0]["state"] == "sent")
    (row,) = stored_receipts(world)
    assert (row["recipient"], row["recipient_masked"], row["attempts"]) == ("", "j***@example.com", 0)
    assert CUSTOMER not in str(row)


def test_a_declined_transaction_gets_a_receipt_that_says_so(shop: tuple[World, Mailbox]) -> None:
    world, mailbox = shop
    terminal = world.terminals[0]
    assert terminal.redeem(world.issue(1_000), 50_000, "too-much").response_code == "51"
    send_receipt(terminal, "too-much")
    wait_until(lambda: mailbox.messages)
    (message,) = mailbox.messages
    assert message["Subject"] == "Receipt Shop: gift card payment 500.00 EUR (not approved)"
    body = body_of(message)
    assert "Result        51 Insufficient balance" in body
    assert "Balance left" not in body and "Auth. code" not in body


def test_a_refused_address_is_given_up_at_once_and_forgotten(shop: tuple[World, Mailbox]) -> None:
    world, mailbox = shop
    terminal = world.terminals[0]
    terminal.redeem(world.issue(1_000), 100, "sale-1")
    send_receipt(terminal, "sale-1", "nobody@example.com")
    wait_until(lambda: stored_receipts(world)[0]["state"] == "failed")
    (row,) = stored_receipts(world)
    assert (row["recipient"], row["attempts"]) == ("", 1)
    assert "550" in row["last_error"] and "nobody" not in row["last_error"]
    assert not mailbox.messages


@contextmanager
def receipt_waiting(tmp_path: Path, retry_s: float) -> Iterator[tuple[World, Controller, Mailbox]]:
    """A switch whose mail server is down, and one receipt (of sale-1) it has tried to send once.

    The controller is the mail server on that port, not started yet.
    """
    port = free_port()
    world = start_world(tmp_path, "", smtp_host="127.0.0.1", smtp_port=port, receipt_retry_s=retry_s)
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    try:
        terminal = world.terminals[0]
        terminal.redeem(world.issue(1_000), 300, "sale-1")
        send_receipt(terminal, "sale-1")
        wait_until(lambda: stored_receipts(world)[0]["attempts"] >= 1)
        yield world, controller, mailbox
    finally:
        controller.stop(no_assert=True)
        world.channel.close()
        world.server.stop()


def test_the_mailer_retries_until_the_mail_server_answers(tmp_path: Path) -> None:
    with receipt_waiting(tmp_path, retry_s=0.2) as (world, controller, mailbox):
        wait_until(lambda: stored_receipts(world)[0]["attempts"] >= 2)
        (row,) = stored_receipts(world)
        assert row["state"] == "queued" and row["recipient"] == CUSTOMER
        assert "not reached" in row["last_error"]
        controller.start()
        wait_until(lambda: mailbox.messages, timeout_s=15)
        wait_until(lambda: stored_receipts(world)[0]["state"] == "sent")
        assert len(mailbox.messages) == 1
        assert stored_receipts(world)[0]["recipient"] == ""


def test_a_queued_receipt_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()  # the mail server is down before the restart
    world = start_world(tmp_path, "", smtp_host="127.0.0.1", smtp_port=port, receipt_retry_s=60)
    terminal = world.terminals[0]
    terminal.redeem(world.issue(1_000), 300, "sale-1")
    send_receipt(terminal, "sale-1")
    wait_until(lambda: stored_receipts(world)[0]["attempts"] == 1)
    world.channel.close()
    world.server.stop()
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    # The same data directory and database; the retry is due in a minute, so make it due now.
    restarted = SwitchServer(world.server.settings)
    with restarted.engine.begin() as conn:
        conn.execute(update(receipts).values(next_attempt_at=dt.datetime.now(dt.UTC)))
    restarted.start()
    try:
        wait_until(lambda: mailbox.messages)
        assert "sale-1" in body_of(mailbox.messages[0])
    finally:
        controller.stop()
        restarted.stop()


def test_two_mailers_on_one_database_send_a_receipt_once(tmp_path: Path) -> None:
    with receipt_waiting(tmp_path, retry_s=600) as (world, controller, mailbox):
        controller.start()
        core = world.server.core
        with core.store.engine.begin() as conn:  # due again now, while the switch's mailer sleeps
            conn.execute(update(receipts).values(next_attempt_at=dt.datetime.now(dt.UTC)))
        nodes = [
            Receipts(world.server.settings, core.store, core.report_zone, lambda: dt.datetime.now(dt.UTC))
            for _ in range(2)
        ]
        start = threading.Barrier(len(nodes))
        sent: list[int] = []

        def deliver(node: Receipts) -> None:
            start.wait()
            sent.append(node.deliver_due())

        threads = [threading.Thread(target=deliver, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert sorted(sent) == [0, 1]
        assert len(mailbox.messages) == 1
        assert stored_receipts(world)[0]["state"] == "sent"


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("", "email is missing"),
        ("customer", "email must look like name@example.com"),
        ("customer@localhost", "the part after @ is not a domain name"),
        ("a..b@example.com", "the part before @"),
        ("x" * 250 + "@example.com", "email is 262 characters; at most 254"),
        ("jane@example.com\r\nBcc: thief@evil.example", "the part before @"),
        ("jane@example.com, thief@evil.example", "the part before @"),
        ("Jane <jane@example.com>", "the part"),
    ],
)
def test_a_bad_address_is_refused_and_nothing_is_queued(
    shop: tuple[World, Mailbox], address: str, named: str
) -> None:
    world, _ = shop
    terminal = world.terminals[0]
    terminal.redeem(world.issue(1_000), 100, "sale-1")
    with pytest.raises(grpc.RpcError) as refused:
        send_receipt(terminal, "sale-1", address)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert named in details
    assert "thief" not in details
    assert stored_receipts(world) == []


def test_receipts_of_unknown_or_foreign_transactions_and_too_many_are_refused(
    shop: tuple[World, Mailbox],
) -> None:
    world, _ = shop
    first, second = world.terminals
    first.redeem(world.issue(1_000), 100, "sale-1")
    for terminal, txn in ((first, "never-sent"), (second, "sale-1")):  # another terminal's sale
        with pytest.raises(grpc.RpcError) as refused:
            send_receipt(terminal, txn)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert f"transaction_id '{txn}': no such transaction on this terminal" in (
            refused.value.details() or ""
        )
    for _ in range(3):
        send_receipt(first, "sale-1")
    with pytest.raises(grpc.RpcError) as refused:
        send_receipt(first, "sale-1")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 3 receipts" in (refused.value.details() or "")
    with world.server.core.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(receipts)).scalar_one() == 3


def test_receipts_asked_at_the_same_moment_stop_at_the_limit(shop: tuple[World, Mailbox]) -> None:
    world, _ = shop
    terminal = world.terminals[0]
    terminal.redeem(world.issue(1_000), 100, "sale-1")

    def answer(_: int) -> grpc.StatusCode:
        try:
            send_receipt(terminal, "sale-1")
        except grpc.RpcError as refused:
            return refused.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = sorted(pool.map(answer, range(8)), key=lambda code: code.value)
    assert answers == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 5
    assert len(stored_receipts(world)) == 3


def test_a_layout_names_what_is_wrong(shop: tuple[World, Mailbox]) -> None:
    world, _ = shop
    for layout, status, named in (
        (bo.ReceiptLayout(merchant_id=""), grpc.StatusCode.INVALID_ARGUMENT, "merchant_id is missing"),
        (
            bo.ReceiptLayout(merchant_id="mer_x"),
            grpc.StatusCode.NOT_FOUND,
            "merchant_id 'mer_x': no such merchant",
        ),
        (
            bo.ReceiptLayout(merchant_id=world.merchant_id, footer="x" * 501),
            grpc.StatusCode.INVALID_ARGUMENT,
            "footer is 501 characters; at most 500",
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            world.backoffice.SetReceiptLayout(layout, metadata=world.admin_metadata, timeout=20)
        assert refused.value.code() == status
        assert named in (refused.value.details() or "")
    # Setting it twice keeps the second.
    for footer in ("first", "second"):
        world.backoffice.SetReceiptLayout(
            bo.ReceiptLayout(merchant_id=world.merchant_id, footer=footer),
            metadata=world.admin_metadata,
            timeout=20,
        )
    assert world.server.core.receipts.layout(world.merchant_id).footer == "second"


def test_without_a_mail_server_receipts_are_refused_as_off(world: World) -> None:
    terminal = world.terminals[0]
    terminal.redeem(world.issue(1_000), 100, "sale-1")
    with pytest.raises(grpc.RpcError) as refused:
        send_receipt(terminal, "sale-1")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "e-mail receipts are off" in (refused.value.details() or "")


def test_a_manager_sets_the_layout_and_logo_in_the_portal_and_the_receipt_shows_them(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    portal_stub = portal_grpc.PortalStub(world.channel)
    world.server.core.admin.add_employee(
        world.merchant_id, "71", "Sam", "1357", "manager", email=MANAGER_EMAIL, password=MANAGER_PASSWORD
    )
    manager = portal_session(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    logo = tiny_png(384, 96)
    layout = bo.ReceiptLayout(header="Markt 5, Gent", footer="Tot ziens!", logo_png=logo)
    stored = portal_stub.SetReceiptLayout(layout, metadata=manager, timeout=20)
    assert (stored.merchant_id, stored.has_logo, stored.logo_png) == (world.merchant_id, True, logo)
    assert portal_stub.GetReceiptLayout(portal.GetReceiptLayoutRequest(), metadata=manager) == stored
    preview = portal_stub.PreviewReceipt(portal.PreviewReceiptRequest(), metadata=manager, timeout=20)
    assert preview.has_logo and preview.subject == "Receipt Shop: gift card payment 12.50 EUR"
    assert preview.body.splitlines()[:3] == ["Shop", "Shop", "Markt 5, Gent"]  # merchant, location, header
    assert preview.body.rstrip().endswith("Tot ziens!")
    terminal = world.terminals[0]
    terminal.redeem(world.issue(5_000), 1_250, "sale-1")
    send_receipt(terminal, "sale-1")
    wait_until(lambda: mailbox.messages)
    (message,) = mailbox.messages
    assert "Markt 5, Gent" in body_of(message)
    html_part = message.get_body(("html",))
    assert html_part is not None
    (image,) = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert image.get_payload(decode=True) == logo
    assert f'src="cid:{str(image["Content-ID"]).strip("<>")}"' in str(html_part.get_content())
    # Without the logo (a layout change keeps it unless asked), the next receipt is text only.
    kept = portal_stub.SetReceiptLayout(bo.ReceiptLayout(header="Markt 7, Gent"), metadata=manager)
    assert kept.has_logo and kept.footer == ""
    removed = portal_stub.SetReceiptLayout(bo.ReceiptLayout(remove_logo=True), metadata=manager)
    assert (removed.has_logo, removed.logo_png, removed.header) == (False, b"", "")
    send_receipt(terminal, "sale-1")
    wait_until(lambda: len(mailbox.messages) == 2)
    assert mailbox.messages[1].get_content_type() == "text/plain"


def test_a_bad_logo_or_a_cashier_changes_no_layout(shop: tuple[World, Mailbox]) -> None:
    world, _ = shop
    portal_stub = portal_grpc.PortalStub(world.channel)
    owner = portal_session(world, MERCHANT_EMAIL, MERCHANT_PASSWORD)
    first = portal_stub.SetReceiptLayout(
        bo.ReceiptLayout(header="Kade 1", logo_png=tiny_png(10, 10)), metadata=owner
    )
    for layout, named in (
        (bo.ReceiptLayout(header="Kade 2", logo_png=b"GIF89a" + bytes(40)), "logo_png is not a PNG image"),
        (bo.ReceiptLayout(header="Kade 2", logo_png=tiny_png(800, 10)), "logo_png is 800x10 pixels"),
        (bo.ReceiptLayout(logo_png=tiny_png(10, 10), remove_logo=True), "logo_png and remove_logo"),
        (bo.ReceiptLayout(header="x" * 501), "header is 501 characters"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            portal_stub.SetReceiptLayout(layout, metadata=owner, timeout=20)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(named), refused.value.details()
    other = world.server.core.admin.create_merchant("Bakery", "bakery@example.test", "bakery-password")
    with pytest.raises(grpc.RpcError) as refused:
        portal_stub.SetReceiptLayout(bo.ReceiptLayout(merchant_id=other, header="mine"), metadata=owner)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    world.server.core.admin.add_employee(
        world.merchant_id, "72", "Kim", "2468", email="kim@example.test", password="kim-password"
    )
    cashier = portal_session(world, "kim@example.test", "kim-password")
    calls: list[tuple[Any, object]] = [
        (portal_stub.SetReceiptLayout, bo.ReceiptLayout(header="cashier was here")),
        (portal_stub.GetReceiptLayout, portal.GetReceiptLayoutRequest()),
        (portal_stub.PreviewReceipt, portal.PreviewReceiptRequest()),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call(request, metadata=cashier, timeout=20)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert portal_stub.GetReceiptLayout(portal.GetReceiptLayoutRequest(), metadata=owner) == first
    assert world.server.core.receipts.layout(other).header == ""


def portal_session(world: World, email: str, password: str) -> tuple[tuple[str, str], ...]:
    session = portal_grpc.PortalStub(world.channel).SignIn(
        portal.SignInRequest(email=email, password=password), timeout=20
    )
    return (("authorization", f"Bearer {session.token}"),)


def test_the_admin_command_sends_a_logo_file(shop: tuple[World, Mailbox], tmp_path: Path) -> None:
    world, _ = shop
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    logo = tmp_path / "shop-logo.png"
    logo.write_bytes(tiny_png(200, 50))
    base = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address, "set-receipt-layout"]
    assert cli.main([*base, f"merchant_id={world.merchant_id}", "header=Kade 3", f"logo_png={logo}"]) == 0
    assert world.server.core.receipts.layout(world.merchant_id).logo_png == logo.read_bytes()
    missing = tmp_path / "no-such-logo.png"
    assert cli.main([*base, f"merchant_id={world.merchant_id}", f"logo_png={missing}"]) == 2
    assert world.server.core.receipts.layout(world.merchant_id).header == "Kade 3"


def logo_of(message: email.message.EmailMessage) -> bytes | None:
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    if not images:
        return None
    payload = images[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_a_location_with_a_logo_of_its_own_sends_it_and_the_others_the_merchants(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    portal_stub = portal_grpc.PortalStub(world.channel)
    owner = portal_session(world, MERCHANT_EMAIL, MERCHANT_PASSWORD)
    world.server.core.admin.add_location(world.merchant_id, "Station", "Stationsplein 1")
    station = world.activate("A77-station", "Station")
    shop_logo, station_logo = tiny_png(100, 50), tiny_png(200, 50)
    portal_stub.SetReceiptLayout(bo.ReceiptLayout(logo_png=shop_logo), metadata=owner, timeout=20)
    placed = portal_stub.SetLocationLogo(
        bo.LocationLogo(location="Station", logo_png=station_logo), metadata=owner, timeout=20
    )
    assert (placed.name, placed.address, placed.has_logo, placed.terminals) == (
        "Station",
        "Stationsplein 1",
        True,
        1,
    )
    listed = portal_stub.ListLocations(bo.ListLocationsRequest(), metadata=owner, timeout=20).locations
    assert [(info.name, info.has_logo, info.terminals) for info in listed] == [
        ("Shop", False, 2),
        ("Station", True, 1),
    ]
    preview = portal_stub.PreviewReceipt(portal.PreviewReceiptRequest(location="Station"), metadata=owner)
    assert preview.has_logo and preview.body.splitlines()[1] == "Station"
    card = world.issue(5_000)
    world.terminals[0].redeem(card, 100, "sale-shop")
    station.redeem(card, 200, "sale-station")
    send_receipt(world.terminals[0], "sale-shop")
    wait_until(lambda: len(mailbox.messages) == 1)
    send_receipt(station, "sale-station")
    wait_until(lambda: len(mailbox.messages) == 2)
    assert [logo_of(message) for message in mailbox.messages] == [shop_logo, station_logo]
    # Without its own logo, the location's receipts show the merchant's again.
    removed = portal_stub.SetLocationLogo(
        bo.LocationLogo(location="Station", remove_logo=True), metadata=owner
    )
    assert (removed.name, removed.has_logo) == ("Station", False)
    send_receipt(station, "sale-station")
    wait_until(lambda: len(mailbox.messages) == 3)
    assert logo_of(mailbox.messages[2]) == shop_logo


def test_a_bad_location_logo_or_a_cashier_changes_nothing(shop: tuple[World, Mailbox]) -> None:
    world, _ = shop
    portal_stub = portal_grpc.PortalStub(world.channel)
    owner = portal_session(world, MERCHANT_EMAIL, MERCHANT_PASSWORD)
    first = portal_stub.SetLocationLogo(
        bo.LocationLogo(location="Shop", logo_png=tiny_png(10, 10)), metadata=owner
    )
    assert first.has_logo
    for logo, code, named in (
        (bo.LocationLogo(location="Shop"), grpc.StatusCode.INVALID_ARGUMENT, "give logo_png or remove_logo"),
        (
            bo.LocationLogo(location="Shop", logo_png=tiny_png(10, 10), remove_logo=True),
            grpc.StatusCode.INVALID_ARGUMENT,
            "give logo_png or remove_logo",
        ),
        (
            bo.LocationLogo(location="Shop", logo_png=b"GIF89a" + bytes(40)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "logo_png is not a PNG image",
        ),
        (
            bo.LocationLogo(location="Shop", logo_png=tiny_png(10, 500)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "logo_png is 10x500 pixels",
        ),
        (bo.LocationLogo(logo_png=tiny_png(10, 10)), grpc.StatusCode.INVALID_ARGUMENT, "location is missing"),
        (
            bo.LocationLogo(location="Depot", remove_logo=True),
            grpc.StatusCode.NOT_FOUND,
            "location 'Depot': no such location",
        ),
        (
            bo.LocationLogo(merchant_id="mer-other", location="Shop", remove_logo=True),
            grpc.StatusCode.PERMISSION_DENIED,
            "merchant_id: the portal shows only your own merchant",
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            portal_stub.SetLocationLogo(logo, metadata=owner, timeout=20)
        assert refused.value.code() == code
        assert (refused.value.details() or "").startswith(named), refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        portal_stub.PreviewReceipt(portal.PreviewReceiptRequest(location="Depot"), metadata=owner, timeout=20)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    world.server.core.admin.add_employee(
        world.merchant_id, "72", "Kim", "2468", email="kim@example.test", password="kim-password"
    )
    cashier = portal_session(world, "kim@example.test", "kim-password")
    with pytest.raises(grpc.RpcError) as refused:
        portal_stub.SetLocationLogo(bo.LocationLogo(location="Shop", remove_logo=True), metadata=cashier)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A cashier sees the locations, as the devices; the logo is still there.
    (shop_location,) = portal_stub.ListLocations(bo.ListLocationsRequest(), metadata=cashier).locations
    assert (shop_location.name, shop_location.has_logo) == ("Shop", True)
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.ListLocations(
            bo.ListLocationsRequest(merchant_id="mer-none"), metadata=world.admin_metadata, timeout=20
        )
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "no merchant 'mer-none'",
    )


def test_the_admin_command_sets_a_location_logo_from_a_file(
    shop: tuple[World, Mailbox], tmp_path: Path
) -> None:
    world, _ = shop
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    logo = tmp_path / "station-logo.png"
    logo.write_bytes(tiny_png(120, 40))
    base = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address]
    where = [f"merchant_id={world.merchant_id}", "location=Shop"]
    assert cli.main([*base, "set-location-logo", *where, f"logo_png={logo}"]) == 0
    shop_id = world.server.core.admin.list_locations(world.merchant_id)[0].location_id
    assert world.server.core.receipts.layout(world.merchant_id, shop_id).logo_png == logo.read_bytes()
    assert world.server.core.receipts.layout(world.merchant_id).logo_png == b""  # the merchant has none
    assert cli.main([*base, "set-location-logo", *where, "remove_logo=true"]) == 0
    assert cli.main([*base, "list-locations", f"merchant_id={world.merchant_id}"]) == 0
    assert not world.server.core.admin.list_locations(world.merchant_id)[0].has_logo


def test_a_manager_adds_a_location_and_terminals_are_activated_there(shop: tuple[World, Mailbox]) -> None:
    world, _ = shop
    portal_stub = portal_grpc.PortalStub(world.channel)
    owner = portal_session(world, MERCHANT_EMAIL, MERCHANT_PASSWORD)
    added = portal_stub.AddLocation(
        bo.AddLocationRequest(name=" Station ", address="Stationsplein 1"), metadata=owner, timeout=20
    )
    assert (added.merchant_id, added.name, added.address, added.terminals) == (
        world.merchant_id,
        "Station",
        "Stationsplein 1",
        0,
    )
    world.activate("A77-station", "Station")
    listed = portal_stub.ListLocations(bo.ListLocationsRequest(), metadata=owner).locations
    assert [(info.name, info.terminals) for info in listed] == [("Shop", 2), ("Station", 1)]
    for request, code, named in (
        (
            bo.AddLocationRequest(name="Station"),
            grpc.StatusCode.ALREADY_EXISTS,
            "location 'Station' exists already",
        ),
        (bo.AddLocationRequest(name="  "), grpc.StatusCode.INVALID_ARGUMENT, "location name is empty"),
        (
            bo.AddLocationRequest(name="x" * 121),
            grpc.StatusCode.INVALID_ARGUMENT,
            "location name is 121 characters; at most 120",
        ),
        (
            bo.AddLocationRequest(name="Depot", address="y" * 251),
            grpc.StatusCode.INVALID_ARGUMENT,
            "location address is 251 characters; at most 250",
        ),
        (
            bo.AddLocationRequest(merchant_id="mer-other", name="Depot"),
            grpc.StatusCode.PERMISSION_DENIED,
            "merchant_id: the portal shows only your own merchant",
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            portal_stub.AddLocation(request, metadata=owner, timeout=20)
        assert (refused.value.code(), refused.value.details()) == (code, named)
    world.server.core.admin.add_employee(
        world.merchant_id, "72", "Kim", "2468", email="kim@example.test", password="kim-password"
    )
    cashier = portal_session(world, "kim@example.test", "kim-password")
    with pytest.raises(grpc.RpcError) as refused:
        portal_stub.AddLocation(bo.AddLocationRequest(name="Depot"), metadata=cashier, timeout=20)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [info.name for info in world.server.core.admin.list_locations(world.merchant_id)] == [
        "Shop",
        "Station",
    ]
