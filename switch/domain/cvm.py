"""Cardholder verification rules: which payments need an online PIN (a pure function, no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from switch.domain.money import Money
from switch.domain.payments import EntryMode

CONTACTLESS_NO_PIN_LIMITS_MINOR_DEFAULT: Final[Mapping[str, int]] = {"EUR": 5_000}


class Cvm(enum.Enum):
    online_pin = "online_pin"
    no_cvm = "no_cvm"


@dataclass(frozen=True, slots=True)
class CvmPolicy:
    # Contactless up to and including this amount needs no PIN; a currency without a limit always does.
    contactless_no_pin_limits_minor: Mapping[str, int] = field(
        default_factory=lambda: dict(CONTACTLESS_NO_PIN_LIMITS_MINOR_DEFAULT)
    )


def required_cvm(entry_mode: EntryMode, amount: Money, policy: CvmPolicy) -> Cvm:
    """Chip always needs a PIN; contactless above the limit does; otherwise none is needed."""
    if entry_mode is EntryMode.chip:
        return Cvm.online_pin
    if entry_mode is EntryMode.contactless:
        limit_minor = policy.contactless_no_pin_limits_minor.get(amount.currency)
        if limit_minor is None or amount.amount_minor > limit_minor:
            return Cvm.online_pin
    return Cvm.no_cvm


def missing_cvm(entry_mode: EntryMode, amount: Money, has_pin: bool, policy: CvmPolicy) -> str | None:
    """Why the payment must be declined for want of a PIN, or None when the CVM is satisfied."""
    if has_pin or required_cvm(entry_mode, amount, policy) is Cvm.no_cvm:
        return None
    if entry_mode is EntryMode.chip:
        return "chip payments need an online PIN"
    limit_minor = policy.contactless_no_pin_limits_minor.get(amount.currency)
    if limit_minor is None:
        return f"contactless in {amount.currency} needs an online PIN"
    return f"contactless above {Money(limit_minor, amount.currency).format()} needs an online PIN"
