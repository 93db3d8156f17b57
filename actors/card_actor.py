"""CardActor: the single writer of one card: status, expiry, balance, reservations."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from actors.base import SwitchActor
from actors.card_copies import CardCopies, CardCopy
from actors.journal_writer import JournalWriter
from actors.messages import (
    AdjustOriginal,
    Authorize,
    GetBalance,
    SetCardPin,
    SetStatus,
    TerminalContext,
    TransferOut,
    TransferRefused,
)
from actors.outcomes import answer_for_stored, authorization_code, record_of
from actors.reply import Reply
from switch.admin import AdminStateError, AdminUnavailableError
from switch.domain import card_rules, ledger
from switch.domain.card_pins import check_card_pin
from switch.domain.card_rules import CardState, Decision
from switch.domain.cards import CardStatus
from switch.domain.ledger import JournalEntry, LedgerRefusal
from switch.domain.money import Money
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import (
    COMMAND_TYPES,
    AdjustingCommand,
    Cancel,
    Completion,
    Load,
    Outcome,
    Redeem,
    Refund,
    Reversal,
    TransactionStatus,
    TransactionType,
    declined,
    transaction_type_of,
)
from switch.store.card_pins import CardPin, CardPinStore
from switch.store.journal import (
    BalanceAsRead,
    CardChange,
    OriginalChange,
    TransactionRecord,
    Write,
    WriteResult,
)
from switch.store.repository import Store, StoredTransaction

log = logging.getLogger(__name__)

UNDO_PENDING = -1  # in _pending_originals: a cancel or reversal of that original is in flight
# Where nodes share cards: how many times a replacement's transfer reads the lost card, each time
# another node changed its balance between the read and the write (a refund landing there).
TRANSFER_READS_MAX: Final = 5
# The status changes refused on a card replaced (lost, its balance moved): blocked or active again, a
# credit on it would stay there (_follow_if_replaced follows only a lost card); what the refusal says.
REPLACED_CARD_KEEPS_LOST: Final = {
    CardStatus.blocked: "it is out of use already; to stop the replacement, block that card",
    CardStatus.active: "it stays out of use",
}


@dataclass(frozen=True, slots=True)
class CardServices:
    store: Store
    writer: JournalWriter
    today: Callable[[], dt.date]
    commit_wait_s: float
    pins: CardPinServices | None = None
    # Other nodes write to the same cards: a copy of the card older than this is read again before a
    # message that finds no write of this actor in flight; None: never (Settings.copy_max_age_s).
    max_age_s: float | None = None
    # One node: what a stopping actor knew, for its successor, and the cards this node issued
    # (actors/card_copies.py); None where other nodes share the cards.
    copies: CardCopies | None = None
    # Money decided onto a card already replaced (a ride reversed after the office moved the
    # balance): moved on to its replacement, after this actor's writes (core.replace_card).
    credited_after_replacement: Callable[[str, str], None] | None = None


@dataclass(frozen=True, slots=True)
class CardPinServices:
    store: CardPinStore
    tries_max: int
    now: Callable[[], dt.datetime]


@dataclass(slots=True)
class _Pending:
    delta_minor: int  # change of the card's balance once committed
    original_id: str = ""
    refund_minor: int = 0
    result: WriteResult | None = None  # set on the writer's thread before the reply


def entry_key(source: str, transaction_id: str) -> str:
    return f"txn:{source}:{transaction_id}"


def undo_key(source: str, transaction_id: str) -> str:
    # Cancel and reversal share the key: an original is undone at most once, whichever comes first.
    return f"undo:{source}:{transaction_id}"


class CardActor(SwitchActor):
    def __init__(self, card_id: str, services: CardServices) -> None:
        super().__init__()
        self._card_id = card_id
        self._services = services
        self._card: CardState | None = None
        self._reserved_minor = 0  # debits decided but not yet committed
        self._pending_credit_minor = 0  # credits decided but not yet committed
        self._pending: dict[int, _Pending] = {}
        self._pending_replies: dict[int, Reply] = {}
        self._pending_originals: dict[str, int] = {}
        # Tokens of writes the journal has settled, appended on the writer's thread; applied here at
        # the start of the next message, so a commit costs no message of its own.
        self._landed: deque[int] = deque()
        self._tokens = itertools.count()
        self._pin: CardPin | None = None
        self._pin_loaded = False
        self._just_read = False
        self._read_at_s = 0.0
        self._generation = 0  # in the card copies, when the node keeps them

    def on_start(self) -> None:
        copies = self._services.copies
        if copies is not None:
            self._generation, copy = copies.start(self._card_id)
            if copy is not None:
                self._card, self._pin = copy.state, copy.pin
                self._pin_loaded = True
                return
        self._read_card()

    def would_wait(self, message: Any) -> bool:
        if not self._started:
            copies = self._services.copies
            return copies is None or not copies.holds(self._card_id)
        if self._landed:
            self._apply_landed()
        return self._copy_outdated()

    def _copy_outdated(self) -> bool:
        """Other nodes share the card, this copy is older than they may make it, and every write of
        this actor has landed and been applied: the database holds all of it, and whatever another
        node did since the copy was read."""
        max_age_s = self._services.max_age_s
        if max_age_s is None or self._pending or self._just_read:
            return False
        return time.monotonic() - self._read_at_s > max_age_s

    def _read_card(self) -> None:
        self._just_read = True  # so the first message does not read the card a second time
        self._read_at_s = time.monotonic()
        if self._services.pins is None:
            self._card = self._services.store.card_state(self._card_id)
        else:
            self._card, self._pin = self._services.store.card_state_and_pin(self._card_id)
            self._pin_loaded = True

    def on_stop(self) -> None:
        # A successor loads state from the database: let everything decided here land there first.
        for reply in list(self._pending_replies.values()):
            with contextlib.suppress(TimeoutError):
                reply.wait(self._services.commit_wait_s)
        copies = self._services.copies
        if copies is None or self._card is None:
            return
        self._apply_landed()
        if not self._pending:  # every write of ours applied: the database holds what we hold
            copies.leave(self._card_id, self._generation, CardCopy(self.card, self._pin))

    @property
    def card(self) -> CardState:
        assert self._card is not None
        return self._card

    @property
    def available_minor(self) -> int:
        return self.card.balance_minor - self._reserved_minor

    def on_receive(self, message: Any) -> Any:
        if self._landed:
            self._apply_landed()
        if self._copy_outdated():
            self._read_card()
        self._just_read = False
        match message:
            case Authorize(command=Redeem() as command):
                return self._redeem(command, message.terminal, message.fingerprint)
            case Authorize(command=Load() as command):
                return self._load(command, message.terminal, message.fingerprint)
            case AdjustOriginal():
                return self._adjust_original(message)
            case GetBalance():
                return dataclasses.replace(self.card, balance_minor=max(self.available_minor, 0))
            case SetStatus():
                return self._set_status(message)
            case SetCardPin():
                return self._set_pin(message)
            case TransferOut():
                return self._transfer_out(message)
        raise AssertionError(f"card actor got an unknown message {type(message).__name__}")

    # Redemption and load

    def _redeem(self, command: Redeem, terminal: TerminalContext, fingerprint: str) -> Reply:
        card = self.card
        accepts = self._services.store.merchant_accepts(terminal.merchant_id, card.programme.programme_id)
        decision = card_rules.decide_redemption(
            card, self.available_minor, command.amount, command.allow_partial, accepts, self._services.today()
        )
        if not decision.approves:
            return self._decline(command, terminal, fingerprint, decision)
        # The PIN last: a shop outside the programme (or a ride the card cannot pay) used up the
        # holder's PIN tries, and learnt from 58 against 55 which PIN was right.
        pin_decline = self._pin_decline(command)
        if pin_decline is not None:
            return self._decline(command, terminal, fingerprint, pin_decline)
        amount_minor = decision.amount_minor
        entry = ledger.redemption_entry(
            entry_key(terminal.terminal_id, command.transaction_id),
            card.currency,
            card.card_id,
            amount_minor,
            merchant_id=terminal.merchant_id,
            programme_id=card.programme.programme_id,
        )
        outcome, record = self._approved(
            command, TransactionType.redemption, decision, terminal, fingerprint, -amount_minor
        )
        return self._submit(Write(record=record, entry=entry), outcome, _Pending(-amount_minor))

    def _load(self, command: Load, terminal: TerminalContext, fingerprint: str) -> Reply:
        card = self.card
        accepts = self._services.store.merchant_accepts(terminal.merchant_id, card.programme.programme_id)
        decision = card_rules.decide_load(
            card,
            card.balance_minor + self._pending_credit_minor,
            command.amount,
            accepts,
            self._services.today(),
            command.priced_at_start,
        )
        if not decision.approves:
            return self._decline(command, terminal, fingerprint, decision)
        holder_minor, funder_minor = card.programme.split_load(decision.amount_minor)
        entry = ledger.load_entry(
            entry_key(terminal.terminal_id, command.transaction_id),
            card.currency,
            card.card_id,
            card.programme.programme_id,
            holder_minor,
            funder_minor,
            card_ceiling_minor=card.programme.balance_max_minor,
        )
        outcome, record = self._approved(
            command,
            TransactionType.load,
            decision,
            terminal,
            fingerprint,
            decision.amount_minor,
            cardholder_part=card.money(holder_minor),
            funder_part=card.money(funder_minor) if funder_minor else None,
        )
        # Other nodes share the card: this copy may be older than a replacement there, which moved
        # the balance and left this card lost. The write lands only on a card still active and not
        # replaced, as a one-node actor decides; on one node the actor is the authority, no check.
        active_card = card.card_id if self._services.max_age_s is not None else None
        write = Write(record=record, entry=entry, active_card=active_card)
        return self._submit(write, outcome, _Pending(decision.amount_minor))

    # Refund, cancel, reversal of an earlier transaction

    def _adjust_original(self, message: AdjustOriginal) -> Reply:
        command, terminal = message.command, message.terminal
        original = self._services.store.transaction(terminal.terminal_id, command.original_transaction_id)
        assert original is not None and original.record.card_id == self.card.card_id, (
            "routed to the wrong card"
        )
        pending = self._pending_originals.get(command.original_transaction_id, 0)
        status = TransactionStatus.cancelled if pending == UNDO_PENDING else original.status
        refunded_minor = original.refunded_minor + max(pending, 0)
        if isinstance(command, Refund | Completion):
            return self._refund(command, message, original, status, refunded_minor)
        if isinstance(command, Reversal) and command.after_completion and refunded_minor:
            return self._reverse_completed(command, message, original, status, refunded_minor)
        return self._undo(command, message, original, status, refunded_minor)

    def _refund(
        self,
        command: Refund | Completion,
        message: AdjustOriginal,
        original: StoredTransaction,
        status: TransactionStatus,
        refunded_minor: int,
    ) -> Reply:
        card, terminal = self.card, message.terminal
        if original.record.transaction_type != TransactionType.redemption.value:
            decision = Decision(ResponseCode.invalid_transaction, detail="only a redemption can be refunded")
        elif isinstance(command, Completion):
            decision = card_rules.decide_completion(
                card, command.amount, status, original.record.approved_minor - refunded_minor
            )
        else:
            decision = card_rules.decide_refund(
                card,
                command.amount,
                status,
                original.record.approved_minor - refunded_minor,
                card.balance_minor + self._pending_credit_minor,
                self._services.today(),
            )
        if not decision.approves:
            return self._decline(command, terminal, message.fingerprint, decision)
        amount_minor = decision.amount_minor
        entry = ledger.refund_entry(
            entry_key(terminal.terminal_id, command.transaction_id),
            card.currency,
            card.card_id,
            amount_minor,
            merchant_id=terminal.merchant_id,
            programme_id=card.programme.programme_id,
            # A completion gives back what its authorisation took: the card's maximum does not refuse it.
            card_ceiling_minor=None if isinstance(command, Completion) else card.programme.balance_max_minor,
        )
        outcome, record = self._approved(
            command, TransactionType.refund, decision, terminal, message.fingerprint, amount_minor
        )
        change = OriginalChange(
            terminal.terminal_id, command.original_transaction_id, "approved", refund_minor=amount_minor
        )
        credited = self._credited_card(amount_minor)
        write = Write(record=record, entry=entry, original=change, credited_card=credited)
        pending = _Pending(amount_minor, command.original_transaction_id, amount_minor)
        reply = self._submit(write, outcome, pending)
        self._follow_if_replaced(amount_minor, entry.idempotency_key)  # a completion takes a lost card
        return reply

    def _undo(
        self,
        command: Cancel | Reversal,
        message: AdjustOriginal,
        original: StoredTransaction,
        status: TransactionStatus,
        refunded_minor: int,
    ) -> Reply:
        card, terminal = self.card, message.terminal
        if original.record.transaction_type not in UNDOABLE_TYPES:
            decision = Decision(
                ResponseCode.invalid_transaction,
                detail=f"a {original.record.transaction_type} cannot be cancelled or reversed",
            )
            return self._decline(command, terminal, message.fingerprint, decision)
        original_entry = original_entry_of(original, card)
        card_delta_minor = -original_entry.delta_for(ledger.card_account(card.card_id))
        decision = card_rules.decide_undo(
            status, refunded_minor, max(-card_delta_minor, 0), self.available_minor
        )
        # A closed period was counted in its close and may be paid out: neither a cancel nor a
        # reversal (which needs no employee PIN) undoes it any more; a refund, with the PIN, does.
        if decision.approves and original.record.period_number != terminal.period_number:
            decision = Decision(
                ResponseCode.invalid_transaction, detail="the original's period is closed; refund instead"
            )
        if not decision.approves:
            return self._decline(command, terminal, message.fingerprint, decision)
        kind = "cancel" if isinstance(command, Cancel) else "reversal"
        entry = original_entry.reversed(undo_key(terminal.terminal_id, command.original_transaction_id), kind)
        transaction_type = COMMAND_TYPES[type(command)]
        outcome, record = self._approved(
            command,
            transaction_type,
            Decision(ResponseCode.approved, original.record.approved_minor),
            terminal,
            message.fingerprint,
            card_delta_minor,
        )
        new_status = (
            TransactionStatus.cancelled if isinstance(command, Cancel) else TransactionStatus.reversed
        )
        change = OriginalChange(
            terminal.terminal_id, command.original_transaction_id, new_status.value, require_unrefunded=True
        )
        pending = _Pending(card_delta_minor, command.original_transaction_id, UNDO_PENDING)
        write = Write(
            record=record,
            entry=entry,
            original=change,
            refund_undone=_refund_undone(original),
            credited_card=self._credited_card(card_delta_minor),
        )
        reply = self._submit(write, outcome, pending)
        self._follow_if_replaced(card_delta_minor, entry.idempotency_key)
        return reply

    def _reverse_completed(
        self,
        command: Reversal,
        message: AdjustOriginal,
        original: StoredTransaction,
        status: TransactionStatus,
        refunded_minor: int,
    ) -> Reply:
        """An acquirer's reversal of an authorisation its completion gave part of back: what is left
        charged (the final amount) goes back, and the authorisation is reversed. Once: the undo key,
        and the original's status and refunded amount (`OriginalChange`), guard it as any reversal."""
        card, terminal, record = self.card, message.terminal, original.record
        decision = card_rules.decide_undo(status, 0, 0, self.available_minor)
        if decision.approves and record.transaction_type != TransactionType.redemption.value:
            decision = Decision(ResponseCode.invalid_transaction, detail="only a redemption is completed")
        if not decision.approves:
            return self._decline(command, terminal, message.fingerprint, decision)
        rest_minor = record.approved_minor - refunded_minor
        assert rest_minor >= 0 and record.merchant_id is not None, (rest_minor, record.merchant_id)
        entry = None
        if rest_minor:  # a completion at zero gave all of it back: nothing left to move
            entry = ledger.redemption_entry(
                entry_key(record.source, record.transaction_id),
                card.currency,
                card.card_id,
                rest_minor,
                merchant_id=record.merchant_id,
                programme_id=card.programme.programme_id,
            ).reversed(undo_key(terminal.terminal_id, command.original_transaction_id), "reversal")
        outcome, record_after = self._approved(
            command,
            TransactionType.reversal,
            Decision(ResponseCode.approved, rest_minor),
            terminal,
            message.fingerprint,
            rest_minor,
        )
        change = OriginalChange(
            terminal.terminal_id,
            command.original_transaction_id,
            TransactionStatus.reversed.value,
            refund_minor=rest_minor,
        )
        pending = _Pending(rest_minor, command.original_transaction_id, UNDO_PENDING)
        credited = self._credited_card(rest_minor)
        write = Write(record=record_after, entry=entry, original=change, credited_card=credited)
        reply = self._submit(write, outcome, pending)
        if entry is not None:
            self._follow_if_replaced(rest_minor, entry.idempotency_key)
        return reply

    def _follow_if_replaced(self, credit_minor: int, because: str) -> None:
        """Money credited to a lost card (replaced, its balance moved) follows it to its
        replacement; the transfer queues behind this write (core._follow_replacement)."""
        follow = self._services.credited_after_replacement
        if credit_minor > 0 and self.card.status is CardStatus.lost and follow is not None:
            follow(self.card.card_id, because)

    def _credited_card(self, credit_minor: int) -> str | None:
        """Where other nodes share the card, the card a credit lands on while this copy says it is
        not lost: another node may have replaced it since the copy was read, which the journal tells
        (`_follow_landed`). None on one node: the copy is the card, `_follow_if_replaced` decides."""
        card = self.card
        if self._services.max_age_s is None or credit_minor <= 0 or card.status is CardStatus.lost:
            return None
        return card.card_id if self._services.credited_after_replacement is not None else None

    def _follow_landed(self, write: Write) -> None:
        """On the journal writer's thread: a credit landed on a card another node had replaced (or
        was replacing) meanwhile follows it to the replacement now, not at the next start; the
        follow's transfer reads the card afresh, so this actor learns the card is lost."""
        follow = self._services.credited_after_replacement
        assert follow is not None and write.credited_card is not None and write.entry is not None
        follow(write.credited_card, write.entry.idempotency_key)

    # Outcomes and the journal

    def _approved(
        self,
        command: Redeem | Load | AdjustingCommand,
        transaction_type: TransactionType,
        decision: Decision,
        terminal: TerminalContext,
        fingerprint: str,
        delta_minor: int,
        *,
        cardholder_part: Money | None = None,
        funder_part: Money | None = None,
    ) -> tuple[Outcome, TransactionRecord]:
        """The approval's answer and the row that stores it. `requested` is the command's amount;
        a cancel or reversal, which names none, asks for what the original approved."""
        card = self.card
        balance_after_minor = self.available_minor + min(delta_minor, 0)
        if delta_minor > 0:
            balance_after_minor += delta_minor
        approved = card.money(decision.amount_minor)
        outcome = Outcome(
            command.transaction_id,
            transaction_type,
            decision.code,
            decision.detail,
            requested=approved if isinstance(command, Cancel | Reversal) else command.amount,
            approved=approved,
            balance=card.money(balance_after_minor),
            card_masked=card.masked,
            authorization_code=authorization_code(),
            period_number=terminal.period_number,
            cardholder_part=cardholder_part,
            funder_part=funder_part,
            status=TransactionStatus.approved,
        )
        original = command.original_transaction_id if not isinstance(command, Redeem | Load) else ""
        record = record_of(
            outcome,
            terminal.terminal_id,
            fingerprint,
            card_id=card.card_id,
            merchant_id=terminal.merchant_id,
            original_transaction_id=original,
            mti=terminal.mti,
            retrieval_reference=terminal.retrieval_reference,
        )
        return outcome, record

    def _decline(
        self,
        command: Redeem | Load | AdjustingCommand,
        terminal: TerminalContext,
        fingerprint: str,
        decision: Decision,
    ) -> Reply:
        card = self.card
        requested: Money | None = getattr(command, "amount", None)
        outcome = declined(
            command.transaction_id,
            transaction_type_of(command),
            decision.code,
            decision.detail,
            requested=requested,
            balance=card.money(max(self.available_minor, 0)),
            card_masked=card.masked,
            period_number=terminal.period_number,
        )
        extra: dict[str, object] = {
            "card_id": card.card_id,
            "merchant_id": terminal.merchant_id,
            "mti": terminal.mti,
            "retrieval_reference": terminal.retrieval_reference,
        }
        if not isinstance(command, Redeem | Load):
            extra["original_transaction_id"] = command.original_transaction_id
        record = record_of(outcome, terminal.terminal_id, fingerprint, **extra)
        if requested is not None and requested.currency != card.currency:
            record = dataclasses.replace(record, currency=card.currency, requested_minor=0)
        return self._submit(Write(record=record), outcome, _Pending(0))

    def _submit(self, write: Write, outcome: Outcome, pending: _Pending) -> Reply:
        """Reserve now, hand the write to the journal, answer once it is durable."""
        token = next(self._tokens)
        reply = Reply()
        self._pending[token] = pending
        self._pending_replies[token] = reply
        self._reserve(pending, +1)
        landed = self._landed
        store = self._services.store
        record = write.record

        def done(result: WriteResult) -> None:  # runs on the journal writer's thread
            # Before the reply: whatever the terminal sends next finds this write applied.
            pending.result = result
            landed.append(token)
            if result.credited_lost_card:  # other nodes only: one replaced the card meanwhile
                self._follow_landed(write)
            if result.ok:
                reply.set(outcome)
            elif result.conflict and record is not None:
                reply.set(
                    answer_for_stored(
                        store,
                        record.source,
                        record.transaction_id,
                        outcome.transaction_type,
                        record.fingerprint,
                    )
                )
            elif result.period_closed:
                reply.set(_period_closed(outcome))
            elif result.card_not_active is not None:
                reply.set(_card_not_active(outcome, result.card_not_active, result.decline_stored))
            elif result.refusal is LedgerRefusal.original_changed_meanwhile:
                reply.set(original_changed(outcome, result.problem))
            else:
                reply.set(_system_error(outcome, result.problem))

        if not self._services.writer.submit(write, done):
            self._pending.pop(token)
            self._pending_replies.pop(token)
            self._reserve(pending, -1)
            reply.set(_system_error(outcome, "journal queue full"))
        return reply

    def _reserve(self, pending: _Pending, sign: int) -> None:
        if pending.delta_minor < 0:
            self._reserved_minor += sign * -pending.delta_minor
        else:
            self._pending_credit_minor += sign * pending.delta_minor
        if pending.original_id:
            current = self._pending_originals.get(pending.original_id, 0)
            if pending.refund_minor == UNDO_PENDING:
                updated = UNDO_PENDING if sign > 0 else 0
            else:
                updated = current + sign * pending.refund_minor
            if updated:
                self._pending_originals[pending.original_id] = updated
            else:
                self._pending_originals.pop(pending.original_id, None)
        assert self._reserved_minor >= 0 and self._pending_credit_minor >= 0

    def _apply_landed(self) -> None:
        while self._landed:
            token = self._landed.popleft()
            pending = self._pending.pop(token, None)
            if pending is None:
                continue  # applied already by _settle_pending
            assert pending.result is not None
            self._apply(token, pending, pending.result)

    def _apply(self, token: int, pending: _Pending, result: WriteResult) -> None:
        self._pending_replies.pop(token, None)
        self._reserve(pending, -1)
        if result.ok:
            if pending.delta_minor:
                balance_minor = self.card.balance_minor + pending.delta_minor
                self._card = dataclasses.replace(self.card, balance_minor=balance_minor)
        elif result.card_not_active is not None:
            # Another node blocked or replaced the card since this copy was read: read it again
            # before the next message, which is then decided on the card as it is.
            self._read_at_s = -math.inf

    def _settle_pending(self) -> None:
        """Wait for every decided write to land and apply it now, so the balance is exact."""
        for token, pending in list(self._pending.items()):
            self._pending_replies[token].wait(self._services.commit_wait_s)
            assert pending.result is not None
            del self._pending[token]
            self._apply(token, pending, pending.result)

    # Closed-loop card PIN: tries are serialised here, counted durably before the answer

    def _card_pin(self) -> CardPin | None:
        pins = self._services.pins
        if pins is None:
            return None
        if not self._pin_loaded:
            self._pin = pins.store.load(self.card.card_id)
            self._pin_loaded = True
        return self._pin

    def _pin_decline(self, command: Redeem) -> Decision | None:
        """None when the card has no PIN or the right one was given; else the decline."""
        pin = self._card_pin()
        if pin is None:
            return None
        pins = self._services.pins
        assert pins is not None
        verdict = check_card_pin(pin.pvv, pin.failed_tries, pins.tries_max, command.pin)
        shared = self._services.max_age_s is not None
        if verdict.counts_wrong:
            tries = pins.store.count_wrong_try(self.card.card_id, pins.tries_max)
            self._pin = dataclasses.replace(pin, failed_tries=tries)
            if tries >= pins.tries_max:  # the stored count decides: another node may have counted too
                return Decision(ResponseCode.pin_tries_exceeded, detail="card PIN blocked")
        elif verdict.code.approves and (verdict.clears_tries or shared):
            # The right PIN, judged on this copy; with several nodes the database has the last
            # word: a PIN blocked on another node meanwhile stays blocked.
            if not pins.store.reset_tries_unless_blocked(self.card.card_id, pins.tries_max):
                self._pin = dataclasses.replace(pin, failed_tries=pins.tries_max)
                return Decision(ResponseCode.pin_tries_exceeded, detail="card PIN blocked")
            self._pin = dataclasses.replace(pin, failed_tries=0)
        if verdict.code.approves:
            return None
        return Decision(verdict.code, detail=verdict.detail)

    def _set_pin(self, message: SetCardPin) -> CardState:
        pins = self._services.pins
        assert pins is not None, "card PINs are not configured"
        self._pin = pins.store.set_pvv(self.card.card_id, message.pvv, message.pvv_key_id, pins.now())
        self._pin_loaded = True
        return self.card

    # Status changes and lost-card transfer

    def _set_status(self, message: SetStatus) -> CardState:
        """Takes effect for every later request once durable (this actor answers nothing meanwhile).
        AdminUnavailableError when the journal could not store it (queue full, database down): the
        card stays as it was, here and in the database, and the same change sent again may land."""
        card = self.card
        if message.status in REPLACED_CARD_KEEPS_LOST:
            self._require_not_replaced(card, message.status)
        change = CardChange(card.card_id, message.status, message.status.value, message.reason, message.actor)
        result = self._write_now(Write(card_changes=(change,)))
        if result.fault:
            log.warning(
                "status %s of card %s not stored: %s", message.status.value, card.card_id, result.problem
            )
            raise AdminUnavailableError(
                f"card {card.masked} is still {card.status.value}: the journal did not store the change to "
                f"{message.status.value} (the switch's log says why); nothing changed, send it again"
            )
        if result.refusal is LedgerRefusal.replaced_meanwhile:
            # Replaced on another node since the check above: this copy is stale, read it again.
            self._read_at_s = -math.inf
            self._require_not_replaced(card, message.status)
        if not result.ok:  # no other rule refuses a status change: a bug, its words go to the caller's log
            raise RuntimeError(f"card status not stored: {result.problem}")
        self._card = dataclasses.replace(card, status=message.status)
        return self.card

    def _require_not_replaced(self, card: CardState, status: CardStatus) -> None:
        """AdminStateError for a block or unblock of a card already replaced: it stays lost.
        Read here, for the backoffice and the console alike, after any replacement of this card
        through this actor has landed: read before asking the actor, a replacement landed between."""
        replaced_by = self._services.store.card_replaced_by(card.card_id)
        if replaced_by is None:
            return
        replacement = self._services.store.card_state(replaced_by)
        raise AdminStateError(
            f"card {card.masked} is lost and replaced by {replacement.masked} ({replaced_by}): "
            f"{REPLACED_CARD_KEEPS_LOST[status]}"
        )

    def _transfer_out(self, message: TransferOut) -> tuple[int, int | None] | TransferRefused:
        """(moved minor units, journal entry id), or why nothing moved; waits for decided
        work to land first. Where nodes share cards, another node may credit or spend the card
        between the read of its balance and the transfer's write: the journal then refuses the write
        (BalanceAsRead) and the card is read again, at most TRANSFER_READS_MAX times. Refused, nothing
        moved, if the card was unblocked since the replacement marked it lost (here or on another node)."""
        self._settle_pending()
        shared = self._services.max_age_s is not None
        for _ in range(TRANSFER_READS_MAX):
            if shared:
                # Another node may have loaded or spent it since this copy was read, or replaced it: a
                # follow of money credited after that finds this copy still active (_follow_landed).
                self._read_card()
            card = self.card
            if card.status not in (CardStatus.blocked, CardStatus.lost):
                return TransferRefused(card.balance_minor, lost_card_status=card.status)
            result = self._write_now(self._transfer_write(message, shared))
            if not result.balance_changed:
                break
        if not result.ok:
            return TransferRefused(
                self.card.balance_minor,
                new_card_status=result.card_not_active,
                refusal=result.refusal,
                balance_changed=result.balance_changed,
                fault=result.fault,
                problem=result.problem,
            )
        amount_minor = self.card.balance_minor
        self._card = dataclasses.replace(self.card, status=CardStatus.lost, balance_minor=0)
        return amount_minor, result.entry_id

    def _transfer_write(self, message: TransferOut, shared: bool) -> Write:
        """The move of the card's whole balance as this actor holds it, and its replacement."""
        card = self.card
        assert card.status in (CardStatus.blocked, CardStatus.lost), (
            "block the card before moving its balance"
        )
        amount_minor = card.balance_minor
        # Even an empty card records its replacement: a replaced card stays blocked.
        entry = None
        if amount_minor:
            entry = ledger.card_transfer_entry(
                message.idempotency_key,
                card.currency,
                card.card_id,
                message.new_card_id,
                amount_minor,
                card.programme.balance_max_minor,
            )
        # Lost, whatever this actor holds: a block landing between the replacement's mark and this
        # transfer made it blocked, and a replaced card left blocked keeps the credits it gets later.
        change = CardChange(
            card.card_id,
            CardStatus.lost,
            "transferred",
            f"balance moved to {message.new_card_id}"
            if amount_minor
            else f"replaced by {message.new_card_id}",
            message.actor,
            message.new_card_id,
            replacement_key=None if entry else message.idempotency_key,  # a transfer's is its entry's
            replaced_by_seen=message.replaced_by_seen,
        )
        read = BalanceAsRead(card.card_id, amount_minor) if shared else None
        return Write(
            entry=entry, card_changes=(change,), active_card=message.new_card_id, balance_as_read=read
        )

    def _write_now(self, write: Write) -> WriteResult:
        """Until the journal answers, however long (it always does, or the switch exits): a write
        that timed out may still land, and this actor would not know what it holds. A transfer that
        timed out let the replacement's actor start before it landed, without its money."""
        return self._services.writer.write_and_wait(write, None)


UNDOABLE_TYPES = frozenset(
    {TransactionType.redemption.value, TransactionType.refund.value, TransactionType.load.value}
)


def _refund_undone(original: StoredTransaction) -> OriginalChange | None:
    """For a refund being cancelled or reversed: its redemption may be refunded that much again."""
    record = original.record
    if record.transaction_type != TransactionType.refund.value or not record.original_transaction_id:
        return None
    return OriginalChange(
        record.source,
        record.original_transaction_id,
        TransactionStatus.approved.value,
        refund_minor=-record.approved_minor,
    )


def original_entry_of(original: StoredTransaction, card: CardState) -> JournalEntry:
    """Rebuild the journal entry an approved transaction made, to undo it."""
    record: TransactionRecord = original.record
    key = entry_key(record.source, record.transaction_id)
    assert record.merchant_id is not None
    merchant_id, programme_id = record.merchant_id, card.programme.programme_id
    match record.transaction_type:
        case TransactionType.redemption.value:
            return ledger.redemption_entry(
                key,
                card.currency,
                card.card_id,
                record.approved_minor,
                merchant_id=merchant_id,
                programme_id=programme_id,
            )
        case TransactionType.refund.value:
            return ledger.refund_entry(
                key,
                card.currency,
                card.card_id,
                record.approved_minor,
                merchant_id=merchant_id,
                programme_id=programme_id,
            )
        case TransactionType.load.value:
            return ledger.load_entry(
                key,
                card.currency,
                card.card_id,
                card.programme.programme_id,
                record.cardholder_part_minor,
                record.funder_part_minor,
            )
    raise AssertionError(f"cannot undo a {record.transaction_type}")


def _period_closed(outcome: Outcome) -> Outcome:
    """An undo the journal refused: its original's period closed after the check (PeriodClosedError),
    as the check itself declines it then; not stored, so the same id is judged afresh."""
    return declined(
        outcome.transaction_id,
        outcome.transaction_type,
        ResponseCode.invalid_transaction,
        "the original's period is closed; refund instead",
        requested=outcome.requested,
        card_masked=outcome.card_masked,
        period_number=outcome.period_number,
        persisted=False,
    )


def _card_not_active(outcome: Outcome, status: CardStatus, stored: bool) -> Outcome:
    """A load the journal refused (Write.active_card): another node blocked or replaced the card
    after this copy was read. Declined as this node declines such a card (41 lost, 62 blocked), as
    the journal stored it (journal.declined_record); when it could not, the same id sent again is
    decided on the card read afresh and stored then."""
    decision = card_rules.status_decline(status)
    return declined(
        outcome.transaction_id,
        outcome.transaction_type,
        decision.code,
        decision.detail,
        requested=outcome.requested,
        card_masked=outcome.card_masked,
        period_number=outcome.period_number,
        persisted=stored,
    )


def original_changed(outcome: Outcome, problem: str) -> Outcome:
    """An adjustment the journal refused: its original was refunded, cancelled or reversed after the
    check (on another node). Not stored, so the same id sent again is judged on the original as it
    is now; the journal's words, with internal ids, go to the log only."""
    log.warning("transaction %s not stored: %s", outcome.transaction_id, problem)
    return declined(
        outcome.transaction_id,
        outcome.transaction_type,
        ResponseCode.invalid_transaction,
        "the original was refunded, cancelled or reversed meanwhile; nothing moved, send it again",
        requested=outcome.requested,
        card_masked=outcome.card_masked,
        period_number=outcome.period_number,
        persisted=False,
    )


def _system_error(outcome: Outcome, problem: str) -> Outcome:
    log.warning("transaction %s not stored: %s", outcome.transaction_id, problem)
    return declined(
        outcome.transaction_id,
        outcome.transaction_type,
        ResponseCode.system_error,
        "not stored; nothing was moved",
        requested=outcome.requested,
        card_masked=outcome.card_masked,
        period_number=outcome.period_number,
        persisted=False,
    )
