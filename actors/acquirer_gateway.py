"""AcquirerGateway: ISO 8583 acquirer links on one thread with its own trio loop, behind a sync API."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import trio
from sqlalchemy import Engine

from actors.acquirer_link import AcquirerLink, LinkUnavailableError, now_utc
from actors.acquirer_messages import (
    advice_answer,
    answer_disagreement,
    authorization_message,
    reversal_message,
)
from actors.acquirer_routing import BinRoutingTable
from actors.acquirer_types import (
    AcquirerEndpoint,
    AuthorizationRequest,
    AuthorizationResult,
    GatewayConfig,
    GatewayStatistics,
    LinkState,
    OriginalAuthorization,
)
from protocols.iso8583 import (
    APPROVING_FIELD39,
    Iso8583Error,
    IsoMessage,
    MessageFormatError,
    encode_message,
    format_stan,
    mti,
    response_code_from_field39,
    transmission_datetime,
)
from switch.domain.response_codes import ResponseCode
from switch.security import KeyIntegrityError, PinBlockError, SecurityModule
from switch.store.saf import NewReversal, SafEntry, SafStore, StanInUseError

log = logging.getLogger(__name__)

T = TypeVar("T")

STAN_MAX: Final = 999_999
STAN_ATTEMPTS_MAX: Final = 8  # STANs tried for one authorisation or advice when other nodes hold them
REVERSAL_ACK_CODES: Final = frozenset({"00"})
# Field 39 answers after which the acquirer holds money: every approval, and a partial one (10).
HOLDING_FIELD39: Final = APPROVING_FIELD39 | {"10"}
RESPONSE_TO_REQUEST_MTI: Final = {
    mti.AUTHORIZATION_RESPONSE: mti.AUTHORIZATION_REQUEST,
    mti.FINANCIAL_RESPONSE: mti.FINANCIAL_REQUEST,
}


class GatewayNotRunningError(Exception):
    """authorize() and friends were called before start() or after stop()."""


# Called (on a worker thread) with what a reversal of the authorisation needs, after its STAN and
# field 7 are chosen and before it is sent; True to send it. If it returns False (a rule of the
# caller's refused it) or raises, nothing is sent (answered 96; the caller answers its refusal).
BeforeSend = Callable[[OriginalAuthorization], bool]


class AcquirerGateway:
    """Thread-safe: call the public methods from any thread except the gateway's own."""

    def __init__(
        self,
        config: GatewayConfig,
        engine: Engine,
        security: SecurityModule | None = None,
        clock: Callable[[], dt.datetime] = now_utc,
    ) -> None:
        names = [endpoint.name for endpoint in config.acquirers]
        assert len(names) == len(set(names)), "acquirer names are unique"
        self._config = config
        self._limits = config.limits
        self._security = security
        self._clock = clock
        self._routes = BinRoutingTable(config.routes)
        assert self._routes.acquirers <= set(names), "every route names a configured acquirer"
        self._saf = SafStore(engine)
        self._saf.create_table()
        self._stan = random.SystemRandom().randint(1, STAN_MAX)
        self._links = {
            endpoint.name: AcquirerLink(
                endpoint, self._limits, self._next_stan, self._on_unmatched, self._wake_saf
            )
            for endpoint in config.acquirers
        }
        self._in_flight = 0
        self._rejected_in_flight_max = 0
        self._authorization_timeouts = 0
        self._reversals_queued = 0
        self._reversals_acknowledged = 0
        self._reversal_answers_refused = 0
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel_scope: trio.CancelScope | None = None
        self._started = threading.Event()
        self._saf_wakeup: trio.Event | None = None
        self._saf_lock: trio.Lock | None = None
        self._latency_observer: Callable[[str, float], None] | None = None

    def observe_latency(self, observer: Callable[[str, float], None]) -> None:
        """observer(acquirer, seconds) for each authorisation answered in time; runs on the gateway's
        thread, so it must be quick (a metrics histogram)."""
        self._latency_observer = observer

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the gateway thread and its links; returns once its loop is running."""
        assert self._thread is None, "start() once"
        self._thread = threading.Thread(target=self._thread_main, name="acquirer-gateway")
        self._thread.daemon = True
        self._thread.start()
        if not self._started.wait(self._limits.start_timeout_ms / 1000):
            raise GatewayNotRunningError("acquirer gateway loop did not start in time")

    def stop(self) -> None:
        """Close the links and end the thread. Pending reversals stay stored for the next start."""
        thread, token, scope = self._thread, self._token, self._cancel_scope
        if thread is None or token is None or scope is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(self._limits.stop_timeout_ms / 1000)
        assert not thread.is_alive(), "acquirer gateway thread did not stop"
        self._token = None

    def _thread_main(self) -> None:
        trio.run(self._main)

    async def _main(self) -> None:
        self._saf_wakeup = trio.Event()
        self._saf_lock = trio.Lock()
        async with trio.open_nursery() as nursery:
            self._cancel_scope = nursery.cancel_scope
            self._token = trio.lowlevel.current_trio_token()
            for link in self._links.values():
                nursery.start_soon(link.run)
            nursery.start_soon(self._saf_loop)
            self._started.set()

    def _call(self, function: Callable[[], Awaitable[T]]) -> T:
        token = self._token
        if token is None:
            raise GatewayNotRunningError("acquirer gateway is not running")
        try:
            return trio.from_thread.run(function, trio_token=token)
        except trio.RunFinishedError:
            raise GatewayNotRunningError("acquirer gateway stopped") from None

    # --- public synchronous API ----------------------------------------------------------------------

    def authorize(
        self,
        request: AuthorizationRequest,
        timeout_ms: int | None = None,
        before_send: BeforeSend | None = None,
    ) -> AuthorizationResult:
        """Route, send and await one authorisation. A missing answer declines (68) and queues a
        reversal advice; an unreachable acquirer declines (91) without one. `before_send` lets the
        caller make the authorisation durable before it leaves (see BeforeSend)."""
        timeout = self._limits.response_timeout_ms_default if timeout_ms is None else timeout_ms
        assert timeout > 0, "timeout_ms must be positive"
        return self._call(lambda: self._authorize(request, timeout, before_send))

    def reverse(self, original: OriginalAuthorization, reason: str) -> bool:
        """Store a reversal advice of an answered authorisation (abort, terminal reversal) and send it
        as 0420, then 0421 until acknowledged; True once it is stored (or was already)."""
        assert original.acquirer in self._links, "reverse on a configured acquirer"
        return self._call(lambda: self._reverse(original, reason))

    def reversal_advice(self, original: OriginalAuthorization, reason: str) -> NewReversal:
        """The reversal advice of an original, with a STAN of its own, for recovery to store in its
        own transaction. Once started, the STAN is taken on the gateway's loop, which owns the counter."""
        assert original.acquirer in self._links, "reverse on a configured acquirer"
        if self._thread is None:
            return self._advice(original, reason)

        async def advice() -> NewReversal:
            return self._advice(original, reason)

        return self._call(advice)

    def wake_saf(self) -> None:
        """Send the reversals queued now (one stored by another transaction, as `PaymentStore.undo`
        stores them) without waiting for the next retry interval; nothing if not running."""
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._wake_saf, trio_token=token)

    def sign_on(self, name: str) -> ResponseCode:
        return self._call(lambda: self._network(name, mti.NETWORK_SIGN_ON))

    def echo(self, name: str) -> ResponseCode:
        return self._call(lambda: self._network(name, mti.NETWORK_ECHO))

    def statistics(self) -> GatewayStatistics:
        stats = self.link_statistics()
        return GatewayStatistics(
            **{name: getattr(stats, name) for name in GatewayStatistics.__slots__ if name != "saf_depth"},
            saf_depth=self._saf.depth(),
        )

    def link_statistics(self) -> GatewayStatistics:
        """statistics() without asking the database: saf_depth is -1 (for each metrics scrape, which
        must not wait for the database; saf_pending_counts() is read off it)."""

        async def snapshot() -> GatewayStatistics:
            return self._statistics_nowait(saf_depth=-1)

        return self._call(snapshot)

    def saf_pending(self) -> tuple[SafEntry, ...]:
        """The oldest pending advices, at most SAF_PENDING_LIMIT_MAX: to list, not to count."""
        return self._saf.pending()

    def saf_pending_counts(self) -> dict[str, int]:
        """Every pending advice counted, by acquirer."""
        return self._saf.pending_counts()

    def retry_saf(self) -> int:
        """Send every pending reversal now; returns how many the acquirers acknowledged."""
        return self._call(self._saf_pass)

    def wait_signed_on(self, timeout_ms: int, names: tuple[str, ...] | None = None) -> bool:
        """Block until the named (default: all) links are signed on; False on timeout."""
        wanted = names or tuple(self._links)

        async def wait() -> bool:
            with trio.move_on_after(timeout_ms / 1000):
                while any(self._links[n].state is not LinkState.signed_on for n in wanted):
                    await trio.sleep(0.005)
                return True
            return False

        return self._call(wait)

    def close_link(self, name: str) -> None:
        """Drop one link's connection (ops and tests); it reconnects by itself."""
        self._call(self._links[name].close)

    # --- inside the trio loop --------------------------------------------------------------------------

    def _statistics_nowait(self, saf_depth: int) -> GatewayStatistics:
        links = tuple(link.statistics() for link in self._links.values())
        return GatewayStatistics(
            links=links,
            in_flight=self._in_flight,
            timeouts=self._authorization_timeouts,
            late_responses=sum(link.late_responses for link in links),
            rejected_in_flight_max=self._rejected_in_flight_max,
            reversals_queued=self._reversals_queued,
            reversals_acknowledged=self._reversals_acknowledged,
            reversal_answers_refused=self._reversal_answers_refused,
            saf_depth=saf_depth,
        )

    def _next_stan(self) -> str:
        self._stan = self._stan % STAN_MAX + 1
        return format_stan(self._stan)

    def _wake_saf(self) -> None:
        if self._saf_wakeup is not None:
            self._saf_wakeup.set()

    async def _network(self, name: str, code: str) -> ResponseCode:
        try:
            response = await self._links[name].network(code)
        except LinkUnavailableError:
            return ResponseCode.issuer_unavailable
        if response is None:
            return ResponseCode.acquirer_timeout
        return response_code_from_field39(response["39"])

    def _field52(self, request: AuthorizationRequest, endpoint: AcquirerEndpoint) -> str | None:
        """Field 52 under the acquirer's zone key; raises PinBlockError for a bad block."""
        if request.pin is None:
            return None
        if self._security is None or endpoint.zone_pin_key is None:
            raise KeyIntegrityError(f"acquirer {endpoint.name} has no zone PIN key")
        translated = self._security.translate_pin_block(
            request.pin.pin_block,
            request.card.pan,
            request.pin.terminal_pin_key,
            endpoint.zone_pin_key,
        )
        return translated.hex().upper()

    async def _authorize(
        self, request: AuthorizationRequest, timeout_ms: int, before_send: BeforeSend | None
    ) -> AuthorizationResult:
        name = self._routes.route(request.card.pan)
        if name is None:
            log.info("no acquirer route for %s", request.card.masked_pan)
            return AuthorizationResult(ResponseCode.issuer_unavailable, None)
        if self._in_flight >= self._limits.in_flight_max:
            self._rejected_in_flight_max += 1
            return AuthorizationResult(ResponseCode.issuer_unavailable, name)
        link = self._links[name]
        try:
            field52 = self._field52(request, link.endpoint)
        except PinBlockError:
            return AuthorizationResult(ResponseCode.incorrect_pin, name)
        except KeyIntegrityError as error:
            log.error("acquirer %s: PIN key fault: %s", name, error)
            return AuthorizationResult(ResponseCode.system_error, name)
        for _ in range(STAN_ATTEMPTS_MAX):
            stan = self._free_stan(link, request.terminal_id)
            transmission = transmission_datetime(self._clock())
            message = authorization_message(request, stan, transmission, field52)
            try:
                encode_message(message)  # before it is recorded as sent: what cannot go is not recorded
            except Iso8583Error as error:
                log.error("acquirer %s: authorisation not sent: %s", name, error)
                return AuthorizationResult(ResponseCode.system_error, name)
            recorded = True if before_send is None else await self._before_send(before_send, name, message)
            if recorded is not None:
                break
            # Another node holds this STAN on this terminal at this second: take the next one.
        else:
            log.error("acquirer %s: no free STAN after %d tries; not sent", name, STAN_ATTEMPTS_MAX)
            return AuthorizationResult(ResponseCode.system_error, name)
        if not recorded:
            return AuthorizationResult(ResponseCode.system_error, name)
        self._in_flight += 1
        sent_s = time.perf_counter()
        try:
            response = await link.exchange(message, timeout_ms)
        except LinkUnavailableError:
            return AuthorizationResult(ResponseCode.issuer_unavailable, name, stan, transmission)
        finally:
            self._in_flight -= 1
        if response is None:
            self._authorization_timeouts += 1
            return await self._timed_out(request, name, message)
        if self._latency_observer is not None:
            self._latency_observer(name, time.perf_counter() - sent_s)
        result = _result(response, name, stan, transmission)
        held_minor = _amount_held(response, request.amount.amount_minor)
        if result.approved and (
            result.response_code is ResponseCode.approved_partial or held_minor != request.amount.amount_minor
        ):
            return await self._partly_approved(request, name, message, held_minor)
        return result

    async def _before_send(self, before_send: BeforeSend, name: str, message: IsoMessage) -> bool | None:
        """Whether the caller recorded the authorisation (True: send it); None when its STAN is
        taken by another payment (another node's), so it must go under another."""
        original = OriginalAuthorization(
            acquirer=name,
            terminal_id=message["41"],
            merchant_id=message["42"],
            transaction_id="",
            mti=message["t"],
            stan=message["11"],
            transmission_datetime=message["7"],
            processing_code=message["3"],
            amount_minor=int(message["4"]),
            currency_numeric=message["49"],
        )
        try:
            recorded = await trio.to_thread.run_sync(before_send, original)
        except StanInUseError:
            return None
        except Exception:
            # Not recorded, so not sent: a crash must never leave an authorisation nobody knows of.
            log.exception("acquirer %s: authorisation not recorded before sending; not sent", name)
            return False
        if not recorded:
            log.info("acquirer %s: authorisation refused before sending; not sent", name)
        return recorded

    def _free_stan(self, link: AcquirerLink, terminal_id: str) -> str:
        # STANs wrap after 999999; skip one still waiting for its answer on this terminal.
        while True:
            stan = self._next_stan()
            if not link.is_stan_in_use(stan, terminal_id):
                return stan

    async def _timed_out(
        self, request: AuthorizationRequest, name: str, message: IsoMessage
    ) -> AuthorizationResult:
        reversal = self._reversal_of(request, name, message, request.amount.amount_minor, "timeout")
        queued = await self._enqueue(reversal)
        code = ResponseCode.acquirer_timeout if queued else ResponseCode.system_error
        return AuthorizationResult(code, name, message["11"], message["7"], reversal_queued=queued)

    async def _partly_approved(
        self, request: AuthorizationRequest, name: str, message: IsoMessage, held_minor: int
    ) -> AuthorizationResult:
        """The acquirer approved another amount than asked (39=10, a partial approval): a payment
        is for its whole amount here, so it is declined and what the acquirer holds is reversed."""
        asked_minor = request.amount.amount_minor
        log.info("acquirer %s: approved %d of %d; declined and reversed", name, held_minor, asked_minor)
        reversal = self._reversal_of(request, name, message, held_minor, "partial_approval")
        queued = await self._enqueue(reversal)
        code = ResponseCode.do_not_honour if queued else ResponseCode.system_error
        return AuthorizationResult(code, name, message["11"], message["7"], reversal_queued=queued)

    def _reversal_of(
        self, request: AuthorizationRequest, name: str, message: IsoMessage, amount_minor: int, reason: str
    ) -> NewReversal:
        return NewReversal(
            acquirer=name,
            terminal_id=request.terminal_id,
            merchant_id=request.merchant_id,
            transaction_id=request.transaction_id,
            original_mti=message["t"],
            original_stan=message["11"],
            original_transmission=message["7"],
            reversal_stan=self._next_stan(),
            processing_code=message["3"],
            amount_minor=amount_minor,
            currency_numeric=message["49"],
            reason=reason,
        )

    async def _reverse(self, original: OriginalAuthorization, reason: str) -> bool:
        return await self._enqueue(self._advice(original, reason))

    def _advice(self, original: OriginalAuthorization, reason: str) -> NewReversal:
        return NewReversal(
            acquirer=original.acquirer,
            terminal_id=original.terminal_id,
            merchant_id=original.merchant_id,
            transaction_id=original.transaction_id,
            original_mti=original.mti,
            original_stan=original.stan,
            original_transmission=original.transmission_datetime,
            reversal_stan=self._next_stan(),
            processing_code=original.processing_code,
            amount_minor=original.amount_minor,
            currency_numeric=original.currency_numeric,
            reason=reason,
        )

    async def _enqueue(self, reversal: NewReversal) -> bool:
        """Store a reversal durably before the decline goes back; True when it is stored. An advice
        whose STAN another node's advice holds on the terminal is stored under the next one."""
        for _ in range(STAN_ATTEMPTS_MAX):
            try:
                added = await trio.to_thread.run_sync(self._saf.enqueue, reversal, self._clock())
                break
            except StanInUseError:
                reversal = dataclasses.replace(reversal, reversal_stan=self._next_stan())
            except Exception:
                # The acquirer may hold an approval we cannot reverse: loud, and an ops alert.
                log.exception("acquirer %s: could not store reversal", reversal.acquirer)
                return False
        else:
            log.error(
                "acquirer %s: could not store reversal: no free STAN after %d tries",
                reversal.acquirer,
                STAN_ATTEMPTS_MAX,
            )
            return False
        if added:
            self._reversals_queued += 1
            self._wake_saf()
        return True

    async def _on_unmatched(self, link: AcquirerLink, message: IsoMessage) -> None:
        kind = message["t"]
        if kind in RESPONSE_TO_REQUEST_MTI:
            await self._late_response(link, message)
        elif kind == mti.REVERSAL_ADVICE_RESPONSE and message.get("39") in REVERSAL_ACK_CODES:
            await self._late_acknowledgement(link, message)
        else:
            log.info("acquirer %s: unmatched %s STAN %s ignored", link.name, kind, message["11"])

    async def _late_acknowledgement(self, link: AcquirerLink, message: IsoMessage) -> None:
        """A 0430 after its advice stopped waiting acknowledges the pending advice it names, never
        one that took its STAN since; one naming none is ignored (a pending advice goes out again).
        Field 37 names one advice alone, so it is asked first; field 90, then the STAN, without it."""
        if "37" in message:
            await self._late_acknowledgement_by_reference(link, message)
            return
        if "90" not in message:
            await self._late_acknowledgement_by_stan(link, message)
            return
        answer = advice_answer(link.name, message)
        if answer is None:
            log.warning(
                "acquirer %s: late 0430 STAN %s without a readable field 90 ignored: it names no advice",
                link.name,
                message["11"],
            )
            return
        if await trio.to_thread.run_sync(self._saf.acknowledge_answer, answer, self._clock()):
            self._reversals_acknowledged += 1
        else:
            log.info(
                "acquirer %s: late 0430 STAN %s answers no pending advice; ignored", link.name, message["11"]
            )

    async def _late_acknowledgement_by_reference(self, link: AcquirerLink, message: IsoMessage) -> None:
        """A late 0430 echoing field 37 acknowledges the pending advice with that reference on its
        terminal, if its other echoed fields agree; never another advice under its STAN."""
        entry = await trio.to_thread.run_sync(
            self._saf.pending_by_reference, link.name, message.get("41", ""), message["37"]
        )
        if entry is None:
            log.info(
                "acquirer %s: late 0430 STAN %s answers no pending advice; ignored", link.name, message["11"]
            )
            return
        disagreement = answer_disagreement(message, entry)
        if disagreement is not None:
            self._reversal_answers_refused += 1
            log.warning(
                "acquirer %s: late 0430 STAN %s names an advice by field 37 but field %s differs; ignored",
                link.name,
                message["11"],
                disagreement,
            )
            return
        if await trio.to_thread.run_sync(self._saf.acknowledge, entry.saf_id, self._clock()):
            self._reversals_acknowledged += 1

    async def _late_acknowledgement_by_stan(self, link: AcquirerLink, message: IsoMessage) -> None:
        """A late 0430 echoing no field 90 names its advice by field 41 and its STAN only: it
        acknowledges the pending advice under them only while that advice alone holds the STAN."""
        amount = message.get("4", "")
        acknowledged = await trio.to_thread.run_sync(
            self._saf.acknowledge_held_stan,
            link.name,
            message.get("41", ""),
            message["11"],
            int(amount) if amount.isdigit() else None,
            self._clock(),
        )
        if acknowledged:
            self._reversals_acknowledged += 1
        else:
            log.info(
                "acquirer %s: late 0430 STAN %s without field 90 ignored: no pending advice sent under"
                " its STAN within the hold holds it alone",
                link.name,
                message["11"],
            )

    async def _late_response(self, link: AcquirerLink, message: IsoMessage) -> None:
        """An answer after its timeout is never an approval: make sure it is reversed."""
        if message.get("39") not in HOLDING_FIELD39 or "7" not in message or "4" not in message:
            return
        reversal = NewReversal(
            acquirer=link.name,
            terminal_id=message["41"],
            merchant_id=message.get("42", ""),
            transaction_id="",
            original_mti=RESPONSE_TO_REQUEST_MTI[message["t"]],
            original_stan=message["11"],
            original_transmission=message["7"],
            reversal_stan=self._next_stan(),
            processing_code=message.get("3", "000000"),
            amount_minor=int(message["4"]),
            currency_numeric=message.get("49", "978"),
            reason="late_response",
        )
        await self._enqueue(reversal)  # a no-op when the timeout already stored it

    # --- store and forward ---------------------------------------------------------------------------

    async def _saf_loop(self) -> None:
        assert self._saf_wakeup is not None
        while True:
            with trio.move_on_after(self._limits.saf_retry_interval_ms / 1000):
                await self._saf_wakeup.wait()
            self._saf_wakeup = trio.Event()
            try:
                await self._saf_pass()
            except Exception:
                # A database hiccup must not end store-and-forward; the next pass retries.
                log.exception("store-and-forward pass failed")

    async def _saf_pass(self) -> int:
        assert self._saf_lock is not None
        acknowledged = 0
        async with self._saf_lock:
            for link in self._links.values():
                if link.state is LinkState.signed_on:
                    acknowledged += await self._saf_pass_link(link)
        return acknowledged

    async def _saf_pass_link(self, link: AcquirerLink) -> int:
        entries = await trio.to_thread.run_sync(
            lambda: self._saf.pending(link.name, self._limits.saf_batch_max)
        )
        acknowledged = 0
        for entry in entries:
            message = reversal_message(entry, transmission_datetime(self._clock()))
            await trio.to_thread.run_sync(self._saf.record_attempt, entry.saf_id, self._clock())
            try:
                response = await link.exchange(message, self._limits.saf_response_timeout_ms)
            except LinkUnavailableError:
                break
            if response is None or response.get("39") not in REVERSAL_ACK_CODES:
                continue
            if not self._answers_waiting_advice(link, response, entry):
                continue
            if await trio.to_thread.run_sync(self._saf.acknowledge, entry.saf_id, self._clock()):
                self._reversals_acknowledged += 1
                acknowledged += 1
        return acknowledged

    def _answers_waiting_advice(self, link: AcquirerLink, response: IsoMessage, entry: SafEntry) -> bool:
        """Whether a 0430 come under the advice's STAN while it waited is its answer: every field it
        echoes must agree. One that disagrees may be a late 0430 of an earlier advice that gave this
        STAN back: counted and logged (STAN and field number, never a card's data), not taken, and
        the advice goes out again."""
        disagreement = answer_disagreement(response, entry)
        if disagreement is None:
            return True
        self._reversal_answers_refused += 1
        log.warning(
            "acquirer %s: 0430 STAN %s names another advice; not its acknowledgement (field %s differs)",
            link.name,
            entry.reversal_stan,
            disagreement,
        )
        return False


def _amount_held(response: IsoMessage, requested_minor: int) -> int:
    """What the acquirer approved: field 4 of its answer, when it names one, else what was asked."""
    amount = response.get("4", "")
    return int(amount) if amount.isdigit() else requested_minor


def _result(response: IsoMessage, name: str, stan: str, transmission: str) -> AuthorizationResult:
    try:
        code = response_code_from_field39(response["39"])
    except MessageFormatError:
        code = ResponseCode.system_error
    return AuthorizationResult(
        response_code=code,
        acquirer=name,
        stan=stan,
        transmission_datetime=transmission,
        auth_code=response.get("38", "").strip(),
        retrieval_reference=response.get("37", ""),
    )
