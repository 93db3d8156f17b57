"""TXSWITCH_ISO_INBOUND_ACQUIRERS read without the switch (`read_acquirers`): `txswitch serve` refuses a
malformed one before it makes anything, so every fault the zone key's import would find is found here."""

from __future__ import annotations

import pytest

from protocols.inbound_acquirers import AcquirerConfigError, read_acquirers
from protocols.iso_inbound import parse_acquirers
from switch.security.keys import KeyAlgorithm, WrappedKey

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


@pytest.mark.parametrize(
    "acquirers",
    [
        f"4711:shop@example.com:{KEY_16},4711:other@example.com:{KEY_16[::-1]}",
        f"4711:shop@example.com:{KEY_16},0815:x@example.com:{KEY_16},4711:shop@example.com:{KEY_16}:tdes",
    ],
)
def test_an_acquirer_id_given_twice_is_refused_by_its_id(acquirers: str) -> None:
    """The later entry replaced the earlier one in `parse_acquirers`' dict: the acquirer's PIN blocks were
    then decrypted under the other key, and its redemptions paid to the other merchant, without a word."""
    with pytest.raises(AcquirerConfigError, match=r"^inbound acquirer 4711: given twice$") as refused:
        read_acquirers(acquirers)
    assert KEY_16 not in str(refused.value) and KEY_16[::-1] not in str(refused.value)


def test_distinct_acquirer_ids_are_all_read() -> None:
    entries = read_acquirers(f"4711:shop@example.com:{KEY_16},04711:other@example.com:{KEY_16}:tdes")
    assert [entry.acquirer_id for entry in entries] == ["4711", "04711"]


def test_the_listener_refuses_an_acquirer_given_twice_before_importing_a_key() -> None:
    """`parse_acquirers` (the listener's own reading) kept the later entry in its dict, keyed by id."""
    imported: list[str] = []

    def import_key(clear_key: bytes, key_id: str, algorithm: KeyAlgorithm) -> WrappedKey:
        imported.append(key_id)
        raise AssertionError("no key is imported from a setting that is refused")

    twice = f"4711:shop@example.com:{KEY_16},4711:other@example.com:{KEY_16}"
    with pytest.raises(AcquirerConfigError, match=r"^inbound acquirer 4711: given twice$"):
        parse_acquirers(twice, import_key)
    assert imported == []
