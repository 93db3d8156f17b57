"""ISO 8583:1987 for txswitch: our field spec, the codec, 2-byte length framing and MTIs."""

from protocols.iso8583 import _mti as mti
from protocols.iso8583._codec import (
    REQUIRED_FIELDS_BY_MTI,
    SENSITIVE_FIELDS,
    Iso8583Error,
    IsoMessage,
    MessageFormatError,
    OriginalDataElements,
    decode_message,
    encode_message,
    format_amount,
    format_stan,
    redacted,
    transmission_datetime,
    validate_message,
)
from protocols.iso8583._framing import (
    FrameBuffer,
    FrameError,
    encode_frame,
    frame,
    receive_frame,
)
from protocols.iso8583._spec import FIELDS, FIELDS_BY_NUMBER, SPEC, FieldDef
from protocols.iso8583.response_codes import (
    APPROVING_FIELD39,
    field39_from_response_code,
    response_code_from_field39,
)

__all__ = [
    "APPROVING_FIELD39",
    "FIELDS",
    "FIELDS_BY_NUMBER",
    "REQUIRED_FIELDS_BY_MTI",
    "SENSITIVE_FIELDS",
    "SPEC",
    "FieldDef",
    "FrameBuffer",
    "FrameError",
    "Iso8583Error",
    "IsoMessage",
    "MessageFormatError",
    "OriginalDataElements",
    "decode_message",
    "encode_frame",
    "encode_message",
    "field39_from_response_code",
    "format_amount",
    "format_stan",
    "frame",
    "mti",
    "receive_frame",
    "redacted",
    "response_code_from_field39",
    "transmission_datetime",
    "validate_message",
]
