"""The inbound acquirers setting read as text (TXSWITCH_ISO_INBOUND_ACQUIRERS), without the switch:
`txswitch serve` refuses a malformed one before it opens its database or starts its journal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from switch.security.keys import KeyAlgorithm

PIN_BLOCK_BYTES: Final = {KeyAlgorithm.aes128: 16, KeyAlgorithm.tdes: 8}


class AcquirerConfigError(ValueError):
    """The configured inbound acquirers cannot be read; the message names the entry, never a key."""


@dataclass(frozen=True, slots=True)
class AcquirerEntry:
    acquirer_id: str  # field 32
    merchant_email: str
    clear_key: bytes = field(repr=False)
    algorithm: KeyAlgorithm


def read_acquirers(text: str) -> list[AcquirerEntry]:
    """`<acquirer id>:<merchant e-mail>:<zone PIN key hex>[:tdes|aes128]`, entries split by ','; the key
    of its algorithm's length (`KeyAlgorithm.key_bytes`: 16 bytes, double-length TDES or AES-128). An
    acquirer id given twice is refused: the later entry silently replaced the earlier one's key and
    merchant."""
    entries: list[AcquirerEntry] = []
    for index, entry in enumerate(part.strip() for part in text.split(",") if part.strip()):
        parts = entry.split(":")
        if len(parts) not in (3, 4) or not parts[0].isdigit() or "@" not in parts[1]:
            raise AcquirerConfigError(
                f"inbound acquirer {index + 1}: expected <digits>:<merchant e-mail>:<key hex>[:tdes|aes128]"
            )
        try:
            clear_key = bytes.fromhex(parts[2])
            algorithm = KeyAlgorithm(parts[3] if len(parts) == 4 else "aes128")
            if algorithm not in PIN_BLOCK_BYTES:
                raise ValueError(algorithm.value)
            if len(clear_key) != algorithm.key_bytes:  # else wrap_key refuses it, with the switch started
                raise ValueError(algorithm.value)
        except ValueError:
            raise AcquirerConfigError(
                f"inbound acquirer {parts[0]}: zone key or algorithm malformed"
            ) from None
        if any(earlier.acquirer_id == parts[0] for earlier in entries):
            raise AcquirerConfigError(f"inbound acquirer {parts[0]}: given twice")
        entries.append(AcquirerEntry(parts[0], parts[1], clear_key, algorithm))
    return entries
