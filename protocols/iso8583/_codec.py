"""Encode and decode one ISO 8583 message body with our spec; checks that name the bad field."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import iso8583

from protocols.iso8583 import _mti
from protocols.iso8583._spec import BINARY, FIELDS_BY_NUMBER, NUMERIC, SPEC, TEXT, TRACK2
from switch.security.card_data import mask_pan

# A decoded message: "t" is the MTI, "2".."128" the data fields, all as str (binary as hex).
IsoMessage = dict[str, str]

# Card data: never in an exception, a log line or a metric label.
SENSITIVE_FIELDS: Final = frozenset({"2", "14", "35", "52", "55"})
_STRUCTURE_KEYS: Final = frozenset({"h", "p", "1"})

REQUIRED_FIELDS_BY_MTI: Final[dict[str, tuple[str, ...]]] = {
    _mti.AUTHORIZATION_REQUEST: ("3", "4", "7", "11", "22", "41", "42", "49"),
    _mti.FINANCIAL_REQUEST: ("3", "4", "7", "11", "22", "41", "42", "49"),
    _mti.AUTHORIZATION_REQUEST_REPEAT: ("3", "4", "7", "11", "22", "41", "42", "49"),
    _mti.FINANCIAL_REQUEST_REPEAT: ("3", "4", "7", "11", "22", "41", "42", "49"),
    _mti.AUTHORIZATION_RESPONSE: ("11", "39", "41"),
    _mti.FINANCIAL_RESPONSE: ("11", "39", "41"),
    _mti.COMPLETION_ADVICE: ("4", "7", "11", "41", "49", "90"),
    _mti.COMPLETION_ADVICE_REPEAT: ("4", "7", "11", "41", "49", "90"),
    _mti.COMPLETION_ADVICE_RESPONSE: ("11", "39", "41"),
    _mti.REVERSAL_REQUEST: ("4", "7", "11", "41", "90"),
    _mti.REVERSAL_ADVICE: ("4", "7", "11", "41", "90"),
    _mti.REVERSAL_ADVICE_REPEAT: ("4", "7", "11", "41", "90"),
    _mti.REVERSAL_RESPONSE: ("11", "39", "41"),
    _mti.REVERSAL_ADVICE_RESPONSE: ("11", "39", "41"),
    _mti.NETWORK_REQUEST: ("7", "11", "70"),
    _mti.NETWORK_RESPONSE: ("11", "39", "70"),
}
# A card-present request must carry the card: the PAN or track 2.
CARD_FIELDS_ANY_OF: Final = ("2", "35")
MESSAGE_BYTES_MAX: Final = 4096


class Iso8583Error(Exception):
    """Base of the faults this package raises."""


class MessageFormatError(Iso8583Error):
    """A message that does not fit our spec. `field` names where; `reason` never holds card data."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"ISO 8583 field {field}: {reason}")
        self.field = field
        self.reason = reason


def _check_characters(number: str, value: str) -> None:
    kind = FIELDS_BY_NUMBER[number].kind
    if not value.isascii():
        raise MessageFormatError(number, "must be ASCII")
    if kind == NUMERIC and not value.isdigit():
        raise MessageFormatError(number, "must be digits only")
    if kind == TRACK2 and not all(char.isdigit() or char in "=D" for char in value):
        raise MessageFormatError(number, "must be digits with '=' separator")
    if kind == TEXT and not value.isprintable():
        raise MessageFormatError(number, "must be printable")
    if kind == BINARY and len(value) % 2 != 0:
        raise MessageFormatError(number, "must be whole bytes of hex")


def validate_message(message: Mapping[str, str]) -> None:
    """Raise MessageFormatError naming the first field that breaks our spec or the MTI's needs."""
    mti = message.get("t")
    if mti is None:
        raise MessageFormatError("t", "MTI missing")
    if mti not in _mti.KNOWN_MTIS:
        raise MessageFormatError("t", f"MTI {mti!r} not supported")
    for number, value in message.items():
        if number == "t" or number in _STRUCTURE_KEYS:
            continue
        if number not in FIELDS_BY_NUMBER:
            raise MessageFormatError(number, "field not in the txswitch spec")
        if not isinstance(value, str):
            raise MessageFormatError(number, "value must be str")
        _check_characters(number, value)
    for number in REQUIRED_FIELDS_BY_MTI[mti]:
        if number not in message:
            raise MessageFormatError(number, f"required in MTI {mti}")
    is_card_request = _mti.first_of(mti) in (_mti.AUTHORIZATION_REQUEST, _mti.FINANCIAL_REQUEST)
    if is_card_request and not any(number in message for number in CARD_FIELDS_ANY_OF):
        raise MessageFormatError("2", f"MTI {mti} needs field 2 or 35")


def _safe_reason(field: str, reason: str) -> str:
    # pyiso8583 reasons may quote a byte of the field; for card data say only that it is bad.
    return "malformed card data" if field in SENSITIVE_FIELDS else reason


def encode_message(message: Mapping[str, str]) -> bytes:
    """The message body (MTI, bitmaps, fields), without the length header."""
    validate_message(message)
    document = {key: value for key, value in message.items() if key not in _STRUCTURE_KEYS}
    try:
        body, _ = iso8583.encode(document, SPEC)
    except iso8583.EncodeError as error:
        raise MessageFormatError(error.field, _safe_reason(error.field, error.msg)) from None
    if len(body) > MESSAGE_BYTES_MAX:
        raise MessageFormatError("t", f"message is {len(body)} bytes, over {MESSAGE_BYTES_MAX}")
    return bytes(body)


def decode_message(body: bytes) -> IsoMessage:
    """Parse one message body; raises MessageFormatError naming the field for anything malformed."""
    if len(body) > MESSAGE_BYTES_MAX:
        raise MessageFormatError("t", f"message is {len(body)} bytes, over {MESSAGE_BYTES_MAX}")
    try:
        decoded, _ = iso8583.decode(body, SPEC)
    except iso8583.DecodeError as error:
        # `from None`: the pyiso8583 error holds the raw bytes, which may include card data.
        raise MessageFormatError(error.field, _safe_reason(error.field, error.msg)) from None
    message = {key: value for key, value in decoded.items() if key not in _STRUCTURE_KEYS}
    validate_message(message)
    return message


def redacted(message: Mapping[str, str]) -> dict[str, str]:
    """A copy fit for a log line: PAN masked, other card data replaced by its length."""
    safe: dict[str, str] = {}
    for number, value in message.items():
        if number == "2":
            safe[number] = mask_pan(value)
        elif number in SENSITIVE_FIELDS:
            safe[number] = f"<{len(value)} chars>"
        else:
            safe[number] = value
    return safe


# --- field value helpers -------------------------------------------------------------------

AMOUNT_DIGITS: Final = 12
STAN_MAX: Final = 999_999
INSTITUTION_ID_DIGITS: Final = 11


def format_amount(amount_minor: int) -> str:
    """Field 4: 12 digits of minor units."""
    assert 0 <= amount_minor < 10**AMOUNT_DIGITS, "amount out of field 4 range"
    return f"{amount_minor:0{AMOUNT_DIGITS}d}"


def format_stan(stan: int) -> str:
    """Field 11: six digits, 1..999999."""
    assert 1 <= stan <= STAN_MAX, "STAN out of range"
    return f"{stan:06d}"


def transmission_datetime(moment: dt.datetime) -> str:
    """Field 7: MMDDhhmmss in UTC."""
    return moment.astimezone(dt.UTC).strftime("%m%d%H%M%S")


@dataclass(frozen=True, slots=True)
class OriginalDataElements:
    """Field 90: identifies the message a reversal undoes or a completion completes."""

    mti: str
    stan: str
    transmission_datetime: str
    acquiring_institution_id: str = "0"
    forwarding_institution_id: str = "0"

    def encode(self) -> str:
        return (
            f"{self.mti}{self.stan}{self.transmission_datetime}"
            f"{self.acquiring_institution_id:0>11}{self.forwarding_institution_id:0>11}"
        )

    @classmethod
    def decode(cls, value: str) -> OriginalDataElements:
        if len(value) != 42 or not value.isdigit():
            raise MessageFormatError("90", "must be 42 digits")
        return cls(
            mti=value[0:4],
            stan=value[4:10],
            transmission_datetime=value[10:20],
            acquiring_institution_id=value[20:31].lstrip("0") or "0",
            forwarding_institution_id=value[31:42].lstrip("0") or "0",
        )
