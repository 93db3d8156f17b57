"""Structured logs: JSON lines, the transaction line, and card data that never gets through."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from random import Random

import pytest

from ops.logs import (
    MESSAGE_CHARS_MAX,
    REDACTED,
    REDACTED_PAN,
    SENSITIVE_NAMES,
    TRANSACTION_LOGGER_NAME,
    JsonFormatter,
    configure_logging,
    holds_card_number,
    is_sensitive_name,
    log_outcome,
    log_transaction,
    luhn_valid,
    scrub_message,
    scrub_text,
)
from switch import admin
from switch.domain.quoting import quoted
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Outcome, TransactionType

PAN_16 = "4111111111111111"
# Other scripts' digits, as an input method types them (a Japanese keyboard's full-width ones).
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + digit) for digit in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + digit) for digit in range(10)))
PAN_19 = "6036000000000000008"
PAN_12 = "123456789015"
CARD_13 = "6036123456780"
AMEX_15 = "378282246310005"
DINERS_14 = "30569309025904"
NOT_LUHN_16 = "4111111111111112"
PIN_BLOCK_HEX = "041234FFFFFFFFFF"
CVV = "737"
TRACK2 = f";{PAN_16}=25121010000012300000?"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(logging.DEBUG, stream)
    yield stream
    configure_logging(logging.WARNING, io.StringIO())


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        (PAN_16, True),
        (PAN_19, True),
        (PAN_12, True),
        (CARD_13, True),
        (NOT_LUHN_16, False),
        ("5555555555554444".translate(FULL_WIDTH), True),
        ("5555555555554444".translate(ARABIC_INDIC), True),
        (NOT_LUHN_16.translate(FULL_WIDTH), False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


# (id, holds a card number): the edges of what an id the switch stores as given may hold.
ID_CASES: list[tuple[str, bool]] = [
    (PAN_16, True),
    (CARD_13, True),
    (PAN_19, True),
    (f"settle-{PAN_16}-x", True),
    ("4111 1111 1111 1111", True),
    ("4111-1111-1111-1111", True),
    # 21 digits in a row, a card number glued to others: masked in a log line, but taken as an id, as
    # most long numeric ids hold a Luhn-valid window of 13 to 19 digits
    (f"7{PAN_16}0000", False),
    ("12345678901234567890", False),
    ("3782 822463 10005", True),  # American Express, as printed (4-6-5)
    ("3056-930902-5904", True),  # Diners Club, as printed (4-6-4)
    ("4111.1111.1111.1111", True),
    ("pos_4111_1111_1111_1111", True),
    ("4111/1111/1111/1111", True),
    ("4111    1111    1111    1111", True),
    ("4111\t1111\t1111\t1111", True),  # pasted from a spreadsheet's cells
    ("pos\t3782\t822463\t10005", True),
    # copied from a web page or a PDF: a no-break space, a narrow one, a thin one (quoting.SPACE_CHARS)
    ("4111\u00a01111\u00a01111\u00a01111", True),
    ("4111\u202f1111\u202f1111\u202f1111", True),
    ("3782\u2009822463\u200910005", True),
    # a word processor's en dash, a web page's non-breaking hyphen, a fullwidth one (quoting.DASH_CHARS)
    ("4111\u20131111\u20131111\u20131111", True),
    ("3056\u2011930902\u20115904", True),
    ("4111\uff0d1111\uff0d1111\uff0d1111", True),
    ("2026\u201312\u201307\u20130001", False),
    ("5555555555554444".translate(FULL_WIDTH), True),  # typed on a Japanese keyboard
    ("6011 1111 1111 1117".translate(ARABIC_INDIC), True),
    ("3782.822463.10005", True),
    ("2026/12/07/0001", False),
    ("2026.12.07.000001.0001", False),
    (PAN_12, False),  # 12 digits in a row: a date and a counter
    ("1234.5678.9015", False),  # as printed, 12 digits: masked in a log line, short for an id
    ("2026-12-07-0001", False),
    ("20261207-0001", False),
    (NOT_LUHN_16, False),
    ("004b7375-t00001-n0000001", False),  # the simulator's transaction ids
    ("", False),
]


@pytest.mark.parametrize(("value", "holds"), ID_CASES)
def test_an_id_holds_a_card_number(value: str, holds: bool) -> None:
    assert holds_card_number(value) is holds


@pytest.mark.parametrize(
    "shape", ["POS1-20261207-{:04d}", "T1-20261207-{:04d}", "A77-0001-20261207-{:04d}", "20261207-{:05d}"]
)
def test_ids_of_a_date_and_counters_are_never_taken_for_card_numbers(shape: str) -> None:
    # A terminal numbering its sales so had one in ten refused: a grouped run of 13 digits or more
    # (the "1-" of "POS1-" joins the date) passing Luhn as a whole or in a span of its groups.
    assert [shape.format(n) for n in range(10_000) if holds_card_number(shape.format(n))] == []


# (case, text, the card number in it or "", held as an id): a card number joined by a separator to
# another group of digits, so the whole run fails Luhn and is 19 digits or fewer, and runs alike
# whose every span of whole groups fails Luhn too.
JOINED_CASES: list[tuple[str, str, str, bool]] = [
    ("a group before, dashes", "T1-4111-1111-1111-1111", PAN_16, True),
    ("a group after, spaces", "4111 1111 1111 1111 2", PAN_16, True),
    ("groups both sides, 3 separators", "pos 7 - 4111 - 1111 - 1111 - 1111 - 9", PAN_16, True),
    ("our 13-digit card after a group", "T1-6036-1234-5678-0", CARD_13, True),
    ("groups of 6, as no card prints", "99 4111 111111 111111", PAN_16, False),
    ("12-digit card: masked, short for an id", "T1-1234-5678-9015", PAN_12, False),
    ("no span Luhn-valid, a group before", "T1-4111-1111-1111-1112", "", False),
    ("no span Luhn-valid, a group after", "4111 1111 1111 1112 2", "", False),
    ("a date and two counters", "20261207-000001-0001", "", False),
    ("glued to a terminal's name", f"T1{PAN_16}", PAN_16, True),
    ("glued to a name of 3 digits", f"POS123{PAN_16}-0001", PAN_16, True),
    ("glued before letters", f"{PAN_16}07x", PAN_16, True),
    ("glued to a digit in a dotted id", f"pos.T1{PAN_16}.7", PAN_16, True),
    # a card number of any length from 13 to 19 digits
    ("13 digits glued to a terminal's name", f"T1{CARD_13}", CARD_13, True),
    ("14 digits glued before letters", f"{DINERS_14}12x", DINERS_14, True),
    ("15 digits glued to a name of 2 digits", f"pos12{AMEX_15}", AMEX_15, True),
    ("19 digits glued to a name of 3 digits", f"POS123{PAN_19}", PAN_19, True),
    # digits in a row with no letter glued: a timestamp or a date and counter, judged whole
    ("glued to a digit, no letters", f"1{PAN_16}", "", False),
    ("glued to a digit after a dash", f"T-1{PAN_16}", "", False),
    ("glued to 4 digits", f"T1234{CARD_13}", "", False),
]
JOINED_IDS = [case[0] for case in JOINED_CASES]


def _digits(text: str) -> str:
    return re.sub(r"[ -]", "", text)


@pytest.mark.parametrize(("text", "card_number", "held"), [c[1:] for c in JOINED_CASES], ids=JOINED_IDS)
def test_a_card_number_joined_to_other_digits_is_masked(text: str, card_number: str, held: bool) -> None:
    scrubbed = scrub_text(text)
    if card_number:
        assert card_number not in _digits(scrubbed), scrubbed
        assert REDACTED_PAN in scrubbed
    else:
        assert scrubbed == text


@pytest.mark.parametrize(("text", "card_number", "held"), [c[1:] for c in JOINED_CASES], ids=JOINED_IDS)
def test_an_id_with_a_card_number_joined_to_other_digits_is_held(
    text: str, card_number: str, held: bool
) -> None:
    assert holds_card_number(text) is held


@pytest.mark.parametrize(
    ("text", "card_number"),
    [(c[1], c[2]) for c in JOINED_CASES if c[2]],
    ids=[c[0] for c in JOINED_CASES if c[2]],
)
def test_a_quoted_value_shows_no_card_number_joined_to_other_digits(text: str, card_number: str) -> None:
    """quoted masks every run of 12 digits or more, Luhn-valid or not: the whole joined run."""
    shown = quoted(text)
    assert card_number not in _digits(shown) and REDACTED_PAN in shown, shown


def test_a_run_longer_than_a_card_number_is_masked_when_any_window_passes_luhn() -> None:
    """As judged window by window (PAN_DIGITS_MIN to PAN_DIGITS_MAX digits, each start), on drawn runs
    of "1"s (none of whose windows passes) with a digit or two changed, in ASCII and full-width digits."""
    random = Random(12)
    for _ in range(3000):
        digits = list("1" * random.randint(20, 40))
        for _ in range(random.randint(0, 2)):
            digits[random.randrange(len(digits))] = random.choice("0123456789")
        run = "".join(digits)
        masked = any(
            luhn_valid(run[start : start + length])
            for length in range(12, 20)
            for start in range(len(run) - length + 1)
        )
        for shown in (run, run.translate(FULL_WIDTH)):
            assert scrub_text(shown) == (REDACTED_PAN if masked else shown), run


def test_a_long_run_without_a_card_number_is_shown() -> None:
    """65,536 "1"s hold no Luhn-valid window of 12 to 19 digits, so nothing is masked (judged window by
    window it took 0.7 s of CPU time, by running sums about 30 ms: measured, not asserted here)."""
    text = "1" * 65_536 + "x"
    assert scrub_text(text) == text


# (case, message, args, extra, secrets that must not appear in the output line)
CARD_DATA_CASES: list[tuple[str, str, tuple[object, ...], dict[str, object], tuple[str, ...]]] = [
    ("pan in message", f"declined card {PAN_16}", (), {}, (PAN_16,)),
    ("pan in args", "declined card %s", (PAN_16,), {}, (PAN_16,)),
    ("19-digit pan", f"card {PAN_19}", (), {}, (PAN_19,)),
    ("12-digit pan", f"card {PAN_12} ok", (), {}, (PAN_12,)),
    # as printed (4-4-4), split by what the scrubber judges only in printed layouts
    ("dotted 12-digit pan", "card 1234.5678.9015 ok", (), {}, ("5678.9015",)),
    ("tab-separated 12-digit pan", "card 1234\t5678\t9015 ok", (), {}, ("5678\\t9015",)),
    ("12-digit pan split by 4 spaces", "card 1234    5678    9015", (), {}, ("5678    9015",)),
    ("our 13-digit card", "card %s", (CARD_13,), {}, (CARD_13,)),
    ("spaced pan", "card 4111 1111 1111 1111", (), {}, ("4111 1111 1111 1111",)),
    ("dashed pan", "card 4111-1111-1111-1111", (), {}, ("4111-1111-1111-1111",)),
    ("dotted pan", "card 4111.1111.1111.1111", (), {}, ("4111.1111.1111.1111",)),
    ("underscored pan", "card_4111_1111_1111_1111", (), {}, ("4111_1111_1111_1111",)),
    ("slashed pan", "card 4111/1111/1111/1111", (), {}, ("4111/1111/1111/1111",)),
    ("pan split by 4 spaces", "card 4111    1111    1111    1111", (), {}, ("1111    1111",)),
    # A JSON line escapes a tab: the secret as the line would show it.
    ("tab-separated pan", "card 4111\t1111\t1111\t1111", (), {}, ("1111\\t1111",)),
    ("tab-separated pan field", "x", (), {"note": "4111\t1111\t1111\t1111"}, ("1111\\t1111",)),
    # Copied from a web page or a PDF; the JSON line writes these spaces as they are.
    ("no-break-spaced pan", "card 4111\u00a01111\u00a01111\u00a01111", (), {}, ("1111\u00a01111",)),
    (
        "narrow-no-break-spaced pan",
        "card %s",
        ("4111\u202f1111\u202f1111\u202f1111",),
        {},
        ("1111\u202f1111",),
    ),
    ("thin-spaced pan field", "x", (), {"note": "4111\u20091111\u20091111\u20091111"}, ("1111\u20091111",)),
    # A word processor's " - ", an en dash; an em dash; a soft hyphen, which shows the groups joined.
    ("en-dashed pan", "card 4111 \u2013 1111 \u2013 1111 \u2013 1111", (), {}, ("1111 \u2013 1111",)),
    ("em-dashed pan", "card %s", ("4111\u20141111\u20141111\u20141111",), {}, ("1111\u20141111",)),
    ("soft-hyphened pan field", "x", (), {"note": "4111\u00ad1111\u00ad1111\u00ad1111"}, ("1111\u00ad1111",)),
    (
        "full-width pan",
        "card %s",
        ("5555555555554444".translate(FULL_WIDTH),),
        {},
        ("55554444".translate(FULL_WIDTH),),
    ),
    (
        "arabic-indic pan field",
        "x",
        (),
        {"note": "378282246310005".translate(ARABIC_INDIC)},
        ("246310005".translate(ARABIC_INDIC),),
    ),
    ("pan glued to digits", f"ref 2026{PAN_16}99", (), {}, (PAN_16,)),
    ("track2 in message", f"raw {TRACK2}", (), {}, (PAN_16,)),
    ("pin assignment", "employee pin=4321 refused", (), {}, ("4321",)),
    ("json-ish cvv", 'payload {"cvv": "737"}', (), {}, ('"737"',)),
    ("xml cvv", "payload <Card><cvv>737</cvv></Card>", (), {}, (">737<",)),
    ("perl pin", 'payload {"pin" => "4321"}', (), {}, ("4321",)),
    ("a dict in args", "payload %s", ({"pin": "4321", "cvv": CVV},), {}, ("4321", f"'{CVV}'")),
    ("pan field", "x", (), {"pan": PAN_16}, (PAN_16,)),
    ("card_number field", "x", (), {"card_number": CARD_13}, (CARD_13,)),
    ("pin field", "x", (), {"pin": "1234"}, ("1234",)),
    ("employee pin field", "x", (), {"employee_pin": "9876"}, ("9876",)),
    ("pin_block field", "x", (), {"pin_block": PIN_BLOCK_HEX}, (PIN_BLOCK_HEX,)),
    ("PinBlock field", "x", (), {"PinBlock": PIN_BLOCK_HEX}, (PIN_BLOCK_HEX,)),
    ("newPinBlock field", "x", (), {"newPinBlock": PIN_BLOCK_HEX}, (PIN_BLOCK_HEX,)),
    ("employeePin field", "x", (), {"employeePin": "9876"}, ("9876",)),
    ("track_2 field", "x", (), {"track_2": f";{PAN_16}=2512101?"}, ("2512101",)),
    ("track2 field", "x", (), {"track2": TRACK2}, (TRACK2, PAN_16)),
    ("cvv field", "x", (), {"cvv": CVV}, (CVV,)),
    ("pan as int", "x", (), {"reference": int(PAN_16)}, (PAN_16,)),
    # The shortest texts each scrubbing pass still looks at.
    ("bare 12-digit pan value", "x", (), {"reference": PAN_12}, (PAN_12,)),
    ("short pin assignment value", "x", (), {"note": "pin=4321"}, ("4321",)),
    ("pan nested", "x", (), {"request": {"card": {"pan": PAN_16}}}, (PAN_16,)),
    ("pan in list", "x", (), {"cards": ["ok", PAN_16]}, (PAN_16,)),
    ("pin block bytes", "x", (), {"field_52": bytes.fromhex(PIN_BLOCK_HEX)}, ("0412",)),
]


@pytest.mark.parametrize(
    ("message", "args", "extra", "secrets"),
    [case[1:] for case in CARD_DATA_CASES],
    ids=[case[0] for case in CARD_DATA_CASES],
)
def test_card_data_never_passes(
    log_stream: io.StringIO,
    message: str,
    args: tuple[object, ...],
    extra: dict[str, object],
    secrets: tuple[str, ...],
) -> None:
    logging.getLogger("txswitch.test").warning(message, *args, extra=extra)
    output = log_stream.getvalue()
    assert output.count("\n") == 1
    for secret in secrets:
        assert secret not in output
    assert REDACTED in output or REDACTED_PAN in output


@pytest.mark.parametrize(
    ("message", "args", "extra", "secrets"),
    [case[1:] for case in CARD_DATA_CASES],
    ids=[case[0] for case in CARD_DATA_CASES],
)
def test_the_formatter_alone_lets_no_card_data_pass(
    message: str, args: tuple[object, ...], extra: dict[str, object], secrets: tuple[str, ...]
) -> None:
    """Without CardDataFilter in front (someone else's handler), JsonFormatter scrubs by itself."""
    record = logging.getLogger("txswitch.test").makeRecord(
        "txswitch.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    output = JsonFormatter().format(record)
    for secret in secrets:
        assert secret not in output
    assert REDACTED in output or REDACTED_PAN in output


# (case, text with a named value, as the scrubber shows it): the value is replaced whole, a card
# number in it masked first and then the whole value, no stray "]" of the mask left.
ASSIGNMENT_CASES: list[tuple[str, str, str]] = [
    ("pin", "employee pin=4321 refused", f"employee pin={REDACTED} refused"),
    ("pan", f"pan={PAN_16}", f"pan={REDACTED}"),
    ("pan, spaced, before a comma", "pan: 4111 1111 1111 1111, ok", f"pan: {REDACTED}, ok"),
    ("pan before letters", f"pan={PAN_16}abc end", f"pan={REDACTED} end"),
    ("quoted card_number", f'{{"card_number": "{PAN_16}"}}', f'{{"card_number": "{REDACTED}"}}'),
    ("in brackets", "[pin=4321]", f"[pin={REDACTED}]"),
    ("in parentheses", "(cvv=737)", f"(cvv={REDACTED})"),
    ("brackets inside", "[[pin=4321]]", f"[[pin={REDACTED}]]"),
    # A closer with more of the value after it is part of the value: hidden whole.
    ("pin with a bracket", "pin=12]34 refused", f"pin={REDACTED} refused"),
    ("cvv with a bracket", "[cvv=7]37]", f"[cvv={REDACTED}]"),
    ("pin with brackets", "pin=12]]34", f"pin={REDACTED}"),
    ("pin_block with a brace", "pin_block=0412}34FFFFFFFFFF", f"pin_block={REDACTED}"),
    ("pin with a semicolon", "pin=12;34", f"pin={REDACTED}"),
    ("pin with a quote", "pin=12'34", f"pin={REDACTED}"),
    ("password with a comma", "password=se,cret ok", f"password={REDACTED} ok"),
    ("track2 from its start sentinel", f"track2={TRACK2} x", f"track2={REDACTED} x"),
    ("what follows without a space", "a=1,pin=4321,b=2", f"a=1,pin={REDACTED}"),
    # Quoted: up to its closing quote, spaces and closers too.
    ("quoted, a space inside", '{"pin": "12 34", "x": 1}', f'{{"pin": "{REDACTED}", "x": 1}}'),
    ("quoted, compact json", '{"pin":"4321","x":"5"}', f'{{"pin":"{REDACTED}","x":"5"}}'),
    ("quoted, an escaped quote inside", '{"pin": "12\\"34"}', f'{{"pin": "{REDACTED}"}}'),
    ("quoted, not closed", 'pin="12 34', f'pin="{REDACTED}'),
    # The name at the end of a longer one, as a field's name is judged by its words.
    ("after an underscore", "employee_pin=4321 set", f"employee_pin={REDACTED} set"),
    ("after underscores, upper case", "NEW_CARD_CVV: 737", f"NEW_CARD_CVV: {REDACTED}"),
    ("in camel case", "employeePin=4321", f"employeePin={REDACTED}"),
    # The name at the start or inside of a longer one, as is_sensitive_name takes it: its words split as a
    # field's are (after "_" or "-", in camel case, between letters and digits), not by a space.
    ("before an underscore", "pin_block_id=0412FFFF ok", f"pin_block_id={REDACTED} ok"),
    ("before a dash", "pin-block-id: 0412FFFF", f"pin-block-id: {REDACTED}"),
    ("before camel case", "pinBlockId=0412FFFF", f"pinBlockId={REDACTED}"),
    ("upper case before camel case", "PINCount=3", f"PINCount={REDACTED}"),
    ("inside, upper case", "NEW_PIN_BLOCK_ID=0412FFFF", f"NEW_PIN_BLOCK_ID={REDACTED}"),
    ("before a digit", "pin2=4321", f"pin2={REDACTED}"),
    ("a count named so, as its field is", "<x pin_count='2'/>", f"<x pin_count='{REDACTED}'/>"),
    ("an element named so", "<pin_block_id>0412</pin_block_id>", f"<pin_block_id>{REDACTED}</pin_block_id>"),
    (
        "card number in camel case",
        f'{{"virtualCardNumber": "{PAN_16}"}}',
        f'{{"virtualCardNumber": "{REDACTED}"}}',
    ),
    ("a Python dict", "{'pin': '4321', 'x': 1}", f"{{'pin': '{REDACTED}', 'x': 1}}"),
    ("single-quoted, a space inside", "pin='12 34' ok", f"pin='{REDACTED}' ok"),
    ("single-quoted, a double quote inside", "{'cvv': '7\"37'}", f"{{'cvv': '{REDACTED}'}}"),
    # Every spelling is_sensitive_name takes (SENSITIVE_NAMES): words joined, apart, in camel case.
    ("a dash inside the name", f"pin-block={PIN_BLOCK_HEX} ok", f"pin-block={REDACTED} ok"),
    ("three words in camel case", f"primaryAccountNumber={PAN_16}", f"primaryAccountNumber={REDACTED}"),
    ("pin_block and a colon", f"pin_block: {PIN_BLOCK_HEX}", f"pin_block: {REDACTED}"),
    ("joined, upper case", f"PINBLOCK={PIN_BLOCK_HEX}", f"PINBLOCK={REDACTED}"),
    ("track_2", f"track_2={TRACK2} x", f"track_2={REDACTED} x"),
    ("card-number", f"card-number={PAN_16}", f"card-number={REDACTED}"),
    ("words apart", f"PIN block: {PIN_BLOCK_HEX}", f"PIN block: {REDACTED}"),
    ("card_no", "card_no=4111x", f"card_no={REDACTED}"),
    ("a secret", "client_secret=s3cr3t", f"client_secret={REDACTED}"),
    ("a master key", "master_key=00112233", f"master_key={REDACTED}"),
    # Perl's and Ruby's "=>".
    ("perl, quoted", '{"pin" => "1234", "x" => 1}', f'{{"pin" => "{REDACTED}", "x" => 1}}'),
    ("perl, bare", "{pin => 4321, x => 1}", f"{{pin => {REDACTED}, x => 1}}"),
    ("perl, no spaces", "cvv=>'737'", f"cvv=>'{REDACTED}'"),
    # An XML element's text, up to the next tag; an attribute.
    ("xml pin", "<pin>1234</pin>", f"<pin>{REDACTED}</pin>"),
    ("xml cvv", "<req><cvv>737</cvv><x>1</x></req>", f"<req><cvv>{REDACTED}</cvv><x>1</x></req>"),
    ("xml, a namespace", "<ns:PinBlock>0412</ns:PinBlock>", f"<ns:PinBlock>{REDACTED}</ns:PinBlock>"),
    ("xml, attributes", "<pin enc=\"none\" n='1'>1234</pin>", f"<pin enc=\"none\" n='1'>{REDACTED}</pin>"),
    (
        "xml, spaces and lines",
        "<employeePin>\n 98 76\n</employeePin>",
        f"<employeePin>{REDACTED}</employeePin>",
    ),
    (
        "xml, a card number",
        f"<card_number>{PAN_16}</card_number>",
        f"<card_number>{REDACTED}</card_number>",
    ),
    ("xml, cdata", f"<track2><![CDATA[{TRACK2}<]]></track2>", f"<track2>{REDACTED}</track2>"),
    ("xml, cut before its end tag", "<cvv>73", f"<cvv>{REDACTED}"),
    ("xml, after an end tag", "<pin>1</pin> pin=2", f"<pin>{REDACTED}</pin> pin={REDACTED}"),
    ("xml attribute", "<card pin=\"1234\" cvv='737'/>", f"<card pin=\"{REDACTED}\" cvv='{REDACTED}'/>"),
    ("xml attribute, spaced", '<card PinBlock = "0412"/>', f'<card PinBlock = "{REDACTED}"/>'),
]


@pytest.mark.parametrize(
    ("text", "shown"), [c[1:] for c in ASSIGNMENT_CASES], ids=[c[0] for c in ASSIGNMENT_CASES]
)
def test_a_named_value_is_replaced_whole(text: str, shown: str) -> None:
    assert scrub_text(text) == shown


def _spellings(words: tuple[str, ...]) -> list[str]:
    camel = words[0] + "".join(word.capitalize() for word in words[1:])
    return [
        "".join(words),
        "_".join(words),
        "-".join(words),
        camel,
        camel[0].upper() + camel[1:],
        "_".join(words).upper(),
        "".join(words).upper(),
        "new_" + "_".join(words),
        "new" + camel[0].upper() + camel[1:],
        "_".join(words) + "_id",
        "-".join(words) + "-id",
        camel + "Id",
        "_".join(words).upper() + "_ID",
        "new_" + "_".join(words) + "_2",
    ]


@pytest.mark.parametrize("words", SENSITIVE_NAMES, ids="_".join)
def test_a_field_and_a_name_in_free_text_are_judged_by_one_list(words: tuple[str, ...]) -> None:
    for name in _spellings(words):
        assert is_sensitive_name(name), name
        assert scrub_text(f"{name}=x1 ok") == f"{name}={REDACTED} ok", name
        assert scrub_text(f'"{name}" => "x1"') == f'"{name}" => "{REDACTED}"', name
        assert scrub_text(f"<{name}>x1</{name}>") == f"<{name}>{REDACTED}</{name}>", name


# (case, text that must come through unchanged)
HARMLESS_CASES = [
    ("not luhn", f"reference {NOT_LUHN_16}"),
    ("short number", "amount 12345678901 minor"),
    ("timestamp-like", "batch 20261121 of 64 entries"),
    ("masked pan", "card 411111******1111"),
    ("an IPv4 address of 12 digits", "peer 192.168.100.200 closed"),
    ("a decimal", "took 1765119034.123456 s"),
    ("a dotted date and counter", "close 2026.12.07.0001"),
    ("words with pin inside", "spinning up 4 actors; company pinned"),
    ("words ending in a name", "Japan: 4 sites; JAPAN: 2; mapping: 1; SPIN: 3; max_pins=4"),
    ("xml, empty or another name", "<pin/><spin>3</spin><pins>4</pins><x pins_count='2'/>"),
    # A longer word holding a name is no name: "_" or "-", camel case or digits split a name's words.
    ("longer words", "spin_id=2 pinned_at=3 panel_id=4 company-id=5 secretary=6 passwords_ok=7 Spanish=8"),
    ("upper-case longer words", "PINNED=1 PANEL_ID=2 SPAN_ID=3 PINs=4 JAPAN_2=5"),
    ("a name and a greater-than sign", "PIN tries > 3 -> blocked"),
    # Luhn-valid across its cells, as a spaced run is masked: a tab parts a table's columns, so only
    # layouts cards print are judged across it.
    ("a table's row, tab-separated", "120\t340\t560\t780\t160"),
]


@pytest.mark.parametrize("text", [case[1] for case in HARMLESS_CASES], ids=[c[0] for c in HARMLESS_CASES])
def test_harmless_text_is_kept(text: str) -> None:
    assert scrub_text(text) == text


# (case, text a person typed, as the scrubber's typed mode shows it): every run of 12 digits or more
# is masked, Luhn-valid or not, whatever separates its groups; shorter runs stay.
TYPED_CASES: list[tuple[str, str, str]] = [
    ("spaced, mistyped", "block 4111 1111 1111 1112 lost", f"block {REDACTED_PAN} lost"),
    ("dotted", "block 4111.1111.1111.1111 lost", f"block {REDACTED_PAN} lost"),
    ("dotted, mistyped", "block 4111.1111.1111.1112 lost", f"block {REDACTED_PAN} lost"),
    ("underscored, mistyped", "cards show card_4111_1111_1111_1112", f"cards show card_{REDACTED_PAN}"),
    ("slashed, mistyped", "lost 4111/1111/1111/1112", f"lost {REDACTED_PAN}"),
    ("split by 4 spaces, mistyped", "lost 4111    1111    1111    1112", f"lost {REDACTED_PAN}"),
    ("dotted, not as cards print it", "lost 41.111111.11111112", f"lost {REDACTED_PAN}"),
    ("mixed separators", "lost 4111.1111-1111/1112", f"lost {REDACTED_PAN}"),
    ("tab-separated, mistyped", "block 4111\t1111\t1111\t1112 lost", f"block {REDACTED_PAN} lost"),
    ("a tab and spaces, mistyped", "block 4111 \t 1111\t1111\t1112", f"block {REDACTED_PAN}"),
    (
        "no-break-spaced, mistyped",
        "block 4111\u00a01111\u00a01111\u00a01112 lost",
        f"block {REDACTED_PAN} lost",
    ),
    ("thin-spaced, mistyped", "block 4111\u20091111\u20091111\u20091112", f"block {REDACTED_PAN}"),
    ("en-dashed, mistyped", "block 4111\u20131111\u20131111\u20131112 lost", f"block {REDACTED_PAN} lost"),
    ("minus signs, mistyped", "block 4111\u22121111\u22121111\u22121112", f"block {REDACTED_PAN}"),
    # lines are not joined (quoting.SEPARATOR_CHARS): rows of numbers, one a line
    ("rows of amounts, one a line", "1200\n3400\n5600\n7800", "1200\n3400\n5600\n7800"),
    ("12 digits across dots", "from 192.168.300.200", f"from {REDACTED_PAN}"),  # a group past 255
    ("an IPv4 address of 12 digits", "from 192.168.100.200:50051", "from 192.168.100.200:50051"),
    ("an IPv4 address of 12 digits, Luhn-valid", "from 127.000.000.001", f"from {REDACTED_PAN}"),
    ("11 digits across dots", "from 192.168.100.20", "from 192.168.100.20"),
    ("a dotted date and counter of 12 digits", "close 2026.12.07.0001", f"close {REDACTED_PAN}"),
    ("a dotted date", "close 2026.12.07 at 10.30", "close 2026.12.07 at 10.30"),
    # SEPARATORS_BETWEEN_DIGITS_MAX: 4 separators join groups (above), 5 do not
    ("groups 5 separators apart", "lost 4111.....1111.....1111", "lost 4111.....1111.....1111"),
    ("groups 5 spaces apart", "lost 4111     1111     1111     1112", "lost 4111     1111     1111     1112"),
    (
        "a table's amounts 5 spaces apart",
        "1200.00     3400.00     5600.00",
        "1200.00     3400.00     5600.00",
    ),
    ("a table's amounts 4 spaces apart", "1200.00    3400.00    5600.00", REDACTED_PAN),
]


@pytest.mark.parametrize(("text", "shown"), [c[1:] for c in TYPED_CASES], ids=[c[0] for c in TYPED_CASES])
def test_typed_text_shows_no_run_of_12_digits_whatever_separates_them(text: str, shown: str) -> None:
    assert scrub_text(text, typed=True) == shown


def test_exception_text_is_scrubbed(log_stream: io.StringIO) -> None:
    try:
        raise ValueError(f"bad card {PAN_16}")
    except ValueError:
        logging.getLogger("txswitch.test").exception("lookup failed")
    (line,) = lines(log_stream)
    assert PAN_16 not in log_stream.getvalue()
    assert "ValueError" in str(line["exception"])


def _cut_marker(cut: int) -> str:
    return f" [{cut} more characters not logged]"


def test_a_huge_message_is_cut_before_it_is_scrubbed(log_stream: io.StringIO) -> None:
    """A client can make the switch log what it sent: 100 KB of digits took 1.1 s to scrub whole."""
    sent = "refused: " + "1" * 100_000
    logging.getLogger("txswitch.test").warning("%s", sent)
    (line,) = lines(log_stream)
    cut = len(sent) - MESSAGE_CHARS_MAX
    assert line["message"] == f"refused: {REDACTED_PAN}{_cut_marker(cut)}"


def test_a_huge_exception_text_is_cut_and_its_head_kept(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("x" * 50_000 + f" card {PAN_16}")
    except ValueError:
        logging.getLogger("txswitch.test").exception("lookup failed")
    (line,) = lines(log_stream)
    exception = str(line["exception"])
    kept, marker = exception.rsplit(" [", 1)
    assert kept.startswith("Traceback (most recent call last):") and len(kept) == MESSAGE_CHARS_MAX
    assert marker.endswith(" more characters not logged]") and PAN_16 not in exception


def test_the_formatter_alone_cuts_a_huge_message() -> None:
    record = logging.getLogger("txswitch.test").makeRecord(
        "txswitch.test", logging.WARNING, __file__, 1, "%s", ("y" * 20_000,), None
    )
    message = json.loads(JsonFormatter().format(record))["message"]
    assert message == "y" * MESSAGE_CHARS_MAX + _cut_marker(20_000 - MESSAGE_CHARS_MAX)


# Card numbers the scrubber masks whole, so no digit of them shows (as the whole text, the last two
# glued to letters).
CUT_CARD_NUMBERS = [
    PAN_16,
    PAN_19,
    CARD_13,
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111.1111.1111.1111",
    "3782 822463 10005",
    "5555555555554444".translate(FULL_WIDTH),
    f"T1{PAN_16}",
    f"{PAN_16}07x",
]


@pytest.mark.parametrize("card_number", CUT_CARD_NUMBERS)
def test_a_card_number_across_the_cut_shows_no_digit_at_any_offset(card_number: str) -> None:
    """The kept part is scrubbed as a whole string, the digits ending it masked whole: a card number
    the cut goes through, or one glued to letters past the cut, shows none of its digits."""
    assert re.search(r"\d", scrub_text(f"a {card_number} b")) is None
    for offset in range(-3, len(card_number) + 3):  # characters of the card number kept
        text = "," * (MESSAGE_CHARS_MAX - offset - 1) + " " + card_number + " b" + "," * 100
        kept, marker = scrub_message(text).rsplit(" [", 1)
        assert re.search(r"\d", kept) is None, (offset, kept[-40:])
        assert marker == _cut_marker(len(text) - MESSAGE_CHARS_MAX)[2:]


def test_transaction_line_has_the_fields(log_stream: io.StringIO) -> None:
    log_transaction(
        terminal_id="T-0007",
        transaction_id="tx-42",
        transaction_type="redeem",
        response_code="00",
        latency_ms=3.14159,
        rpc="Redeem",
        name="collides with LogRecord.name",
    )
    (line,) = lines(log_stream)
    assert line["level"] == "info"
    assert line["logger"] == TRANSACTION_LOGGER_NAME
    assert line["event"] == "transaction"
    assert line["terminal_id"] == "T-0007"
    assert line["transaction_id"] == "tx-42"
    assert line["type"] == "redeem"
    assert line["response_code"] == "00"
    assert line["latency_ms"] == 3.142
    assert line["rpc"] == "Redeem"
    assert line["context_name"] == "collides with LogRecord.name"
    assert str(line["ts"]).endswith("Z")


def test_the_outcome_line_masks_a_card_number_in_its_ids_and_keeps_its_fields(
    log_stream: io.StringIO,
) -> None:
    # log_outcome marks its record scrubbed, so CardDataFilter passes it as it is: it must scrub
    # its ids itself. A card number glued to other digit groups passes the id check.
    outcome = Outcome(
        f"T1-{PAN_16[:4]}-{PAN_16[4:8]}-{PAN_16[8:12]}-{PAN_16[12:]}",
        TransactionType.redemption,
        ResponseCode.approved,
    )
    log_outcome(
        logging.getLogger("protocols.terminal_service"), f"shop{PAN_16}", outcome, time.perf_counter()
    )
    (line,) = lines(log_stream)
    text = json.dumps(line)
    assert PAN_16 not in re.sub(r"\D", "", text)
    assert line["transaction_id"] != outcome.transaction_id
    assert line["terminal_id"] != f"shop{PAN_16}"
    assert (line["message"], line["type"], line["response_code"]) == ("transaction", "redemption", "00")
    assert isinstance(line["latency_ms"], float)
    assert not any(key.startswith("_") for key in line)


def test_transaction_line_refuses_card_data_in_context(log_stream: io.StringIO) -> None:
    log_transaction(
        terminal_id="T-1",
        transaction_id="tx-1",
        transaction_type="payment",
        response_code="05",
        latency_ms=1.0,
        pan=PAN_16,
        pin_block=PIN_BLOCK_HEX,
    )
    (line,) = lines(log_stream)
    assert line["pan"] == REDACTED
    assert line["pin_block"] == REDACTED


def test_level_is_respected(log_stream: io.StringIO) -> None:
    configure_logging(logging.WARNING, log_stream)
    log_transaction(
        terminal_id="T-1",
        transaction_id="tx-1",
        transaction_type="redeem",
        response_code="00",
        latency_ms=1.0,
    )
    assert log_stream.getvalue() == ""


def test_configure_twice_installs_one_handler(log_stream: io.StringIO) -> None:
    configure_logging(logging.INFO, log_stream)
    logging.getLogger("txswitch.test").info("once")
    assert len(lines(log_stream)) == 1


def test_a_new_id_never_passes_for_a_card_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """uuid4 can start with 16 decimal digits (rarely); such an id would be redacted as a PAN."""
    all_digits = uuid.UUID("63608994-5069-4126-8234-123456789012")  # hex starts 6360899450694126
    assert scrub_text(f"trm_{all_digits.hex[:16]}") == f"trm_{REDACTED_PAN}"  # the trouble
    # Drawn again, and again for a second one alike in its first 16 hex digits; then one with a letter.
    # (A random third, redrawn about 1 time in 100, ran the draws out: the test failed so.)
    drawn = iter(
        [
            all_digits,
            uuid.UUID("63608994-5069-4126-8234-1234567890ab"),
            uuid.UUID("6360899a-5069-4126-8234-123456789012"),
        ]
    )
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    terminal_id = admin.new_id("trm")
    assert terminal_id == "trm_6360899a50694126"
    assert scrub_text(f"terminal {terminal_id} deactivated") == f"terminal {terminal_id} deactivated"


# (a record's created time, the line's "ts"): to the millisecond in UTC, the microseconds rounded
# half to even first as datetime.fromtimestamp does, so .9999996 is the next second
TIMESTAMP_CASES: list[tuple[float, str]] = [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1796670000.0, "2026-12-07T19:00:00.000Z"),
    (1796670000.0004999, "2026-12-07T19:00:00.000Z"),
    (1796670000.001, "2026-12-07T19:00:00.001Z"),
    (1796670000.5, "2026-12-07T19:00:00.500Z"),
    (1796670000.9989, "2026-12-07T19:00:00.998Z"),
    (1796670000.9999, "2026-12-07T19:00:00.999Z"),
    (1796670000.9999996, "2026-12-07T19:00:01.000Z"),
    (1796670059.9999996, "2026-12-07T19:01:00.000Z"),
    (1796687999.9999996, "2026-12-08T00:00:00.000Z"),
    (1796670001.25, "2026-12-07T19:00:01.250Z"),
    (1796670000.75, "2026-12-07T19:00:00.750Z"),  # a second before the one logged last
    (951782400.123, "2000-02-29T00:00:00.123Z"),
]


@pytest.mark.parametrize(("created_s", "shown"), TIMESTAMP_CASES)
def test_the_line_time(created_s: float, shown: str) -> None:
    record = logging.getLogger("txswitch.test").makeRecord(
        "txswitch.test", logging.INFO, __file__, 1, "tick", (), None
    )
    record.created = created_s
    assert json.loads(JsonFormatter().format(record))["ts"] == shown


def test_the_line_time_is_the_datetime_one_at_every_reading() -> None:
    """Readings a third of a millisecond apart across seconds, forward and back."""
    formatter = JsonFormatter()
    record = logging.getLogger("txswitch.test").makeRecord(
        "txswitch.test", logging.INFO, __file__, 1, "tick", (), None
    )
    readings_s = [1796670000.0 + step / 3000 for step in range(-4500, 4500)]
    for created_s in readings_s + readings_s[::-7]:
        record.created = created_s
        expected = dt.datetime.fromtimestamp(created_s, dt.UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["ts"] == expected.replace("+00:00", "Z"), created_s
