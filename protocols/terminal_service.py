"""Terminal servicer: check the credential, decode to a command, ask the actors, encode the answer."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import pykka

from actors.payments import SubmitAbort, SubmitPayment
from actors.reply import ReplyTimeoutError
from actors.terminal_actor import DayCloseError, DayClosePeriodError
from ops.logs import log_outcome
from protocols import convert
from protocols.convert import BadRequestError
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.acquiring import Acquiring
from switch.admin import AdminError
from switch.caller_limit import caller_address
from switch.core import SwitchCore
from switch.domain.card_pins import PinProof
from switch.domain.payments import AbortPayment
from switch.domain.transactions import Cancel, Load, Outcome, Redeem, Refund, Reversal, TerminalCommand
from switch.passwords import NotAllowedError, TooManySignInsError
from switch.receipts import ReceiptRefusedError
from switch.security import KeyIntegrityError, PinBlockFormat, pin_block_format

log = logging.getLogger(__name__)

PIN_BLOCK_BYTES = {PinBlockFormat.ISO_0: 8, PinBlockFormat.ISO_4: 16}
RECEIPT_REFUSALS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "off": grpc.StatusCode.FAILED_PRECONDITION,
}
RequestObserver = Callable[[str, str, float], None]  # (rpc, response code, latency in seconds)
T = TypeVar("T")
S = TypeVar("S", bound="TerminalService")
Servicer = TypeVar("Servicer")  # any servicer on grpc.aio
Rq = TypeVar("Rq")
Rs = TypeVar("Rs")

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext


def bearer(context: grpc.ServicerContext | Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


def on_loop(
    method: Callable[[Servicer, Rq, Context], Awaitable[Rs]],
) -> Callable[[Servicer, Rq, Context], Coroutine[Any, Any, Rs]]:
    """An RPC that runs on the event loop; a refusal raised in it ends the call with its status."""

    @functools.wraps(method)
    async def rpc(self: Servicer, request: Rq, context: Context) -> Rs:
        try:
            return await method(self, request, context)
        except RpcRefusedError as refusal:
            await context.abort(refusal.code, refusal.details)
            raise AssertionError("abort returns by raising") from None

    return rpc


def in_thread(method: Callable[[S, Rq, Context], Rs]) -> Callable[[S, Rq, Context], Coroutine[Any, Any, Rs]]:
    """An RPC that may block (a password hash, an employee PIN, the acquirer): on a worker thread."""

    @functools.wraps(method)
    async def rpc(self: S, request: Rq, context: Context) -> Rs:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.blocking, method, self, request, context)
        except RpcRefusedError as refusal:
            await context.abort(refusal.code, refusal.details)
            raise AssertionError("abort returns by raising") from None

    return rpc


class TerminalService(pb_grpc.TerminalServicer):
    """The terminal protocol on grpc.aio.

    The RPCs a shop sends most (balance, redemption and load without a PIN, refund, cancel,
    reversal, status) run on the event loop, which awaits the journal's commit. An idle terminal's
    and card's actors handle a redemption or load on the loop's thread; what has to wait (a
    refund's or cancel's employee PIN, its try and its original, a reversal's original, a status)
    goes to the terminal actor's own thread, and the loop awaits its answer (TerminalActor.
    would_wait). The rest may block in the handler itself, so they run on `blocking` threads.
    """

    def __init__(
        self,
        core: SwitchCore,
        blocking: Executor,
        observe: RequestObserver | None = None,
        acquiring: Acquiring | None = None,
    ) -> None:
        self._core = core
        self.blocking = blocking
        self._observe = observe
        self._acquiring = acquiring

    # Helpers

    def _terminal_id(self, context: Context) -> str:
        credential = bearer(context)
        if not credential:
            _refuse(grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <credential>' metadata")
        terminal_id, problem = self._core.terminals.authenticate(credential)
        if terminal_id is None:
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if "deactivated" in problem
                else grpc.StatusCode.UNAUTHENTICATED
            )
            _refuse(code, problem)
        return terminal_id

    def _command(
        self, rpc: str, context: Context, decode: Callable[[str], TerminalCommand], started: float
    ) -> tuple[str, TerminalCommand]:
        terminal_id = self._terminal_id(context)
        try:
            return terminal_id, decode(terminal_id)
        except BadRequestError as error:
            self._record(rpc, "invalid_argument", started)
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, str(error))

    async def _transact(
        self, rpc: str, context: Context, decode: Callable[[str], TerminalCommand]
    ) -> pb.TransactionResponse:
        started = time.perf_counter()
        terminal_id, command = self._command(rpc, context, decode, started)
        try:
            outcome = await self._core.submit_async(terminal_id, command)
        except ReplyTimeoutError:
            self._not_known(rpc, started)
        return self._answer(rpc, terminal_id, outcome, started)

    def _transact_blocking(
        self, rpc: str, context: Context, decode: Callable[[str], TerminalCommand]
    ) -> pb.TransactionResponse:
        started = time.perf_counter()
        terminal_id, command = self._command(rpc, context, decode, started)
        try:
            outcome = self._core.submit(terminal_id, command)
        except ReplyTimeoutError:
            self._not_known(rpc, started)
        return self._answer(rpc, terminal_id, outcome, started)

    def _not_known(self, rpc: str, started: float) -> NoReturn:
        self._record(rpc, "timeout", started)
        _refuse(grpc.StatusCode.UNAVAILABLE, "outcome not known yet; ask TransactionStatus")

    def _answer(self, rpc: str, terminal_id: str, outcome: Outcome, started: float) -> pb.TransactionResponse:
        self._record(rpc, outcome.code.iso_code, started)
        log_outcome(log, terminal_id, outcome, started)
        return convert.transaction_response(outcome)

    def _record(self, rpc: str, code: str, started: float) -> None:
        if self._observe is not None:
            self._observe(rpc, code, time.perf_counter() - started)

    def _card_id(self, number: str) -> str:
        return self._core.cards.card_id(number) or ""

    def _pin_proof(self, pin_block: bytes, number: str, card_id: str, terminal_id: str) -> PinProof | None:
        """The closed-loop card PIN under this terminal's PIN key, as a verification value."""
        try:
            pin_key = self._core.pins.terminal_pin_key(terminal_id)
        except KeyIntegrityError as error:
            log.error("terminal %s: its PIN key fails its check: %s", terminal_id, error)
            _refuse(grpc.StatusCode.FAILED_PRECONDITION, "the terminal's PIN key is damaged; activate anew")
        if pin_key is None:
            raise BadRequestError("pin_block given, but this terminal has no PIN key")
        expected_bytes = PIN_BLOCK_BYTES[pin_block_format(pin_key)]
        if len(pin_block) != expected_bytes:
            raise BadRequestError(f"pin_block must be {expected_bytes} bytes for this terminal's PIN key")
        if not card_id:
            return None  # unknown card: declined 14 further on
        return self._core.pins.proof(pin_block, number, pin_key, card_id)

    # RPCs

    @in_thread
    def Activate(self, request: pb.ActivateRequest, context: Context) -> pb.ActivateResponse:
        if problem := convert.missing_field(request, "merchant_email", "password", "device_name", "location"):
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, problem)
        acquiring, legacy = self._acquiring, request.legacy_pin_pad
        # A fresh PIN key per activation, stored with the credential, delivered under the TTK.
        pin_key = (
            None
            if acquiring is None
            else lambda terminal_id: acquiring.new_terminal_pin_key(terminal_id, legacy)
        )
        try:
            activation = self._core.admin.activate(
                request.merchant_email,
                request.password,
                caller_address(context.peer()),
                request.device_name,
                request.location,
                pin_key,
            )
        except PermissionError as error:
            _refuse(grpc.StatusCode.UNAUTHENTICATED, str(error))
        except NotAllowedError as error:
            _refuse(grpc.StatusCode.PERMISSION_DENIED, str(error))
        except TooManySignInsError as error:
            _refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except AdminError as error:
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        self._core.terminal_activated(activation.terminal.terminal_id)
        response = pb.ActivateResponse(
            terminal_id=activation.terminal.terminal_id,
            credential=activation.credential,
            merchant_name=activation.merchant_name,
            location=activation.terminal.location_name,
            period_number=activation.terminal.period_number,
        )
        issued = activation.pin_key
        if acquiring is not None and issued is not None:
            acquiring.terminal_pin_key_stored(activation.terminal.terminal_id)
            response.pin_key_wrapped = issued.delivery
            response.pin_block_format = int(pin_block_format(issued.stored))
            response.pin_key_check_value = issued.check_value
        return response

    @on_loop
    async def Balance(self, request: pb.BalanceRequest, context: Context) -> pb.BalanceResponse:
        terminal_id = self._terminal_id(context)
        number = _decoded(lambda: convert.card_number(request.card, request.HasField("card")))
        card_id = self._card_id(number)
        state = await self._core.balance_async(card_id) if card_id else None
        accepted = state is None or self._core.merchant_accepts(
            self._core.terminals.merchant_id(terminal_id), state
        )
        return convert.balance_response(state, number, self._core.today(), accepted=accepted)

    @on_loop
    async def Redeem(self, request: pb.RedeemRequest, context: Context) -> pb.TransactionResponse:
        if request.pin_block:  # the card PIN's tries are written on the way: may block
            return await self._redeem_with_pin(request, context)
        return await self._transact("Redeem", context, functools.partial(self._redeem, request))

    @in_thread
    def _redeem_with_pin(self, request: pb.RedeemRequest, context: Context) -> pb.TransactionResponse:
        return self._transact_blocking("Redeem", context, functools.partial(self._redeem, request))

    def _redeem(self, request: pb.RedeemRequest, terminal_id: str) -> TerminalCommand:
        """The command; a PIN block is checked against the PIN key of the terminal it came from."""
        number = convert.card_number(request.card, request.HasField("card"))
        card_id = self._card_id(number)
        pin = self._pin_proof(request.pin_block, number, card_id, terminal_id) if request.pin_block else None
        return Redeem(
            convert.transaction_id(request.transaction_id),
            card_id,
            convert.amount(request.amount, request.HasField("amount")),
            request.allow_partial,
            pin,
        )

    @on_loop
    async def Load(self, request: pb.LoadRequest, context: Context) -> pb.TransactionResponse:
        def decode(_terminal_id: str) -> TerminalCommand:
            return Load(
                convert.transaction_id(request.transaction_id),
                self._card_id(convert.card_number(request.card, request.HasField("card"))),
                convert.amount(request.amount, request.HasField("amount")),
            )

        return await self._transact("Load", context, decode)

    @on_loop
    async def Refund(self, request: pb.RefundRequest, context: Context) -> pb.TransactionResponse:
        def decode(_terminal_id: str) -> TerminalCommand:
            return Refund(
                convert.transaction_id(request.transaction_id),
                convert.transaction_id(request.original_transaction_id, "original_transaction_id"),
                convert.amount(request.amount, request.HasField("amount")),
                convert.employee(request.employee, request.HasField("employee")),
            )

        return await self._transact("Refund", context, decode)

    @on_loop
    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.TransactionResponse:
        def decode(_terminal_id: str) -> TerminalCommand:
            return Cancel(
                convert.transaction_id(request.transaction_id),
                convert.transaction_id(request.original_transaction_id, "original_transaction_id"),
                convert.employee(request.employee, request.HasField("employee")),
            )

        return await self._transact("Cancel", context, decode)

    @on_loop
    async def Reversal(self, request: pb.ReversalRequest, context: Context) -> pb.TransactionResponse:
        def decode(_terminal_id: str) -> TerminalCommand:
            return Reversal(
                convert.transaction_id(request.original_transaction_id, "original_transaction_id")
            )

        return await self._transact("Reversal", context, decode)

    @on_loop
    async def TransactionStatus(
        self, request: pb.TransactionStatusRequest, context: Context
    ) -> pb.TransactionStatusResponse:
        terminal_id = self._terminal_id(context)
        transaction_id = _decoded(lambda: convert.transaction_id(request.transaction_id, lookup=True))
        try:
            outcome = await self._core.transaction_status_async(terminal_id, transaction_id)
        except ReplyTimeoutError:  # its outcome is still on its way to the journal
            _refuse(grpc.StatusCode.UNAVAILABLE, "outcome not known yet; ask TransactionStatus again")
        if outcome is None:
            return pb.TransactionStatusResponse(found=False, status="unknown")
        return pb.TransactionStatusResponse(
            found=True, status=outcome.status.value, transaction=convert.transaction_response(outcome)
        )

    @in_thread
    def DayClose(self, request: pb.DayCloseRequest, context: Context) -> pb.DayCloseReport:
        terminal_id = self._terminal_id(context)
        close_id = _decoded(lambda: convert.transaction_id(request.close_id, "close_id"))
        if request.period_number < 0:
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, "period_number is negative: name the open period, or 0")
        try:
            report = self._core.close_day(terminal_id, close_id, request.period_number or None)
        except DayClosePeriodError as error:  # named a period not open: sending it again changes nothing
            _refuse(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except (DayCloseError, TimeoutError, pykka.Timeout) as error:
            _refuse(grpc.StatusCode.UNAVAILABLE, f"{error}; send the same close_id again")
        return convert.day_close_report(report)

    @in_thread
    def XReport(self, request: pb.XReportRequest, context: Context) -> pb.DayCloseReport:
        terminal_id = self._terminal_id(context)
        try:
            report = self._core.x_report(terminal_id)
        except (TimeoutError, pykka.Timeout) as error:  # a transaction still on its way
            _refuse(grpc.StatusCode.UNAVAILABLE, f"{error}; ask again")
        return convert.day_close_report(report)

    @in_thread
    def Pay(self, request: pb.PayRequest, context: Context) -> pb.TransactionResponse:
        started = time.perf_counter()
        terminal_id = self._terminal_id(context)
        acquiring = self._payments_acquiring(context)
        command = _decoded(lambda: convert.pay(request))
        if command.has_pin:
            key_format = acquiring.terminal_pin_block_format(terminal_id)
            if key_format is None:
                self._record("Pay", "invalid_argument", started)
                _refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "pin_block given, but this terminal has no PIN key",
                )
            if key_format != command.pin_block_format:
                self._record("Pay", "invalid_argument", started)
                _refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"pin_block_format is {command.pin_block_format}, "
                    f"this terminal's PIN key is for format {key_format}",
                )
        return self._payment("Pay", terminal_id, SubmitPayment(command), context, started)

    @in_thread
    def Abort(self, request: pb.AbortRequest, context: Context) -> pb.TransactionResponse:
        started = time.perf_counter()
        terminal_id = self._terminal_id(context)
        self._payments_acquiring(context)
        transaction_id = _decoded(lambda: convert.transaction_id(request.transaction_id))
        return self._payment(
            "Abort", terminal_id, SubmitAbort(AbortPayment(transaction_id)), context, started
        )

    @in_thread
    def SendReceipt(self, request: pb.SendReceiptRequest, context: Context) -> pb.SendReceiptResponse:
        terminal_id = self._terminal_id(context)
        transaction_id = _decoded(lambda: convert.transaction_id(request.transaction_id, lookup=True))
        try:
            queued = self._core.receipts.send(terminal_id, transaction_id, request.email)
        except ReceiptRefusedError as refusal:
            _refuse(RECEIPT_REFUSALS[refusal.kind], str(refusal))
        return pb.SendReceiptResponse(
            receipt_id=queued.receipt_id,
            email_masked=queued.recipient_masked,
            message=f"receipt will be e-mailed to {queued.recipient_masked}",
        )

    @in_thread
    def RefundCard(self, request: pb.CardRefundRequest, context: Context) -> pb.TransactionResponse:
        started = time.perf_counter()
        terminal_id = self._terminal_id(context)
        self._payments_acquiring(context)
        command, employee = _decoded(lambda: convert.card_refund(request))
        return self._payment("RefundCard", terminal_id, SubmitPayment(command, employee), context, started)

    def _payments_acquiring(self, context: Context) -> Acquiring:
        if self._acquiring is None:
            _refuse(
                grpc.StatusCode.UNIMPLEMENTED,
                "bank-card payments need an acquirer; none is configured",
            )
        return self._acquiring

    def _payment(
        self,
        rpc: str,
        terminal_id: str,
        message: SubmitPayment | SubmitAbort,
        context: Context,
        started: float,
    ) -> pb.TransactionResponse:
        """The terminal actor waits for the acquirer (one thing at a time per terminal), so wait as long."""
        assert self._acquiring is not None
        settings = self._core.settings
        timeout_s = (
            self._acquiring.response_timeout_ms / 1000 + settings.reply_timeout_s + settings.ask_timeout_s
        )
        try:
            outcome: Outcome = self._core.terminal_actors.ask(terminal_id, message, timeout_s)
        except pykka.Timeout:
            self._record(rpc, "timeout", started)
            _refuse(grpc.StatusCode.UNAVAILABLE, "outcome not known yet; ask TransactionStatus")
        self._record(rpc, outcome.code.iso_code, started)
        log_outcome(log, terminal_id, outcome, started)
        return convert.transaction_response(outcome)


def _decoded(decode: Callable[[], T]) -> T:
    try:
        return decode()
    except BadRequestError as error:
        _refuse(grpc.StatusCode.INVALID_ARGUMENT, str(error))


class RpcRefusedError(Exception):
    """The RPC ends with this status; raised on any thread, turned into the abort on the loop."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _refuse(code: grpc.StatusCode, message: str) -> NoReturn:
    raise RpcRefusedError(code, message)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """For the synchronous servicers (backoffice): abort at once."""
    context.abort(code, message)
    raise AssertionError("abort returns by raising")
