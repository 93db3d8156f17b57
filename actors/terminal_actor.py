"""TerminalActor: one per terminal; session, employee PIN, idempotency and day close of its terminal."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.base import SwitchActor
from actors.journal_writer import JournalWriter
from actors.messages import (
    AdjustOriginal,
    Authorize,
    CloseDay,
    Deactivate,
    QueryStatus,
    Reload,
    ReportX,
    Submit,
    TerminalContext,
)
from actors.outcomes import answer_for_stored, outcome_of, record_of, tombstone_of
from actors.payments import ACQUIRED_TYPES, PaymentMessage, PaymentProcessor, SubmitAbort, SubmitPayment
from actors.registry import ActorRegistry
from actors.reply import Reply
from switch import credentials
from switch.domain.employees import LockoutPolicy, after_attempt
from switch.domain.ledger import LedgerRefusal
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import (
    COMMAND_TYPES,
    STORED_VALUE,
    Cancel,
    EmployeeAuth,
    Load,
    Outcome,
    Redeem,
    Refund,
    Reversal,
    TerminalCommand,
    TransactionStatus,
    TransactionType,
    declined,
    fingerprint,
)
from switch.store.journal import (
    TOMBSTONE_TYPE,
    EmployeeAttempt,
    PeriodClose,
    PinRehash,
    TransactionRecord,
    Write,
    WriteResult,
)
from switch.store.periods import totals_of_json
from switch.store.repository import DayCloseReport, Store, StoredTransaction, TerminalInfo

log = logging.getLogger(__name__)


class DayCloseError(RuntimeError):
    """The day close was not stored; the terminal may send it again with the same close id."""


class DayClosePeriodError(DayCloseError):
    """The close named a period that is not the open one (closed by another close id, or not open
    yet): nothing was closed, and the same close sent again is refused again."""


class EmployeePinTryNotStoredError(Exception):
    """A try that changes the employee's count could not be made durable: the PIN was not judged."""


class EmployeePins:
    """Serialises PIN checks per employee across all terminals, so lockout counts every try."""

    def __init__(
        self,
        store: Store,
        writer: JournalWriter,
        policy: LockoutPolicy,
        now: Callable[[], dt.datetime],
        write_timeout_s: float,
    ) -> None:
        self._store = store
        self._writer = writer
        self._write_timeout_s = write_timeout_s
        self._policy = policy
        self._now = now
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.lockouts = 0
        # A PIN that matched once is remembered as a keyed hash under a key that lives only in this
        # process, so a repeat costs one HMAC instead of the slow hash. Keyed by the stored hash too:
        # a changed PIN misses. A wrong PIN always takes the slow path.
        self._verified: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._verified_key = secrets.token_bytes(32)

    def check(self, merchant_id: str, employee: EmployeeAuth) -> ResponseCode:
        with self._guard:
            lock = self._locks.setdefault((merchant_id, employee.employee_number), threading.Lock())
        with lock:
            stored = self._store.employee_pin(merchant_id, employee.employee_number)
            key = (merchant_id, employee.employee_number)
            if stored is None or not stored.active:  # a deactivated user's PIN is no PIN, and no try
                # Checked all the same, against a hash at today's cost, so timing tells no terminal
                # which employee numbers exist: as a wrong PIN for a known one, less its try's write.
                self._matches(key, employee.pin, _unknown_pin_hash())
                return ResponseCode.incorrect_pin
            now = self._now()
            matches = self._matches(key, employee.pin, stored.pin_hash)
            attempt, code = after_attempt(stored.attempt, matches, self._policy, now)
            if attempt != stored.attempt:
                self._store_try(
                    EmployeeAttempt(
                        stored.employee_id, attempt.failed_tries, attempt.locked_until, stored.pin_attempts
                    )
                )
                if attempt.locked_until is not None:
                    self.lockouts += 1
            if matches and not credentials.employee_pin_hash_is_current(stored.pin_hash):
                self._at_todays_cost(key, stored.employee_id, employee.pin, stored.pin_hash)
            return code

    def _at_todays_cost(self, key: tuple[str, str], employee_id: str, pin: str, checked: str) -> None:
        """A right PIN whose hash was made with other iterations (older, or the form without them)
        stored again with today's, only over the hash it was checked against (a PIN changed meanwhile
        stays). Once per employee after a raise; a failure is logged and changes nothing for the
        check. Until then a wrong PIN for that employee costs the older iterations."""
        try:
            new_hash = credentials.hash_employee_pin(pin)
            result = self._writer.write_and_wait(
                Write(pin_rehash=PinRehash(employee_id, checked, new_hash)), self._write_timeout_s
            )
        except Exception as error:  # the error's text may hold the statement's hashes
            log.warning("an employee PIN hash was not made again at today's cost: %s", type(error).__name__)
            return
        if not result.ok:
            log.warning("an employee PIN hash was not made again at today's cost: the journal refused it")
            return
        # The remembered match follows the new hash (if a PIN changed meanwhile, neither is stored).
        tag = hmac.new(self._verified_key, pin.encode(), hashlib.sha256).digest()
        self._verified[key] = (new_hash, tag)

    def _store_try(self, change: EmployeeAttempt) -> None:
        """Durable before the PIN is judged, so lockout counts every try; else nothing is judged."""
        try:
            result = self._writer.write_and_wait(Write(employee_attempt=change), self._write_timeout_s)
        except TimeoutError as error:  # the try may still land, and then counts
            raise EmployeePinTryNotStoredError(f"employee PIN try not stored in time: {error}") from None
        if not result.ok:
            raise EmployeePinTryNotStoredError(f"employee PIN try not stored: {_pin_try_problem(result)}")

    def _matches(self, key: tuple[str, str], pin: str, pin_hash: str) -> bool:
        tag = hmac.new(self._verified_key, pin.encode(), hashlib.sha256).digest()
        known = self._verified.get(key)
        if known is not None and known[0] == pin_hash and hmac.compare_digest(known[1], tag):
            return True
        matches = credentials.employee_pin_matches(pin, pin_hash)
        if matches:
            self._verified[key] = (pin_hash, tag)
        return matches


def _unknown_pin_hash() -> str:
    """What an unknown or inactive employee's PIN is checked against: a hash at today's cost
    (EMPLOYEE_PIN_ITERATIONS, read at each call), made again if that cost changed since (in tests)."""
    return _unknown_pin_hash_at(credentials.EMPLOYEE_PIN_ITERATIONS)


@functools.cache
def _unknown_pin_hash_at(iterations: int) -> str:
    return credentials.hash_employee_pin(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class TerminalServices:
    store: Store
    writer: JournalWriter
    cards: ActorRegistry[str]
    employee_pins: EmployeePins
    now: Callable[[], dt.datetime]
    reply_timeout_s: float
    recent_transactions_max: int
    payments: PaymentProcessor | None = None  # None: no acquirer configured
    # Where nodes share the database: the terminal's row (its period, whether it is active) is read
    # again once this old, so a day close or an activation on another node counts here. None: never.
    max_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Recent:
    fingerprint: str
    reply: Reply


class TerminalActor(SwitchActor):
    def __init__(self, terminal_id: str, services: TerminalServices) -> None:
        super().__init__()
        self._terminal_id = terminal_id
        self._services = services
        self._info: TerminalInfo | None = None
        self._read_at_s = 0.0
        self._close_in_doubt: threading.Event | None = None  # a close it stopped waiting for
        self._recent: OrderedDict[str, _Recent] = OrderedDict()

    def on_start(self) -> None:
        self._info = self._services.store.terminal(self._terminal_id)
        self._read_at_s = time.monotonic()
        assert self._info is not None, "terminal actors start for stored terminals only"

    def _outdated(self) -> bool:
        if self._close_in_doubt is not None:
            return True
        max_age_s = self._services.max_age_s
        return max_age_s is not None and time.monotonic() - self._read_at_s > max_age_s

    def would_wait(self, message: Any) -> bool:
        """Starting reads the terminal, and so does an outdated copy; a status, a day close, an X
        report and what undoes an earlier transaction read the database, and may wait for an answer
        still on its way."""
        if not self._started or self._outdated():
            return True
        match message:
            case Submit(command=Redeem() | Load()) | Deactivate():
                return False  # handed to a card actor, or a field set
        return True

    @property
    def info(self) -> TerminalInfo:
        assert self._info is not None
        return self._info

    @property
    def context(self) -> TerminalContext:
        return TerminalContext(self.info.terminal_id, self.info.merchant_id, self.info.period_number)

    def on_receive(self, message: Any) -> Any:
        if self._close_in_doubt is not None:
            self._close_in_doubt.wait()  # the journal answers every write, or the switch exits
            self._close_in_doubt = None
            self._reload()
        if self._outdated():
            self._reload()  # another node may have closed its day or activated it anew
        match message:
            case Submit():
                return self._submit(message.command)
            case QueryStatus():
                return self._status(message.transaction_id)
            case CloseDay():
                return self._close_day(message.close_id, message.period_number, message.only_if_approved)
            case ReportX():
                return self._x_report()
            case SubmitPayment() | SubmitAbort():
                return self._payment(message)
            case Deactivate():
                self._info = None if self._info is None else _replace_active(self._info, False)
                return None
            case Reload():
                self._reload()
                return None
        raise AssertionError(f"terminal actor got an unknown message {type(message).__name__}")

    # Transactions

    def _submit(self, command: TerminalCommand) -> Reply:
        digest = fingerprint(command)
        known = self._recent.get(command.transaction_id)
        if known is not None and not known.reply.failed:  # failed: no actor handled it; route anew
            if known.fingerprint != digest:
                return Reply.of(
                    _refusal(command, ResponseCode.duplicate_transmission, "transaction id already used")
                )
            outcome = known.reply.outcome
            if outcome is None or outcome.persisted:
                return known.reply  # the same answer, or the same wait for it
        reply = self._route(command, digest)
        self._remember(command.transaction_id, _Recent(digest, reply))
        return reply

    def _route(self, command: TerminalCommand, digest: str) -> Reply:
        if not self.info.active:
            return Reply.of(_refusal(command, ResponseCode.invalid_transaction, "terminal is deactivated"))
        match command:
            case Redeem() | Load():
                if not command.card_id:
                    return self._persist_decline(command, digest, ResponseCode.unknown_card)
                reply = Reply()
                self._services.cards.post(command.card_id, Authorize(command, self.context, digest), reply)
                return reply
            case Refund() | Cancel():
                try:
                    code = self._services.employee_pins.check(self.info.merchant_id, command.employee)
                except EmployeePinTryNotStoredError as error:
                    # Nothing was done, and the refusal is not stored: the same id is judged afresh.
                    return Reply.of(_refusal(command, ResponseCode.system_error, f"{error}; send it again"))
                if not code.approves:
                    return self._persist_decline(command, digest, code, self._line_of(command))
                return self._adjust(command, digest)
            case Reversal():
                return self._adjust(command, digest)
        raise AssertionError(command)

    def _adjust(self, command: Refund | Cancel | Reversal, digest: str) -> Reply:
        original_id = command.original_transaction_id
        in_flight = self._recent.get(original_id)
        if in_flight is not None and not in_flight.reply.done():
            in_flight.reply.settle(self._services.reply_timeout_s)
        stored = self._services.store.transaction(self.info.terminal_id, original_id)
        # A bank-card payment or refund to a card: undone at the acquirer, not on a card of ours.
        is_payment = (
            stored is not None
            and stored.record.transaction_type in ACQUIRED_TYPES
            and stored.record.payment_method != STORED_VALUE
        )
        if isinstance(command, Reversal):
            if stored is None:
                return self._reverse_unseen(command, digest)
            if (
                stored.record.transaction_type == TOMBSTONE_TYPE
                or stored.status is not TransactionStatus.approved
            ):
                return self._persist_nothing_to_reverse(command, digest, stored.record)
            if is_payment:
                return self._reverse_payment(command, digest, stored)
            if stored.record.card_id is None:  # a reversal or cancel that moved nothing itself
                return self._persist_decline(command, digest, ResponseCode.invalid_transaction)
        elif stored is not None and is_payment:
            return self._adjust_payment(command, digest, stored)
        elif (
            stored is None
            or stored.record.card_id is None
            or stored.record.transaction_type == TOMBSTONE_TYPE
        ):
            return self._persist_decline(
                command, digest, ResponseCode.original_not_found, self._line_of_unknown_original(command)
            )
        assert stored.record.card_id is not None
        reply = Reply()
        self._services.cards.post(stored.record.card_id, AdjustOriginal(command, self.context, digest), reply)
        return reply

    # Bank-card payments: the logic is in actors/payments.py; this actor only serialises them.

    def _payment(self, message: PaymentMessage) -> Outcome:
        payments = self._services.payments
        transaction_id = message.command.transaction_id
        if payments is None:
            return _refusal_of(
                _payment_refusal(transaction_id), ResponseCode.issuer_unavailable, "no acquirer"
            )
        if not self.info.active:
            return _refusal_of(
                _payment_refusal(transaction_id), ResponseCode.invalid_transaction, "terminal is deactivated"
            )
        if isinstance(message, SubmitPayment):
            if message.command.refund:
                refusal = self._refund_refusal(message)
                if refusal is not None:
                    return refusal
            return payments.pay(message.command, self.info)
        return payments.abort(message.command, self.info)

    def _refund_refusal(self, message: SubmitPayment) -> Outcome | None:
        """A refund to a card needs an employee PIN; the refusal is not stored (send it again)."""
        refusal = declined(message.command.transaction_id, TransactionType.refund, ResponseCode.incorrect_pin)
        if message.employee is None:
            return _refusal_of(refusal, ResponseCode.incorrect_pin, "a refund needs the employee PIN")
        try:
            code = self._services.employee_pins.check(self.info.merchant_id, message.employee)
        except EmployeePinTryNotStoredError as error:
            return _refusal_of(refusal, ResponseCode.system_error, f"{error}; send it again")
        if not code.approves:
            return _refusal_of(refusal, code, "employee PIN refused; nothing was sent to the acquirer")
        return None

    def _adjust_payment(self, command: Refund | Cancel, digest: str, stored: StoredTransaction) -> Reply:
        """A cancel (void) of a bank-card payment reverses it at the acquirer; a refund cannot yet."""
        if isinstance(command, Refund):
            detail = "a bank-card payment is refunded with RefundCard, the card presented; or cancel it"
            return Reply.of(_refusal(command, ResponseCode.invalid_transaction, detail))
        if stored.status is not TransactionStatus.approved:
            detail = f"the payment is {stored.status.value}; nothing to cancel"
            return Reply.of(_refusal(command, ResponseCode.already_reversed, detail))
        if stored.record.period_number != self.info.period_number:
            # The day close handed it to settlement; the acquirer takes reversals only before that.
            period = stored.record.period_number
            detail = f"the payment is from period {period}, closed by a day close; too late to cancel"
            return Reply.of(_refusal(command, ResponseCode.invalid_transaction, detail))
        return self._reverse_payment(command, digest, stored)

    def _reverse_payment(self, command: Cancel | Reversal, digest: str, stored: StoredTransaction) -> Reply:
        payments = self._services.payments
        if payments is None:
            return Reply.of(_refusal(command, ResponseCode.issuer_unavailable, "no acquirer"))
        return Reply.of(payments.reverse_payment(command, digest, self.info, stored))

    def _reverse_unseen(self, command: Reversal, digest: str) -> Reply:
        """Approve the reversal and keep the id, so the original is refused if it arrives late."""
        outcome = Outcome(
            command.transaction_id,
            COMMAND_TYPES[Reversal],
            ResponseCode.approved,
            "original never arrived; nothing moved",
            period_number=self.info.period_number,
            status=TransactionStatus.approved,
        )
        record = record_of(
            outcome,
            self.info.terminal_id,
            digest,
            merchant_id=self.info.merchant_id,
            original_transaction_id=command.original_transaction_id,
        )
        tombstone = tombstone_of(
            self.info.terminal_id, command.original_transaction_id, self.info.period_number
        )
        return self._persist(Write(record=record, tombstone=tombstone), outcome, digest)

    def _persist_nothing_to_reverse(
        self, command: Reversal, digest: str, original: TransactionRecord
    ) -> Reply:
        outcome = Outcome(
            command.transaction_id,
            COMMAND_TYPES[Reversal],
            ResponseCode.approved,
            f"original is {original.status}; nothing moved",
            period_number=self.info.period_number,
            status=TransactionStatus.approved,
            payment_method=original.payment_method,
        )
        record = record_of(
            outcome,
            self.info.terminal_id,
            digest,
            merchant_id=self.info.merchant_id,
            original_transaction_id=command.original_transaction_id,
        )
        return self._persist(Write(record=record), outcome, digest)

    def _line_of(self, command: Refund | Cancel) -> tuple[str, str]:
        """(currency, payment method) a refund or cancel refused for its employee PIN is stored
        under: those of the original it names (as the card actor's declined cancels store the
        card's), else the report totals it on a line of no currency, or a card payment's cancel on
        the stored-value line; a refund's currency is its amount's. Read on this refusal only."""
        stored = self._services.store.transaction(self.info.terminal_id, command.original_transaction_id)
        method = stored.record.payment_method if stored is not None else ""
        if isinstance(command, Refund):
            return command.amount.currency, method
        return (stored.record.currency if stored is not None else ""), method

    def _line_of_unknown_original(self, command: Refund | Cancel) -> tuple[str, str]:
        """(currency, payment method) a refund or cancel naming no original of ours is stored
        under: a refund's amount's currency; a cancel carries none, so its merchant's, else the
        report totals it on a line of no currency. Read on this decline only."""
        if isinstance(command, Refund):
            return command.amount.currency, ""
        return self._services.store.merchant_currency(self.info.merchant_id), ""

    def _persist_decline(
        self, command: TerminalCommand, digest: str, code: ResponseCode, line: tuple[str, str] = ("", "")
    ) -> Reply:
        outcome = declined(
            command.transaction_id,
            COMMAND_TYPES[type(command)],
            code,
            requested=getattr(command, "amount", None),
            period_number=self.info.period_number,
        )
        extra: dict[str, object] = {"merchant_id": self.info.merchant_id}
        if isinstance(command, Refund | Cancel | Reversal):
            extra["original_transaction_id"] = command.original_transaction_id
        record = record_of(outcome, self.info.terminal_id, digest, **extra)
        currency, method = line
        if currency and not record.currency:
            record = dataclasses.replace(record, currency=currency)
        if method:
            record = dataclasses.replace(record, payment_method=method)
        return self._persist(Write(record=record), outcome, digest)

    def _persist(self, write: Write, outcome: Outcome, digest: str) -> Reply:
        reply = Reply()
        store, source = self._services.store, self.info.terminal_id

        def done(result: WriteResult) -> None:
            if result.ok:
                reply.set(outcome)
            elif result.conflict:
                reply.set(
                    answer_for_stored(store, source, outcome.transaction_id, outcome.transaction_type, digest)
                )
            else:
                reply.set(_refusal_of(outcome, ResponseCode.system_error, result.problem))

        if not self._services.writer.submit(write, done):
            reply.set(_refusal_of(outcome, ResponseCode.system_error, "journal queue full"))
        return reply

    def _remember(self, transaction_id: str, recent: _Recent) -> None:
        self._recent[transaction_id] = recent
        self._recent.move_to_end(transaction_id)
        while len(self._recent) > self._services.recent_transactions_max:
            oldest_id, oldest = next(iter(self._recent.items()))
            if not oldest.reply.done():
                break  # never forget an answer still on its way
            del self._recent[oldest_id]

    def _status(self, transaction_id: str) -> Outcome | None:
        known = self._recent.get(transaction_id)
        if known is not None:
            known.reply.settle(self._services.reply_timeout_s)
        # Read back even what is remembered: a later cancel or reversal may have changed its status.
        stored = self._services.store.transaction(self.info.terminal_id, transaction_id)
        if stored is None:
            return None
        if stored.record.transaction_type == TOMBSTONE_TYPE:
            return None
        outcome = outcome_of(stored.record)
        return _with_status(outcome, stored.status)

    # Day close

    def _settle_in_flight(self) -> None:
        for recent in list(self._recent.values()):
            if not recent.reply.done():
                recent.reply.settle(self._services.reply_timeout_s)

    def _close_day(
        self, close_id: str, period_number: int | None = None, only_if_approved: bool = False
    ) -> DayCloseReport | None:
        store, info = self._services.store, self.info
        existing = store.day_close(info.terminal_id, close_id)
        if existing is not None:
            if existing.period_number >= info.period_number:
                self._reload()  # its write landed after an earlier attempt gave up waiting
            return _named_close(existing, period_number)
        if period_number is not None and period_number != info.period_number:
            self._reload()  # this copy may be behind a close on another node
            if period_number != self.info.period_number:
                raise DayClosePeriodError(_not_open(period_number, self.info))
            info = self.info
        # Not for the count (the close counts its period as it commits, switch.store.periods) but
        # so that what this terminal was told approved is in it.
        self._settle_in_flight()
        if only_if_approved and not store.period_totals(info.terminal_id, info.period_number):
            return None  # nothing approved in it, what was in flight included: no close to report
        now = self._services.now()
        close = PeriodClose(info.terminal_id, close_id, info.period_number, info.period_opened_at, now)
        landed = threading.Event()
        try:
            result = self._services.writer.write_and_wait(
                Write(period_close=close), self._services.reply_timeout_s, landed
            )
        except TimeoutError:
            # It may still land, and then this period is closed: the next message waits for the
            # journal's answer and reads the terminal again, so no cancel or reversal of this
            # period's sales is taken and no answer names the closed period.
            self._close_in_doubt = landed
            raise
        if result.conflict:
            stored = store.day_close(info.terminal_id, close_id)
            assert stored is not None, "a conflicting close id is stored"
            self._reload()
            return _named_close(stored, period_number)
        if not result.ok:
            self._reload()  # another node may have closed the period
            if period_number is not None and period_number != self.info.period_number:
                raise DayClosePeriodError(_not_open(period_number, self.info))
            raise DayCloseError(f"day close not stored: {result.problem}")
        assert result.sequence_number is not None
        self._info = dataclasses.replace(info, period_number=info.period_number + 1, period_opened_at=now)
        totals = totals_of_json(result.totals_json)
        return DayCloseReport(
            info.terminal_id, result.sequence_number, info.period_number, info.period_opened_at, now, totals
        )

    def _reload(self) -> None:
        refreshed = self._services.store.terminal(self.info.terminal_id)
        assert refreshed is not None
        self._info = refreshed
        self._read_at_s = time.monotonic()

    def _x_report(self) -> DayCloseReport:
        self._settle_in_flight()
        info = self.info
        totals = self._services.store.period_totals(info.terminal_id, info.period_number)
        return DayCloseReport(
            info.terminal_id, 0, info.period_number, info.period_opened_at, self._services.now(), totals
        )


def _named_close(stored: DayCloseReport, period_number: int | None) -> DayCloseReport:
    """The stored close of a close id sent again, if it closed the period named (or none was)."""
    if period_number is not None and stored.period_number != period_number:
        raise DayClosePeriodError(
            f"this close_id closed period {stored.period_number} of {stored.terminal_id}, "
            f"not period {period_number}: send a new close_id to close period {period_number}"
        )
    return stored


def _not_open(period_number: int, info: TerminalInfo) -> str:
    if period_number < info.period_number:
        return (
            f"period {period_number} of {info.terminal_id} is closed already, by another close_id "
            f"(its open period is {info.period_number})"
        )
    return (
        f"period {period_number} of {info.terminal_id}"
        f" is not open yet (its open period is {info.period_number})"
    )


def _replace_active(info: TerminalInfo, active: bool) -> TerminalInfo:
    return dataclasses.replace(info, active=active)


def _with_status(outcome: Outcome, status: TransactionStatus) -> Outcome:
    return dataclasses.replace(outcome, status=status)


def _refusal(command: TerminalCommand, code: ResponseCode, detail: str) -> Outcome:
    return declined(command.transaction_id, COMMAND_TYPES[type(command)], code, detail, persisted=False)


def _payment_refusal(transaction_id: str) -> Outcome:
    return declined(transaction_id, TransactionType.payment, ResponseCode.system_error, persisted=False)


def _pin_try_problem(result: WriteResult) -> str:
    """Why a PIN try was not stored, for its answer: the ledger's own words name the employee's
    internal id and go to the log; the writer's or the database's ("journal queue full") name none."""
    if result.refusal is LedgerRefusal.pin_try_stored_meanwhile:
        log.warning("employee PIN try not stored: %s", result.problem)
        return "another try of this employee was stored meanwhile"
    return result.problem


def _refusal_of(outcome: Outcome, code: ResponseCode, detail: str) -> Outcome:
    return declined(outcome.transaction_id, outcome.transaction_type, code, detail, persisted=False)
