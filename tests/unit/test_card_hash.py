"""card_hash is HMAC-SHA256 of the card number under the card hash key, as stored hashes were made:
keys shorter than, as long as and longer than SHA-256's block, and more keys than it keeps states of."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from switch.credentials import CARD_HASH_KEYS_KEPT_MAX, card_hash

# (key, card number)
CARD_HASHES: list[tuple[bytes, str]] = [
    (b"", "6001000000000006"),
    (b"k", "6001000000000006"),
    (bytes(range(32)), "6001000000000006"),  # a 32-byte key, as the switch makes
    (bytes(range(32)), "6001000000000014"),
    (bytes(range(63)), "6001000000000006"),
    (bytes(range(64)), "6001000000000006"),  # one block
    (bytes(range(65)), "6001000000000006"),  # hashed first
    (bytes(range(200)), "6001000000000006"),
    (b"\x00" * 32, "6001000000000006"),
    (b"\xff" * 64, "4111111111111111"),
    (bytes(range(32)), ""),
]


@pytest.mark.parametrize(("key", "number"), CARD_HASHES)
def test_card_hash_is_hmac_sha256(key: bytes, number: str) -> None:
    expected = hmac.new(key, number.encode(), hashlib.sha256).hexdigest()
    assert card_hash(key, number) == expected
    assert card_hash(key, number) == expected  # again, from the kept states


def test_card_hash_with_more_keys_than_kept() -> None:
    keys = [bytes([index]) * 32 for index in range(CARD_HASH_KEYS_KEPT_MAX * 2 + 1)]
    number = "6001000000000006"
    for _ in range(2):
        for key in keys:
            assert card_hash(key, number) == hmac.new(key, number.encode(), "sha256").hexdigest()
