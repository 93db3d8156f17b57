"""Build the ISO 8583 messages the gateway sends, from gateway records and SAF entries, and read
what an acknowledgement (0430) says of the advice it answers."""

from __future__ import annotations

from typing import Final

from actors.acquirer_types import AuthorizationRequest
from protocols.iso8583 import IsoMessage, MessageFormatError, OriginalDataElements, format_amount, mti
from switch.domain.money import CURRENCY_NUMERIC
from switch.store.saf import AdviceAnswer, SafEntry

POS_CONDITION_NORMAL: Final = "00"


def authorization_message(
    request: AuthorizationRequest, stan: str, transmission: str, field52_hex: str | None
) -> IsoMessage:
    card = request.card
    message: IsoMessage = {
        "t": request.message_class.value,
        "2": card.pan,
        "3": request.processing_code,
        "4": format_amount(request.amount.amount_minor),
        "7": transmission,
        "11": stan,
        "14": card.expiry_yymm,
        "22": card.entry_mode.value,
        "25": POS_CONDITION_NORMAL,
        "41": request.terminal_id,
        "42": request.merchant_id,
        "49": CURRENCY_NUMERIC[request.amount.currency],
    }
    if card.track2:
        message["35"] = card.track2
    if card.card_sequence_number:
        message["23"] = card.card_sequence_number
    if card.emv_tlv_hex:
        message["55"] = card.emv_tlv_hex
    if field52_hex is not None:
        message["52"] = field52_hex
    return message


def reversal_message(entry: SafEntry, transmission: str) -> IsoMessage:
    """0420 on the first send, 0421 on every repeat; field 11 stays the advice's own STAN, and field
    37 its own reference (none on an advice stored before references were given)."""
    original = OriginalDataElements(
        mti=entry.original_mti,
        stan=entry.original_stan,
        transmission_datetime=entry.original_transmission,
    )
    message: IsoMessage = {
        "t": mti.REVERSAL_ADVICE_REPEAT if entry.is_repeat else mti.REVERSAL_ADVICE,
        "3": entry.processing_code,
        "4": format_amount(entry.amount_minor),
        "7": transmission,
        "11": entry.reversal_stan,
        "41": entry.terminal_id,
        "42": entry.merchant_id,
        "49": entry.currency_numeric,
        "90": original.encode(),
    }
    if entry.retrieval_reference:
        message["37"] = entry.retrieval_reference
    return message


def advice_answer(acquirer: str, response: IsoMessage) -> AdviceAnswer | None:
    """The advice a 0430 answers, as its echoed fields name it; None without a readable field 90
    (the 0430 then names the advice by its STAN only, which a later advice may have taken)."""
    try:
        original = OriginalDataElements.decode(response.get("90", ""))
    except MessageFormatError:
        return None
    amount = response.get("4", "")
    return AdviceAnswer(
        acquirer=acquirer,
        terminal_id=response.get("41", ""),
        reversal_stan=response["11"],
        original_mti=original.mti,
        original_stan=original.stan,
        original_transmission=original.transmission_datetime,
        amount_minor=int(amount) if amount.isdigit() else None,
    )


def answer_disagreement(response: IsoMessage, entry: SafEntry) -> str | None:
    """The first field on which a 0430 disagrees with the advice, or None when it may answer it.
    It must name the advice's STAN (11) and terminal (41); when echoed, its reference (37), amount (4)
    and original (90) too. A 0430 that carries a field 37 the advice never sent names another."""
    if response.get("11") != entry.reversal_stan:
        return "11"
    if response.get("41") != entry.terminal_id:
        return "41"
    if "37" in response and response["37"] != (entry.retrieval_reference or ""):
        return "37"
    if "4" in response and (not response["4"].isdigit() or int(response["4"]) != entry.amount_minor):
        return "4"
    if "90" in response and not _names_original(response, entry):
        return "90"
    return None


def _names_original(response: IsoMessage, entry: SafEntry) -> bool:
    answer = advice_answer(entry.acquirer, response)
    if answer is None:
        return False
    named = (answer.original_mti, answer.original_stan, answer.original_transmission)
    return named == (entry.original_mti, entry.original_stan, entry.original_transmission)


def network_message(code: str, stan: str, transmission: str) -> IsoMessage:
    return {"t": mti.NETWORK_REQUEST, "7": transmission, "11": stan, "70": code}
