"""SwitchCore: the running switch behind every entry point: actors, journal, store, directories."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pykka
from sqlalchemy import Engine

from actors.card_actor import TRANSFER_READS_MAX, CardActor, CardPinServices, CardServices
from actors.card_copies import CardCopies, CardCopy
from actors.journal_writer import BatchObserver, FailureObserver, JournalWriter, LostObserver
from actors.messages import (
    CloseDay,
    Deactivate,
    GetBalance,
    QueryStatus,
    Reload,
    ReportX,
    SetCardPin,
    SetStatus,
    Submit,
    TransferOut,
    TransferRefused,
)
from actors.payments import PaymentProcessor
from actors.registry import ASK_ATTEMPTS_MAX, ActorRegistry
from actors.reply import Reply, settled
from actors.terminal_actor import EmployeePins, TerminalActor, TerminalServices
from ops.logs import log_outcome, pan_in_id_problem, scrub_cut
from switch.admin import (
    SWITCH_DEVICE_NAMES,
    Admin,
    AdminConflictError,
    AdminError,
    AdminStateError,
    AdminUnavailableError,
    ReplacementChainTooLongError,
)
from switch.config import Settings
from switch.directory import CardDirectory, TerminalDirectory
from switch.domain import ledger, reports
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.domain.employees import LockoutPolicy
from switch.domain.ledger import LedgerRefusal
from switch.domain.quoting import quoted
from switch.domain.transactions import Outcome, TerminalCommand
from switch.follow_workers import FollowAsked, FollowWorkers
from switch.location_changes import LocationChanges
from switch.password_resets import PasswordResets
from switch.passwords import MerchantPasswords, SignInLockout
from switch.pins import ClosedLoopPins, TerminalPinKeys
from switch.receipts import ReceiptObserver, Receipts
from switch.report_export import ExportSlots
from switch.security import MasterKey, SecurityModule
from switch.store.card_pins import CardPinStore
from switch.store.inbound_purge import InboundRepeatPurge
from switch.store.journal import Write, WriteResult
from switch.store.journal_forkserver import journal_database_url
from switch.store.keys import KeyStore
from switch.store.periods import WebDayRule
from switch.store.repository import REPLACED_CHAIN_LINKS_MAX, DayCloseReport, Store, StoredTransfer
from switch.store.schema import CARD_EVENT_DETAIL_MAX
from switch.top_ups import OnlineTopUps, TopUpSweeper
from switch.web_days import CLOSE_FAULTS, WebDays

log = logging.getLogger(__name__)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# When money on a replaced card was moved on: right after a credit landed on it, found at start,
# or found as the card that replaced it was replaced in turn.
FOLLOW_WHEN = ("credit", "start", "replacement")
# What became of it: moved; nothing_moved (another move had moved it: one keyed by the same credit,
# or the card's replacement, under way as the credit landed); not_replaced (the card is blocked, or
# lost and its replacement did not land within replacement_follow_wait_s: it waits for the office);
# unblocked (the card is active again, not replaced: the money stays on it, its holder's, owed to no
# replacement); failed (logged); left_at_stop (queued, or waiting for a replacement to land, as the
# switch stopped: logged, the money stays on the lost card and the next start finds it).
FOLLOW_OUTCOMES = ("moved", "nothing_moved", "not_replaced", "unblocked", "failed", "left_at_stop")
# How often a follow waiting for a lost card's replacement to land looks again (_look_again_later).
FOLLOW_WAIT_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class FollowStatistics:
    """Moves of money credited to replaced cards since this process started: how many by (when,
    outcome), and how much was moved in minor units by (when, currency). Never the card."""

    moves: dict[tuple[str, str], int]
    moved_minor: dict[tuple[str, str], int]
    queued: int = 0  # now: moves waiting for a follow worker
    asked_later: int = 0  # now: moves waiting to look again for a replacement still landing
    backlog: int = 0  # now: moves a start found, not made yet


class ZoneDate:
    """The date in a time zone now, as utc_now().astimezone(zone).date() says it, read once until
    the zone's next midnight: a card's expiry is checked against it on every redemption, load and
    balance, where the conversion cost 1.3 us. `clock`: seconds since the epoch (time.time)."""

    def __init__(self, zone: dt.tzinfo, clock: Callable[[], float] = time.time) -> None:
        self._zone = zone
        self._clock = clock
        # (date, from_s, until_s): the date holds for a clock reading in [from_s, until_s). One
        # tuple, so a thread that reads it while another replaces it sees one or the other.
        self._held: tuple[dt.date, float, float] = (dt.date.min, math.inf, -math.inf)

    def today(self) -> dt.date:
        now_s = self._clock()
        date, from_s, until_s = self._held
        if from_s <= now_s < until_s:
            return date
        moment = dt.datetime.fromtimestamp(now_s, self._zone)
        date = moment.date()
        # A midnight a spring change skips reads as the change's instant, as it should.
        next_midnight_s = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), self._zone).timestamp()
        last_offset = dt.datetime.fromtimestamp(next_midnight_s - 1, self._zone).utcoffset()
        if last_offset == moment.utcoffset():
            self._held = (date, now_s, next_midnight_s)
        # Else the offset changes before midnight, which may turn the date back (Goose Bay's autumn
        # change went from 00:01 back to 23:01 until 2010): read each time until the next day.
        return date


@dataclass(frozen=True, slots=True)
class CardTransfer:
    lost: CardState
    replacement: CardState
    moved_minor: int
    entry_id: int | None
    again: bool = False  # the request id's stored answer: moved_minor moved before, not now


class SwitchCore:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        card_hash_key: bytes,
        on_batch: BatchObserver | None = None,
        on_commit_failure: FailureObserver | None = None,
        payments: PaymentProcessor | None = None,
        terminal_pin_keys: TerminalPinKeys | None = None,
        on_receipt: ReceiptObserver | None = None,
        on_journal_lost: LostObserver | None = None,
    ) -> None:
        self.settings = settings
        try:
            # The shop's clock, for reports and receipts.
            self.report_zone = reports.zone(settings.report_time_zone)
        except reports.ReportQueryError as error:
            raise ValueError(f"report_time_zone (TXSWITCH_REPORT_TIME_ZONE): {error}") from None
        self._zone_date = ZoneDate(self.report_zone)
        self.store = Store(engine, settings.copy_max_age_s)
        self.passwords = MerchantPasswords(engine, SignInLockout.from_settings(settings), utc_now)
        self.export_slots = ExportSlots(settings.exports_concurrent_max)
        self.receipts = Receipts(settings, self.store, self.report_zone, utc_now, on_receipt)
        self.password_resets = PasswordResets(engine, settings, utc_now)
        self.cards = CardDirectory(self.store, card_hash_key)
        # One node: a card actor starts from what its predecessor knew, or from the card's issue.
        self.card_copies = CardCopies() if settings.copy_max_age_s is None else None
        # A programme's settings change one at a time here, each noted in the copies' guard in the
        # order written (programme_settings.set_load_step).
        self.programme_changes = threading.Lock()
        self.admin = Admin(
            self.store,
            card_hash_key,
            self.passwords,
            on_card_issued=self._card_issued,
            write=self.write_now,
            zone=self.report_zone,
        )
        self.location_changes = LocationChanges(engine, utc_now)
        self.terminals = TerminalDirectory(self.store, settings.copy_max_age_s)
        self.writer = JournalWriter(
            engine,
            batch_writes_max=settings.journal_batch_writes_max,
            queue_writes_max=settings.journal_queue_writes_max,
            linger_ms=settings.journal_linger_ms,
            on_batch=on_batch,
            on_failure=on_commit_failure,
            database_url=journal_database_url(settings),
            on_lost=on_journal_lost,
            web_days=WebDayRule(self.report_zone, SWITCH_DEVICE_NAMES),
        )
        master_key = MasterKey.from_hex(settings.master_key_hex or secrets.token_hex(32))
        self.security = SecurityModule(master_key)
        # The same terminal PIN keys as activation issues (Acquiring), so a new key is used at once.
        self.pins = ClosedLoopPins(self.security, KeyStore(engine), terminal_pin_keys)
        self.card_pin_store = CardPinStore(engine)
        card_pin_services = CardPinServices(self.card_pin_store, settings.card_pin_tries_max, utc_now)
        card_services = CardServices(
            self.store,
            self.writer,
            # A card is valid through its expiry day where it is used, not in UTC: after midnight in
            # Amsterdam an expired card was still taken for an hour or two.
            self._zone_date.today,
            settings.reply_timeout_s,
            card_pin_services,
            max_age_s=settings.copy_max_age_s,
            copies=self.card_copies,
            credited_after_replacement=self._follow_replacement,
        )
        self._web_terminals: set[str] = set()  # this process's web back office terminals
        self.card_actors: ActorRegistry[str] = ActorRegistry(
            "card",
            lambda card_id: CardActor.start(card_id, card_services),
            live_max=settings.card_actors_live_max,
            idle_s=settings.card_actor_idle_s,
            stop_timeout_s=settings.reply_timeout_s,
        )
        policy = LockoutPolicy(settings.employee_pin_tries_max, settings.employee_lock_duration_s)
        self.employee_pins = EmployeePins(self.store, self.writer, policy, utc_now, settings.reply_timeout_s)
        terminal_services = TerminalServices(
            self.store,
            self.writer,
            self.card_actors,
            self.employee_pins,
            utc_now,
            settings.reply_timeout_s,
            settings.terminal_recent_transactions_max,
            payments,
            settings.copy_max_age_s,
        )
        self.terminal_actors: ActorRegistry[str] = ActorRegistry(
            "terminal",
            lambda terminal_id: TerminalActor.start(terminal_id, terminal_services),
            live_max=settings.terminal_actors_live_max,
            idle_s=settings.terminal_actor_idle_s,
            stop_timeout_s=settings.reply_timeout_s,
        )
        self._reaper_stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="actor-reaper", daemon=True)
        self.web_days = WebDays(
            engine, self.report_zone, utc_now, self._close_web_period, settings.web_day_close_interval_s
        )
        self._follow_moves = {(when, outcome): 0 for when in FOLLOW_WHEN for outcome in FOLLOW_OUTCOMES}
        self._follow_moved_minor: dict[tuple[str, str], int] = {}
        self._follow_lock = threading.Lock()
        # How often a follow looks for a lost card's replacement still landing (_look_again_later).
        self._follow_looks_max = math.ceil(settings.replacement_follow_wait_s / FOLLOW_WAIT_POLL_S)
        self._follows = FollowWorkers(
            self._move_to_replacement,
            settings.replacement_follow_workers_max,
            settings.replacement_follows_queued_max,
        )
        self.top_ups = OnlineTopUps(engine, self, utc_now)
        self.inbound_repeat_purge = InboundRepeatPurge(engine, settings, utc_now)
        self._top_up_sweeper = TopUpSweeper(
            self.top_ups, settings.top_up_sweep_interval_s, (self.inbound_repeat_purge.purge,)
        )

    def start(self) -> None:
        self.start_workers()
        self.start_sweeps()

    def start_workers(self) -> None:
        """What answers requests: the journal, the reaper, the reset mailer, the follow workers.
        None of them writes or sends anything until asked."""
        self.writer.start()
        self._reaper.start()
        self.password_resets.start()
        self._follows.start()

    def start_sweeps(self) -> None:
        """What writes or sends by itself: the web day pass, the receipt mailer, the money a stop
        left on replaced cards, the top-up sweep. After start_workers; `serve` starts them only
        once every listener is bound, so a start refused for a taken port changed nothing."""
        self.web_days.start()
        self.receipts.start()
        # Money credited to a replaced card that a stop kept from following it (_follow_replacement),
        # moved by the few follow workers from their backlog: the start does not wait for them.
        found = self.store.money_on_replaced_cards()
        self._follows.ask_backlog(
            [
                FollowAsked(card_id, f"start:{card_id}:{last_posting}", "start")
                for card_id, last_posting in found
            ]
        )
        self._top_up_sweeper.start()  # top-ups a stop or a PSP that gave up left confirming

    def stop(self) -> None:
        """Actors first (their decided writes land), then the journal flushes and stops."""
        self._top_up_sweeper.stop()  # before the actors: a load it is making lands or fails first
        self._stop_follows()
        self.receipts.stop()
        self.password_resets.stop()
        self.web_days.stop()  # before the actors: a close it is making lands or fails first
        self._reaper_stop.set()
        self.terminal_actors.stop_all()
        self.card_actors.stop_all()
        self.writer.stop()
        pykka.ActorRegistry.stop_all()

    def _stop_follows(self) -> None:
        """The money of moves not made stays on the lost cards for the next start: counted and logged."""
        left = self._follows.stop()
        for asked in left:
            self._count_follow(asked.when, "left_at_stop")
        if left:
            log.warning(
                "%d moves of money on replaced cards left at stop (queued, found at start, or waiting for "
                "a replacement to land): the money stays on the lost cards, and the next start moves it",
                len(left),
            )

    def _reap(self) -> None:
        while not self._reaper_stop.wait(self.settings.reaper_interval_s):
            self.card_actors.reap()
            self.terminal_actors.reap()

    # Terminal protocol

    def submit(self, terminal_id: str, command: TerminalCommand) -> Outcome:
        """The outcome once durable; ReplyTimeoutError if not known in time.

        Posted, not asked: the terminal actor hands the command on to the card actor and is free
        at once, and this thread wakes once, when the journal has the outcome.
        """
        timeout_s = self.settings.ask_timeout_s + self.settings.reply_timeout_s
        for _ in range(ASK_ATTEMPTS_MAX):
            reply = Reply()
            self.terminal_actors.post(terminal_id, Submit(command), reply)
            try:
                return reply.wait(timeout_s)
            except pykka.ActorDeadError:
                continue  # an actor on the way stopped before it handled the command: again
        raise pykka.ActorDeadError("the actors for this transaction kept stopping")

    def submit_web(self, terminal_id: str, command: TerminalCommand) -> Outcome:
        """submit() through one of the switch's own terminals (the web back office, the online
        top-up), whose earlier day its write may have closed as it committed (switch.store.periods):
        then the answer names the period the transaction is stored in, not the one the terminal's
        actor still held, and that actor reads its terminal again. It does too after an answer
        that stored nothing: the journal refuses a cancel of a period closed so (12, refund
        instead), which the actor would otherwise approve again until it read its row. Logged as a
        terminal's transaction is (protocols.terminal_service), one info line each."""
        started = time.perf_counter()
        outcome = self.submit(terminal_id, command)
        stored = self.store.transaction(terminal_id, outcome.transaction_id)
        if stored is None or stored.record.period_number != outcome.period_number:
            self.terminal_actors.tell_if_live(terminal_id, Reload())
        if stored is not None and stored.record.period_number != outcome.period_number:
            outcome = dataclasses.replace(outcome, period_number=stored.record.period_number)
        log_outcome(log, terminal_id, outcome, started)
        return outcome

    async def submit_async(self, terminal_id: str, command: TerminalCommand) -> Outcome:
        """submit() for the event loop: awaits the outcome instead of blocking a thread on it."""
        timeout_s = self.settings.ask_timeout_s + self.settings.reply_timeout_s
        outcome: Outcome = await _posted(self.terminal_actors, terminal_id, Submit(command), timeout_s)
        return outcome

    async def transaction_status_async(self, terminal_id: str, transaction_id: str) -> Outcome | None:
        timeout_s = self.settings.reply_timeout_s + self.settings.ask_timeout_s
        outcome: Outcome | None = await _posted(
            self.terminal_actors, terminal_id, QueryStatus(transaction_id), timeout_s
        )
        return outcome

    async def balance_async(self, card_id: str) -> CardState:
        state: CardState = await _posted(self.card_actors, card_id, GetBalance(), self.settings.ask_timeout_s)
        return state

    def transaction_status(self, terminal_id: str, transaction_id: str) -> Outcome | None:
        outcome: Outcome | None = self.terminal_actors.ask(
            terminal_id,
            QueryStatus(transaction_id),
            self.settings.reply_timeout_s + self.settings.ask_timeout_s,
        )
        return outcome

    def close_day(self, terminal_id: str, close_id: str, period_number: int | None = None) -> DayCloseReport:
        """The terminal's close: of the open period, or only of period_number if named
        (DayClosePeriodError if that is not the open one and close_id did not close it)."""
        message = CloseDay(close_id, period_number)
        report: DayCloseReport = self.terminal_actors.ask(terminal_id, message, self._long_ask_s)
        return report

    def _close_web_period(self, terminal_id: str, close_id: str, period_number: int) -> DayCloseReport:
        """A web terminal's close of that period only: DayCloseError if it is no longer open."""
        self._web_terminals.add(terminal_id)  # its actor, live here now, is no device online
        message = CloseDay(close_id, period_number)
        report: DayCloseReport = self.terminal_actors.ask(terminal_id, message, self._long_ask_s)
        return report

    def close_web_days(self) -> list[DayCloseReport]:
        """Close the web back office's earlier days now (WebDays.close_due): the closes made or found."""
        return self.web_days.close_due()

    def x_report(self, terminal_id: str) -> DayCloseReport:
        report: DayCloseReport = self.terminal_actors.ask(terminal_id, ReportX(), self._long_ask_s)
        return report

    def balance(self, card_id: str) -> CardState:
        state: CardState = self.card_actors.ask(card_id, GetBalance(), self.settings.ask_timeout_s)
        return state

    def merchant_accepts(self, merchant_id: str, card: CardState) -> bool:
        """Whether the merchant takes the card's programme, as a redemption asks it (58 if not): a set
        lookup once the membership is known, a read for a programme the merchant never joined."""
        return self.store.merchant_accepts(merchant_id, card.programme.programme_id)

    @property
    def _long_ask_s(self) -> float:
        return self.settings.reply_timeout_s * 2 + self.settings.ask_timeout_s

    # Operations on cards and terminals

    def today(self) -> dt.date:
        """The date where the cards are used (the report time zone), for expiry."""
        return self._zone_date.today()

    def set_card_status(self, card_id: str, status: CardStatus, reason: str, actor: str) -> CardState:
        """The reason is an operator's free text, stored with the card's event: a card number typed
        into it is masked, and it is cut to its column's length (PostgreSQL refused it whole), cut as it is
        masked: a card number across the cut masked whole, a huge reason not scrubbed whole."""
        reason = scrub_cut(reason, CARD_EVENT_DETAIL_MAX, typed=True)
        # No time limit: the card actor waits for its write to land, so the answer is what holds.
        state: CardState = self.card_actors.ask(card_id, SetStatus(status, reason, actor), None)
        return state

    def set_card_pin(self, card_id: str, pvv: str, pvv_key_id: str) -> CardState:
        """Through the card's actor, so a PIN check in flight never sees half a change."""
        state: CardState = self.card_actors.ask(card_id, SetCardPin(pvv, pvv_key_id), self._long_ask_s)
        return state

    def _card_issued(self, card_hash: str, state: CardState) -> None:
        self.cards.remember(card_hash, state.card_id)
        if self.card_copies is not None:
            self.card_copies.issued(state.card_id, CardCopy(state, None))  # a new card has no PIN

    def replace_card(self, lost_card_id: str, new_card_id: str, request_id: str, actor: str) -> CardTransfer:
        """Block the lost card at once and move its balance to the new card in one entry."""
        if lost_card_id == new_card_id:
            raise AdminError("the replacement must be another card")
        problem = pan_in_id_problem("request_id", request_id)  # the journal key holds it as given
        if problem is not None:
            raise AdminError(problem)
        key = ledger.transfer_key(request_id)
        stored = self.store.stored_transfer(key)
        if stored is not None:  # sent again (its answer lost): the first answer, nothing moved twice
            return self._transfer_again(stored, lost_card_id, new_card_id, request_id)
        lost = self.store.card_state(lost_card_id)
        new = self.store.card_state(new_card_id)
        if lost.programme.programme_id != new.programme.programme_id:
            raise AdminError("the replacement card must belong to the same programme")
        if new.status is not CardStatus.active:
            raise AdminError(f"the replacement card is {new.status.value}")
        if new.expiry < self.today():
            raise AdminError(f"the replacement card expired on {new.expiry.isoformat()}")
        # Read before the check: the journal refuses the change if another replacement landed since.
        replaced_by_seen = self.store.card_replaced_by(lost_card_id)
        self._require_replaced_only_by(lost, new_card_id)
        room_minor = new.programme.balance_max_minor - new.balance_minor
        if lost.balance_minor > room_minor:
            most = new.money(new.programme.balance_max_minor).format()
            raise AdminError(
                f"the replacement card holds {new.money(new.balance_minor).format()}: with the lost card's "
                f"{lost.money(lost.balance_minor).format()} it would hold more than {most}; use an empty card"
            )
        if lost.status in (CardStatus.active, CardStatus.blocked):
            # Blocked by phone first, replaced at the office later: the holder then sees "lost" too,
            # the word for a card whose balance has moved to another.
            self.set_card_status(lost_card_id, CardStatus.lost, "reported lost", actor)
        # The new card's actor must not hold a stale balance while the transfer lands.
        with self.card_actors.exclusive(new_card_id):
            if self.card_copies is not None:  # the transfer lands around the new card's actors
                self.card_copies.forget(new_card_id)
            message = TransferOut(new_card_id, key, actor, replaced_by_seen)
            # No time limit: the new card stays fenced until the transfer has landed or failed, so
            # none of its actors can start from the balance before it (the journal always answers).
            moved: tuple[int, int | None] | TransferRefused = self.card_actors.ask(
                lost_card_id, message, None
            )
        if isinstance(moved, TransferRefused):
            # The same request sent twice at once: both found nothing stored, and the first's write
            # took the key; the loser answers what the first did, as a later replay would.
            stored = self.store.stored_transfer(key)
            if stored is not None:
                return self._transfer_again(stored, lost_card_id, new_card_id, request_id)
            self._require_replaced_only_by(lost, new_card_id)  # another card's replacement landed first
            if moved.problem:
                log.warning(
                    "replacement of %s by %s not stored: %s", lost_card_id, new_card_id, moved.problem
                )
            if moved.fault:  # the database or the journal, not a rule: sent again, it may land
                raise AdminUnavailableError(transfer_refused_text(moved, lost, new))
            raise AdminStateError(transfer_refused_text(moved, lost, new))
        # Money waiting on a card whose chain of replacements led to this one (its follow failed:
        # this card was blocked, or replaced at that moment) follows it on now, not at the next start.
        for card_id, last_posting in self.store.money_on_replaced_cards(chained_to=lost_card_id):
            self._follow_replacement(card_id, f"replacement:{card_id}:{last_posting}", when="replacement")
        moved_minor, entry_id = moved
        return CardTransfer(self.balance(lost_card_id), self.balance(new_card_id), moved_minor, entry_id)

    def _require_replaced_only_by(self, lost: CardState, new_card_id: str) -> None:
        """AdminStateError unless the lost card is not replaced or its chain ends at new_card_id: a
        card replaced already moves on only to the last card of its chain (as money following it
        does); another card named with it would become its replacement, and take what follows it."""
        last_id = self.last_replacement(lost.card_id)
        if last_id is not None and last_id != new_card_id:
            shown = self.store.card_state(last_id).masked
            raise AdminStateError(f"card {lost.masked} was replaced already: what follows it goes to {shown}")

    def _transfer_again(
        self, stored: StoredTransfer, lost_card_id: str, new_card_id: str, request_id: str
    ) -> CardTransfer:
        """The answer of a replacement whose request id was stored already: what it moved, by which
        entry (none if the card was empty), and both cards as they are now; refused if it named other
        cards."""
        asked = (ledger.card_account(lost_card_id), ledger.card_account(new_card_id))
        if (stored.source_account, stored.target_account) != asked:
            raise AdminConflictError(f"request_id {quoted(request_id)} has replaced another card already")
        return CardTransfer(
            self.balance(lost_card_id),
            self.balance(new_card_id),
            stored.amount_minor,
            stored.entry_id,
            again=True,
        )

    def _follow_replacement(self, card_id: str, because: str, when: str = "credit") -> None:
        """Money that landed on a replaced card (an undone ride) follows it to the card that replaced
        it, the last of a chain: a transfer keyed by what credited it, so it moves once. Moved by
        a follow worker (FollowWorkers), as a replacement asks the lost card's actor, which is
        calling this. Each is counted (`follow_statistics`) by when it was found (FOLLOW_WHEN) and
        its outcome; one the full queue refuses is failed, one a stop refuses left at stop: either
        way its money stays on the lost card for the next start."""
        assert when in FOLLOW_WHEN, when
        if not self._follows.ask_nowait(FollowAsked(card_id, because, when)):
            self._follow_not_asked(card_id, when, "follow queue full")

    def _move_to_replacement(self, asked: FollowAsked) -> None:
        """One move on a follow worker's thread; a failure is logged and counted, never raised."""
        try:
            new_card_id = self.last_replacement(asked.card_id)
            if new_card_id is None:  # blocked or lost, not replaced (yet)
                self._look_again_later(asked)
                return
            transfer = self.replace_card(asked.card_id, new_card_id, f"follow:{asked.because}", "switch")
        except Exception as error:  # a stop, a refusal: the next start tries again
            log.warning("money on replaced card %s not moved on: %s", asked.card_id, error)
            self._count_follow(asked.when, "failed")
            return
        if transfer.again:  # its key moved this money before (counted then): nothing moved now
            self._count_follow(asked.when, "nothing_moved")
            return
        self._count_follow(asked.when, "moved", transfer.moved_minor, transfer.replacement.currency)

    def _look_again_later(self, asked: FollowAsked) -> None:
        """A card lost and not replaced: only a replacement marks a card lost, so one is under way
        (on another node); its transfer, landing after the credit, moves the credit with the balance
        (it reads the balance again when it changed). The follow is asked again FOLLOW_WAIT_POLL_S
        later, at most `_follow_looks_max` times (about replacement_follow_wait_s), and the worker
        serves other follows meanwhile; then, or for a card blocked, the money waits for the office. A
        card unblocked meanwhile (active, not replaced) keeps the money: its holder's, owed to no one."""
        status = self.store.card_state(asked.card_id).status
        if status is not CardStatus.lost:  # no replacement under way
            self._count_follow(asked.when, "unblocked" if status is CardStatus.active else "not_replaced")
            return
        if asked.looks >= self._follow_looks_max:
            self._count_follow(asked.when, "not_replaced")
            return
        again = dataclasses.replace(asked, looks=asked.looks + 1)
        if not self._follows.ask_later(again, time.monotonic() + FOLLOW_WAIT_POLL_S):
            self._follow_not_asked(asked.card_id, asked.when, "follows waiting full")

    def _follow_not_asked(self, card_id: str, when: str, full: str) -> None:
        """A follow the workers refused: left at stop while they stop (as the moves a stop hands
        back, `_stop_follows`), else failed; its money stays on the lost card for the next start."""
        if self._follows.stopping:
            log.info("money on replaced card %s left at stop: the next start moves it on", card_id)
            self._count_follow(when, "left_at_stop")
            return
        log.warning("money on replaced card %s not moved on: %s", card_id, full)
        self._count_follow(when, "failed")

    def _count_follow(self, when: str, outcome: str, moved_minor: int = 0, currency: str = "") -> None:
        if outcome == "moved" and moved_minor == 0:
            outcome = "nothing_moved"
        with self._follow_lock:
            self._follow_moves[when, outcome] += 1
            if moved_minor:
                key = (when, currency)
                self._follow_moved_minor[key] = self._follow_moved_minor.get(key, 0) + moved_minor

    def follow_statistics(self) -> FollowStatistics:
        """A snapshot of the moves of money credited to replaced cards (`_follow_replacement`)."""
        workers = self._follows.statistics()
        with self._follow_lock:
            return FollowStatistics(
                dict(self._follow_moves),
                dict(self._follow_moved_minor),
                workers.queued,
                workers.asked_later,
                workers.backlog,
            )

    def last_replacement(self, card_id: str) -> str | None:
        """The card at the end of card_id's chain of replacements, or None if it was not replaced.
        One query a link: it follows the card's own replacement and at most REPLACED_CHAIN_LINKS_MAX
        links on, as far as a replacement's walk back (money_on_replaced_cards) reaches from the card
        it replaces; ReplacementChainTooLongError naming the bound for a longer chain."""
        last, seen = self.store.card_replaced_by(card_id), {card_id}
        for _ in range(REPLACED_CHAIN_LINKS_MAX + 1):  # the card's own replacement, then the links on
            if last is None or last in seen:
                return last
            after = self.store.card_replaced_by(last)
            if after is None:
                return last
            seen.add(last)
            last = after
        shown = self.store.card_state(card_id).masked
        raise ReplacementChainTooLongError(
            f"the chain of replacements from card {shown} is longer than {REPLACED_CHAIN_LINKS_MAX + 1} "
            f"links (its own and REPLACED_CHAIN_LINKS_MAX = {REPLACED_CHAIN_LINKS_MAX} on): its last card "
            "is not looked for"
        )

    def terminal_activated(self, terminal_id: str) -> None:
        """A terminal (re)activated: its new credential counts, and a live actor reads it again (a
        deactivated terminal activated anew was refused by its still-running actor until restart)."""
        self.terminals.forget(terminal_id)
        self.terminal_actors.tell_if_live(terminal_id, Reload())

    def web_terminal(self, merchant_id: str, location_id: str) -> str:
        """The location's web back office terminal (Admin.web_terminal), remembered as no device."""
        terminal_id = self.admin.web_terminal(merchant_id, location_id)
        self._web_terminals.add(terminal_id)
        return terminal_id

    def online_top_up_terminal(self, programme_id: str) -> str:
        """The programme's online top-up terminal (Admin.online_top_up_terminal), remembered as no
        device, as a web back office terminal is."""
        terminal_id = self.admin.online_top_up_terminal(programme_id)
        self._web_terminals.add(terminal_id)
        return terminal_id

    def terminals_online(self) -> int:
        """Terminals whose actor is live, the web back office's left out: no device is online there."""
        live_web = sum(1 for web in list(self._web_terminals) if self.terminal_actors.is_live(web))
        return self.terminal_actors.statistics().live - live_web

    def deactivate_terminal(self, terminal_id: str) -> DayCloseReport | None:
        """Deactivate the terminal and close its open period if it holds approved money (the
        close, else None), as a day close would: no one can press day close on it any more, and
        its takings would be in no stored close until it was activated again and closed. A close
        not made now is logged; deactivating it again makes it (its close id is its period's)."""
        info = self.admin.set_terminal_active(terminal_id, False)
        self.terminals.forget(terminal_id)
        self.terminal_actors.tell_if_live(terminal_id, Deactivate())  # for what it has queued
        try:
            return self._close_deactivated(terminal_id, info.period_number)
        finally:
            # Then its actor stops: a deactivated terminal is served nowhere, nor counted online.
            self.terminal_actors.stop(terminal_id)

    def _close_deactivated(self, terminal_id: str, period_number: int) -> DayCloseReport | None:
        # Judged by the actor once what it has in flight has landed: a sale answered before the
        # deactivation but not yet stored would otherwise land in a period no close covers.
        message = CloseDay(deactivation_close_id(period_number), period_number, only_if_approved=True)
        try:
            report: DayCloseReport | None = self.terminal_actors.ask(terminal_id, message, self._long_ask_s)
        except CLOSE_FAULTS as error:  # the period stays open; deactivating again closes it
            log.warning(
                "terminal %s deactivated, period %d not closed: %s", terminal_id, period_number, error
            )
            return None
        return report

    def write_now(self, write: Write) -> WriteResult:
        """A journal write from outside the actors (settlement); waits until durable, however long:
        a write that timed out may still land, and a payout answered as not made that then landed
        would be listed in no settlement's answer, so the merchant would never be paid it."""
        return self.writer.write_and_wait(write, None)


def deactivation_close_id(period_number: int) -> str:
    """The close id of a period closed at the terminal's deactivation: one per period, whichever
    node or retry closes it."""
    return f"deactivation-{period_number}"


async def _posted(registry: ActorRegistry[str], key: str, message: object, timeout_s: float) -> Any:
    """The answer of key's actor to message, awaited; posted again if an actor on the way stopped."""
    for _ in range(ASK_ATTEMPTS_MAX):
        reply = Reply()
        registry.post(key, message, reply)
        try:
            return await settled(reply, timeout_s)
        except pykka.ActorDeadError:
            continue
    raise pykka.ActorDeadError(f"the {registry.kind} actors for this request kept stopping")


# How the office names a card status the new card was found in: a lost card is one replaced.
_FOUND_AS: Final = {CardStatus.lost: "replaced", CardStatus.blocked: "blocked", CardStatus.expired: "expired"}


def transfer_refused_text(refused: TransferRefused, lost: CardState, new: CardState) -> str:
    """What happened, naming the cards masked: the journal's own words hold internal ids."""
    amount = lost.money(refused.balance_minor).format()
    if refused.lost_card_status is not None:
        status = refused.lost_card_status.value
        return f"card {lost.masked} is {status}: unblocked since it was marked lost; nothing moved"
    if refused.new_card_status is not None:
        found = _FOUND_AS.get(refused.new_card_status, refused.new_card_status.value)
        return f"the replacement card {new.masked} was {found} meanwhile; nothing moved"
    match refused.refusal:
        case LedgerRefusal.above_maximum:
            most = new.money(new.programme.balance_max_minor).format()
            return (
                f"the replacement card {new.masked} was loaded meanwhile: with the lost card's {amount} "
                f"it would hold more than {most}; nothing moved, use an empty card"
            )
        case LedgerRefusal.replaced_meanwhile:
            return f"card {lost.masked} was replaced by another card meanwhile; nothing moved"
        case LedgerRefusal.below_zero:
            return f"card {lost.masked} was spent meanwhile; nothing moved, send the request again"
    if refused.balance_changed:
        return (
            f"card {lost.masked}'s balance changed at each of {TRANSFER_READS_MAX} reads (used meanwhile "
            "on another node); nothing moved, send the request again"
        )
    return "the ledger did not store the move (the switch's log says why); nothing moved, send it again"
