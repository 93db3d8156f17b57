"""Inbound ISO 8583: acquirers send 0100/0200/0220/0400/0420/0800 for our closed-loop cards; we answer.

Requests go to the same card actors as the terminal protocol, so a card is spent by one writer
whichever door the request came in by. A request is identified by acquirer id (field 32), card
acceptor terminal (41), STAN (11) and transmission date and time (7); a reversal or a completion
names its original through field 90. An 0100/0200 sent again under a new field 7 with the same
field 37 is the same sale within REPEAT_WINDOW: it gets the first answer. An approved 0100 takes
its amount from the card at once, as an 0200 does; its completion (0220) gives back what it took
above the final amount.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import iso8583
import trio
from sqlalchemy import select

from actors.messages import AdjustOriginal, Authorize, TerminalContext
from actors.outcomes import answer_for_stored, record_of, tombstone_of
from actors.reply import Reply, ReplyTimeoutError
from ops.metrics import UNANSWERED_ADVICE_REASONS
from protocols.inbound_acquirers import PIN_BLOCK_BYTES, AcquirerConfigError, read_acquirers
from protocols.iso8583 import (
    SPEC,
    IsoMessage,
    MessageFormatError,
    OriginalDataElements,
    decode_message,
    encode_frame,
    field39_from_response_code,
    format_amount,
    mti,
    receive_frame,
    redacted,
)
from protocols.iso8583._framing import FrameBuffer, FrameError
from switch.core import SwitchCore
from switch.domain.money import CURRENCY_NUMERIC, Money
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import (
    Completion,
    Outcome,
    Redeem,
    Reversal,
    TransactionStatus,
    TransactionType,
    fingerprint,
    transaction_type_of,
)
from switch.security import KeyAlgorithm, KeyUsage, WrappedKey
from switch.store.journal import (
    TOMBSTONE_TYPE,
    InboundResend,
    TransactionRecord,
    Write,
    WriteResult,
    utc_now,
)
from switch.store.repository import StoredTransaction
from switch.store.schema import INBOUND_REPEAT_WINDOW, merchants

log = logging.getLogger(__name__)

SOURCE_PREFIX: Final = "iso:"
IDENTITY_STRIPES: Final = 256  # locks that serialise one transaction id and its reversal
ALPHA_BY_NUMERIC: Final = {numeric: alpha for alpha, numeric in CURRENCY_NUMERIC.items()}
PURCHASE_PROCESSING_PREFIX: Final = "00"
# A repeat (0101/0201) gets the stored answer of its first, or is taken as the first when that was lost.
FINANCIAL_MTIS: Final = frozenset(
    {
        mti.AUTHORIZATION_REQUEST,
        mti.AUTHORIZATION_REQUEST_REPEAT,
        mti.FINANCIAL_REQUEST,
        mti.FINANCIAL_REQUEST_REPEAT,
    }
)
REVERSAL_ADVICE_MTIS: Final = frozenset({mti.REVERSAL_ADVICE, mti.REVERSAL_ADVICE_REPEAT})
REVERSAL_MTIS: Final = REVERSAL_ADVICE_MTIS | {mti.REVERSAL_REQUEST}
COMPLETION_MTIS: Final = frozenset({mti.COMPLETION_ADVICE, mti.COMPLETION_ADVICE_REPEAT})
# Answered only once applied (`leave_unanswered`): the acquirer has acted on its side already.
ADVICE_MTIS: Final = REVERSAL_ADVICE_MTIS | COMPLETION_MTIS
ECHOED_FIELDS: Final = ("3", "4", "7", "11", "32", "37", "41", "42", "49", "70", "90")
# How long an 0100/0200 with the same acquirer, field 41, STAN and field 37 is the one stored, whatever
# its field 7 (why a day: schema.INBOUND_REPEAT_WINDOW, which the journal's unique key holds too).
REPEAT_WINDOW: Final = INBOUND_REPEAT_WINDOW


# The reason a reversal advice's refusal leaves it unanswered under (UNANSWERED_ADVICE_REASONS);
# any other refusal is "not_reversible".
_UNANSWERED_BY_CODE: Final = {
    ResponseCode.format_error: "malformed",
    ResponseCode.invalid_amount: "original_differs",
    ResponseCode.original_not_found: "original_differs",
    ResponseCode.system_error: "not_stored",
    ResponseCode.issuer_unavailable: "not_stored",
}
# A completion advice's: its fields not those of an authorisation of ours (another MTI, currency,
# amount above it, another final amount than the first completion's), else "not_completable" (the
# authorisation is reversed or was declined).
_COMPLETION_UNANSWERED_BY_CODE: Final = {
    **_UNANSWERED_BY_CODE,
    ResponseCode.invalid_transaction: "original_differs",
    ResponseCode.currency_not_accepted: "original_differs",
    ResponseCode.exceeds_original_amount: "original_differs",
    ResponseCode.duplicate_transmission: "original_differs",
}


class UnansweredAdvices:
    """Reversal advices left unanswered since start, by reason; counted from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(UNANSWERED_ADVICE_REASONS, 0)

    def count(self, reason: str) -> None:
        assert reason in self._counts, reason
        with self._lock:
            self._counts[reason] += 1

    def snapshot(self) -> tuple[tuple[str, int], ...]:
        with self._lock:
            return tuple(self._counts.items())


@dataclass(frozen=True, slots=True)
class InboundAcquirer:
    acquirer_id: str  # field 32
    merchant_email: str  # the merchant account the acquirer's redemptions are paid to
    zone_pin_key: WrappedKey = field(repr=False)


def parse_acquirers(
    text: str, import_key: Callable[[bytes, str, KeyAlgorithm], WrappedKey]
) -> dict[str, InboundAcquirer]:
    """The acquirers `read_acquirers` reads, each with its zone PIN key imported."""
    acquirers: dict[str, InboundAcquirer] = {}
    for entry in read_acquirers(text):
        key = import_key(entry.clear_key, f"zpk-in.{entry.acquirer_id}", entry.algorithm)
        acquirers[entry.acquirer_id] = InboundAcquirer(entry.acquirer_id, entry.merchant_email, key)
    return acquirers


@dataclass(frozen=True, slots=True)
class _Answer:
    code: ResponseCode
    detail: str = ""
    approved_minor: int | None = None
    authorization_code: str = ""


class InboundHandler:
    """One request in, one response out; blocking (it waits until the answer is durable)."""

    def __init__(self, core: SwitchCore, acquirers: dict[str, InboundAcquirer]) -> None:
        self._core = core
        self._acquirers = acquirers
        self._merchants: dict[str, str] = {}
        self._stripes = [threading.Lock() for _ in range(IDENTITY_STRIPES)]
        self.unanswered = UnansweredAdvices()

    def handle(self, request: IsoMessage) -> IsoMessage | None:
        """The response; None for an advice (reversal, completion) not taken (`leave_unanswered`)."""
        kind = request["t"]
        if kind == mti.NETWORK_REQUEST:
            return response_to(request, _Answer(ResponseCode.approved))
        acquirer = self._acquirers.get(request.get("32", ""))
        if acquirer is None:
            return response_to(
                request, _Answer(ResponseCode.invalid_transaction, "unknown acquirer (field 32)")
            )
        merchant_id = self._merchant_id(acquirer)
        # Stored as its first: a completion names an 0100 so, and a repeat is that 0100.
        stored_mti = mti.first_of(kind) if kind in FINANCIAL_MTIS else kind
        context = TerminalContext(SOURCE_PREFIX + acquirer.acquirer_id, merchant_id, 0, stored_mti)
        try:
            if kind in FINANCIAL_MTIS:
                answer = self._redeem(request, acquirer, context)
            elif kind in REVERSAL_MTIS:
                answer = self._reverse(request, context)
            elif kind in COMPLETION_MTIS:
                answer = self._complete(request, context)
            else:
                answer = _Answer(ResponseCode.invalid_transaction, f"MTI {kind} is not a request we take")
        except MessageFormatError as error:
            answer = _Answer(ResponseCode.format_error, f"field {error.field}: {error.reason}")
        except ReplyTimeoutError:
            answer = _Answer(ResponseCode.issuer_unavailable, "outcome not known in time")
        if kind in ADVICE_MTIS and not answer.code.approves:
            leave_unanswered(request, answer.detail, _unanswered_reason(kind, answer.code), self.unanswered)
            return None
        return response_to(request, answer)

    def _merchant_id(self, acquirer: InboundAcquirer) -> str:
        cached = self._merchants.get(acquirer.acquirer_id)
        if cached is not None:
            return cached
        with self._core.store.engine.connect() as conn:
            found = conn.execute(
                select(merchants.c.merchant_id).where(merchants.c.email == acquirer.merchant_email)
            ).scalar()
        if found is None:
            raise AcquirerConfigError(
                f"inbound acquirer {acquirer.acquirer_id}: no merchant with that e-mail"
            )
        self._merchants[acquirer.acquirer_id] = found
        return str(found)

    def _stripe(self, terminal: str, stan: str) -> threading.Lock:
        """One lock for every message naming this field 41 and STAN, whatever its field 7: a resend
        under a new field 7 and a reversal naming either are taken one after the other."""
        return self._stripes[hash(_id_prefix(terminal, stan)) % IDENTITY_STRIPES]

    def _repeated(
        self, context: TerminalContext, terminal: str, stan: str, reference: str
    ) -> StoredTransaction | None:
        """The 0100/0200 (or the tombstone holding its place) stored within REPEAT_WINDOW under
        this field 41, STAN and field 37; None when there is none or no field 37 to tell."""
        if not reference:
            return None
        since = utc_now() - REPEAT_WINDOW
        return self._core.store.transaction_by_reference(
            context.terminal_id, _id_prefix(terminal, stan), reference, since
        )

    def _original_id(
        self, request: IsoMessage, original: OriginalDataElements, context: TerminalContext
    ) -> str:
        """The id of the original field 90 names: the one its field 7 gives when stored; else the
        0100/0200 stored under the same field 41, STAN and field 37 (a resend under a new field 7
        was answered as its first, so a reversal may name either field 7)."""
        named = original_identity(request, original)
        if self._core.store.transaction(context.terminal_id, named) is not None:
            return named
        first = self._repeated(context, request["41"], original.stan, _retrieval_reference(request))
        if first is not None:
            return first.record.transaction_id
        # Without field 37 (or beyond the window), a resend's field 7 is known by the resend's row
        return self._core.store.first_of_resend(context.terminal_id, named) or named

    # 0100 / 0200

    def _redeem(self, request: IsoMessage, acquirer: InboundAcquirer, context: TerminalContext) -> _Answer:
        if not request["3"].startswith(PURCHASE_PROCESSING_PREFIX):
            return _Answer(ResponseCode.invalid_transaction, "only purchases (processing code 00) are taken")
        currency = ALPHA_BY_NUMERIC.get(request["49"])
        if currency is None:
            return _Answer(ResponseCode.currency_not_accepted, f"currency {request['49']} not accepted")
        pan = _pan(request)
        pin_block = _pin_block(request, acquirer.zone_pin_key)
        card_id = self._core.cards.card_id(pan) or ""
        if not card_id:
            return _Answer(ResponseCode.unknown_card)
        pin = (
            None
            if pin_block is None
            else self._core.pins.proof(pin_block, pan, acquirer.zone_pin_key, card_id)
        )
        command = Redeem(
            transaction_identity(request), card_id, Money(int(request["4"]), currency), False, pin
        )
        digest = fingerprint(command)
        reference = _retrieval_reference(request)
        with self._stripe(request["41"], request["11"]):
            stored = self._stored_answer(context, command.transaction_id, TransactionType.redemption, digest)
            if stored is not None:
                return _answer_of(stored)
            first = self._repeated(context, request["41"], request["11"], reference)
            if first is not None:  # sent again under a new field 7: the first answer, or 94
                return _answer_of(self._answered_as_first(context, command, digest, first))
            context = dataclasses.replace(context, retrieval_reference=reference)
            message = Authorize(command, context, digest)
            reply: Reply = self._core.card_actors.ask(card_id, message, self._core.settings.ask_timeout_s)
            # Decided: wait for its write however long (the journal always answers, or the switch
            # exits). A 91 here was a decline to the acquirer, who reverses nothing it was told
            # declined, while the write could still land and charge the card.
            outcome = reply.wait(None)
            if outcome.code is ResponseCode.system_error:
                outcome = self._stored_by_another_node(context, request, command, digest) or outcome
            return _answer_of(outcome)

    def _stored_by_another_node(
        self, context: TerminalContext, request: IsoMessage, command: Redeem, digest: str
    ) -> Outcome | None:
        """The first's answer when this sale was not stored because another node stored the same
        sale under another field 7 meanwhile (the journal's repeat key refused it: a conflict,
        answered 96 by the card actor as its own id was not found); None otherwise."""
        first = self._repeated(context, request["41"], request["11"], _retrieval_reference(request))
        if first is None or first.record.transaction_id == command.transaction_id:
            return None
        return self._answered_as_first(context, command, digest, first)

    def _answered_as_first(
        self, context: TerminalContext, command: Redeem, digest: str, first: StoredTransaction
    ) -> Outcome:
        """The first's answer to a resend of it (94 when its content differs, 12 for a tombstone).
        A resend answered as its first is stored (inbound_resends) so that its own field 7 names
        the first later, field 37 or not; a resend not so stored is still answered (nothing moved),
        only a reversal naming its field 7 without field 37 would then find nothing."""
        first_id = first.record.transaction_id
        outcome = answer_for_stored(
            self._core.store, context.terminal_id, first_id, TransactionType.redemption, digest
        )
        if first.record.transaction_type != TOMBSTONE_TYPE and first.record.fingerprint == digest:
            resend = InboundResend(context.terminal_id, command.transaction_id, first_id)
            self._persist(Write(resend=resend))  # a conflict: stored already, by a repeat of it
        return outcome

    def _stored_answer(
        self, context: TerminalContext, transaction_id: str, kind: TransactionType, digest: str
    ) -> Outcome | None:
        if self._core.store.transaction(context.terminal_id, transaction_id) is None:
            return None
        return answer_for_stored(self._core.store, context.terminal_id, transaction_id, kind, digest)

    # 0400 / 0420 / 0421

    def _reverse(self, request: IsoMessage, context: TerminalContext) -> _Answer:
        """Give back what the original named in field 90 left charged, once: all it took, or after
        its completion the final amount (a completed authorisation is reversed too). A repeat gets
        the first answer; an original never seen is held (tombstoned) so it moves nothing if it comes late.
        A reversal that does not name its original beyond doubt moves nothing and stores nothing
        (`_reversal_refusal`): a request (0400) is refused, an advice is left unanswered.
        """
        answer = self._reversed(request, context)
        return dataclasses.replace(answer, approved_minor=None)  # field 4 echoes the request's

    def _reversed(self, request: IsoMessage, context: TerminalContext) -> _Answer:
        original = OriginalDataElements.decode(request["90"])
        if original.mti in COMPLETION_MTIS:
            named = original_identity(request, original)
            place = self._core.store.transaction(context.terminal_id, named)
            if place is not None and _is_completion_place(place):
                return self._reverse_completion(request, original, context, place.record)
        with self._stripe(request["41"], original.stan):
            original_id = self._original_id(request, original, context)
            found = self._core.store.transaction(context.terminal_id, original_id)
            if found is None or not _is_completion_place(found):
                return self._reverse_of(
                    request, context, original_id, lambda row: _reversal_refusal(request, original, row)
                )
        # A completion's place, held since the look above, or named under another MTI: taken as a
        # place it moved nothing and left the card charged the final amount. Out of this stripe:
        # the authorisation's may be the same lock.
        return self._reverse_completion(request, original, context, found.record)

    def _reverse_completion(
        self,
        request: IsoMessage,
        original: OriginalDataElements,
        context: TerminalContext,
        place: TransactionRecord,
    ) -> _Answer:
        """A reversal naming a completion (0220/0221) voids the sale: its authorisation is reversed
        for what is charged now, as a reversal naming the 0100 is, under the same id (once,
        whichever it names). Its field 4 is the completion's final amount. One naming the completion
        under another MTI is taken as `_reversal_refusal` takes such a reversal (an 0400 refused 25)."""
        authorisation_id = place.original_transaction_id

        def refusal(_: StoredTransaction) -> _Answer | None:
            named_as = ""
            if original.mti not in COMPLETION_MTIS:
                named_as = f"field 90 names an {original.mti}; the original is an {place.mti}"
                if request["t"] == mti.REVERSAL_REQUEST:
                    return _Answer(ResponseCode.original_not_found, named_as)
            if int(request["4"]) == place.requested_minor:
                if named_as:
                    log.warning(
                        "ISO 8583 inbound: %s taken by its key and field 4: %s", request["t"], named_as
                    )
                return None
            named, final = (
                Money(minor, place.currency).format() for minor in (int(request["4"]), place.requested_minor)
            )
            detail = f"field 4 {named} is not the completion's {final}"
            return _Answer(ResponseCode.invalid_amount, _also(detail, named_as))

        with self._stripe(request["41"], _stan_of(authorisation_id)):
            return self._reverse_of(request, context, authorisation_id, refusal)

    def _reverse_of(
        self,
        request: IsoMessage,
        context: TerminalContext,
        original_id: str,
        refusal_of: Callable[[StoredTransaction], _Answer | None],
    ) -> _Answer:
        """Give back what `original_id` left charged, once, under its stripe; `refusal_of` says why
        this message cannot reverse the original found, if it cannot. It is asked of a repeat too
        (the reversal's id, and so its fingerprint, is its original's alone): one whose field 4 (or,
        a request, field 90's MTI) is not what the stored reversal was taken for is another message,
        refused as it is coming first, not answered 00 as a repeat while the acquirer believes it
        reversed another amount than we did."""
        command = Reversal(original_id)
        digest = fingerprint(command)
        stored = self._stored_answer(context, command.transaction_id, TransactionType.reversal, digest)
        original_row = self._core.store.transaction(context.terminal_id, original_id)
        refusal = None if original_row is None else refusal_of(original_row)
        if refusal is not None:
            return refusal
        if stored is not None:
            return _answer_of(stored)
        if original_row is None:
            answer = self._tombstone(command, context, digest, request)
        else:
            answer = self._reversal_written(command, context, digest, original_row)
        return self._or_stored_meanwhile(
            answer, context, command.transaction_id, TransactionType.reversal, digest
        )

    def _reversal_written(
        self, command: Reversal, context: TerminalContext, digest: str, original_row: StoredTransaction
    ) -> _Answer:
        if not _moved_money(original_row):
            why = f"original {original_row.status.value}; nothing moved"
            return self._persist(Write(record=_nothing_moved(command, context, digest, why)))
        card_id = original_row.record.card_id
        assert card_id is not None  # _moved_money
        # After a completion, what it left charged goes back (the same id: once, either way).
        after_completion = dataclasses.replace(command, after_completion=True)
        message = AdjustOriginal(after_completion, context, digest)
        reply: Reply = self._core.card_actors.ask(card_id, message, self._core.settings.ask_timeout_s)
        return _answer_of(reply.wait(self._core.settings.reply_timeout_s))

    def _or_stored_meanwhile(
        self,
        answer: _Answer,
        context: TerminalContext,
        transaction_id: str,
        kind: TransactionType,
        digest: str,
    ) -> _Answer:
        """`answer` to a message whose write was tried; when that write was refused because another
        node stored this same message meanwhile (its id, with the same content: an acquirer sending
        one advice on two links), the first answer instead, as its repeat gets. The refusal stays
        when nothing, a refusal, or another message (another content) is stored under its id."""
        if answer.code.approves:
            return answer
        stored = self._stored_answer(context, transaction_id, kind, digest)
        if stored is None or not stored.code.approves:
            return answer
        log.info("ISO 8583 inbound: %s stored by another node meanwhile; its answer given", transaction_id)
        return _answer_of(stored)

    # 0220 / 0221

    def _complete(self, request: IsoMessage, context: TerminalContext) -> _Answer:
        """The final amount of an approved 0100: what the 0100 took above it goes back to the card.

        One completion per authorisation (its id is the authorisation's): a repeat gets the first
        answer, a second completion with another amount is refused (94). An 0200 named as an 0100
        is refused (25): the MTI each was stored with tells them apart. Nothing is stored for a
        completion refused before the card's turn; its repeat is refused the same way. A refused
        completion is an advice left unanswered (`leave_unanswered`), never answered. One whose
        reversal came first voids the sale (`_void`) when that reversal's field 4 is its final amount.
        """
        original = OriginalDataElements.decode(request["90"])
        if mti.first_of(original.mti) != mti.AUTHORIZATION_REQUEST:
            return _Answer(
                ResponseCode.invalid_transaction,
                f"field 90 names an {original.mti}; only an 0100 is completed",
            )
        with self._stripe(request["41"], original.stan):
            original_id = self._original_id(request, original, context)
            found = self._core.store.transaction(context.terminal_id, original_id)
            if (
                found is None
                or found.record.transaction_type != TransactionType.redemption.value
                or found.record.card_id is None
            ):
                return _Answer(
                    ResponseCode.original_not_found, "no authorisation (0100) of ours named in field 90"
                )
            refusal = _completion_refusal(request, original, found)
            if refusal is not None:
                return refusal
            authorised = Money(found.record.approved_minor, found.record.currency)
            command = Completion(
                original_id, Money(authorised.amount_minor - int(request["4"]), authorised.currency)
            )
            place = _completion_place(request, context, original_id)
            answer = self._completed(request, command, context, found, place)
        return dataclasses.replace(answer, approved_minor=None)  # field 4 echoes the final amount

    def _completed(
        self,
        request: IsoMessage,
        command: Completion,
        context: TerminalContext,
        found: StoredTransaction,
        place: TransactionRecord,
    ) -> _Answer:
        digest = fingerprint(command)
        stored = self._stored_answer(context, command.transaction_id, TransactionType.refund, digest)
        if stored is not None:
            return _answer_of(stored)  # before the status: a repeat gets the first answer
        early_reversal = self._reversal_before_arrival(context, place)
        if early_reversal is not None:
            reversal_kind = self._kind_of_reversal(context, early_reversal.transaction_id)
            refusal = _early_reversal_refusal(request, early_reversal, reversal_kind, found.record.currency)
            if refusal is not None:
                return refusal
            return self._void(request, context, found, _early_misnaming(request, early_reversal))
        if found.status is not TransactionStatus.approved:
            return _Answer(ResponseCode.already_reversed, f"the authorisation is {found.status.value}")
        held = self._hold_completion_place(context, place)
        if held is not None:
            return held
        answer = self._completion_written(command, context, digest, found)
        return self._or_stored_meanwhile(
            answer, context, command.transaction_id, TransactionType.refund, digest
        )

    def _completion_written(
        self, command: Completion, context: TerminalContext, digest: str, found: StoredTransaction
    ) -> _Answer:
        card_id = found.record.card_id
        assert card_id is not None
        if command.amount.amount_minor == 0:
            record = _nothing_moved(
                command, context, digest, "completed at the authorised amount; nothing moved"
            )
            return self._persist(Write(record=record))
        message = AdjustOriginal(command, context, digest)
        reply: Reply = self._core.card_actors.ask(card_id, message, self._core.settings.ask_timeout_s)
        return _answer_of(reply.wait(self._core.settings.reply_timeout_s))

    def _hold_completion_place(self, context: TerminalContext, place: TransactionRecord) -> _Answer | None:
        """Store the completion's own id (`_completion_place`) before it is applied, so a reversal
        naming it finds its authorisation; None once held. Held first, it may name a completion that
        never lands: a reversal of it still voids the sale, which is what the acquirer did."""
        held = self._core.store.transaction(context.terminal_id, place.transaction_id)
        if held is None:
            answer = self._persist(Write(record=place))
            if answer.code.approves:
                return None
            # Refused: held meanwhile, by this completion sent on another link to another node?
            held = self._core.store.transaction(context.terminal_id, place.transaction_id)
            if held is None:
                return answer
        if (held.record.original_transaction_id, held.record.requested_minor) == (
            place.original_transaction_id,
            place.requested_minor,
        ):
            return None  # held by this completion's first try, or by its copy on another node
        return _Answer(ResponseCode.already_reversed, "the completion's id is held by another message")

    def _reversal_before_arrival(
        self, context: TerminalContext, place: TransactionRecord
    ) -> TransactionRecord | None:
        """The placeholder a reversal of this completion left when it came first (a tombstone naming
        no authorisation, under the completion's id): acknowledged as of a message never seen, it
        moved nothing. None when no reversal came first."""
        held = self._core.store.transaction(context.terminal_id, place.transaction_id)
        if (
            held is None
            or held.record.transaction_type != TOMBSTONE_TYPE
            or held.record.original_transaction_id
        ):
            return None
        return held.record

    def _kind_of_reversal(self, context: TerminalContext, original_id: str) -> str:
        """The MTI the reversal of `original_id` came as (stored with its placeholder, in one write);
        "" when none is stored."""
        stored = self._core.store.transaction(context.terminal_id, Reversal(original_id).transaction_id)
        return "" if stored is None else stored.record.mti

    def _void(
        self, request: IsoMessage, context: TerminalContext, authorisation: StoredTransaction, misnamed: str
    ) -> _Answer:
        """A completion whose reversal came first: the acquirer has voided the sale, so the
        authorisation goes back for what it charged, under the id a reversal naming the 0100 or the
        completion uses (once, whichever came; a repeat gets the first answer). Answered once done,
        as the card then stands as the acquirer believes; an authorisation that moved nothing
        (declined) is refused as any completion of it is. `misnamed`: how the early reversal named
        this completion's key under another MTI ("" when it did not), logged once it is voided."""

        def refusal(found: StoredTransaction) -> _Answer | None:
            if _took_money(found):  # reversed since: by this void's first, whose repeat this is
                return None
            return _Answer(ResponseCode.already_reversed, f"the authorisation is {found.status.value}")

        answer = self._reverse_of(request, context, authorisation.record.transaction_id, refusal)
        if misnamed and answer.code.approves:
            log.warning("ISO 8583 inbound: %s voided by its key and field 4: %s", request["t"], misnamed)
        return answer

    def _tombstone(
        self, command: Reversal, context: TerminalContext, digest: str, request: IsoMessage
    ) -> _Answer:
        """Acknowledge, and hold the original's id so a late original is refused and moves nothing;
        held under the reversal's field 37 too, so a late original under another field 7 is as well,
        and with the MTI field 90 names and the reversal's field 4, so a late completion is taken as
        voided only by a reversal of its final amount (`_early_reversal_refusal`)."""
        tombstone = dataclasses.replace(
            tombstone_of(context.terminal_id, command.original_transaction_id),
            retrieval_reference=_retrieval_reference(request),
            requested_minor=int(request["4"]),
            mti=OriginalDataElements.decode(request["90"]).mti,
        )
        record = _nothing_moved(command, context, digest, "original never seen; nothing moved")
        return self._persist(Write(record=record, tombstone=tombstone))

    def _persist(self, write: Write) -> _Answer:
        results: list[WriteResult] = []
        landed = threading.Event()

        def done(result: WriteResult) -> None:
            results.append(result)
            landed.set()

        if not self._core.writer.submit(write, done) or not landed.wait(self._core.settings.reply_timeout_s):
            return _Answer(ResponseCode.system_error, "not stored")
        if not results[0].ok:
            return _Answer(ResponseCode.system_error, "not stored; repeat the advice")
        return _Answer(ResponseCode.approved)


def transaction_identity(request: IsoMessage) -> str:
    """Terminal (41), STAN (11) and transmission date and time (7): what field 90 names later."""
    return f"{request['41']}:{request['11']}:{request['7']}"


def _retrieval_reference(request: IsoMessage) -> str:
    """Field 37; "" when absent or blank (spaces or zeros: no reference assigned), which names no
    sale: taken as one, every sale of a field 41 and STAN within REPEAT_WINDOW would be one."""
    reference = request.get("37", "")
    return "" if not reference.strip(" 0") else reference


def _id_prefix(terminal: str, stan: str) -> str:
    """What the ids of every message from this field 41 with this STAN start with."""
    return f"{terminal}:{stan}:"


def original_identity(request: IsoMessage, original: OriginalDataElements) -> str:
    """The id `transaction_identity` gave the message field 90 names (same card acceptor terminal)."""
    return f"{request['41']}:{original.stan}:{original.transmission_datetime}"


def _completion_place(
    request: IsoMessage, context: TerminalContext, authorisation_id: str
) -> TransactionRecord:
    """The row holding a completion's own id (field 41, STAN, field 7), naming its authorisation
    and final amount: a reversal names the completion so. A tombstone, so it is in no report and an
    0100 under that id moves nothing."""
    return dataclasses.replace(
        tombstone_of(context.terminal_id, transaction_identity(request)),
        original_transaction_id=authorisation_id,
        requested_minor=int(request["4"]),
        currency=ALPHA_BY_NUMERIC.get(request["49"], ""),
        mti=request["t"],
    )


def _is_completion_place(found: StoredTransaction) -> bool:
    record = found.record
    return record.transaction_type == TOMBSTONE_TYPE and bool(record.original_transaction_id)


def _stan_of(transaction_id: str) -> str:
    """The STAN in an id `transaction_identity` gave (field 41 may hold ':'; STAN and field 7 not)."""
    return transaction_id.rsplit(":", 2)[1]


def _completion_refusal(
    request: IsoMessage, original: OriginalDataElements, authorisation: StoredTransaction
) -> _Answer | None:
    """Why no completion of this authorisation can carry these fields; None when one can."""
    record = authorisation.record
    # An 0200 is stored as a redemption just as an 0100 is; a 0220 naming it as an 0100 would give
    # part of a final sale back.
    refusal = _mti_refusal(original, authorisation)
    if refusal is not None:
        return refusal
    if ALPHA_BY_NUMERIC.get(request["49"]) != record.currency:
        return _Answer(ResponseCode.currency_not_accepted, f"the authorisation was in {record.currency}")
    if int(request["4"]) > record.approved_minor:
        authorised = Money(record.approved_minor, record.currency).format()
        return _Answer(ResponseCode.exceeds_original_amount, f"above the authorised {authorised}")
    return None


def _early_reversal_refusal(
    completion: IsoMessage, placeholder: TransactionRecord, reversal_kind: str, currency: str
) -> _Answer | None:
    """Why a reversal that came before this completion does not void it; None when it does.

    It is judged as one coming after the completion is (`_reverse_completion`): a request (0400)
    whose field 90 named the completion's key under another MTI means another message than this
    one; an advice doing so is taken by its key and field 4. Its field 4 is the completion's final
    amount: another amount means another message, or a part of this one, and voiding would give the
    card back what the acquirer may still charge. The completion is then refused (left unanswered,
    nothing moved), as such a reversal coming after it is. A placeholder stored before it kept the
    MTI and field 4 ("") is taken as a reversal of this completion."""
    if not placeholder.mti:
        return None
    named_as = _early_misnaming(completion, placeholder)
    if named_as and reversal_kind == mti.REVERSAL_REQUEST:
        return _Answer(ResponseCode.original_not_found, named_as)
    final_minor = int(completion["4"])
    if placeholder.requested_minor == final_minor:
        return None
    reversed_amount, final = (
        Money(minor, currency).format() for minor in (placeholder.requested_minor, final_minor)
    )
    detail = f"its reversal, come first, has field 4 {reversed_amount}, not the final {final}"
    return _Answer(ResponseCode.invalid_amount, _also(detail, named_as))


def _early_misnaming(completion: IsoMessage, placeholder: TransactionRecord) -> str:
    """How the reversal that came first named this completion's key under another MTI; "" when it
    named a completion (or was stored before MTIs were kept)."""
    if not placeholder.mti or placeholder.mti in COMPLETION_MTIS:
        return ""
    return f"its reversal, come first, names an {placeholder.mti}; this is an {completion['t']}"


def _also(detail: str, also: str) -> str:
    """A refusal's detail with a second thing found wrong, when there is one."""
    return f"{detail}; {also}" if also else detail


def _moved_money(found: StoredTransaction) -> bool:
    record = found.record
    return (
        record.transaction_type != TOMBSTONE_TYPE
        and found.status is TransactionStatus.approved
        and record.card_id is not None
    )


def _took_money(found: StoredTransaction) -> bool:
    """The original took money from the card, whether given back since (reversed) or not."""
    record = found.record
    return (
        record.transaction_type != TOMBSTONE_TYPE
        and found.status in (TransactionStatus.approved, TransactionStatus.reversed)
        and record.card_id is not None
    )


def _reversal_refusal(
    request: IsoMessage, original: OriginalDataElements, found: StoredTransaction
) -> _Answer | None:
    """Why this reversal cannot be taken of `found`; None when it can.

    Field 4 of a reversal is its original's amount (ISO 8583:1987; a partial one would carry the
    rest in field 95, which we do not take). Another amount means another message, or a part of
    this one: reversing all of it would give the card what the acquirer still charges. A request
    (0400) is refused 13; an advice (0420/0421) is left unanswered (`leave_unanswered`).

    An advice naming its original as an 0100 when it came as an 0200 (or the
    other way) is taken when field 4 agrees: the key (acquirer, 41, STAN, field 7) names one
    message, both took their amount at once, and giving it back is what the acquirer did. A
    request (0400) naming it wrong is refused 25, as a completion is.
    """
    refusal = _mti_refusal(original, found)
    if refusal is not None and request["t"] == mti.REVERSAL_REQUEST:
        return refusal
    amount_refusal = _amount_refusal(request, found)
    if refusal is None:
        return amount_refusal
    if amount_refusal is not None:  # refused for its amount: the misnaming said with it, not "taken"
        return dataclasses.replace(amount_refusal, detail=_also(amount_refusal.detail, refusal.detail))
    log.warning("ISO 8583 inbound: %s taken by its key and field 4: %s", request["t"], refusal.detail)
    return None


def _amount_refusal(request: IsoMessage, found: StoredTransaction) -> _Answer | None:
    """Refused 13 when field 4 is not what a reversal of `found` carries: the original's amount
    when it took money, given back since or not (a repeat is judged as its first was); the field 4
    of the reversal that came first when `found` is the place that reversal holds for an original
    never seen (one held before field 4 was kept, with no MTI, takes any). An original that took
    nothing (declined) takes any: nothing moves either way."""
    requested_minor = int(request["4"])
    record = found.record
    if record.transaction_type == TOMBSTONE_TYPE:
        if not record.mti or requested_minor == record.requested_minor:
            return None
        held = format_amount(record.requested_minor)
        detail = f"field 4 {request['4']} is not the {held} of the reversal that came before its original"
        return _Answer(ResponseCode.invalid_amount, detail)
    if not _took_money(found) or requested_minor == record.requested_minor:
        return None
    named, taken = (
        Money(amount_minor, record.currency).format()
        for amount_minor in (requested_minor, record.requested_minor)
    )
    return _Answer(ResponseCode.invalid_amount, f"field 4 {named} is not the original's {taken}")


def _unanswered_reason(kind: str, code: ResponseCode) -> str:
    if kind in COMPLETION_MTIS:
        return _COMPLETION_UNANSWERED_BY_CODE.get(code, "not_completable")
    return _UNANSWERED_BY_CODE.get(code, "not_reversible")


def leave_unanswered(request: IsoMessage, why: str, reason: str, unanswered: UnansweredAdvices) -> None:
    """An advice (0420/0421, 0220/0221) is answered only once taken: the acquirer has reversed or
    completed on its side and stops repeating once answered, whatever field 39 says, so a refusal
    (or 30, 91, 96) left the card charged other than the acquirer believed. Unanswered, it repeats
    until its own limit and goes to its exceptions, and nothing here has moved; a repeat once the
    cause is gone is taken (or gets the stored answer, if the write landed after all). Counted by
    `reason` (one of UNANSWERED_ADVICE_REASONS), so advices that keep going unanswered are seen and
    alerted on."""
    unanswered.count(reason)
    log.warning(
        "ISO 8583 inbound: %s (STAN %s) left unanswered: %s", request["t"], request.get("11", ""), why
    )


def _mti_refusal(original: OriginalDataElements, found: StoredTransaction) -> _Answer | None:
    """Refused 25 when field 90 names the original under another MTI than it came as: the acquirer
    means another message than ours. A row stored before MTIs were kept (""), and a tombstone,
    are taken as before."""
    record = found.record
    named = mti.first_of(original.mti)  # an 0101/0201 named is its 0100/0200
    if record.transaction_type == TOMBSTONE_TYPE or not record.mti or record.mti == named:
        return None
    return _Answer(
        ResponseCode.original_not_found, f"field 90 names an {original.mti}; the original is an {record.mti}"
    )


def _pan(request: IsoMessage) -> str:
    if "2" in request:
        return request["2"]
    track2 = request["35"].replace("D", "=")
    pan = track2.split("=", 1)[0]
    if not pan:
        raise MessageFormatError("35", "malformed card data")
    return pan


def _pin_block(request: IsoMessage, zone_key: WrappedKey) -> bytes | None:
    if "52" not in request:
        return None
    block = bytes.fromhex(request["52"])
    if len(block) != PIN_BLOCK_BYTES[zone_key.algorithm]:
        raise MessageFormatError("52", f"PIN block must be {PIN_BLOCK_BYTES[zone_key.algorithm]} bytes")
    return block


def _nothing_moved(
    command: Reversal | Completion, context: TerminalContext, digest: str, detail: str
) -> TransactionRecord:
    outcome = Outcome(
        command.transaction_id,
        transaction_type_of(command),
        ResponseCode.approved,
        detail,
        status=TransactionStatus.approved,
    )
    return record_of(
        outcome,
        context.terminal_id,
        digest,
        merchant_id=context.merchant_id,
        original_transaction_id=command.original_transaction_id,
        mti=context.mti,
    )


def _answer_of(outcome: Outcome) -> _Answer:
    approved = outcome.approved.amount_minor if outcome.approved is not None else None
    return _Answer(outcome.code, outcome.detail, approved, outcome.authorization_code)


def response_to(request: IsoMessage, answer: _Answer) -> IsoMessage:
    """The response MTI with the request's identifying fields echoed (never the card data)."""
    response: IsoMessage = {"t": mti.response_mti(request["t"])}
    for number in ECHOED_FIELDS:
        if number in request:
            response[number] = request[number]
    response["39"] = field39_from_response_code(answer.code)
    if answer.code.approves and answer.authorization_code:
        response["38"] = answer.authorization_code
    if answer.approved_minor is not None and "4" in request:
        response["4"] = format_amount(answer.approved_minor)
    if not answer.code.approves and answer.detail:
        response["44"] = _printable(answer.detail)[:99]
    return response


def _printable(text: str) -> str:
    return "".join(char if char.isascii() and char.isprintable() else "?" for char in text)


def malformed_response(
    body: bytes, error: MessageFormatError, unanswered: UnansweredAdvices
) -> IsoMessage | None:
    """Answer 30 naming the field, echoing only what is itself well formed; None if no MTI to answer,
    and for an advice (`leave_unanswered`)."""
    try:
        raw, _ = iso8583.decode(body, SPEC)
        fields: dict[str, str] = {k: v for k, v in raw.items() if isinstance(v, str)}
    except iso8583.DecodeError:
        fields = {"t": body[:4].decode("ascii", "replace")}
    if not mti.is_request(fields.get("t", "")):
        return None
    if fields["t"] in ADVICE_MTIS:
        stan = fields.get("11", "")
        advice = {"t": fields["t"], "11": stan if stan.isdigit() and len(stan) == 6 else ""}
        leave_unanswered(advice, f"field {error.field}: {error.reason}", "malformed", unanswered)
        return None
    request: IsoMessage = {"t": fields["t"]}
    for number, width in (("11", 6), ("7", 10), ("32", 0), ("3", 6), ("49", 3), ("70", 3)):
        value = fields.get(number, "")
        if value.isdigit() and (width == 0 or len(value) == width) and len(value) <= 11:
            request[number] = value
    terminal = fields.get("41", "")
    request["41"] = (
        terminal if len(terminal) == 8 and terminal.isascii() and terminal.isprintable() else " " * 8
    )
    request.setdefault("11", "000000")
    if request["t"] == mti.NETWORK_REQUEST:
        request.setdefault("70", mti.NETWORK_ECHO)
    return response_to(request, _Answer(ResponseCode.format_error, f"field {error.field}: {error.reason}"))


@dataclass(frozen=True, slots=True)
class ListenerStatistics:
    """Connections open now, and those closed by the listener since it started: refused past the
    cap on open connections, and closed after the idle limit with no message; and the reversal
    advices left unanswered since it started, (reason, count) per UNANSWERED_ADVICE_REASONS."""

    connections_open: int
    connections_refused: int
    connections_idle_closed: int
    advices_unanswered: tuple[tuple[str, int], ...] = ()


class IsoInboundListener:
    """A TCP listener on its own thread with its own trio loop; 2-byte length framing."""

    def __init__(
        self,
        handler: InboundHandler,
        host: str,
        port: int,
        in_flight_max: int,
        connections_max: int = 64,
        idle_s: float = 300.0,
    ) -> None:
        assert in_flight_max > 0 and connections_max > 0 and idle_s > 0, "listener limits are positive"
        self._handler = handler
        self._host = host
        self._port = port
        self._limiter_total = in_flight_max
        self._connections_max = connections_max
        self._idle_s = idle_s
        # Only the listener's trio loop changes these; statistics() reads them from any thread.
        self._connections = 0  # open now
        self._refused = 0
        self._idle_closed = 0
        self._started = threading.Event()
        self._answering = trio.Event()  # set on the listener's loop, by `answer`
        self._stopping = threading.Event()  # set before the loop may have published its token
        self._thread = threading.Thread(target=self._run, name="iso-inbound", daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._failure: BaseException | None = None
        self.port = 0

    def start(self, timeout_s: float = 10.0) -> None:
        """Bound and answering."""
        self.bind(timeout_s)
        self.answer()

    def bind(self, timeout_s: float = 10.0) -> None:
        """Bound and listening, the port claimed, but nothing accepted or answered until `answer`:
        a switch whose start is refused after this answered nothing (connections made meanwhile
        wait in the kernel's backlog, and are reset by the stop)."""
        self._thread.start()
        if not self._started.wait(timeout_s):
            # Stopped, or it would go on and listen, unowned, once it got there (a slow resolver).
            self.stop(timeout_s)
            raise OSError(f"ISO 8583 listener did not start on {self._host}:{self._port}")
        failure = self._failure
        if isinstance(failure, OSError):  # could not bind: the starter names it (switch.listening)
            raise OSError(failure.errno, failure.strerror or str(failure)) from failure
        if failure is not None:
            raise OSError(f"ISO 8583 listener cannot listen on {self._host}:{self._port}") from failure

    def answer(self) -> None:
        """Accept and answer from now on; after `bind`."""
        token = self._token
        assert token is not None and self._started.is_set(), "the listener is bound"
        with contextlib.suppress(trio.RunFinishedError):  # stopped meanwhile: nothing to answer
            token.run_sync_soon(self._answering.set)

    def stop(self, timeout_s: float = 10.0) -> None:
        # _main publishes the token after its cancel scope and then looks at _stopping: a stop
        # that finds no token is seen by _main, one that finds it cancels through it. Queued, not
        # waited for: a loop held up (in a resolver) would hold stop past its timeout.
        self._stopping.set()
        token, cancel = self._token, self._cancel
        if token is not None and cancel is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(cancel.cancel)
        self._thread.join(timeout_s)

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(
            self._connections, self._refused, self._idle_closed, self._handler.unanswered.snapshot()
        )

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:
            before_start = not self._started.is_set()
            self._failure = error
            self._started.set()
            if not before_start:  # one that never started is raised to its starter instead
                log.exception("ISO 8583 inbound listener stopped on an error")

    async def _main(self) -> None:
        limiter = trio.CapacityLimiter(self._limiter_total)
        with trio.CancelScope() as scope:
            self._cancel = scope
            self._token = trio.lowlevel.current_trio_token()
            if self._stopping.is_set():  # stopped before it could be cancelled through the token
                scope.cancel()
            listeners = await trio.open_tcp_listeners(self._port, host=self._host)
            self.port = listeners[0].socket.getsockname()[1]
            self._started.set()
            await self._answering.wait()

            async def serve(stream: trio.SocketStream) -> None:
                await self._connection(stream, limiter)

            await trio.serve_listeners(serve, listeners)

    async def _connection(self, stream: trio.abc.Stream, limiter: trio.CapacityLimiter) -> None:
        """One acquirer connection: at most connections_max at once, closed once idle_s pass with
        no message, and at most in_flight_max of its requests unanswered (then it is not read
        until one is answered): a peer that floods, or opens and forgets connections, holds a
        bounded share of the listener."""
        if self._connections >= self._connections_max:
            log.warning("ISO 8583 inbound: %d connections open; closing a new one", self._connections)
            self._refused += 1
            await stream.aclose()
            return
        self._connections += 1
        try:
            await self._serve_connection(stream, limiter)
        finally:
            self._connections -= 1

    async def _serve_connection(self, stream: trio.abc.Stream, limiter: trio.CapacityLimiter) -> None:
        buffer = FrameBuffer()
        send_lock = trio.Lock()
        unanswered = trio.Semaphore(self._limiter_total)
        async with stream, trio.open_nursery() as nursery:
            while True:
                body: bytes | None = None
                with trio.move_on_after(self._idle_s) as idle:
                    try:
                        body = await receive_frame(stream, buffer)
                    except (FrameError, trio.BrokenResourceError, trio.ClosedResourceError):
                        log.warning("ISO 8583 inbound: connection dropped (framing or reset)")
                        return
                if idle.cancelled_caught:
                    log.warning("ISO 8583 inbound: no message for %.0f s; closing it", self._idle_s)
                    self._idle_closed += 1
                    return  # after the answers still on their way (the nursery waits for them)
                if body is None:
                    return
                await unanswered.acquire()
                nursery.start_soon(self._answer_one, body, stream, send_lock, limiter, unanswered)

    async def _answer_one(
        self,
        body: bytes,
        stream: trio.abc.Stream,
        send_lock: trio.Lock,
        limiter: trio.CapacityLimiter,
        unanswered: trio.Semaphore,
    ) -> None:
        try:
            await self._answer(body, stream, send_lock, limiter)
        finally:
            unanswered.release()

    def _handle_safely(self, request: IsoMessage) -> IsoMessage | None:
        try:
            return self._handler.handle(request)
        except Exception:
            # A fault here must not end the listener: answer 96, nothing was moved or it is durable.
            log.exception("ISO 8583 inbound: request failed (STAN %s)", request.get("11", ""))
            if request["t"] in ADVICE_MTIS:
                leave_unanswered(request, "switch fault", "switch_fault", self._handler.unanswered)
                return None
            return response_to(request, _Answer(ResponseCode.system_error, "switch fault"))

    async def _answer(
        self, body: bytes, stream: trio.abc.Stream, send_lock: trio.Lock, limiter: trio.CapacityLimiter
    ) -> None:
        try:
            request = decode_message(body)
        except MessageFormatError as error:
            log.warning("ISO 8583 inbound: malformed request: field %s: %s", error.field, error.reason)
            response = malformed_response(body, error, self._handler.unanswered)
        else:
            if not mti.is_request(request["t"]) or request["t"] not in _HANDLED_MTIS:
                response = None
                log.warning("ISO 8583 inbound: ignored MTI %s", request["t"])
            else:
                response = await trio.to_thread.run_sync(self._handle_safely, request, limiter=limiter)
                code = "" if response is None else response["39"]
                log.info("ISO 8583 inbound", extra={"request": redacted(request), "response_code": code})
        if response is None:
            return
        async with send_lock:
            try:
                await stream.send_all(encode_frame(response))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("ISO 8583 inbound: peer left before its answer (%s)", response.get("11", ""))


_HANDLED_MTIS: Final = FINANCIAL_MTIS | REVERSAL_MTIS | COMPLETION_MTIS | {mti.NETWORK_REQUEST}


def inbound_listener(core: SwitchCore) -> IsoInboundListener:
    """The listener the settings describe, with the configured acquirers' zone keys imported; not
    started (bound and answering at `start`)."""
    settings = core.settings

    def import_key(clear_key: bytes, key_id: str, algorithm: KeyAlgorithm) -> WrappedKey:
        return core.security.import_key(clear_key, key_id, KeyUsage.zone_pin, algorithm)

    acquirers = parse_acquirers(settings.iso_inbound_acquirers, import_key)
    handler = InboundHandler(core, acquirers)
    listener = IsoInboundListener(
        handler,
        settings.iso_listen_host,
        settings.iso_listen_port,
        settings.iso_inbound_in_flight_max,
        settings.iso_inbound_connections_max,
        settings.iso_inbound_idle_s,
    )
    return listener
