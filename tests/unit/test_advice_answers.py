"""Which reversal advice a 0430 may answer: the pure rule the gateway asks of every 0430 it takes,
in time or late (`answer_disagreement`), one row per field a 0430 echoes."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from actors.acquirer_messages import answer_disagreement, reversal_message
from protocols.iso8583 import IsoMessage, OriginalDataElements, mti
from switch.store.saf import SafEntry

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
ADVICE = SafEntry(
    saf_id=7, acquirer="acq-a", terminal_id="TERM0001", merchant_id="MERCHANT0000001", transaction_id="t-1",
    original_mti="0200", original_stan="000001", original_transmission="1207115959", reversal_stan="000900",
    processing_code="000000", amount_minor=1_250, currency_numeric="978", reason="timeout",
    status="pending", attempts=1, created_at=NOW, last_attempt_at=NOW, acknowledged_at=None,
    retrieval_reference="000000000007",
)  # fmt: skip
ANOTHER_ORIGINAL = OriginalDataElements("0200", "000002", "1207115959").encode()


def answer_to(advice: SafEntry, **changed: str | None) -> IsoMessage:
    """The 0430 of the advice as ISO 8583:1987 asks (every field echoed), with fields changed
    (a value) or left out (None)."""
    message = reversal_message(advice, "1207120000")
    message["t"] = mti.REVERSAL_ADVICE_RESPONSE
    message["39"] = "00"
    for keyword, value in changed.items():
        number = keyword.removeprefix("f")
        if value is None:
            del message[number]
        else:
            message[number] = value
    return message


# One row per case: the 0430's fields, the field named as disagreeing (None: it may answer it).
CASES: list[tuple[str, IsoMessage, str | None]] = [
    ("every field echoed", answer_to(ADVICE), None),
    ("only field 11 and 41", answer_to(ADVICE, f4=None, f37=None, f90=None), None),
    ("no field 37", answer_to(ADVICE, f37=None), None),
    ("no field 90", answer_to(ADVICE, f90=None), None),
    ("no field 4", answer_to(ADVICE, f4=None), None),
    ("another STAN", answer_to(ADVICE, f11="000901"), "11"),
    ("another terminal", answer_to(ADVICE, f41="TERM0002"), "41"),
    ("no field 41", answer_to(ADVICE, f41=None), "41"),
    ("another advice's field 37", answer_to(ADVICE, f37="000000000006"), "37"),
    ("another amount", answer_to(ADVICE, f4="000000001251"), "4"),
    ("another amount, no field 90", answer_to(ADVICE, f4="000000001251", f90=None), "4"),
    ("an amount that is no number", answer_to(ADVICE, f4="00000000012X"), "4"),
    ("another original", answer_to(ADVICE, f90=ANOTHER_ORIGINAL), "90"),
    ("a field 90 that cannot be read", answer_to(ADVICE, f90="12"), "90"),
]


@pytest.mark.parametrize(("case", "response", "field"), CASES, ids=[row[0] for row in CASES])
def test_a_0430_answers_the_advice_only_if_every_field_it_echoes_agrees(
    case: str, response: IsoMessage, field: str | None
) -> None:
    assert answer_disagreement(response, ADVICE) == field


def test_a_0430_naming_a_field_37_answers_no_advice_sent_without_one() -> None:
    # Advices stored before field 37 was given go out without one: a 0430 with one names another.
    older = replace(ADVICE, retrieval_reference=None)
    assert "37" not in reversal_message(older, "1207120000")
    assert answer_disagreement(answer_to(older), older) is None
    assert answer_disagreement(answer_to(older, f37="000000000007"), older) == "37"
