"""The one ResponseCode enum: members named as rules, mapped to ISO 8583 codes in one place."""

from __future__ import annotations

import enum


class ResponseCode(enum.Enum):
    # value = (ISO 8583 field 39 code, human message)
    approved = ("00", "Approved")
    approved_partial = ("10", "Approved for a partial amount")
    invalid_transaction = ("12", "Invalid transaction")
    invalid_amount = ("13", "Invalid amount")
    unknown_card = ("14", "Unknown card number")
    original_not_found = ("25", "Original transaction not found")
    format_error = ("30", "Format error")
    card_lost = ("41", "Card reported lost")
    exceeds_balance = ("51", "Insufficient balance")
    card_expired = ("54", "Card expired")
    incorrect_pin = ("55", "Incorrect PIN")
    not_permitted_to_cardholder = ("57", "Transaction not permitted on this card")
    merchant_not_in_programme = ("58", "Merchant does not accept this card programme")
    exceeds_amount_limit = ("61", "Amount exceeds the card limit")
    refund_exceeds_takings = ("61", "Refund exceeds the card takings of this period")
    card_blocked = ("62", "Card blocked")
    acquirer_timeout = ("68", "Response received too late")
    pin_tries_exceeded = ("75", "PIN tries exceeded")
    issuer_unavailable = ("91", "Issuer or switch inoperative")
    duplicate_transmission = ("94", "Transaction id already used with different content")
    system_error = ("96", "System malfunction")
    customer_cancelled = ("17", "Customer cancellation")
    currency_not_accepted = ("12", "Currency not accepted for this card")
    already_reversed = ("12", "Transaction already reversed or cancelled")
    exceeds_original_amount = ("13", "Amount exceeds what the original transaction allows")
    amount_not_a_multiple_of_load_step = ("13", "Load is not a whole number of the programme's steps")
    employee_locked = ("75", "Employee locked after too many wrong PINs")
    do_not_honour = ("05", "Do not honour")
    pin_required = ("55", "PIN required")  # the CVM rules want an online PIN and none was entered

    @property
    def iso_code(self) -> str:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]

    @property
    def approves(self) -> bool:
        return self in (ResponseCode.approved, ResponseCode.approved_partial)


def from_iso_code(code: str) -> ResponseCode:
    """The first (canonical) member for an ISO 8583 code; unknown codes are do_not_honour."""
    for member in ResponseCode:
        if member.iso_code == code:
            return member
    return ResponseCode.do_not_honour
