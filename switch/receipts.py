"""E-mailed receipts: queued in the database by the terminal's request, sent by one mailer thread.

The terminal gets its answer once the receipt is stored, not once a mail server took it: a shop
does not wait on a slow or absent mail server, and a receipt survives a restart. The mailer sends
what is due, retries what a server put off (doubling the wait), gives up after a number of
attempts or at once on a permanent refusal, and then forgets the clear address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.message
import email.utils
import html
import logging
import smtplib
import socket
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select, update

from switch.admin import new_id
from switch.config import Settings
from switch.domain.money import Money
from switch.domain.quoting import quoted
from switch.domain.receipts import (
    RECEIPT_TEXT_LENGTH_MAX,
    ReceiptFacts,
    ReceiptLayout,
    checked_email,
    logo_problem,
    masked_email,
    render,
    sample_facts,
)
from switch.domain.response_codes import ResponseCode
from switch.store.engine import writing
from switch.store.journal import TOMBSTONE_TYPE
from switch.store.key_locks import lock_name
from switch.store.repository import Store, TerminalInfo, as_utc, merchant_name
from switch.store.schema import location_logos, locations, receipt_layouts, receipts, terminals

log = logging.getLogger(__name__)

RETRY_WAIT_MAX_S = 3_600.0
DUE_BATCH_MAX = 50
ReceiptObserver = Callable[[str], None]  # a receipt's new state: queued, sent, retried, failed


class ReceiptRefusedError(Exception):
    """A receipt request the switch will not queue; `kind` says which gRPC status fits."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "invalid", "not_found", "exhausted", "off"


@dataclass(frozen=True, slots=True)
class QueuedReceipt:
    receipt_id: str
    recipient_masked: str


@dataclass(frozen=True, slots=True)
class MailServer:
    host: str
    port: int
    sender: str
    username: str
    password: str
    starttls: bool
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> MailServer | None:
        if not settings.smtp_host:
            return None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_sender,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_starttls,
            settings.smtp_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A receipt not sent (waiting or given up), as an operator may see it: the address masked."""

    receipt_id: str
    terminal_id: str
    transaction_id: str
    recipient_masked: str
    state: str
    attempts: int
    last_error: str
    next_attempt_at: dt.datetime


class Receipts:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        zone: zoneinfo.ZoneInfo,
        now: Callable[[], dt.datetime],
        observe: ReceiptObserver | None = None,
    ) -> None:
        self._server = MailServer.from_settings(settings)
        self._store = store
        self._engine: Engine = store.engine
        self._zone = zone
        self._now = now
        self._observe = observe or (lambda _state: None)
        self._attempts_max = settings.receipt_attempts_max
        self._retry_s = settings.receipt_retry_s
        self._per_transaction_max = settings.receipts_per_transaction_max
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # The terminal's request

    def send(self, terminal_id: str, transaction_id: str, address: str) -> QueuedReceipt:
        if self._server is None:
            raise ReceiptRefusedError(
                "off", "e-mail receipts are off: no mail server is configured (smtp_host)"
            )
        try:
            recipient = checked_email(address)
        except ValueError as error:
            raise ReceiptRefusedError("invalid", str(error)) from None
        terminal = self._store.terminal(terminal_id)
        assert terminal is not None, "an authenticated terminal exists"
        subject, body = render(self._facts(terminal, transaction_id), self.layout(terminal.merchant_id))
        queued = QueuedReceipt(new_id("rcp"), masked_email(recipient))
        now = self._now()
        with writing(self._engine) as conn:
            lock_name(conn, f"receipts:{terminal_id}:{transaction_id}")  # asks at once count each other
            sent_before = conn.execute(
                select(func.count()).where(
                    receipts.c.terminal_id == terminal_id, receipts.c.transaction_id == transaction_id
                )
            ).scalar_one()
            if sent_before >= self._per_transaction_max:
                raise ReceiptRefusedError(
                    "exhausted",
                    f"transaction_id {quoted(transaction_id)}: at most {self._per_transaction_max} receipts",
                )
            conn.execute(
                receipts.insert().values(
                    receipt_id=queued.receipt_id,
                    terminal_id=terminal_id,
                    transaction_id=transaction_id,
                    recipient=recipient,
                    recipient_masked=queued.recipient_masked,
                    subject=subject[:250],
                    body=body,
                    state="queued",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        self._observe("queued")
        log.info("receipt queued", extra={"receipt_id": queued.receipt_id, "terminal_id": terminal_id})
        self._wake.set()
        return queued

    def _facts(self, terminal: TerminalInfo, transaction_id: str) -> ReceiptFacts:
        terminal_id = terminal.terminal_id
        stored = self._store.transaction(terminal_id, transaction_id)
        if stored is None or stored.record.transaction_type == TOMBSTONE_TYPE:
            raise ReceiptRefusedError(
                "not_found", f"transaction_id {quoted(transaction_id)}: no such transaction on this terminal"
            )
        record, result = stored.record, ResponseCode[stored.record.result]
        approved = result in (ResponseCode.approved, ResponseCode.approved_partial)
        amount_minor = record.approved_minor if approved else record.requested_minor
        # A decline that asked nothing the card could count (another currency) shows no amount,
        # not 0.00 in the card's currency.
        currency = record.currency if approved or amount_minor else ""
        return ReceiptFacts(
            merchant_name=self._store.merchant_name(terminal.merchant_id) or "",
            location_name=terminal.location_name,
            device_name=terminal.device_name,
            terminal_id=terminal_id,
            transaction_id=transaction_id,
            transaction_type=record.transaction_type,
            payment_method=record.payment_method,
            result=result,
            status=stored.status.value,
            at=stored.created_at.astimezone(self._zone),
            amount=Money(amount_minor, currency) if currency else None,
            card_masked=record.card_masked,
            authorization_code=record.authorization_code,
            balance_after=(
                Money(record.balance_after_minor, currency)
                if record.balance_after_minor is not None and currency
                else None
            ),
        )

    # The merchant's layout (backoffice)

    def layout(self, merchant_id: str, location_id: str = "") -> ReceiptLayout:
        """The merchant's layout; with a location, its logo is the location's own where it has one."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(receipt_layouts).where(receipt_layouts.c.merchant_id == merchant_id)
            ).first()
            own_logo = (
                conn.execute(
                    select(location_logos.c.logo_png).where(location_logos.c.location_id == location_id)
                ).scalar()
                if location_id
                else None
            )
        layout = (
            ReceiptLayout() if row is None else ReceiptLayout(row.header, row.footer, row.logo_png or b"")
        )
        return dataclasses.replace(layout, logo_png=own_logo) if own_logo else layout

    def set_layout(
        self, merchant_id: str, layout: ReceiptLayout, *, remove_logo: bool = False
    ) -> ReceiptLayout:
        """Header and footer as given; the logo replaced when one is given, removed when asked,
        kept otherwise. The layout as stored now."""
        for field, text in (("header", layout.header), ("footer", layout.footer)):
            if len(text) > RECEIPT_TEXT_LENGTH_MAX:
                raise ReceiptRefusedError(
                    "invalid", f"{field} is {len(text)} characters; at most {RECEIPT_TEXT_LENGTH_MAX}"
                )
        if layout.logo_png and remove_logo:
            raise ReceiptRefusedError("invalid", "logo_png and remove_logo: give one of them")
        problem = logo_problem(layout.logo_png) if layout.logo_png else None
        if problem:
            raise ReceiptRefusedError("invalid", problem)
        values: dict[str, object] = {"header": layout.header, "footer": layout.footer}
        if layout.logo_png or remove_logo:
            values["logo_png"] = layout.logo_png or None
        with writing(self._engine) as conn:
            if merchant_name(conn, merchant_id) is None:
                raise ReceiptRefusedError("not_found", f"merchant_id {quoted(merchant_id)}: no such merchant")
            changed = conn.execute(
                update(receipt_layouts).where(receipt_layouts.c.merchant_id == merchant_id).values(**values)
            ).rowcount
            if not changed:
                conn.execute(receipt_layouts.insert().values(merchant_id=merchant_id, **values))
        return self.layout(merchant_id)

    def set_location_logo(
        self, merchant_id: str, location_name: str, logo_png: bytes, *, remove: bool
    ) -> None:
        """The location's own logo replaced by this one, or removed (its receipts show the
        merchant's logo again). ReceiptRefusedError naming what is wrong."""
        if bool(logo_png) == remove:
            raise ReceiptRefusedError("invalid", "give logo_png or remove_logo: one of them")
        problem = logo_problem(logo_png) if logo_png else None
        if problem:
            raise ReceiptRefusedError("invalid", problem)
        with writing(self._engine) as conn:
            location_id = _location_id(conn, merchant_id, location_name)
            conn.execute(location_logos.delete().where(location_logos.c.location_id == location_id))
            if logo_png:
                conn.execute(location_logos.insert().values(location_id=location_id, logo_png=logo_png))

    def preview(self, merchant_id: str, location_name: str) -> tuple[str, str, bool]:
        """(subject, body, with a logo) of a made-up receipt in the merchant's layout, as the
        location's terminals would send it."""
        facts = sample_facts(
            self._store.merchant_name(merchant_id) or "", location_name, self._now().astimezone(self._zone)
        )
        with self._engine.connect() as conn:
            location_id = _location_id(conn, merchant_id, location_name) if location_name else ""
        layout = self.layout(merchant_id, location_id)
        subject, body = render(facts, layout)
        return subject, body, bool(layout.logo_png)

    # Operators

    @property
    def enabled(self) -> bool:
        return self._server is not None

    def outbox(self, limit: int = 20) -> tuple[dict[str, int], list[OutboxEntry]]:
        """Receipts by state, and the newest of those not sent."""
        with self._engine.connect() as conn:
            counts = {
                str(state): int(n)
                for state, n in conn.execute(
                    select(receipts.c.state, func.count()).group_by(receipts.c.state)
                )
            }
            rows = conn.execute(
                select(receipts)
                .where(receipts.c.state != "sent")
                .order_by(receipts.c.created_at.desc())
                .limit(limit)
            ).all()
        entries = [
            OutboxEntry(
                r.receipt_id,
                r.terminal_id,
                r.transaction_id,
                r.recipient_masked,
                r.state,
                r.attempts,
                r.last_error,
                as_utc(r.next_attempt_at),
            )
            for r in rows
        ]
        return counts, entries

    def retry_now(self) -> int:
        """Make every waiting receipt due now (after the mail server was mended); how many."""
        with writing(self._engine) as conn:
            due = conn.execute(
                update(receipts).where(receipts.c.state == "queued").values(next_attempt_at=self._now())
            ).rowcount
        self._wake.set()
        return int(due)

    # The mailer

    def start(self) -> None:
        if self._server is None:
            return
        self._thread = threading.Thread(target=self._run, name="receipt-mailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=(self._server.timeout_s if self._server else 0) + 5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_due()
            except Exception:  # a database hiccup: try again on the next round
                log.exception("receipt mailer round failed")
            self._wake.wait(timeout=self._next_wait_s())
            self._wake.clear()

    def _next_wait_s(self) -> float:
        with self._engine.connect() as conn:
            due = conn.execute(
                select(func.min(receipts.c.next_attempt_at)).where(receipts.c.state == "queued")
            ).scalar()
        if due is None:
            return RETRY_WAIT_MAX_S
        return max(0.0, min((as_utc(due) - self._now()).total_seconds(), RETRY_WAIT_MAX_S))

    def deliver_due(self) -> int:
        """Send every receipt that is due; the number the mail server took."""
        server = self._server
        assert server is not None
        with self._engine.connect() as conn:
            due = conn.execute(
                select(
                    receipts,
                    func.coalesce(location_logos.c.logo_png, receipt_layouts.c.logo_png).label("logo"),
                )
                .select_from(
                    receipts.join(terminals, terminals.c.terminal_id == receipts.c.terminal_id)
                    .outerjoin(receipt_layouts, receipt_layouts.c.merchant_id == terminals.c.merchant_id)
                    .outerjoin(location_logos, location_logos.c.location_id == terminals.c.location_id)
                )
                .where(receipts.c.state == "queued", receipts.c.next_attempt_at <= self._now())
                .order_by(receipts.c.next_attempt_at)
                .limit(DUE_BATCH_MAX)
            ).all()
        sent = 0
        for row in due:
            if self._stopping.is_set():
                break
            if not self._claim(row.receipt_id, row.next_attempt_at, server):
                continue  # another node's mailer took it
            try:
                send_mail(server, row.recipient, row.subject, row.body, row.logo or b"")
            except smtplib.SMTPRecipientsRefused as error:
                codes = [code for code, _ in error.recipients.values()]
                self._put_off(row, f"recipient refused ({codes})", give_up=all(c >= 500 for c in codes))
            except smtplib.SMTPDataError as error:  # the message itself refused: sending it again won't do
                permanent = 500 <= error.smtp_code < 600
                self._put_off(row, f"mail server answered {error.smtp_code}", give_up=permanent)
            except smtplib.SMTPResponseException as error:
                # AUTH, STARTTLS, MAIL FROM: the switch's own mail settings, not this customer's address.
                self._put_off(row, f"mail server answered {error.smtp_code}", give_up=False)
            except (OSError, smtplib.SMTPException) as error:
                self._put_off(row, f"mail server not reached: {type(error).__name__}", give_up=False)
            except Exception as error:  # one receipt's fault must not stop every other's
                log.exception("receipt %s could not be sent", row.receipt_id)
                self._put_off(row, f"receipt not sendable: {type(error).__name__}", give_up=True)
            else:
                self._finish(row.receipt_id, "sent", "")
                sent += 1
        return sent

    def _claim(self, receipt_id: str, due_at: dt.datetime, server: MailServer) -> bool:
        """Push the receipt's next attempt past this send, unless another mailer did so first.

        With several nodes on one database, only the mailer whose update matches sends; one that
        dies after sending leaves the receipt due again later (sent twice, never lost).
        """
        lease = dt.timedelta(seconds=2 * server.timeout_s + 5)
        with writing(self._engine) as conn:
            claimed = conn.execute(
                update(receipts)
                .where(
                    receipts.c.receipt_id == receipt_id,
                    receipts.c.state == "queued",
                    receipts.c.next_attempt_at == due_at,
                )
                .values(next_attempt_at=self._now() + lease)
            ).rowcount
        return bool(claimed == 1)

    def _put_off(self, row: Row[Any], error: str, *, give_up: bool) -> None:
        attempts, receipt_id = int(row.attempts) + 1, str(row.receipt_id)
        if give_up or attempts >= self._attempts_max:
            self._finish(receipt_id, "failed", error, attempts)
            return
        wait_s = min(self._retry_s * 2 ** (attempts - 1), RETRY_WAIT_MAX_S)
        with writing(self._engine) as conn:
            conn.execute(
                update(receipts)
                .where(receipts.c.receipt_id == receipt_id)
                .values(
                    attempts=attempts,
                    last_error=error[:250],
                    next_attempt_at=self._now() + dt.timedelta(seconds=wait_s),
                )
            )
        self._observe("retried")
        log.warning("receipt put off", extra={"receipt_id": receipt_id, "error": error, "retry_in_s": wait_s})

    def _finish(self, receipt_id: str, state: str, error: str, attempts: int | None = None) -> None:
        """Sent or given up: the clear address is forgotten either way."""
        values: dict[str, object] = {
            "state": state,
            "recipient": "",
            "last_error": error[:250],
            "done_at": self._now(),
        }
        if attempts is not None:
            values["attempts"] = attempts
        with writing(self._engine) as conn:
            conn.execute(update(receipts).where(receipts.c.receipt_id == receipt_id).values(**values))
        self._observe(state)
        if state == "sent":
            log.info("receipt sent", extra={"receipt_id": receipt_id})
        else:
            log.warning("receipt given up", extra={"receipt_id": receipt_id, "error": error})


def _location_id(conn: Connection, merchant_id: str, name: str) -> str:
    found = conn.execute(
        select(locations.c.location_id).where(
            locations.c.merchant_id == merchant_id, locations.c.name == name
        )
    ).scalar()
    if found is None:
        raise ReceiptRefusedError("not_found", f"location {quoted(name)}: no such location of {merchant_id}")
    return str(found)


def send_mail(server: MailServer, recipient: str, subject: str, body: str, logo_png: bytes = b"") -> None:
    """One plain-text mail through the mail server; smtplib's and the socket's errors as they come.

    With a logo, an HTML part beside the text shows the logo above the same text.
    """
    message = email.message.EmailMessage()
    message["From"] = server.sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(
        domain=server.sender.rpartition("@")[2] or socket.getfqdn()
    )
    message.set_content(body)
    if logo_png:
        logo_id = email.utils.make_msgid(domain=server.sender.rpartition("@")[2] or socket.getfqdn())
        message.add_alternative(
            f'<html><body><p><img src="cid:{logo_id[1:-1]}" alt="logo"></p>'
            f"<pre>{html.escape(body)}</pre></body></html>",
            subtype="html",
        )
        html_part = message.get_body(("html",))
        assert isinstance(html_part, email.message.EmailMessage)
        html_part.add_related(logo_png, "image", "png", cid=logo_id)
    smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout_s)
    try:
        if server.starttls:
            smtp.starttls()
        if server.username:
            smtp.login(server.username, server.password)
        smtp.send_message(message)
    finally:
        # Taken once send_message returns: an answer to QUIT other than 221 (a with-block raises
        # on it) made a delivered receipt be sent again, up to eight times.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()
