"""Our ISO 8583:1987 field spec for pyiso8583: ASCII fields, binary bitmaps, binary PIN and EMV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# Field kinds we check beyond what pyiso8583 checks (it checks lengths, not characters).
NUMERIC: Final = "n"  # ASCII digits
TEXT: Final = "ans"  # printable ASCII
TRACK2: Final = "z"  # digits and the '=' separator
BINARY: Final = "b"  # bytes, carried in the decoded dict as upper-case hex


@dataclass(frozen=True, slots=True)
class FieldDef:
    number: str
    kind: str
    length_digits: int  # 0 fixed; 2 LLVAR; 3 LLLVAR (ASCII length prefix)
    length_max: int  # characters for text fields, bytes for binary fields
    description: str


FIELDS: Final[tuple[FieldDef, ...]] = (
    FieldDef("2", NUMERIC, 2, 19, "Primary account number"),
    FieldDef("3", NUMERIC, 0, 6, "Processing code"),
    FieldDef("4", NUMERIC, 0, 12, "Amount, transaction (minor units)"),
    FieldDef("7", NUMERIC, 0, 10, "Transmission date and time MMDDhhmmss (UTC)"),
    FieldDef("11", NUMERIC, 0, 6, "System trace audit number"),
    FieldDef("12", NUMERIC, 0, 6, "Time, local transaction hhmmss"),
    FieldDef("13", NUMERIC, 0, 4, "Date, local transaction MMDD"),
    FieldDef("14", NUMERIC, 0, 4, "Date, expiration YYMM"),
    FieldDef("18", NUMERIC, 0, 4, "Merchant category code"),
    FieldDef("22", NUMERIC, 0, 3, "POS entry mode"),
    FieldDef("23", NUMERIC, 0, 3, "Card sequence number"),
    FieldDef("25", NUMERIC, 0, 2, "POS condition code"),
    FieldDef("32", NUMERIC, 2, 11, "Acquiring institution id"),
    FieldDef("35", TRACK2, 2, 37, "Track 2 data"),
    FieldDef("37", TEXT, 0, 12, "Retrieval reference number"),
    FieldDef("38", TEXT, 0, 6, "Authorisation id response"),
    FieldDef("39", TEXT, 0, 2, "Response code"),
    FieldDef("41", TEXT, 0, 8, "Card acceptor terminal id"),
    FieldDef("42", TEXT, 0, 15, "Card acceptor id (merchant)"),
    FieldDef("43", TEXT, 0, 40, "Card acceptor name and location"),
    # Our answers to inbound requests name the bad field here when field 39 is 30 (format error).
    FieldDef("44", TEXT, 2, 99, "Additional response data"),
    FieldDef("49", NUMERIC, 0, 3, "Currency code, transaction (ISO 4217 numeric)"),
    # 16 bytes, not 1987's 8, so an AES format 4 block fits; a TDES format 0 block is 8.
    FieldDef("52", BINARY, 2, 16, "PIN data"),
    FieldDef("54", TEXT, 3, 120, "Additional amounts"),
    FieldDef("55", BINARY, 3, 255, "ICC (EMV) data, BER-TLV"),
    FieldDef("70", NUMERIC, 0, 3, "Network management information code"),
    FieldDef("90", NUMERIC, 0, 42, "Original data elements"),
)

FIELDS_BY_NUMBER: Final[dict[str, FieldDef]] = {field.number: field for field in FIELDS}


def _pyiso_field(field: FieldDef) -> dict[str, Any]:
    is_binary = field.kind == BINARY
    return {
        "data_enc": "b" if is_binary else "ascii",
        "len_enc": "ascii",
        "len_type": field.length_digits,
        "max_len": field.length_max,
        "desc": field.description,
    }


def _build_spec() -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {
        "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": ""},
        "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4, "desc": "MTI"},
        "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8, "desc": "Bitmap"},
        "1": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8, "desc": "Bitmap 2"},
    }
    # pyiso8583 needs a definition for every field number a peer might send; undefined ones
    # are refused by our own check after decoding, so give them a harmless LLLVAR shape.
    for number in range(2, 129):
        spec[str(number)] = {
            "data_enc": "ascii",
            "len_enc": "ascii",
            "len_type": 3,
            "max_len": 999,
            "desc": "Not used by txswitch",
        }
    for field in FIELDS:
        spec[field.number] = _pyiso_field(field)
    return spec


SPEC: Final[dict[str, dict[str, Any]]] = _build_spec()
