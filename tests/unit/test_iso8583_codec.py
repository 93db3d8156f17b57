"""Table-driven tests of the ISO 8583 spec, codec, framing and response-code mapping."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from protocols.iso8583 import (
    FrameBuffer,
    FrameError,
    MessageFormatError,
    OriginalDataElements,
    decode_message,
    encode_frame,
    encode_message,
    field39_from_response_code,
    format_amount,
    frame,
    mti,
    receive_frame,
    redacted,
    response_code_from_field39,
)
from switch.domain.response_codes import ResponseCode

PAN = "4761739001010119"
TRACK2 = "4761739001010119=25122011234567890"
PIN_BLOCK_HEX = "00112233445566778899AABBCCDDEEFF"


def purchase(**overrides: str) -> dict[str, str]:
    message = {
        "t": "0200",
        "2": PAN,
        "3": "000000",
        "4": format_amount(1250),
        "7": "0101120000",
        "11": "000001",
        "14": "2512",
        "22": "071",
        "41": "TERM0001",
        "42": "MERCHANT0000001",
        "49": "978",
        "52": PIN_BLOCK_HEX,
        "55": "9F2608AABBCCDDEEFF0011",
    }
    message.update(overrides)
    return message


ROUND_TRIP_CASES = [
    pytest.param(purchase(), id="purchase-0200-pan-pin-emv"),
    pytest.param(purchase(t="0100"), id="authorisation-0100"),
    pytest.param(
        {k: v for k, v in purchase(**{"35": TRACK2}).items() if k not in ("2", "52", "55")},
        id="magstripe-track2-only",
    ),
    pytest.param(purchase(**{"52": "0011223344556677"}), id="format0-pin-block-8-bytes"),
    pytest.param(
        {
            "t": "0210",
            "11": "000001",
            "37": "000000000001",
            "38": "A1B2C3",
            "39": "00",
            "41": "TERM0001",
            "4": format_amount(1250),
        },
        id="response-0210",
    ),
    pytest.param(
        {
            "t": "0420",
            "3": "000000",
            "4": format_amount(1250),
            "7": "0101120005",
            "11": "000002",
            "41": "TERM0001",
            "42": "MERCHANT0000001",
            "49": "978",
            "90": OriginalDataElements("0200", "000001", "0101120000").encode(),
        },
        id="reversal-advice-0420-secondary-bitmap",
    ),
    pytest.param({"t": "0430", "11": "000002", "39": "00", "41": "TERM0001"}, id="0430"),
    pytest.param({"t": "0800", "7": "0101120000", "11": "000003", "70": "001"}, id="sign-on"),
    pytest.param({"t": "0810", "11": "000003", "39": "00", "70": "301"}, id="echo-response"),
]


@pytest.mark.parametrize("message", ROUND_TRIP_CASES)
def test_round_trip(message: dict[str, str]) -> None:
    assert decode_message(encode_message(message)) == message


BAD_ENCODE_CASES = [
    ("missing MTI", {k: v for k, v in purchase().items() if k != "t"}, "t"),
    ("unknown MTI", purchase(t="0300"), "t"),
    ("amount not digits", purchase(**{"4": "00000000012A"}), "4"),
    ("amount too short", purchase(**{"4": "1250"}), "4"),
    ("STAN missing", {k: v for k, v in purchase().items() if k != "11"}, "11"),
    ("no card data", {k: v for k, v in purchase().items() if k != "2"}, "2"),
    ("PAN with letters", purchase(**{"2": "47617390010101AB"}), "2"),
    ("PAN too long", purchase(**{"2": "4" * 20}), "2"),
    ("track2 bad separator", purchase(**{"35": "4761739001010119^2512"}), "35"),
    ("PIN block odd hex", purchase(**{"52": "0011223"}), "52"),
    ("PIN block not hex", purchase(**{"52": "ZZ11223344556677"}), "52"),
    ("PIN block too long", purchase(**{"52": "00" * 17}), "52"),
    ("field outside spec", purchase(**{"60": "x"}), "60"),
    ("terminal id too long", purchase(**{"41": "TERM00012"}), "41"),
    (
        "field 90 not digits",
        {
            "t": "0420",
            "4": format_amount(1),
            "7": "0101120000",
            "11": "000002",
            "41": "TERM0001",
            "90": "X" * 42,
        },
        "90",
    ),
]


@pytest.mark.parametrize(("case", "message", "field"), BAD_ENCODE_CASES, ids=[c[0] for c in BAD_ENCODE_CASES])
def test_encode_refuses_naming_the_field(case: str, message: dict[str, str], field: str) -> None:
    with pytest.raises(MessageFormatError) as raised:
        encode_message(message)
    assert raised.value.field == field, case
    for secret in (PAN, TRACK2, PIN_BLOCK_HEX, "47617390010101AB", "ZZ11223344556677"):
        assert secret not in str(raised.value)


def _body_truncations() -> list[bytes]:
    body = encode_message(purchase())
    return [body[:cut] for cut in (0, 3, 10, 20, 40, len(body) - 1)]


@pytest.mark.parametrize("body", _body_truncations())
def test_decode_of_truncated_body_is_a_format_error_without_card_data(body: bytes) -> None:
    with pytest.raises(MessageFormatError) as raised:
        decode_message(body)
    text = str(raised.value) + repr(raised.value)
    assert PAN not in text and PIN_BLOCK_HEX not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_decode_rejects_non_digit_pan_from_the_wire() -> None:
    body = encode_message(purchase()).replace(PAN.encode(), b"47617390010101AB")
    with pytest.raises(MessageFormatError) as raised:
        decode_message(body)
    assert raised.value.field == "2"
    assert "47617390010101AB" not in str(raised.value)


def test_redacted_masks_pan_and_hides_card_data() -> None:
    safe = redacted(purchase(**{"35": TRACK2}))
    assert safe["2"] == "476173****0119"
    text = repr(safe)
    for secret in (PAN, TRACK2, PIN_BLOCK_HEX, "2512"):
        assert secret not in text
    assert safe["4"] == "000000001250"


@pytest.mark.parametrize(
    ("request_mti", "response_mti"),
    [
        ("0100", "0110"),
        ("0200", "0210"),
        ("0400", "0410"),
        ("0420", "0430"),
        ("0421", "0430"),
        ("0800", "0810"),
    ],
)
def test_response_mti(request_mti: str, response_mti: str) -> None:
    assert mti.response_mti(request_mti) == response_mti


@pytest.mark.parametrize(
    ("field39", "code"),
    [
        ("00", ResponseCode.approved),
        ("10", ResponseCode.approved_partial),
        ("51", ResponseCode.exceeds_balance),
        ("55", ResponseCode.incorrect_pin),
        ("68", ResponseCode.acquirer_timeout),
        ("91", ResponseCode.issuer_unavailable),
        ("05", ResponseCode.do_not_honour),
        ("Z9", ResponseCode.do_not_honour),
    ],
)
def test_response_code_mapping(field39: str, code: ResponseCode) -> None:
    assert response_code_from_field39(field39) is code
    if code is not ResponseCode.do_not_honour or field39 == "05":
        assert field39_from_response_code(code) == field39


@pytest.mark.parametrize("field39", ["", "0", "000", "0 ", "é1"])
def test_response_code_malformed(field39: str) -> None:
    with pytest.raises(MessageFormatError) as raised:
        response_code_from_field39(field39)
    assert raised.value.field == "39"


def test_original_data_elements_round_trip() -> None:
    original = OriginalDataElements("0200", "000123", "1231235959", "12345")
    encoded = original.encode()
    assert len(encoded) == 42
    assert OriginalDataElements.decode(encoded) == original


# --- framing -----------------------------------------------------------------------------


def test_frame_buffer_splits_frames_fed_byte_by_byte() -> None:
    first, second = encode_frame(purchase()), encode_frame(purchase(**{"11": "000002"}))
    buffer = FrameBuffer()
    bodies: list[bytes] = []
    for byte in first + second:
        buffer.feed(bytes([byte]))
        body = buffer.next_frame()
        if body is not None:
            bodies.append(body)
    assert [decode_message(body)["11"] for body in bodies] == ["000001", "000002"]
    assert first[:2] == (len(first) - 2).to_bytes(2, "big")


@pytest.mark.parametrize("header", [b"\x00\x00", b"\xff\xff"])
def test_frame_buffer_refuses_bad_length(header: bytes) -> None:
    buffer = FrameBuffer()
    buffer.feed(header + b"0200")
    with pytest.raises(FrameError):
        buffer.next_frame()


def test_frame_refuses_empty_body() -> None:
    with pytest.raises(FrameError):
        frame(b"")


@pytest.mark.trio
async def test_receive_frame_over_a_stream() -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    buffer = FrameBuffer()
    wire = encode_frame(purchase()) + encode_frame(purchase(**{"11": "000009"}))
    await sender.send_all(wire[:5])
    await sender.send_all(wire[5:])
    await sender.aclose()
    one = await receive_frame(receiver, buffer)
    two = await receive_frame(receiver, buffer)
    assert one is not None and two is not None
    assert decode_message(two)["11"] == "000009"
    assert await receive_frame(receiver, buffer) is None


@pytest.mark.trio
async def test_receive_frame_stream_ends_mid_frame() -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    await sender.send_all(encode_frame(purchase())[:-4])
    await sender.aclose()
    with pytest.raises(FrameError):
        await receive_frame(receiver, FrameBuffer())
