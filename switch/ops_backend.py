"""SwitchOpsBackend: the ops console's view of the running switch (cards, terminals, acquirers, drain)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from importlib import metadata

from sqlalchemy import func, select
from sqlalchemy.exc import NoResultFound

from actors.acquirer_gateway import AcquirerGateway, GatewayNotRunningError
from actors.acquirer_types import AcquirerEndpoint, LinkState
from ops.console_backend import (
    AcquirerInfo,
    ActionResult,
    CardInfo,
    DayCloseListing,
    DayCloseReport,
    DayCloseTotal,
    ReceiptEntry,
    ReceiptsView,
    StoreAndForwardEntry,
    StoreAndForwardView,
    SwitchStatus,
    TerminalInfo,
    TopUpsWaiting,
)
from switch import admin
from switch.admin import SWITCH_DEVICE_NAMES, AdminError, AdminUnavailableError
from switch.core import SwitchCore
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus, card_number_problem, typed_card_digits
from switch.domain.money import CURRENCY_EXPONENTS, CURRENCY_NUMERIC
from switch.domain.response_codes import ResponseCode
from switch.store import repository
from switch.store.engine import MissingIndexes
from switch.store.periods import TypeTotal
from switch.store.saf import SafEntry
from switch.store.schema import day_closes, terminals, transactions

NO_ACQUIRERS = "no acquirer links configured"
NO_RECEIPTS = "e-mailed receipts are off (no mail server configured)"
CURRENCY_BY_NUMERIC = {numeric: alpha for alpha, numeric in CURRENCY_NUMERIC.items()}


def _version() -> str:
    try:
        return metadata.version("txswitch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    return repository.as_utc(moment) if moment is not None else None


def _exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS.get(currency, 2)


class SwitchOpsBackend:
    """Implements ops.console_backend.OpsBackend over SwitchCore; every change goes through the
    same actors as terminal and backoffice traffic, so a console action never races a card."""

    def __init__(
        self,
        core: SwitchCore,
        *,
        drain: Callable[[], None],
        draining: Callable[[], bool],
        requests_in_flight: Callable[[], int] = lambda: 0,
        gateway: AcquirerGateway | None = None,
        acquirer_endpoints: Sequence[AcquirerEndpoint] = (),
        missing_indexes: MissingIndexes | None = None,
    ) -> None:
        self._core = core
        self._missing_indexes = missing_indexes
        self._drain = drain
        self._draining = draining
        self._requests_in_flight = requests_in_flight
        self._gateway = gateway
        self._endpoints = {endpoint.name: endpoint for endpoint in acquirer_endpoints}
        self._started_s = time.monotonic()
        self._version = _version()

    # -- status -------------------------------------------------------------------------------

    def status(self) -> SwitchStatus:
        core = self._core
        own = terminals.c.device_name.in_(SWITCH_DEVICE_NAMES)
        with core.store.engine.connect() as conn:
            active, own_active = conn.execute(
                select(func.count(), func.count().filter(own)).where(terminals.c.active.is_(True))
            ).one()
        links_up = links_total = saf_pending = 0
        if self._gateway is not None:
            stats = self._gateway.statistics()
            links_total = len(stats.links)
            links_up = sum(link.state is LinkState.signed_on for link in stats.links)
            saf_pending = stats.saf_depth
        changes = core.location_changes.waiting()
        return SwitchStatus(
            version=self._version,
            uptime_s=int(time.monotonic() - self._started_s),
            draining=self._draining(),
            terminals_active=int(active) - int(own_active),
            switch_terminals_active=int(own_active),
            terminals_online=core.terminals_online(),
            card_actors_live=core.card_actors.statistics().live,
            requests_in_flight=self._requests_in_flight(),
            acquirer_links_up=links_up,
            acquirer_links_total=links_total,
            store_and_forward_pending=saf_pending,
            location_changes_pending=changes.pending,
            location_change_oldest_waited_s=int(changes.oldest_waited_s),
            indexes_missing=self._missing_indexes.missing() if self._missing_indexes is not None else (),
            top_ups_waiting=self._top_ups_waiting(),
        )

    def _top_ups_waiting(self) -> TopUpsWaiting | None:
        waiting = self._core.top_ups.waiting()  # as the sweep last counted them: no query here
        if waiting is None:
            return None
        return TopUpsWaiting(
            waiting.confirming,
            waiting.refund_due,
            int(waiting.oldest_confirming_waited_s),
            int(waiting.oldest_refund_due_waited_s),
        )

    # -- terminals ------------------------------------------------------------------------------

    def list_terminals(self) -> Sequence[TerminalInfo]:
        return [self._terminal_info(info) for info in self._core.admin.list_terminals()]

    def find_terminal(self, terminal_id: str) -> TerminalInfo | None:
        info = self._core.store.terminal(terminal_id)
        return None if info is None else self._terminal_info(info)

    def _terminal_info(self, info: repository.TerminalInfo) -> TerminalInfo:
        with self._core.store.engine.connect() as conn:
            merchant = repository.merchant_name(conn, info.merchant_id)
            last_seen = conn.execute(
                select(func.max(transactions.c.created_at)).where(transactions.c.source == info.terminal_id)
            ).scalar()
            # The newest close's number only: reading the closes for it read 100 rows of totals.
            day_close_sequence = conn.execute(
                select(func.max(day_closes.c.sequence_number)).where(
                    day_closes.c.terminal_id == info.terminal_id
                )
            ).scalar()
        return TerminalInfo(
            terminal_id=info.terminal_id,
            merchant=merchant or info.merchant_id,
            location=info.location_name,
            device_name=info.device_name,
            active=info.active,
            online=(
                info.active
                and info.device_name not in SWITCH_DEVICE_NAMES
                and self._core.terminal_actors.is_live(info.terminal_id)
            ),
            activated_at=info.activated_at,
            last_seen_at=_aware(last_seen),
            day_close_sequence=int(day_close_sequence or 0),
        )

    def deactivate_terminal(self, terminal_id: str, actor: str) -> ActionResult:
        info = self._core.store.terminal(terminal_id)
        if info is None:
            return ActionResult(False, f"no terminal {terminal_id}")
        if not info.active:
            return ActionResult(False, f"terminal {terminal_id} is already deactivated")
        try:
            closed = self._core.deactivate_terminal(terminal_id)
        except AdminError as error:
            return _refused(error)
        done = f"terminal {terminal_id} deactivated; its credential no longer works"
        if closed is not None:  # its open period held approved money: closed as a day close would
            done += f"; its period {closed.period_number} closed (sequence number {closed.sequence_number})"
        return ActionResult(True, done)

    def day_close_reports(
        self, terminal_id: str, page_size: int, before_sequence: int = 0
    ) -> DayCloseListing | None:
        store = self._core.store
        info = store.terminal(terminal_id)
        if info is None:
            return None
        page = store.day_close_page(terminal_id, page_size, before_sequence)
        reports = [
            DayCloseReport(
                terminal_id,
                close.sequence_number,
                close.opened_at,
                close.closed_at,
                [_total(total) for total in close.totals],
            )
            for close in page.reports
        ]
        if before_sequence:  # an older page: the open period is on the newest one only
            return DayCloseListing(reports, page.next_before_sequence_number)
        open_totals = store.period_totals(terminal_id, info.period_number)
        open_sequence = max((report.sequence for report in reports), default=0) + 1
        reports.append(
            DayCloseReport(
                terminal_id, open_sequence, info.period_opened_at, None, [_total(t) for t in open_totals]
            )
        )
        return DayCloseListing(reports, page.next_before_sequence_number)

    # -- cards --------------------------------------------------------------------------------

    def _card_id(self, card_ref: str) -> str | None:
        """A card number (digits, maybe grouped as printed: typed_card_digits) or the switch's card id."""
        digits = typed_card_digits(card_ref)
        if digits is not None:
            return self._core.cards.card_id(digits)
        try:
            self._core.store.card_state(card_ref)
        except NoResultFound:
            return None
        return card_ref

    def find_card(self, card_ref: str) -> CardInfo | None:
        card_id = self._card_id(card_ref)
        if card_id is None:
            return None
        pin = self._core.card_pin_store.load(card_id)
        pin_blocked = pin is not None and pin.blocked(self._core.settings.card_pin_tries_max)
        return _card_info(self._core.balance(card_id), pin_blocked)

    def block_card(self, card_ref: str, actor: str) -> ActionResult:
        if (problem := _card_number_problem(card_ref, "card")) is not None:
            return ActionResult(False, problem)
        card_id = self._card_id(card_ref)
        if card_id is None:
            return ActionResult(False, "no such card")
        try:
            state = self._core.set_card_status(
                card_id, CardStatus.blocked, "blocked from the ops console", actor
            )
        except AdminError as error:
            return _refused(error)
        return ActionResult(True, f"card {state.card_id} ({state.masked}) {state.status.value}")

    def unblock_card(self, card_ref: str, actor: str) -> ActionResult:
        if (problem := _card_number_problem(card_ref, "card")) is not None:
            return ActionResult(False, problem)
        card_id = self._card_id(card_ref)
        if card_id is None:
            return ActionResult(False, "no such card")
        try:
            state = self._core.set_card_status(
                card_id, CardStatus.active, "unblocked from the ops console", actor
            )
        except AdminError as error:
            return _refused(error)
        return ActionResult(True, f"card {state.card_id} ({state.masked}) {state.status.value}")

    def replace_card(self, lost_card_ref: str, new_card_ref: str, actor: str) -> ActionResult:
        problem = _card_number_problem(lost_card_ref, "lost_card") or _card_number_problem(
            new_card_ref, "replacement_card"
        )
        if problem is not None:
            return ActionResult(False, problem)
        lost_id, new_id = self._card_id(lost_card_ref), self._card_id(new_card_ref)
        if lost_id is None:
            return ActionResult(False, "no such card (lost)")
        if new_id is None:
            return ActionResult(False, "no such card (new)")
        try:
            # new_id: a drawn id holds no digit run, which replace_card would refuse as a card number.
            transfer = self._core.replace_card(lost_id, new_id, admin.new_id("ops"), actor)
        except AdminError as error:
            return _refused(error)
        moved = _money_text(transfer.moved_minor, transfer.lost.currency)
        return ActionResult(
            True,
            f"moved {moved} from {transfer.lost.card_id} ({transfer.lost.masked}) to "
            f"{transfer.replacement.card_id} ({transfer.replacement.masked}); the lost card is "
            f"{transfer.lost.status.value}",
        )

    # -- acquirers and store-and-forward -------------------------------------------------------

    def list_acquirers(self) -> Sequence[AcquirerInfo] | None:
        if self._gateway is None:
            return None
        stats = self._gateway.statistics()
        pending = self._gateway.saf_pending_counts()
        infos = []
        for link in stats.links:
            endpoint = self._endpoints.get(link.name)
            infos.append(
                AcquirerInfo(
                    name=link.name,
                    state=link.state.value,
                    host=endpoint.host if endpoint is not None else "-",
                    port=endpoint.port if endpoint is not None else 0,
                    requests_in_flight=link.in_flight,
                    last_echo_at=link.last_echo_at,
                    store_and_forward_pending=pending.get(link.name, 0),
                )
            )
        return infos

    def _network(
        self, name: str, send: Callable[[AcquirerGateway, str], ResponseCode], what: str
    ) -> ActionResult:
        gateway = self._gateway
        if gateway is None:
            return ActionResult(False, NO_ACQUIRERS)
        if name not in {link.name for link in gateway.statistics().links}:
            return ActionResult(False, f"no acquirer {name}")
        try:
            code = send(gateway, name)
        except GatewayNotRunningError as error:
            return ActionResult(False, str(error))
        answer = f"{what} to {name}: {code.iso_code} {code.message}"
        return ActionResult(code is ResponseCode.approved, answer)

    def acquirer_sign_on(self, name: str, actor: str) -> ActionResult:
        return self._network(name, AcquirerGateway.sign_on, "sign-on")

    def acquirer_echo(self, name: str, actor: str) -> ActionResult:
        return self._network(name, AcquirerGateway.echo, "echo")

    def store_and_forward(self) -> StoreAndForwardView | None:
        if self._gateway is None:
            return None
        entries = [_saf_entry(entry) for entry in self._gateway.saf_pending()]
        # Counted after the listing: an advice stored in between is counted, never listed twice.
        pending_total = sum(self._gateway.saf_pending_counts().values())
        return StoreAndForwardView(pending_total, entries)

    def store_and_forward_retry(self, actor: str) -> ActionResult:
        if self._gateway is None:
            return ActionResult(False, NO_ACQUIRERS)
        before = sum(self._gateway.saf_pending_counts().values())
        acknowledged = self._gateway.retry_saf()
        left = sum(self._gateway.saf_pending_counts().values())
        return ActionResult(
            True, f"{before} advices retransmitted, {acknowledged} acknowledged, {left} pending"
        )

    # -- receipts -----------------------------------------------------------------------------

    def receipts(self) -> ReceiptsView | None:
        if not self._core.receipts.enabled:
            return None
        counts, entries = self._core.receipts.outbox()
        return ReceiptsView(
            counts,
            [
                ReceiptEntry(
                    e.receipt_id,
                    e.terminal_id,
                    e.transaction_id,
                    e.recipient_masked,
                    e.state,
                    e.attempts,
                    e.last_error,
                    e.next_attempt_at,
                )
                for e in entries
            ],
        )

    def receipts_retry(self, actor: str) -> ActionResult:
        if not self._core.receipts.enabled:
            return ActionResult(False, NO_RECEIPTS)
        due = self._core.receipts.retry_now()
        return ActionResult(True, f"{due} waiting receipts are due now; the mailer sends them")

    # -- drain --------------------------------------------------------------------------------

    def drain(self, actor: str) -> ActionResult:
        if self._draining():
            return ActionResult(True, "already draining")
        self._drain()
        return ActionResult(
            True,
            "draining: health is NOT_SERVING, new terminal requests get UNAVAILABLE, "
            "in-flight requests finish; stop the process with SIGTERM when status shows 0 in flight",
        )


def _refused(error: AdminError) -> ActionResult:
    """A refusal in the switch's words; one for a fault that may pass says so, so the operator
    (or a script) sends it again rather than taking it for a rule."""
    return ActionResult(False, str(error), unavailable=isinstance(error, AdminUnavailableError))


def _total(total: TypeTotal) -> DayCloseTotal:
    name = total.transaction_type
    if total.undoes:
        name = f"{name} of {total.undoes}"
    if total.payment_method != "stored_value":
        name = f"{name} ({total.payment_method})"
    return DayCloseTotal(name, total.count, total.total_minor, total.currency, _exponent(total.currency))


def _card_number_problem(card_ref: str, field: str) -> str | None:
    """Why a card number typed at the console is not one, in the backoffice gRPC's words
    ("card.card_number fails the Luhn check"), or None: "no such card" for a mistyped number sent
    the operator looking for a missing card. A card id (not digits) is looked up as it is."""
    digits = typed_card_digits(card_ref)
    if digits is None:
        return None
    problem = card_number_problem(digits)
    return None if problem is None else f"{field}.{problem}"


def _card_info(state: CardState, pin_blocked: bool) -> CardInfo:
    return CardInfo(
        card_ref=state.card_id,
        masked_number=state.masked,
        programme=f"{state.programme.name} ({state.programme.kind.value})",
        status=state.status.value,
        expiry=state.expiry,
        balance_minor=state.balance_minor,
        currency=state.currency,
        currency_exponent=_exponent(state.currency),
        pin_blocked=pin_blocked,  # a card PIN (benefit cards may have one) after too many wrong tries
    )


def _money_text(amount_minor: int, currency: str) -> str:
    exponent = _exponent(currency)
    units, minor = divmod(amount_minor, 10**exponent)
    return f"{units}.{minor:0{exponent}d} {currency}" if exponent else f"{units} {currency}"


def _saf_entry(entry: SafEntry) -> StoreAndForwardEntry:
    currency = CURRENCY_BY_NUMERIC.get(entry.currency_numeric, entry.currency_numeric)
    return StoreAndForwardEntry(
        entry_id=str(entry.saf_id),
        acquirer=entry.acquirer,
        mti="0421" if entry.is_repeat else "0420",
        stan=entry.reversal_stan,
        amount_minor=entry.amount_minor,
        currency=currency,
        currency_exponent=_exponent(currency),
        attempts=entry.attempts,
        created_at=entry.created_at,
        last_attempt_at=entry.last_attempt_at,
    )
