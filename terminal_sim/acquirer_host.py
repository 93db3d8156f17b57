"""Acquirer host simulator: a trio ISO 8583 server with approve/decline rules, PIN checks and faults."""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import trio

from protocols.iso8583 import (
    APPROVING_FIELD39,
    FrameBuffer,
    Iso8583Error,
    IsoMessage,
    OriginalDataElements,
    decode_message,
    encode_frame,
    format_amount,
    mti,
    receive_frame,
    redacted,
)
from switch.domain.response_codes import ResponseCode
from switch.listening import host_port
from switch.security import (
    KeyAlgorithm,
    KeyUsage,
    MasterKey,
    PinCheck,
    SecurityModule,
    WrappedKey,
    mask_pan,
)
from terminal_sim.arguments import cannot_listen_problem, listen_problem
from terminal_sim.config import SettingError, check_count, check_share

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_HOST: Final = "127.0.0.1"
# A fixed, public test zone key: the simulator is never a real acquirer.
TEST_ZONE_KEY_HEX: Final = "C1D0F8FB4958670DBA40AB1F3752EF0D"
# Test cards with a PIN the simulator knows (PAN -> PIN). Test data only.
TEST_PIN_CARDS: Final[dict[str, str]] = {
    "4761739001010119": "1234",
    "5413330089020011": "4321",
    "4761739001010010": "0000",
}
# Amounts whose minor-unit remainder mod 100 selects a decline (a common simulator convention).
DECLINE_CODES_BY_AMOUNT_CENTS: Final[dict[int, ResponseCode]] = {
    51: ResponseCode.exceeds_balance,
    5: ResponseCode.do_not_honour,
    54: ResponseCode.card_expired,
}
AMOUNT_LIMIT_MINOR_DEFAULT: Final = 1_000_000
# Longer than any acquirer timeout the switch has; a longer one would only look like a hang.
LATENCY_MS_MAX: Final = 60_000
ZONE_KEY_HEX_DIGITS: Final = 32  # an AES-128 key, the only zone key the host imports
AUTH_CODE_CHARS: Final = 6
# Field 39 answers after which the host holds the amount: approvals, and partial approval (10).
HOLDING_CODES: Final = APPROVING_FIELD39 | {"10"}
# What a 0430 echoes of its 0420/0421 (ISO 8583:1987 mandatory echo): field 37 names the advice and
# field 90 the original it reverses, so a late 0430 names its advice by more than its STAN.
REVERSAL_ANSWER_ECHOED_FIELDS: Final = ("3", "4", "7", "11", "37", "41", "42", "49", "90")


@dataclass(frozen=True, slots=True)
class OriginalKey:
    """How the host and the gateway name one authorisation: terminal id, STAN, field 7."""

    terminal_id: str
    stan: str
    transmission_datetime: str


@dataclass(frozen=True, slots=True)
class HostAuthorization:
    key: OriginalKey
    mti: str
    amount_minor: int
    currency_numeric: str
    response_code: str
    masked_pan: str
    auth_code: str
    processing_code: str = "000000"  # field 3: 00 purchase, 20 refund


@dataclass(frozen=True, slots=True)
class HostReversal:
    key: OriginalKey
    amount_minor: int
    advices_received: int
    matched_original: bool
    mtis: tuple[str, ...]  # every 0400/0420/0421 received for this original, in order
    retrieval_references: tuple[str, ...] = ()  # field 37 of each of them ("" when none)


@dataclass(frozen=True, slots=True)
class HostRecord:
    """What the acquirer did, for the auditor: authorisations and reversals, each once."""

    authorizations: tuple[HostAuthorization, ...]
    reversals: tuple[HostReversal, ...]
    network_messages: int
    malformed_messages: int
    dropped_responses: int

    def approved_keys(self) -> frozenset[OriginalKey]:
        return frozenset(a.key for a in self.authorizations if a.response_code in HOLDING_CODES)

    def reversed_keys(self) -> frozenset[OriginalKey]:
        return frozenset(r.key for r in self.reversals)

    def approved_not_reversed(self) -> frozenset[OriginalKey]:
        """Authorisations that stand: the switch must hold exactly these as approved payments."""
        return self.approved_keys() - self.reversed_keys()


@dataclass(slots=True)
class AcquirerHostConfig:
    """Rules and faults; the fault knobs may be changed while the host runs (tests do)."""

    zone_pin_key_hex: str = TEST_ZONE_KEY_HEX
    pin_cards: Mapping[str, str] = field(default_factory=lambda: dict(TEST_PIN_CARDS))
    declined_pans: Mapping[str, ResponseCode] = field(default_factory=dict)
    decline_codes_by_amount_cents: Mapping[int, ResponseCode] = field(
        default_factory=lambda: dict(DECLINE_CODES_BY_AMOUNT_CENTS)
    )
    amount_limit_minor: int = AMOUNT_LIMIT_MINOR_DEFAULT
    latency_ms: int = 0
    drop_share: float = 0.0  # share of financial responses not sent (the approval still stands)
    seed: int = 0
    # False: a host that echoes no field 90 in its 0430s (against ISO 8583:1987), so a late 0430
    # names its advice by field 41 and its STAN only.
    reversal_answers_echo_field90: bool = True
    # False: a host that echoes no field 37 (the advice's reference) in its 0430s.
    reversal_answers_echo_field37: bool = True


def _zone_key_algorithm(key: bytes) -> KeyAlgorithm:
    assert len(key) == 16, "zone key must be 16 bytes"
    return KeyAlgorithm.aes128


class _PinVerifier:
    """The host's own little security module: its zone key and the PVVs of its test cards."""

    def __init__(self, zone_key_hex: str, pin_cards: Mapping[str, str], algorithm: KeyAlgorithm):
        self._security = SecurityModule(MasterKey(secrets.token_bytes(32)))
        self.zone_key: WrappedKey = self._security.import_key(
            bytes.fromhex(zone_key_hex), "sim-zone", KeyUsage.zone_pin, algorithm
        )
        self._pvv_key = self._security.generate_key("sim-pvv", KeyUsage.pin_verification, KeyAlgorithm.aes128)
        self._pvvs = {
            pan: self._security.pvv_for_issuance(self._pvv_key, pan, pin) for pan, pin in pin_cards.items()
        }

    def check(self, pin_block_hex: str, pan: str) -> ResponseCode:
        stored = self._pvvs.get(pan)
        if stored is None:
            return ResponseCode.incorrect_pin
        block = bytes.fromhex(pin_block_hex)
        outcome = self._security.verify_pin(block, pan, self.zone_key, self._pvv_key, pan, stored)
        return ResponseCode.approved if outcome is PinCheck.correct else ResponseCode.incorrect_pin


def original_key_of_request(message: Mapping[str, str]) -> OriginalKey:
    return OriginalKey(message.get("41", ""), message["11"], message.get("7", ""))


def original_key_of_reversal(message: Mapping[str, str]) -> OriginalKey:
    original = OriginalDataElements.decode(message["90"])
    return OriginalKey(message.get("41", ""), original.stan, original.transmission_datetime)


def _pan_of(message: Mapping[str, str]) -> str:
    if "2" in message:
        return message["2"]
    return message.get("35", "").split("=")[0].split("D")[0]


class AcquirerHost:
    """Serve ISO 8583 over TCP; keep a record of every authorisation and reversal."""

    def __init__(self, config: AcquirerHostConfig | None = None) -> None:
        self.config = config or AcquirerHostConfig()
        algorithm = _zone_key_algorithm(bytes.fromhex(self.config.zone_pin_key_hex))
        self._pins = _PinVerifier(self.config.zone_pin_key_hex, self.config.pin_cards, algorithm)
        self._random = random.Random(self.config.seed)
        self._authorizations: dict[OriginalKey, HostAuthorization] = {}
        self._reversals: dict[OriginalKey, HostReversal] = {}
        self._network_messages = 0
        self._malformed_messages = 0
        self._dropped_responses = 0
        self._drop_next_responses = 0
        self._ignore_next_reversals = 0
        self._answer_twice_next = 0
        self._hold_next_reversal_answers = 0
        self._held_reversal_answers: deque[tuple[trio.SocketStream, trio.Lock, IsoMessage]] = deque()
        self._answers_as: deque[tuple[str, int | None]] = deque()
        self._reversal_answers_changed: deque[Mapping[str, str | None]] = deque()
        self._rrn_counter = 0
        self._connections: set[trio.SocketStream] = set()
        self.port: int | None = None

    # --- fault controls ---------------------------------------------------------------------

    def drop_next_responses(self, count: int) -> None:
        """Process but do not answer the next `count` 0100/0200 requests."""
        self._drop_next_responses += count

    def ignore_next_reversals(self, count: int) -> None:
        """Record but do not acknowledge the next `count` 0400/0420/0421 (forces retransmits)."""
        self._ignore_next_reversals += count

    def hold_next_reversal_answers(self, count: int) -> None:
        """Record and acknowledge the next `count` 0420/0421, but keep each 0430 back until
        send_held_reversal_answers(): a host whose answers sat in a queue (a day, say)."""
        self._hold_next_reversal_answers += count

    async def send_held_reversal_answers(self, count: int) -> int:
        """Send the first `count` 0430s held back, oldest first, on the connections their advices
        came on; returns how many went (one whose connection is gone is dropped)."""
        sent = 0
        for _ in range(min(count, len(self._held_reversal_answers))):
            stream, send_lock, response = self._held_reversal_answers.popleft()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async with send_lock:
                    await stream.send_all(encode_frame(response))
                sent += 1
        return sent

    def answer_twice_next(self, count: int) -> None:
        """Send each of the next `count` answers to 0100/0200 twice, as a host that repeats itself."""
        self._answer_twice_next += count

    def approve_next_as(self, field39: str, approved_minor: int | None = None) -> None:
        """Approve the next new 0100/0200 with this field 39 and, if given, only this amount (field 4)."""
        self._answers_as.append((field39, approved_minor))

    def change_next_reversal_answer(self, fields: Mapping[str, str | None]) -> None:
        """Send the next 0430 with these fields set to another value (None: left out), as a host
        that answers an advice with another's fields (a 0430 of an earlier advice under its STAN)."""
        self._reversal_answers_changed.append(dict(fields))

    def acknowledge_reversals_again(self) -> None:
        """Undo ignore_next_reversals: acknowledge every reversal from now on."""
        self._ignore_next_reversals = 0

    async def disconnect_all(self) -> None:
        """Close every client connection now, as a crashed or restarted host would."""
        for stream in list(self._connections):
            await stream.aclose()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def record(self) -> HostRecord:
        return HostRecord(
            authorizations=tuple(self._authorizations.values()),
            reversals=tuple(self._reversals.values()),
            network_messages=self._network_messages,
            malformed_messages=self._malformed_messages,
            dropped_responses=self._dropped_responses,
        )

    # --- serving ------------------------------------------------------------------------------

    async def serve(
        self,
        port: int = 0,
        host: str = DEFAULT_HOST,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; reports the bound port through task_status (0 = ephemeral)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = int(listeners[0].socket.getsockname()[1])
        log.info("acquirer host simulator listening on %s", host_port(host, self.port))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle_connection, listeners)
            task_status.started(self.port)

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        self._connections.add(stream)
        send_lock = trio.Lock()
        try:
            async with trio.open_nursery() as nursery:
                await self._receive_requests(stream, send_lock, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(stream)
            await stream.aclose()

    async def _receive_requests(
        self, stream: trio.SocketStream, send_lock: trio.Lock, nursery: trio.Nursery
    ) -> None:
        buffer = FrameBuffer()
        try:
            while True:
                body = await receive_frame(stream, buffer)
                if body is None:
                    return
                nursery.start_soon(self._answer, stream, send_lock, body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, Iso8583Error) as error:
            log.info("acquirer host: connection ended: %s", type(error).__name__)

    async def _answer(self, stream: trio.SocketStream, send_lock: trio.Lock, body: bytes) -> None:
        try:
            request = decode_message(body)
        except Iso8583Error as error:
            # Without a trustworthy STAN there is nothing to answer; the client times out.
            self._malformed_messages += 1
            log.warning("acquirer host: malformed message: %s", error)
            return
        response = self._respond(request)
        if response is None:
            return
        if self._hold_next_reversal_answers > 0 and response["t"] == mti.REVERSAL_ADVICE_RESPONSE:
            self._hold_next_reversal_answers -= 1
            self._held_reversal_answers.append((stream, send_lock, response))
            return
        if self.config.latency_ms > 0 and request["t"] != mti.NETWORK_REQUEST:
            await trio.sleep(self.config.latency_ms / 1000)
        copies = 1
        if self._answer_twice_next > 0 and request["t"] in (mti.AUTHORIZATION_REQUEST, mti.FINANCIAL_REQUEST):
            self._answer_twice_next -= 1
            copies = 2
        try:
            for _ in range(copies):
                async with send_lock:
                    await stream.send_all(encode_frame(response))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("acquirer host: connection gone before answer to STAN %s", request["11"])

    def _respond(self, request: IsoMessage) -> IsoMessage | None:
        kind = request["t"]
        if kind == mti.NETWORK_REQUEST:
            self._network_messages += 1
            return {"t": mti.NETWORK_RESPONSE, "11": request["11"], "39": "00", "70": request["70"]}
        if kind in (mti.AUTHORIZATION_REQUEST, mti.FINANCIAL_REQUEST):
            return self._authorize(request)
        if kind in (mti.REVERSAL_REQUEST, mti.REVERSAL_ADVICE, mti.REVERSAL_ADVICE_REPEAT):
            return self._reverse(request)
        return None  # a response sent to us; nothing to answer

    # --- authorisation ----------------------------------------------------------------------------

    def _decide(self, request: IsoMessage) -> ResponseCode:
        pan = _pan_of(request)
        amount_minor = int(request["4"])
        if pan in self.config.declined_pans:
            return self.config.declined_pans[pan]
        if amount_minor <= 0:
            return ResponseCode.invalid_amount
        if amount_minor > self.config.amount_limit_minor:
            return ResponseCode.exceeds_amount_limit
        by_cents = self.config.decline_codes_by_amount_cents.get(amount_minor % 100)
        if by_cents is not None:
            return by_cents
        if "52" in request:
            return self._pins.check(request["52"], pan)
        return ResponseCode.approved

    def _authorize(self, request: IsoMessage) -> IsoMessage | None:
        key = original_key_of_request(request)
        earlier = self._authorizations.get(key)
        # A repeated request (same terminal, STAN, field 7) gets the first answer, never a second approval.
        authorization = earlier or self._new_authorization(key, request)
        log.info("acquirer host: %s -> %s", redacted(request), authorization.response_code)
        if self._should_drop():
            self._dropped_responses += 1
            return None
        response: IsoMessage = {
            name: request[name] for name in ("3", "4", "7", "11", "41", "42", "49") if name in request
        }
        response["t"] = mti.response_mti(request["t"])
        response["37"] = request.get("37") or self._next_rrn()
        response["39"] = authorization.response_code
        if authorization.amount_minor != int(request["4"]):
            response["4"] = format_amount(authorization.amount_minor)
        if authorization.auth_code:
            response["38"] = authorization.auth_code
        return response

    def _new_authorization(self, key: OriginalKey, request: IsoMessage) -> HostAuthorization:
        code = self._decide(request).iso_code
        amount_minor = int(request["4"])
        if self._answers_as and code == "00":
            code, approved_minor = self._answers_as.popleft()
            amount_minor = approved_minor if approved_minor is not None else amount_minor
        authorization = HostAuthorization(
            key=key,
            mti=request["t"],
            amount_minor=amount_minor,
            currency_numeric=request["49"],
            response_code=code,
            masked_pan=mask_pan(_pan_of(request)),
            auth_code=self._auth_code() if code in HOLDING_CODES else "",
            processing_code=request.get("3", "000000"),
        )
        self._authorizations[key] = authorization
        return authorization

    def _should_drop(self) -> bool:
        if self._drop_next_responses > 0:
            self._drop_next_responses -= 1
            return True
        return self.config.drop_share > 0 and self._random.random() < self.config.drop_share

    def _auth_code(self) -> str:
        return "".join(self._random.choice("0123456789ABCDEF") for _ in range(AUTH_CODE_CHARS))

    def _next_rrn(self) -> str:
        self._rrn_counter += 1
        return f"{self._rrn_counter:012d}"

    # --- reversal -----------------------------------------------------------------------------

    def _reverse(self, request: IsoMessage) -> IsoMessage | None:
        key = original_key_of_reversal(request)
        earlier = self._reversals.get(key)
        mtis = (request["t"],) if earlier is None else (*earlier.mtis, request["t"])
        references = (*(() if earlier is None else earlier.retrieval_references), request.get("37", ""))
        self._reversals[key] = HostReversal(
            key=key,
            amount_minor=int(request["4"]),
            advices_received=len(mtis),
            matched_original=key in self._authorizations,
            mtis=mtis,
            retrieval_references=references,
        )
        if self._ignore_next_reversals > 0:
            self._ignore_next_reversals -= 1
            return None
        # Acknowledge even an unknown original: the advice is idempotent and must stop repeating.
        left_out = {
            name
            for name, echoed in (
                ("90", self.config.reversal_answers_echo_field90),
                ("37", self.config.reversal_answers_echo_field37),
            )
            if not echoed
        }
        echoed = [name for name in REVERSAL_ANSWER_ECHOED_FIELDS if name not in left_out]
        response: IsoMessage = {name: request[name] for name in echoed if name in request}
        response["t"] = mti.response_mti(request["t"])
        response["39"] = "00"
        if self._reversal_answers_changed:
            for name, value in self._reversal_answers_changed.popleft().items():
                if value is None:
                    response.pop(name, None)
                else:
                    response[name] = value
        return response


class HostThread:
    """The host on a thread of its own with its own trio loop, for synchronous tests and tools."""

    def __init__(self, config: AcquirerHostConfig | None = None, port: int = 0, start_timeout_s: float = 5.0):
        self.host = AcquirerHost(config)
        self._port = port
        self._start_timeout_s = start_timeout_s
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(
            target=lambda: trio.run(self._main), name="acquirer-host", daemon=True
        )

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            self._token = trio.lowlevel.current_trio_token()
            await nursery.start(self.host.serve, self._port)
            self._started.set()

    def start(self) -> int:
        """Start serving; returns the port."""
        self._thread.start()
        if not self._started.wait(self._start_timeout_s) or self.host.port is None:
            raise RuntimeError("acquirer host simulator did not start")
        return self.host.port

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(self._start_timeout_s)

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the host's loop (fault controls, the record) and return its result."""
        assert self._token is not None, "start() first"
        return trio.from_thread.run_sync(function, trio_token=self._token)

    def record(self) -> HostRecord:
        return self.call(self.host.record)

    def disconnect_all(self) -> None:
        assert self._token is not None, "start() first"
        trio.from_thread.run(self.host.disconnect_all, trio_token=self._token)

    def __enter__(self) -> HostThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def zone_key_problem(flag: str, zone_key_hex: str) -> str | None:
    """What is wrong with a zone key given in hex, never repeating the key; None when nothing is."""
    hex_digits = set("0123456789abcdefABCDEF")
    if len(zone_key_hex) != ZONE_KEY_HEX_DIGITS or not set(zone_key_hex) <= hex_digits:
        return (
            f"{flag} must be {ZONE_KEY_HEX_DIGITS} hex digits (a {ZONE_KEY_HEX_DIGITS // 2}-byte AES key), "
            f"not {len(zone_key_hex)} characters"
        )
    return None


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    try:
        check_count("--latency-ms", args.latency_ms, 0, LATENCY_MS_MAX)
        check_share("--drop-share", args.drop_share)
        check_count("--amount-limit-minor", args.amount_limit_minor, 0)
    except SettingError as error:
        return str(error)
    return listen_problem("--host", args.host, "--port", args.port) or zone_key_problem(
        "--zone-key-hex", args.zone_key_hex
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.acquirer_host", description="txswitch acquirer host simulator (ISO 8583)"
    )
    parser.add_argument("--port", type=int, default=8583)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--drop-share", type=float, default=0.0)
    parser.add_argument("--amount-limit-minor", type=int, default=AMOUNT_LIMIT_MINOR_DEFAULT)
    parser.add_argument("--zone-key-hex", default=TEST_ZONE_KEY_HEX)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AcquirerHostConfig(
        zone_pin_key_hex=args.zone_key_hex,
        amount_limit_minor=args.amount_limit_minor,
        latency_ms=args.latency_ms,
        drop_share=args.drop_share,
        seed=args.seed,
    )
    host = AcquirerHost(config)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(host.serve, args.port, args.host)
    except OSError as error:
        if host.port is not None:  # it listened: a fault while serving, not of the command line
            raise
        parser.error(cannot_listen_problem("--host", args.host, "--port", args.port, error))


if __name__ == "__main__":
    main()
