"""TXSWITCH_ISO_INBOUND_ACQUIRERS read without the switch (`read_acquirers`): `txswitch serve` refuses a
malformed one before it makes anything, so every fault the zone key's import would find is found here."""

from __future__ import annotations

import pytest

from protocols.inbound_acquirers import AcquirerConfigError, read_acquirers
from switch.security.keys import KeyAlgorithm

KEY_16 = bytes(range(16)).hex()


@pytest.mark.parametrize(
    "acquirers",
    [
        "4711:shop@example.com:0011223344556677",  # 8 bytes: a single-length DES key
        "4711:shop@example.com:0011223344556677:tdes",
        f"4711:shop@example.com:{KEY_16}00",  # 17 bytes
        f"4711:shop@example.com:{KEY_16}{KEY_16[:16]}:tdes",  # 24: triple length, which wrap_key refuses
        "4711:shop@example.com:",  # no key at all
    ],
)
def test_a_zone_key_of_the_wrong_length_is_refused_as_the_setting_is_read(acquirers: str) -> None:
    """It passed the reading and failed only in SwitchServer.start (KeyIntegrityError from wrap_key):
    `txswitch serve` exited 1 with a traceback, after it had made its data dir, database and journal."""
    with pytest.raises(AcquirerConfigError, match="4711: zone key or algorithm malformed") as refused:
        read_acquirers(acquirers)
    assert KEY_16 not in str(refused.value) and "0011223344556677" not in str(refused.value)


@pytest.mark.parametrize("algorithm", ["", ":aes128", ":tdes"])
def test_a_zone_key_of_its_algorithms_length_is_read(algorithm: str) -> None:
    (entry,) = read_acquirers(f"4711:shop@example.com:{KEY_16}{algorithm}")
    assert entry.clear_key == bytes(range(16))
    assert entry.algorithm is KeyAlgorithm(algorithm[1:] or "aes128")
