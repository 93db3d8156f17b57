"""Closed-loop card PIN rules: a wrong PIN counts, three block it, a right one clears the count."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from switch.domain.response_codes import ResponseCode

CARD_PIN_LENGTH_MIN = 4
CARD_PIN_LENGTH_MAX = 12


@dataclass(frozen=True, slots=True)
class PinProof:
    """What the security module made of an entered PIN: its verification value for this card.

    Empty when the PIN block did not decode (wrong key, corrupted): that counts as a wrong PIN.
    """

    pvv: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PinVerdict:
    code: ResponseCode  # approved: go on with the transaction
    counts_wrong: bool = False  # one more wrong try to store before answering
    clears_tries: bool = False  # right PIN after wrong ones: store the reset
    detail: str = ""


def check_card_pin(stored_pvv: str, failed_tries: int, tries_max: int, proof: PinProof | None) -> PinVerdict:
    """The verdict on a redemption of a card that has a PIN (stored_pvv non-empty)."""
    assert stored_pvv, "only cards with a PIN are checked"
    if failed_tries >= tries_max:
        return PinVerdict(ResponseCode.pin_tries_exceeded, detail="card PIN blocked")
    if proof is None:
        # Also 55 on the wire, but never named (nor counted) as a wrong PIN.
        return PinVerdict(ResponseCode.pin_required, detail="this card needs its PIN")
    if proof.pvv and hmac.compare_digest(proof.pvv.encode(), stored_pvv.encode()):
        return PinVerdict(ResponseCode.approved, clears_tries=failed_tries > 0)
    if failed_tries + 1 >= tries_max:
        return PinVerdict(ResponseCode.pin_tries_exceeded, counts_wrong=True, detail="card PIN now blocked")
    return PinVerdict(ResponseCode.incorrect_pin, counts_wrong=True)


def card_pin_problem(pin: str) -> str | None:
    """Why this is not an acceptable card PIN, or None. Never echoes the PIN."""
    if not pin.isascii() or not pin.isdigit():
        return "pin must be digits only"
    if not CARD_PIN_LENGTH_MIN <= len(pin) <= CARD_PIN_LENGTH_MAX:
        return f"pin must have {CARD_PIN_LENGTH_MIN} to {CARD_PIN_LENGTH_MAX} digits"
    return None
