"""Records the acquirer gateway takes and gives: requests, results, config, limits, statistics."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from switch.domain.money import Money
from switch.domain.payments import PURCHASE_PROCESSING_CODE
from switch.domain.response_codes import ResponseCode
from switch.security import WrappedKey, mask_pan


class MessageClass(enum.Enum):
    authorization = "0100"  # dual message: authorise now, clear later
    financial = "0200"  # single message: authorise and post


class CardEntryMode(enum.Enum):
    # ISO 8583 field 22: entry method (2 digits) + PIN entry capability (1 = can accept PIN)
    contactless = "071"
    chip = "051"
    magstripe = "901"


@dataclass(frozen=True, slots=True)
class CardData:
    """Card data for one authorisation; kept out of repr so it cannot reach a log by accident."""

    pan: str = field(repr=False)
    expiry_yymm: str = field(repr=False)
    entry_mode: CardEntryMode
    track2: str = field(default="", repr=False)
    emv_tlv_hex: str = field(default="", repr=False)
    card_sequence_number: str = ""

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)


@dataclass(frozen=True, slots=True)
class PinData:
    """An online PIN block as the terminal sent it, with the terminal PIN key it is under."""

    pin_block: bytes = field(repr=False)
    terminal_pin_key: WrappedKey = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    transaction_id: str
    terminal_id: str  # field 41, 8 characters
    merchant_id: str  # field 42, 15 characters
    amount: Money
    card: CardData
    pin: PinData | None = None
    message_class: MessageClass = MessageClass.financial
    processing_code: str = PURCHASE_PROCESSING_CODE  # field 3; REFUND_PROCESSING_CODE credits the card


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    """The answer to one authorisation; a decline is a value, never an exception."""

    response_code: ResponseCode
    acquirer: str | None
    stan: str = ""
    transmission_datetime: str = ""
    auth_code: str = ""
    retrieval_reference: str = ""
    reversal_queued: bool = False  # a 0420 is stored and will be sent until acknowledged

    @property
    def approved(self) -> bool:
        return self.response_code.approves


@dataclass(frozen=True, slots=True)
class OriginalAuthorization:
    """An authorisation the acquirer answered, as much as reversing it needs (no card data)."""

    acquirer: str
    terminal_id: str  # field 41
    merchant_id: str  # field 42
    transaction_id: str
    mti: str
    stan: str
    transmission_datetime: str  # field 7 of the original
    processing_code: str
    amount_minor: int
    currency_numeric: str


@dataclass(frozen=True, slots=True)
class AcquirerEndpoint:
    name: str
    host: str
    port: int
    zone_pin_key: WrappedKey | None = field(default=None, repr=False)
    acquiring_institution_id: str = "0"


@dataclass(frozen=True, slots=True)
class BinRange:
    """PANs whose leading digits lie in [low, high] (compared on len(low) digits) go to `acquirer`."""

    low: str
    high: str
    acquirer: str

    def __post_init__(self) -> None:
        assert self.low.isdigit() and self.high.isdigit(), "BIN bounds are digits"
        assert len(self.low) == len(self.high), "BIN bounds have the same length"
        assert self.low <= self.high, "BIN range low <= high"


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    in_flight_max: int = 256  # authorisations awaiting an answer, all links together
    response_timeout_ms_default: int = 5_000
    connect_timeout_ms: int = 2_000
    reconnect_delay_ms: int = 500
    network_timeout_ms: int = 2_000  # sign-on and echo
    echo_interval_ms: int = 30_000
    saf_retry_interval_ms: int = 5_000
    saf_batch_max: int = 50  # reversals sent per link per pass
    saf_response_timeout_ms: int = 2_000
    start_timeout_ms: int = 5_000
    stop_timeout_ms: int = 5_000


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    acquirers: tuple[AcquirerEndpoint, ...]
    routes: tuple[BinRange, ...]
    limits: GatewayLimits = GatewayLimits()


class LinkState(enum.Enum):
    disconnected = "disconnected"
    connecting = "connecting"
    signing_on = "signing_on"
    signed_on = "signed_on"


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    name: str
    state: LinkState
    in_flight: int
    requests_sent: int
    responses_matched: int
    timeouts: int  # any exchange on this link, sign-on, echo and SAF included
    late_responses: int
    connects: int
    repeated_responses: int = 0  # second copies of an answer already given: dropped
    last_echo_at: dt.datetime | None = None  # the last echo (0800) the acquirer approved


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    links: tuple[LinkStatistics, ...]
    in_flight: int
    timeouts: int  # authorisations answered 68 for want of a response (SAF retries not counted)
    late_responses: int  # messages after their waiter gave up: late 0110/0210, late 0430
    rejected_in_flight_max: int
    reversals_queued: int
    reversals_acknowledged: int
    # 0430s not taken: a field they echo disagrees with the advice waiting under their STAN (or
    # with the advice their field 37 names)
    reversal_answers_refused: int
    saf_depth: int
