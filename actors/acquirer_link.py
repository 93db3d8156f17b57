"""One persistent ISO 8583 connection to one acquirer: connect, sign on, echo, multiplex, match."""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from actors.acquirer_messages import network_message
from actors.acquirer_types import AcquirerEndpoint, GatewayLimits, LinkState, LinkStatistics
from protocols.iso8583 import (
    FrameBuffer,
    Iso8583Error,
    IsoMessage,
    decode_message,
    encode_frame,
    mti,
    receive_frame,
    transmission_datetime,
)

log = logging.getLogger(__name__)

# (STAN, terminal id or "" for network management, the MTI of the response): a 0430 is no answer
# to an 0200 that happens to carry the same STAN.
MatchKey = tuple[str, str, str]
UnmatchedHandler = Callable[["AcquirerLink", IsoMessage], Awaitable[None]]
StanSource = Callable[[], str]


# Faults of the network, not bugs: the link reconnects after them.
LINK_FAULTS: tuple[type[Exception], ...] = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


def _fault_names(group: BaseExceptionGroup[Exception]) -> str:
    return ",".join(sorted({type(error).__name__ for error in group.exceptions}))


class LinkUnavailableError(Exception):
    """The link is not signed on, so the message was not sent (nothing to reverse)."""


# How many answered requests the link remembers, so that a repeated response is known as one.
ANSWERED_REMEMBERED = 10_000


def request_key(message: IsoMessage) -> MatchKey:
    """The key under which the response to this request will come."""
    return (message["11"], message.get("41", ""), mti.response_mti(message["t"]))


def response_key(message: IsoMessage) -> MatchKey:
    return (message["11"], message.get("41", ""), message["t"])


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    response: IsoMessage | None = None


class AcquirerLink:
    """Runs inside the gateway's trio loop; every method must be called from that loop."""

    def __init__(
        self,
        endpoint: AcquirerEndpoint,
        limits: GatewayLimits,
        next_stan: StanSource,
        on_unmatched: UnmatchedHandler,
        on_signed_on: Callable[[], None],
    ) -> None:
        self.endpoint = endpoint
        self._limits = limits
        self._next_stan = next_stan
        self._on_unmatched = on_unmatched
        self._on_signed_on = on_signed_on
        self.state = LinkState.disconnected
        self._stream: trio.SocketStream | None = None
        self._send_lock = trio.Lock()
        self._waiters: dict[MatchKey, _Waiter] = {}
        # Requests answered, by key and transmission time (field 7): a second copy of an answer
        # is dropped, not taken for a late one (a late approval is reversed).
        self._answered: OrderedDict[tuple[MatchKey, str], None] = OrderedDict()
        self.requests_sent = 0
        self.responses_matched = 0
        self.timeouts = 0
        self.late_responses = 0
        self.repeated_responses = 0
        self.connects = 0
        self.last_echo_at: dt.datetime | None = None

    @property
    def name(self) -> str:
        return self.endpoint.name

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            name=self.name,
            state=self.state,
            in_flight=len(self._waiters),
            requests_sent=self.requests_sent,
            responses_matched=self.responses_matched,
            timeouts=self.timeouts,
            late_responses=self.late_responses,
            connects=self.connects,
            repeated_responses=self.repeated_responses,
            last_echo_at=self.last_echo_at,
        )

    # --- exchange -----------------------------------------------------------------------------

    def is_stan_in_use(self, stan: str, terminal_id: str) -> bool:
        """Whether a request with this STAN on this terminal still waits for its answer."""
        return any(key[:2] == (stan, terminal_id) for key in self._waiters)

    async def exchange(
        self, message: IsoMessage, timeout_ms: int, *, before_sign_on: bool = False
    ) -> IsoMessage | None:
        """Send and await the matching response; None when it did not come in time or the
        connection dropped after sending. Raises LinkUnavailableError when nothing was sent."""
        ready = self.state is LinkState.signed_on or (before_sign_on and self.state is LinkState.signing_on)
        stream = self._stream
        if not ready or stream is None:
            raise LinkUnavailableError(self.name)
        key = request_key(message)
        assert key not in self._waiters, "STAN, terminal id and response type already in flight"
        waiter = _Waiter()
        self._waiters[key] = waiter
        try:
            frame = encode_frame(message)
            try:
                async with self._send_lock:
                    await stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Part of it may have gone out: answer as unknown, so the caller reverses.
                return None
            self.requests_sent += 1
            with trio.move_on_after(timeout_ms / 1000):
                await waiter.done.wait()
            if waiter.response is None:
                self.timeouts += 1
            return waiter.response
        finally:
            # From here on a response for this key is late, and handled as unmatched.
            del self._waiters[key]
            if waiter.response is not None:
                self._remember_answered(key, waiter.response)

    def _remember_answered(self, key: MatchKey, response: IsoMessage) -> None:
        self._answered[(key, response.get("7", ""))] = None
        while len(self._answered) > ANSWERED_REMEMBERED:
            self._answered.popitem(last=False)

    async def network(self, code: str) -> IsoMessage | None:
        message = network_message(code, self._next_stan(), transmission_datetime(now_utc()))
        response = await self.exchange(
            message, self._limits.network_timeout_ms, before_sign_on=code == mti.NETWORK_SIGN_ON
        )
        if code == mti.NETWORK_ECHO and response is not None and response.get("39") == "00":
            self.last_echo_at = now_utc()  # for `acquirers status`, which showed "-" for ever
        return response

    # --- connection lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the link up until cancelled: connect, sign on, read and echo, reconnect."""
        while True:
            try:
                await self._connect_and_serve()
            except* LINK_FAULTS as group:
                log.info("acquirer %s: link down: %s", self.name, _fault_names(group))
            finally:
                await self._drop_connection()
            await trio.sleep(self._limits.reconnect_delay_ms / 1000)

    async def _connect_and_serve(self) -> None:
        self.state = LinkState.connecting
        with trio.fail_after(self._limits.connect_timeout_ms / 1000):
            stream = await trio.open_tcp_stream(self.endpoint.host, self.endpoint.port)
        self._stream = stream
        self.connects += 1
        self.state = LinkState.signing_on
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_loop, stream, nursery.cancel_scope)
            response = await self.network(mti.NETWORK_SIGN_ON)
            if response is None or response.get("39") != "00":
                log.warning("acquirer %s: sign-on refused or unanswered", self.name)
                nursery.cancel_scope.cancel()
                return
            self.state = LinkState.signed_on
            log.info("acquirer %s: signed on", self.name)
            self._on_signed_on()
            nursery.start_soon(self._echo_loop, nursery.cancel_scope)

    async def _read_loop(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        buffer = FrameBuffer()
        try:
            while True:
                body = await receive_frame(stream, buffer)
                if body is None:
                    break
                await self._dispatch(body)
        except Iso8583Error as error:
            log.warning("acquirer %s: broken framing, reconnecting: %s", self.name, error)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _dispatch(self, body: bytes) -> None:
        try:
            message = decode_message(body)
        except Iso8583Error as error:
            log.warning("acquirer %s: malformed message ignored: %s", self.name, error)
            return
        if not mti.is_request(message["t"]) and self._handed_over(message):
            return
        self.late_responses += 1
        await self._on_unmatched(self, message)

    def _handed_over(self, response: IsoMessage) -> bool:
        """Give response to the request waiting for it; True too for a repeat of an answer given."""
        key = response_key(response)
        waiter = self._waiters.get(key)
        if waiter is not None and not waiter.done.is_set():
            waiter.response = response
            waiter.done.set()
            self.responses_matched += 1
            return True
        repeated = (waiter is not None and waiter.response is not None) or (
            key,
            response.get("7", ""),
        ) in self._answered
        if repeated:
            self.repeated_responses += 1
            log.info("acquirer %s: repeated %s STAN %s ignored", self.name, response["t"], response["11"])
        return repeated

    async def _echo_loop(self, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self._limits.echo_interval_ms / 1000)
            response = await self.network(mti.NETWORK_ECHO)
            if response is None:
                log.warning("acquirer %s: echo unanswered, reconnecting", self.name)
                scope.cancel()
                return

    async def _drop_connection(self) -> None:
        self.state = LinkState.disconnected
        stream, self._stream = self._stream, None
        # Requests in flight will get no answer on this connection: wake them as unknown.
        for waiter in self._waiters.values():
            waiter.done.set()
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def close(self) -> None:
        """Close the connection now; run() reconnects after the reconnect delay."""
        if self._stream is not None:
            await self._stream.aclose()
