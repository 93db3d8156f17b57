"""Bank-card payments on the terminal actor's thread: check, route to the acquirer, store, answer."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from actors.acquirer_gateway import STAN_ATTEMPTS_MAX, AcquirerGateway, GatewayNotRunningError
from actors.acquirer_types import (
    AuthorizationRequest,
    AuthorizationResult,
    CardData,
    CardEntryMode,
    OriginalAuthorization,
    PinData,
)
from actors.outcomes import outcome_of, record_of
from switch.domain.cvm import CvmPolicy, missing_cvm
from switch.domain.money import Money
from switch.domain.payments import (
    PURCHASE_PROCESSING_CODE,
    REFUND_PROCESSING_CODE,
    AbortPayment,
    EntryMode,
    Pay,
    emv_tlv_hex,
    is_expired,
    payment_fingerprint,
    refund_over_takings_problem,
)
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import (
    Cancel,
    EmployeeAuth,
    Outcome,
    Reversal,
    TransactionStatus,
    TransactionType,
    declined,
)
from switch.security import PanToken, WrappedKey, pin_block_format, tokenize_pan
from switch.store.journal import TOMBSTONE_TYPE, TransactionRecord
from switch.store.payments import (
    PAYMENT_CHANGED,
    STAGE_ANSWERED,
    STAGE_PENDING,
    PaymentDetails,
    PaymentInFlightElsewhereError,
    PaymentNotPendingError,
    PaymentStore,
)
from switch.store.repository import Store, StoredTransaction, TerminalInfo
from switch.store.saf import StanInUseError

log = logging.getLogger(__name__)

PAYMENT = TransactionType.payment
# Transaction types that go to an acquirer (bank cards); a stored-value refund is no such thing.
ACQUIRED_TYPES = frozenset({TransactionType.payment.value, TransactionType.refund.value})
# A payment sent again through another node waits for the first copy's answer this much past the
# response timeout, asking the database this often.
ELSEWHERE_MARGIN_S = 2.0
ELSEWHERE_POLL_S = 0.05
GATEWAY_NOT_RUNNING = "acquirer gateway not running"  # PaymentProcessor._undo: no reversal advice
NO_FREE_STAN = "no free STAN for the reversal advice"  # PaymentProcessor._undo: other nodes held each
NOT_STORED = frozenset({GATEWAY_NOT_RUNNING, NO_FREE_STAN})  # nothing changed: the terminal may try again
ENTRY_MODES = {
    EntryMode.contactless: CardEntryMode.contactless,
    EntryMode.chip: CardEntryMode.chip,
    EntryMode.magstripe: CardEntryMode.magstripe,
}


@dataclass(frozen=True, slots=True)
class SubmitPayment:
    command: Pay
    employee: EmployeeAuth | None = None  # a refund's: checked by the terminal actor first


@dataclass(frozen=True, slots=True)
class SubmitAbort:
    command: AbortPayment


PaymentMessage = SubmitPayment | SubmitAbort


def acquirer_terminal_id(terminal_id: str) -> str:
    """ISO 8583 field 41 (8 characters) of one of our terminals: stable, derived from its id."""
    return hashlib.sha256(terminal_id.encode()).hexdigest()[:8].upper()


def acquirer_merchant_id(merchant_id: str) -> str:
    """Field 42 (15 characters) of one of our merchants."""
    return hashlib.sha256(merchant_id.encode()).hexdigest()[:15].upper()


@dataclass(frozen=True, slots=True)
class PaymentServices:
    gateway: AcquirerGateway
    store: Store
    payments: PaymentStore
    terminal_pin_key: Callable[[str], WrappedKey | None]
    pan_hash_key: bytes
    cvm: CvmPolicy
    response_timeout_ms: int
    now: Callable[[], dt.datetime]


class PaymentProcessor:
    """Stateless between calls; the terminal actor serialises the calls of one terminal."""

    def __init__(self, services: PaymentServices) -> None:
        self._services = services

    # --- pay ------------------------------------------------------------------------------------

    def pay(self, command: Pay, terminal: TerminalInfo) -> Outcome:
        token = tokenize_pan(command.card.pan, self._services.pan_hash_key)
        digest = payment_fingerprint(command, token.pan_hash_hex)
        stored = self._services.store.transaction(terminal.terminal_id, command.transaction_id)
        if stored is not None:
            return _answer_for_stored(stored, command.transaction_id, digest)
        if is_expired(command.card.expiry_yymm, self._services.now().date()):
            return self._decline(command, terminal, token, digest, ResponseCode.card_expired, "")
        if command.refund:
            if self._services.payments.details(terminal.terminal_id, command.transaction_id) is not None:
                # Sent again through another node while the first copy is in flight: that copy's
                # answer, not a 61 (the first copy counts against the takings it checks).
                return self._answer_of_the_copy_elsewhere(command, terminal.terminal_id, digest)
            left_minor = self._services.payments.refund_takings_left_minor(
                terminal.terminal_id, terminal.period_number, command.amount.currency
            )
            problem = refund_over_takings_problem(command.amount, left_minor)
            if problem is not None:
                return self._refund_refused(command, terminal, token, digest, problem)
        # A refund credits the cardholder: no cardholder verification is asked for it.
        cvm_problem = (
            None
            if command.refund
            else missing_cvm(command.card.entry_mode, command.amount, command.has_pin, self._services.cvm)
        )
        if cvm_problem is not None:
            return self._decline(command, terminal, token, digest, ResponseCode.pin_required, cvm_problem)
        pin = self._pin_data(command, terminal.terminal_id)
        if isinstance(pin, Outcome):
            return pin
        request = self._authorization_request(command, terminal, pin)
        return self._authorize(command, terminal, request, _PendingContext(token, digest, terminal))

    def _authorize(
        self, command: Pay, terminal: TerminalInfo, request: AuthorizationRequest, context: _PendingContext
    ) -> Outcome:
        """Send the authorisation, its row recorded as pending first; then store the answer."""
        method = command.card.entry_mode.value
        sent: list[PaymentDetails] = []
        refused: list[str] = []
        elsewhere: list[bool] = []

        def record_pending(original: OriginalAuthorization) -> bool:
            pending = _pending_details(command, original, context)
            try:
                problem = self._services.payments.record_pending(pending, self._services.now())
            except PaymentInFlightElsewhereError:
                elsewhere.append(True)  # the terminal sent it again through another node
                return False
            if problem is not None:  # a refund over the takings left, counted under the lock
                refused.append(problem)
                return False
            sent.append(pending)
            return True

        try:
            result = self._services.gateway.authorize(
                request, self._services.response_timeout_ms, record_pending
            )
        except GatewayNotRunningError:
            return _refusal(
                command.transaction_id,
                ResponseCode.issuer_unavailable,
                "acquirer gateway not running",
                method,
            )
        if refused:
            return self._refund_refused(command, terminal, context.token, context.digest, refused[0])
        if elsewhere:
            return self._answer_of_the_copy_elsewhere(command, terminal.terminal_id, context.digest)
        outcome = _outcome_of_result(command, result, terminal.period_number, context.token)
        details = _answered(sent[0], result) if sent else None
        record = record_of(outcome, terminal.terminal_id, context.digest, merchant_id=terminal.merchant_id)
        try:
            self._services.payments.record(record, details, self._services.now())
        except (IntegrityError, PaymentNotPendingError):
            # Stored meanwhile under this id (another node, or recovery): this approval must not stand.
            self._reverse_unrecorded(details, result)
            again = self._services.store.transaction(terminal.terminal_id, command.transaction_id)
            if again is None:
                return _refusal(
                    command.transaction_id, ResponseCode.system_error, "could not store the payment", method
                )
            return _answer_for_stored(again, command.transaction_id, context.digest)
        except SQLAlchemyError:
            log.exception("payment %s: could not store the answer", command.transaction_id)
            self._reverse_unrecorded(details, result)
            return _refusal(
                command.transaction_id, ResponseCode.system_error, "could not store the payment", method
            )
        return outcome

    def _answer_of_the_copy_elsewhere(self, command: Pay, terminal_id: str, digest: str) -> Outcome:
        """The same payment is in flight on another node: its answer, once stored, is this one's
        too. Storing an answer here (as a 96 once was) made that node reverse its approval."""
        deadline_s = time.monotonic() + self._services.response_timeout_ms / 1000 + ELSEWHERE_MARGIN_S
        while True:
            stored = self._services.store.transaction(terminal_id, command.transaction_id)
            if stored is not None:
                return _answer_for_stored(stored, command.transaction_id, digest)
            if time.monotonic() >= deadline_s:
                detail = "this payment is still in flight on another node; ask TransactionStatus"
                method = command.card.entry_mode.value
                return _refusal(command.transaction_id, ResponseCode.issuer_unavailable, detail, method)
            time.sleep(ELSEWHERE_POLL_S)

    def _refund_refused(
        self, command: Pay, terminal: TerminalInfo, token: PanToken, digest: str, problem: str
    ) -> Outcome:
        # Checked before the acquirer's turn, and again under the terminal's refund lock when the
        # refund is recorded as sent (PaymentStore.record_pending): refunds at the same moment on
        # two nodes count each other.
        detail = f"{problem}; nothing was sent to the acquirer"
        return self._decline(command, terminal, token, digest, ResponseCode.refund_exceeds_takings, detail)

    def _pin_data(self, command: Pay, terminal_id: str) -> PinData | Outcome | None:
        if not command.has_pin:
            return None
        key = self._services.terminal_pin_key(terminal_id)
        if key is None or int(pin_block_format(key)) != command.pin_block_format:
            # The servicer checks this first; here it only guards a key changed in between.
            return _refusal(
                command.transaction_id,
                ResponseCode.format_error,
                "pin_block does not match this terminal's PIN key",
                command.card.entry_mode.value,
            )
        return PinData(command.pin_block, key)

    def _authorization_request(
        self, command: Pay, terminal: TerminalInfo, pin: PinData | None
    ) -> AuthorizationRequest:
        card = command.card
        emv_hex = emv_tlv_hex(card.emv) if card.emv is not None else ""
        return AuthorizationRequest(
            transaction_id=command.transaction_id,
            terminal_id=acquirer_terminal_id(terminal.terminal_id),
            merchant_id=acquirer_merchant_id(terminal.merchant_id),
            amount=command.amount,
            card=CardData(
                pan=card.pan,
                expiry_yymm=card.expiry_yymm,
                entry_mode=ENTRY_MODES[card.entry_mode],
                track2=card.track2,
                emv_tlv_hex=emv_hex,
            ),
            pin=pin,
            processing_code=REFUND_PROCESSING_CODE if command.refund else PURCHASE_PROCESSING_CODE,
        )

    def _decline(
        self,
        command: Pay,
        terminal: TerminalInfo,
        token: PanToken,
        digest: str,
        code: ResponseCode,
        detail: str,
    ) -> Outcome:
        """A decline decided here, before the acquirer: stored like any answer, no acquirer side."""
        outcome = dataclasses.replace(
            declined(
                command.transaction_id,
                command.kind,
                code,
                detail,
                requested=command.amount,
                card_masked=token.masked,
                period_number=terminal.period_number,
            ),
            payment_method=command.card.entry_mode.value,
        )
        record = record_of(outcome, terminal.terminal_id, digest, merchant_id=terminal.merchant_id)
        try:
            self._services.payments.record(record, None, self._services.now())
        except IntegrityError:
            again = self._services.store.transaction(terminal.terminal_id, command.transaction_id)
            if again is not None:
                return _answer_for_stored(again, command.transaction_id, digest)
            raise
        return outcome

    def _reverse_unrecorded(self, details: PaymentDetails | None, result: AuthorizationResult) -> None:
        if details is None or not result.approved:
            return  # only an approval can stand at the acquirer; a timeout's reversal is queued
        try:
            self._services.gateway.reverse(original_of(details), "not_recorded")
        except GatewayNotRunningError:
            log.error("payment %s: approved but neither stored nor reversed", details.transaction_id)

    # --- abort ----------------------------------------------------------------------------------

    def abort(self, command: AbortPayment, terminal: TerminalInfo) -> Outcome:
        """The customer cancelled: before the payment arrived, the id is kept so it never goes
        through; after an approval, the payment is reversed at the acquirer and marked aborted."""
        source, transaction_id = terminal.terminal_id, command.transaction_id
        stored = self._services.store.transaction(source, transaction_id)
        if stored is None:
            return self._abort_unseen(command, terminal)
        if stored.record.transaction_type != PAYMENT.value:
            return _refusal(
                transaction_id, ResponseCode.invalid_transaction, "only payments can be aborted", ""
            )
        if stored.status is TransactionStatus.approved and self._period_closed(stored):
            # As for a cancel: the day close handed it to settlement, and nothing undoes it in a close.
            period = stored.record.period_number
            detail = f"the payment is from period {period}, closed by a day close; too late to abort"
            return _refusal(transaction_id, ResponseCode.invalid_transaction, detail, "")
        if stored.status is TransactionStatus.approved:
            details = self._services.payments.details(source, transaction_id)
            assert details is not None, "an approved payment has its acquirer side"
            problem = self._undo(details, TransactionStatus.aborted, "abort", None)
            if problem in NOT_STORED:
                return _refusal(
                    transaction_id, ResponseCode.system_error, "reversal not stored; abort again", ""
                )
            if problem is not None and problem != PAYMENT_CHANGED:
                return _refusal(transaction_id, ResponseCode.invalid_transaction, problem, "")
            stored = self._services.store.transaction(source, transaction_id)
            assert stored is not None
        return _abort_answer(stored)

    def _period_closed(self, stored: StoredTransaction) -> bool:
        """Whether a day close has closed the transaction's period (the database's word for it)."""
        now_open = self._services.store.terminal(stored.record.source)
        return now_open is not None and stored.record.period_number != now_open.period_number

    def _abort_unseen(self, command: AbortPayment, terminal: TerminalInfo) -> Outcome:
        outcome = dataclasses.replace(
            declined(
                command.transaction_id,
                PAYMENT,
                ResponseCode.customer_cancelled,
                "aborted before the payment arrived",
                period_number=terminal.period_number,
            ),
            status=TransactionStatus.aborted,
        )
        # An empty fingerprint: whatever payment later comes with this id gets this answer.
        record = record_of(outcome, terminal.terminal_id, "", merchant_id=terminal.merchant_id)
        try:
            self._services.payments.record(record, None, self._services.now())
        except IntegrityError:
            return self.abort(command, terminal)  # the payment landed just now (another node)
        return outcome

    # --- reversal -------------------------------------------------------------------------------

    def reverse_payment(
        self, command: Reversal | Cancel, digest: str, terminal: TerminalInfo, stored: StoredTransaction
    ) -> Outcome:
        """The terminal's Reversal, or its Cancel (void), of an approved payment: a 0420 through
        store-and-forward. A cancel is the employee's undo, checked by the terminal actor first."""
        assert stored.status is TransactionStatus.approved, "only an approved payment is reversed"
        original_id = command.original_transaction_id
        details = self._services.payments.details(terminal.terminal_id, original_id)
        assert details is not None, "an approved payment has its acquirer side"
        method = stored.record.payment_method
        kind, undone = (
            (TransactionType.cancel, TransactionStatus.cancelled)
            if isinstance(command, Cancel)
            else (TransactionType.reversal, TransactionStatus.reversed)
        )
        undone_money = Money(stored.record.approved_minor, stored.record.currency)
        outcome = Outcome(
            command.transaction_id,
            kind,
            ResponseCode.approved,
            "reversal sent to the acquirer",
            requested=undone_money,
            approved=undone_money,  # what the day report shows on the cancel or reversal line
            card_masked=stored.record.card_masked,
            period_number=terminal.period_number,
            status=TransactionStatus.approved,
            payment_method=method,
        )
        record = record_of(
            outcome,
            terminal.terminal_id,
            digest,
            merchant_id=terminal.merchant_id,
            original_transaction_id=original_id,
        )
        problem = self._undo(details, undone, kind.value, record)
        if problem in NOT_STORED:
            detail = f"{kind.value} not stored; try again"
            return _refusal(command.transaction_id, ResponseCode.system_error, detail, method)
        if problem == PAYMENT_CHANGED:
            return _refusal(command.transaction_id, ResponseCode.already_reversed, problem, method)
        if problem is not None:
            return _refusal(command.transaction_id, ResponseCode.invalid_transaction, problem, method)
        return outcome

    def _undo(
        self,
        details: PaymentDetails,
        undone: TransactionStatus,
        reason: str,
        record: TransactionRecord | None,
    ) -> str | None:
        """An approved payment marked undone and its reversal advice queued, in one transaction
        (PaymentStore.undo), then sent; None when done, else why not. An advice whose STAN another
        node's advice holds on the terminal undoes nothing, and goes again under another STAN."""
        for _ in range(STAN_ATTEMPTS_MAX):
            try:
                advice = self._services.gateway.reversal_advice(original_of(details), reason)
            except GatewayNotRunningError:
                return GATEWAY_NOT_RUNNING
            try:
                problem = self._services.payments.undo(
                    details, undone.value, advice, self._services.now(), record
                )
            except StanInUseError:
                continue
            if problem is None:
                self._services.gateway.wake_saf()
            return problem
        log.error(
            "reversal advice of %s not stored: no free STAN after %d tries",
            details.transaction_id,
            STAN_ATTEMPTS_MAX,
        )
        return NO_FREE_STAN


def original_of(details: PaymentDetails) -> OriginalAuthorization:
    return OriginalAuthorization(
        acquirer=details.acquirer,
        terminal_id=details.acquirer_terminal_id,
        merchant_id=details.acquirer_merchant_id,
        transaction_id=details.transaction_id,
        mti=details.original_mti,
        stan=details.stan,
        transmission_datetime=details.transmission,
        processing_code=details.processing_code,
        amount_minor=details.amount_minor,
        currency_numeric=details.currency_numeric,
    )


def _outcome_of_result(
    command: Pay, result: AuthorizationResult, period_number: int, token: PanToken
) -> Outcome:
    method = command.card.entry_mode.value
    if result.approved:
        return Outcome(
            command.transaction_id,
            command.kind,
            ResponseCode.approved,
            requested=command.amount,
            approved=command.amount,
            card_masked=token.masked,
            authorization_code=result.auth_code[:6],
            period_number=period_number,
            status=TransactionStatus.approved,
            payment_method=method,
        )
    detail = ""
    if result.response_code is ResponseCode.acquirer_timeout:
        detail = "no answer from the acquirer in time; a reversal is queued"
    elif result.acquirer is None:
        detail = "no acquirer for this card"
    outcome = declined(
        command.transaction_id,
        command.kind,
        result.response_code,
        detail,
        requested=command.amount,
        card_masked=token.masked,
        period_number=period_number,
    )
    return dataclasses.replace(outcome, payment_method=method)


@dataclass(frozen=True, slots=True)
class _PendingContext:
    token: PanToken
    digest: str
    terminal: TerminalInfo


def _pending_details(
    command: Pay, original: OriginalAuthorization, context: _PendingContext
) -> PaymentDetails:
    """The payment's row before its authorisation goes out: what a reversal and the answer need."""
    token, terminal = context.token, context.terminal
    return PaymentDetails(
        source=terminal.terminal_id,
        transaction_id=command.transaction_id,
        sequence_number=command.sequence_number,
        pan_hash=token.pan_hash_hex,
        bin6=token.bin6,
        last4=token.last4,
        entry_mode=command.card.entry_mode.value,
        pin_entered=command.has_pin,
        acquirer=original.acquirer,
        acquirer_terminal_id=original.terminal_id,
        acquirer_merchant_id=original.merchant_id,
        original_mti=original.mti,
        stan=original.stan,
        transmission=original.transmission_datetime,
        processing_code=original.processing_code,
        currency_numeric=original.currency_numeric,
        amount_minor=original.amount_minor,
        response_code="",
        auth_code="",
        retrieval_reference="",
        reversal_queued=False,
        fingerprint=context.digest,
        merchant_id=terminal.merchant_id,
        period_number=terminal.period_number,
        card_masked=token.masked,
        currency=command.amount.currency,
        stage=STAGE_PENDING,
    )


def _answered(pending: PaymentDetails, result: AuthorizationResult) -> PaymentDetails:
    return dataclasses.replace(
        pending,
        response_code=result.response_code.iso_code,
        auth_code=result.auth_code[:6],
        retrieval_reference=result.retrieval_reference[:12],
        reversal_queued=result.reversal_queued,
        stage=STAGE_ANSWERED,
    )


RECOVERED_DETAIL = "the switch stopped before the acquirer's answer was stored; a reversal is queued"


def recovered_answer(details: PaymentDetails) -> TransactionRecord:
    """The stored answer of a payment found pending at a start: timed out (68), never approved."""
    refund = details.processing_code == REFUND_PROCESSING_CODE
    outcome = declined(
        details.transaction_id,
        TransactionType.refund if refund else PAYMENT,
        ResponseCode.acquirer_timeout,
        RECOVERED_DETAIL,
        requested=Money(details.amount_minor, details.currency),
        card_masked=details.card_masked,
        period_number=details.period_number,
    )
    outcome = dataclasses.replace(outcome, payment_method=details.entry_mode)
    return record_of(outcome, details.source, details.fingerprint, merchant_id=details.merchant_id)


def _answer_for_stored(stored: StoredTransaction, transaction_id: str, digest: str) -> Outcome:
    record = stored.record
    if record.transaction_type == TOMBSTONE_TYPE:
        return _refusal(transaction_id, ResponseCode.already_reversed, "reversed before it arrived", "")
    if (
        record.transaction_type == PAYMENT.value
        and stored.status is TransactionStatus.aborted
        and not record.fingerprint
    ):
        return outcome_of(record)  # aborted before it arrived
    if record.transaction_type not in ACQUIRED_TYPES or record.fingerprint != digest:
        return _refusal(
            transaction_id,
            ResponseCode.duplicate_transmission,
            "transaction id already used with different content",
            "",
        )
    return outcome_of(record)


def _abort_answer(stored: StoredTransaction) -> Outcome:
    outcome = outcome_of(stored.record)
    if stored.status is not TransactionStatus.aborted:
        return outcome  # declined, reversed or timed out already: nothing to abort
    detail = outcome.detail or "payment aborted"
    if stored.record.fingerprint:
        detail = "aborted after approval; reversal sent to the acquirer"
    return dataclasses.replace(outcome, code=ResponseCode.customer_cancelled, detail=detail, approved=None)


def _refusal(transaction_id: str, code: ResponseCode, detail: str, method: str) -> Outcome:
    outcome = declined(transaction_id, PAYMENT, code, detail, persisted=False)
    return dataclasses.replace(outcome, payment_method=method or "card")
