"""The card hash key at rest: sealed under the master key, so the data directory alone does not yield
it. An audit found `card_hash.key` in clear beside the database; card numbers are stored only as
HMAC-SHA256 under it, and with the key and the database a 16-digit number is one of ~10^5
candidates (its BIN and last 4 are stored). Real switch on loopback, SQLite file."""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from switch.config import Settings
from switch.credentials import card_hash
from switch.secret_files import SecretFileError, card_hash_key, secret_file
from switch.security import KeyUsage, MasterKey, WrappedKey
from switch.server import SwitchServer
from switch.store.schema import cards
from tests.loopback_switch import switch_on_loopback

MASTER_KEY_HEX = "5a" * 32
OTHER_MASTER_KEY_HEX = "a5" * 32


def demo_card_numbers(data_dir: Path) -> list[str]:
    return [card["card_number"] for card in json.loads((data_dir / "demo_cards.json").read_text())]


def stored_card_hashes(data_dir: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'txswitch.sqlite'}")
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(cards.c.card_hash)).scalars())
    finally:
        engine.dispose()


def keys_in_clear(data_dir: Path) -> list[bytes]:
    """Every file of the data directory (not the database) that reads as a hex key."""
    found = []
    for path in data_dir.iterdir():
        if path.is_file() and not path.name.startswith("txswitch.sqlite"):
            text = path.read_bytes().strip()
            if text and len(text) % 2 == 0 and all(chr(c) in string.hexdigits for c in text):
                found.append(bytes.fromhex(text.decode()))
    return found


def yields_the_key(data_dir: Path, number: str) -> bool:
    hashes = stored_card_hashes(data_dir)
    return any(card_hash(key, number) in hashes for key in keys_in_clear(data_dir))


def test_the_data_directory_alone_does_not_yield_the_card_hash_key(tmp_path: Path) -> None:
    with switch_on_loopback(tmp_path, demo_data=True, master_key_hex=MASTER_KEY_HEX):
        pass
    assert not yields_the_key(tmp_path, demo_card_numbers(tmp_path)[0])
    path = tmp_path / "card_hash.key"
    wrapped = WrappedKey.from_text(path.read_text().strip())
    assert wrapped.usage is KeyUsage.pan_hash
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_card_hash_key_left_in_clear_is_sealed_on_start_and_its_cards_still_found(tmp_path: Path) -> None:
    # What a switch from before left: the key as hex, the cards hashed under it.
    clear_key = secrets.token_bytes(32)
    path = tmp_path / "card_hash.key"
    path.write_text(clear_key.hex())
    path.chmod(0o644)
    with switch_on_loopback(tmp_path, demo_data=True, master_key_hex=MASTER_KEY_HEX):
        pass
    numbers = demo_card_numbers(tmp_path)
    assert {card_hash(clear_key, number) for number in numbers} <= stored_card_hashes(tmp_path)
    assert clear_key.hex() not in path.read_text() and not yields_the_key(tmp_path, numbers[0])
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    with switch_on_loopback(tmp_path, master_key_hex=MASTER_KEY_HEX) as server:
        assert all(server.core.cards.card_id(number) is not None for number in numbers)


def test_a_card_hash_key_sealed_under_another_master_key_is_refused_by_name(tmp_path: Path) -> None:
    with switch_on_loopback(tmp_path, master_key_hex=MASTER_KEY_HEX):
        pass
    sealed = (tmp_path / "card_hash.key").read_text()
    settings = Settings(data_dir=tmp_path, grpc_port=0, metrics_port=-1, console_port=-1)
    with pytest.raises(SecretFileError) as refused:
        SwitchServer(settings.with_overrides(master_key_hex=OTHER_MASTER_KEY_HEX))
    message = str(refused.value)
    assert str(tmp_path / "card_hash.key") in message and "master key" in message
    assert OTHER_MASTER_KEY_HEX not in message and MASTER_KEY_HEX not in message
    assert (tmp_path / "card_hash.key").read_text() == sealed  # left as it was


def test_a_configured_card_hash_key_is_used_as_it_is(tmp_path: Path) -> None:
    configured = secrets.token_bytes(32)
    with switch_on_loopback(
        tmp_path, demo_data=True, master_key_hex=MASTER_KEY_HEX, card_hash_key_hex=configured.hex()
    ):
        pass
    number = demo_card_numbers(tmp_path)[0]
    assert card_hash(configured, number) in stored_card_hashes(tmp_path)
    assert not (tmp_path / "card_hash.key").exists()


def test_a_secret_file_others_may_read_is_closed_to_them(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text("restored-from-a-backup")
    path.chmod(0o644)
    assert secret_file(path, "new") == "restored-from-a-backup"
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("ab" * 16, "give it as TXSWITCH_CARD_HASH_KEY_HEX"),  # a clear key of another length
        ("not a key", "does not open under this master key"),
        ("v1:pvv:pan-hash:hmac-sha256:000000:AAAA", "does not open under this master key"),
    ],
)
def test_a_card_hash_key_file_that_holds_no_usable_key_is_refused_by_name(
    tmp_path: Path, content: str, named: str
) -> None:
    (tmp_path / "card_hash.key").write_text(content)
    settings = Settings(data_dir=tmp_path, grpc_port=0, metrics_port=-1, console_port=-1)
    with pytest.raises(SecretFileError) as refused:
        SwitchServer(settings.with_overrides(master_key_hex=MASTER_KEY_HEX))
    assert str(tmp_path / "card_hash.key") in str(refused.value) and named in str(refused.value)
    assert "ab" * 16 not in str(refused.value)


def test_a_seal_cut_short_by_a_crash_is_done_by_the_next_start_under_the_same_pid(tmp_path: Path) -> None:
    """A crash between the temporary file's creation and its rename leaves `.card_hash.key.<pid>.tmp`
    (half written) beside the key still in clear. The next start often has the same pid (pid 1 in
    a container); it was refused with FileExistsError on every start until someone found that file."""
    clear_key = secrets.token_bytes(32)
    path = tmp_path / "card_hash.key"
    path.write_text(clear_key.hex())
    (tmp_path / f".card_hash.key.{os.getpid()}.tmp").write_text("v1:card-hash:pan-ha")
    assert card_hash_key(path, MasterKey.from_hex(MASTER_KEY_HEX)) == clear_key
    assert WrappedKey.from_text(path.read_text().strip()).usage is KeyUsage.pan_hash
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
