"""Table-driven tests of ISO 9564 formats 0 and 4, PIN translation, key wrapping, PVVs and PAN tokens."""

from __future__ import annotations

import pytest

from switch.security import (
    KeyAlgorithm,
    KeyIntegrityError,
    KeyUsage,
    MasterKey,
    PinBlockError,
    PinBlockFormat,
    PinCheck,
    SecurityModule,
    WrappedKey,
    _pin_block,
    luhn_valid,
    mask_pan,
)
from switch.security.card_data import tokenize_pan
from switch.security.pinpad import encipher_pin_block, unwrap_delivered_pin_key

TDES_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
AES_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PAN = "4111111111111111"


@pytest.fixture
def module() -> SecurityModule:
    return SecurityModule(MasterKey(bytes(range(32))))


# --- field encodings and known vectors -----------------------------------------------------

FIELD_VECTORS = [
    # (name, computed, expected hex); format 4 rows from ANSI X9.24-3:2017 supplement / ISO 9564-1
    ("f0 pin 1234", _pin_block.format0_pin_field("1234"), "041234FFFFFFFFFF"),
    ("f0 pin 12 digits", _pin_block.format0_pin_field("123456789012"), "0C123456789012FF"),
    ("f0 pan 17 digits", _pin_block.format0_pan_field("43219876543210987"), "0000987654321098"),
    ("f0 pan 12 digits", _pin_block.format0_pan_field("123456789012"), "0000012345678901"),
    ("f4 pin 1234", _pin_block.format4_pin_field("1234", bytes(8))[:8], "441234AAAAAAAAAA"),
    ("f4 pin 12345", _pin_block.format4_pin_field("12345", bytes(8))[:8], "4512345AAAAAAAAA"),
    ("f4 pan 16", _pin_block.format4_pan_field(PAN), "44111111111111111000000000000000"),
    ("f4 pan 15", _pin_block.format4_pan_field("411111111111111"), "34111111111111110000000000000000"),
    ("f4 pan 9", _pin_block.format4_pan_field("123456789"), "00001234567890000000000000000000"),
]


@pytest.mark.parametrize(("name", "computed", "expected"), FIELD_VECTORS, ids=[v[0] for v in FIELD_VECTORS])
def test_field_vectors(name: str, computed: bytes, expected: str) -> None:
    assert computed.hex().upper() == expected, name


def test_format0_clear_block_vector() -> None:
    clear = _pin_block._xor(
        _pin_block.format0_pin_field("1234"), _pin_block.format0_pan_field("43219876543210987")
    )
    assert clear.hex().upper() == "0412AC89ABCDEF67"


# Enciphered vectors computed independently with `openssl enc -des-ede / -aes-128-ecb -nopad`.
def test_format0_enciphered_vector() -> None:
    block = _pin_block.encipher_format0("1234", "43219876543210987", TDES_KEY)
    assert block.hex().upper() == "C967C8198151A458"
    assert _pin_block.decipher_format0(block, "43219876543210987", TDES_KEY) == "1234"


def test_format4_enciphered_vector() -> None:
    block = _pin_block.encipher_format4("1234", PAN, AES_KEY, random_fill=b"\x11" * 8)
    assert block.hex().upper() == "F86DD3FDFB6694EE77C4E31B9ADD6FBB"
    assert _pin_block.decipher_format4(block, PAN, AES_KEY) == "1234"


def test_format4_random_fill_makes_blocks_differ() -> None:
    first = _pin_block.encipher_format4("1234", PAN, AES_KEY)
    second = _pin_block.encipher_format4("1234", PAN, AES_KEY)
    assert first != second
    assert _pin_block.decipher_format4(second, PAN, AES_KEY) == "1234"


@pytest.mark.parametrize("pin", ["0000", "1234", "98765", "123456789012"])
@pytest.mark.parametrize(
    ("block_format", "key"), [(PinBlockFormat.ISO_0, TDES_KEY), (PinBlockFormat.ISO_4, AES_KEY)]
)
def test_round_trip(pin: str, block_format: PinBlockFormat, key: bytes) -> None:
    block = _pin_block.encipher(pin, PAN, key, block_format)
    assert _pin_block.decipher(block, PAN, key, block_format) == pin


BAD_ENCIPHER = [
    ("pin too short", "123", PAN, PinBlockFormat.ISO_4, AES_KEY),
    ("pin too long", "1234567890123", PAN, PinBlockFormat.ISO_4, AES_KEY),
    ("pin not digits", "12a4", PAN, PinBlockFormat.ISO_0, TDES_KEY),
    ("pin unicode digits", "١٢٣٤", PAN, PinBlockFormat.ISO_0, TDES_KEY),
    ("pan not digits", "1234", "4111x", PinBlockFormat.ISO_0, TDES_KEY),
    ("pan too long", "1234", "4" * 20, PinBlockFormat.ISO_4, AES_KEY),
    ("AES key for format 0", "1234", PAN, PinBlockFormat.ISO_0, bytes(8)),
    ("short key for format 4", "1234", PAN, PinBlockFormat.ISO_4, bytes(8)),
]


@pytest.mark.parametrize(
    ("name", "pin", "pan", "block_format", "key"), BAD_ENCIPHER, ids=[b[0] for b in BAD_ENCIPHER]
)
def test_encipher_refuses(name: str, pin: str, pan: str, block_format: PinBlockFormat, key: bytes) -> None:
    with pytest.raises(PinBlockError) as raised:
        _pin_block.encipher(pin, pan, key, block_format)
    assert pin not in str(raised.value) or len(pin) < 4


def _bad_blocks() -> list[tuple[str, bytes, str, bytes, PinBlockFormat]]:
    f0 = _pin_block.encipher_format0("1234", PAN, TDES_KEY)
    f4 = _pin_block.encipher_format4("1234", PAN, AES_KEY)
    return [
        ("f0 wrong key", f0, PAN, bytes(reversed(TDES_KEY)), PinBlockFormat.ISO_0),
        ("f0 wrong length", f0[:7], PAN, TDES_KEY, PinBlockFormat.ISO_0),
        ("f0 flipped bit", bytes([f0[0] ^ 1]) + f0[1:], PAN, TDES_KEY, PinBlockFormat.ISO_0),
        ("f4 wrong key", f4, PAN, bytes(16), PinBlockFormat.ISO_4),
        ("f4 wrong PAN", f4, "5500000000000004", AES_KEY, PinBlockFormat.ISO_4),
        ("f4 wrong length", f4 + b"\x00", PAN, AES_KEY, PinBlockFormat.ISO_4),
        ("f4 flipped bit", f4[:-1] + bytes([f4[-1] ^ 1]), PAN, AES_KEY, PinBlockFormat.ISO_4),
    ]


@pytest.mark.parametrize(
    ("name", "block", "pan", "key", "block_format"), _bad_blocks(), ids=[b[0] for b in _bad_blocks()]
)
def test_decipher_refuses_bad_blocks(
    name: str, block: bytes, pan: str, key: bytes, block_format: PinBlockFormat
) -> None:
    with pytest.raises(PinBlockError) as raised:
        _pin_block.decipher(block, pan, key, block_format)
    assert "1234" not in str(raised.value)


# --- keys ------------------------------------------------------------------------------------


def test_wrapped_key_round_trips_through_text(module: SecurityModule) -> None:
    key = module.import_key(AES_KEY, "zone-a", KeyUsage.zone_pin, KeyAlgorithm.aes128)
    text = key.to_text()
    assert AES_KEY.hex() not in text.lower()
    assert WrappedKey.from_text(text) == key
    assert len(key.check_value) == 6


def test_tdes_check_value_vector(module: SecurityModule) -> None:
    # KCV of the classic 0123456789ABCDEFFEDCBA9876543210 test key is 08D7B4.
    key = module.import_key(TDES_KEY, "legacy", KeyUsage.zone_pin, KeyAlgorithm.tdes)
    assert key.check_value == "08D7B4"


def test_wrapped_key_cannot_change_role(module: SecurityModule) -> None:
    zone = module.import_key(AES_KEY, "zone-a", KeyUsage.zone_pin, KeyAlgorithm.aes128)
    relabelled = WrappedKey(zone.key_id, KeyUsage.terminal_pin, zone.algorithm, zone.sealed, zone.check_value)
    f4 = encipher_pin_block("1234", PAN, AES_KEY, PinBlockFormat.ISO_4)
    with pytest.raises(KeyIntegrityError):
        module.translate_pin_block(f4, PAN, relabelled, zone)


def test_wrong_master_key_refused(module: SecurityModule) -> None:
    key = module.import_key(AES_KEY, "zone-a", KeyUsage.zone_pin, KeyAlgorithm.aes128)
    other = SecurityModule(MasterKey(bytes(32)))
    f4 = encipher_pin_block("1234", PAN, AES_KEY, PinBlockFormat.ISO_4)
    with pytest.raises(KeyIntegrityError):
        other.translate_pin_block(f4, PAN, key, key)


def test_card_hash_key_round_trips_and_opens_only_as_a_pan_hash_key(module: SecurityModule) -> None:
    clear_key = bytes(range(100, 132))
    key = module.import_key(clear_key, "card-hash", KeyUsage.pan_hash, KeyAlgorithm.hmac_sha256)
    assert clear_key.hex() not in key.to_text().lower()
    assert module.open_pan_hash_key(WrappedKey.from_text(key.to_text())) == clear_key
    relabelled = WrappedKey(key.key_id, KeyUsage.pin_verification, key.algorithm, key.sealed, key.check_value)
    with pytest.raises(KeyIntegrityError):
        module.open_pan_hash_key(relabelled)
    with pytest.raises(KeyIntegrityError):
        SecurityModule(MasterKey(bytes(32))).open_pan_hash_key(key)


@pytest.mark.parametrize(
    ("usage", "key_bytes"),
    [
        (KeyUsage.zone_pin, 32),  # HMAC keys never encipher PIN blocks or keys
        (KeyUsage.terminal_pin, 32),
        (KeyUsage.terminal_transport, 32),
        (KeyUsage.pan_hash, 16),  # 32 bytes, no other length
    ],
)
def test_hmac_keys_are_refused_where_they_do_not_fit(
    module: SecurityModule, usage: KeyUsage, key_bytes: int
) -> None:
    with pytest.raises(KeyIntegrityError):
        module.import_key(bytes(key_bytes), "k", usage, KeyAlgorithm.hmac_sha256)


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32])
def test_master_key_must_be_32_hex_bytes(text: str) -> None:
    with pytest.raises(KeyIntegrityError):
        MasterKey.from_hex(text)


def test_master_key_repr_hides_key() -> None:
    assert "00" * 4 not in repr(MasterKey(bytes(32)))


def test_terminal_pin_key_delivery(module: SecurityModule) -> None:
    transport_clear = bytes(range(16, 32))
    transport = module.import_key(transport_clear, "ttk-1", KeyUsage.terminal_transport, KeyAlgorithm.aes128)
    issued = module.issue_terminal_pin_key("tpk-1", transport)
    terminal_pin_key = unwrap_delivered_pin_key(transport_clear, issued.delivery)
    zone_clear = bytes(range(100, 116))
    zone = module.import_key(zone_clear, "zone-a", KeyUsage.zone_pin, KeyAlgorithm.aes128)
    block = encipher_pin_block("4321", PAN, terminal_pin_key, PinBlockFormat.ISO_4)
    translated = module.translate_pin_block(block, PAN, issued.stored, zone)
    assert _pin_block.decipher_format4(translated, PAN, zone_clear) == "4321"
    with pytest.raises(KeyIntegrityError):
        unwrap_delivered_pin_key(bytes(16), issued.delivery)


# --- translation -------------------------------------------------------------------------------

TRANSLATIONS = [
    ("aes terminal -> aes zone", KeyAlgorithm.aes128, KeyAlgorithm.aes128),
    ("aes terminal -> tdes zone", KeyAlgorithm.aes128, KeyAlgorithm.tdes),
    ("tdes terminal -> aes zone", KeyAlgorithm.tdes, KeyAlgorithm.aes128),
    ("tdes terminal -> tdes zone", KeyAlgorithm.tdes, KeyAlgorithm.tdes),
]


@pytest.mark.parametrize(
    ("name", "source_algorithm", "zone_algorithm"), TRANSLATIONS, ids=[t[0] for t in TRANSLATIONS]
)
def test_translate(
    module: SecurityModule, name: str, source_algorithm: KeyAlgorithm, zone_algorithm: KeyAlgorithm
) -> None:
    source_clear, zone_clear = bytes(range(16)), bytes(range(50, 66))
    source = module.import_key(source_clear, "tpk", KeyUsage.terminal_pin, source_algorithm)
    zone = module.import_key(zone_clear, "zpk", KeyUsage.zone_pin, zone_algorithm)
    source_format = PinBlockFormat.ISO_4 if source_algorithm is KeyAlgorithm.aes128 else PinBlockFormat.ISO_0
    zone_format = PinBlockFormat.ISO_4 if zone_algorithm is KeyAlgorithm.aes128 else PinBlockFormat.ISO_0
    block = encipher_pin_block("24680", PAN, source_clear, source_format)
    translated = module.translate_pin_block(block, PAN, source, zone)
    assert _pin_block.decipher(translated, PAN, zone_clear, zone_format) == "24680"


def test_translate_refuses_a_non_zone_target(module: SecurityModule) -> None:
    tpk = module.import_key(AES_KEY, "tpk", KeyUsage.terminal_pin, KeyAlgorithm.aes128)
    block = encipher_pin_block("1234", PAN, AES_KEY, PinBlockFormat.ISO_4)
    with pytest.raises(KeyIntegrityError):
        module.translate_pin_block(block, PAN, tpk, tpk)


def test_translate_of_garbage_raises_without_pin(module: SecurityModule) -> None:
    tpk = module.import_key(AES_KEY, "tpk", KeyUsage.terminal_pin, KeyAlgorithm.aes128)
    zone = module.import_key(bytes(16), "zpk", KeyUsage.zone_pin, KeyAlgorithm.aes128)
    with pytest.raises(PinBlockError):
        module.translate_pin_block(bytes(16), PAN, tpk, zone)


# --- PIN verification values ------------------------------------------------------------------


def test_verify_pin_table(module: SecurityModule) -> None:
    tpk = module.import_key(AES_KEY, "tpk", KeyUsage.terminal_pin, KeyAlgorithm.aes128)
    pvv_key = module.generate_key("pvv-1", KeyUsage.pin_verification, KeyAlgorithm.aes128)
    card = "6012345678901234"
    stored = module.pvv_for_issuance(pvv_key, card, "1357")
    assert "1357" not in stored and len(stored) == 64
    rows = [
        ("right PIN", encipher_pin_block("1357", card, AES_KEY, PinBlockFormat.ISO_4), PinCheck.correct),
        ("wrong PIN", encipher_pin_block("1358", card, AES_KEY, PinBlockFormat.ISO_4), PinCheck.incorrect),
        (
            "other card's block",
            encipher_pin_block("1357", PAN, AES_KEY, PinBlockFormat.ISO_4),
            PinCheck.malformed_block,
        ),
        ("garbage", bytes(16), PinCheck.malformed_block),
    ]
    for name, block, expected in rows:
        assert module.verify_pin(block, card, tpk, pvv_key, card, stored) is expected, name


def test_pvv_is_bound_to_card_and_key(module: SecurityModule) -> None:
    pvv_key = module.generate_key("pvv-1", KeyUsage.pin_verification, KeyAlgorithm.aes128)
    other_key = module.generate_key("pvv-2", KeyUsage.pin_verification, KeyAlgorithm.aes128)
    assert module.pvv_for_issuance(pvv_key, "card-a", "1234") != module.pvv_for_issuance(
        pvv_key, "card-b", "1234"
    )
    assert module.pvv_for_issuance(pvv_key, "card-a", "1234") != module.pvv_for_issuance(
        other_key, "card-a", "1234"
    )


def test_pvv_from_pin_block_matches_issuance(module: SecurityModule) -> None:
    tpk = module.import_key(TDES_KEY, "tpk", KeyUsage.terminal_pin, KeyAlgorithm.tdes)
    pvv_key = module.generate_key("pvv-1", KeyUsage.pin_verification, KeyAlgorithm.aes128)
    block = encipher_pin_block("9999", PAN, TDES_KEY, PinBlockFormat.ISO_0)
    assert module.pvv_from_pin_block(block, PAN, tpk, pvv_key, "c1") == module.pvv_for_issuance(
        pvv_key, "c1", "9999"
    )


# --- PAN -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pan", "masked"),
    [
        (PAN, "411111****1111"),
        ("4761739001010119123", "476173****9123"),
        ("371449635398431", "371449****8431"),  # 15 digits: 5 stay hidden
        # Shorter, first 6 and last 4 would show all or nearly all (a 10-digit field 2 did).
        ("5412345678", "******5678"),
        ("541234567890", "********7890"),
        ("12345678", "********"),
    ],
)
def test_mask_pan(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked


@pytest.mark.parametrize(
    ("number", "valid"),
    [(PAN, True), ("4111111111111112", False), ("79927398713", True), ("", False), ("12a4", False)],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


def test_pan_token(module: SecurityModule) -> None:
    key = module.generate_key("pan-1", KeyUsage.pan_hash, KeyAlgorithm.aes128)
    token = module.tokenize_pan(PAN, key)
    assert (token.bin6, token.last4, token.masked) == ("411111", "1111", "411111****1111")
    assert token == module.tokenize_pan(PAN, key)
    assert PAN not in repr(token)
    other = module.generate_key("pan-2", KeyUsage.pan_hash, KeyAlgorithm.aes128)
    assert module.tokenize_pan(PAN, other).pan_hash_hex != token.pan_hash_hex


@pytest.mark.parametrize("pan", ["", "41111", "4111x11111111111", "4" * 20])
def test_pan_token_refuses_non_pans(pan: str) -> None:
    with pytest.raises(ValueError) as raised:
        tokenize_pan(pan, bytes(32))
    assert pan not in str(raised.value) or not pan
