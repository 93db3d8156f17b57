"""PINs and keys, from an audit of session 21: a stored key is the one asked for, a wrapped key cut
short is a key fault, and a card PIN blocked on one node stays blocked on the other."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.security import KeyAlgorithm, KeyIntegrityError, KeyUsage, MasterKey, SecurityModule, WrappedKey
from switch.security.keys import unwrap_key
from switch.server import SwitchServer
from tests.integration.harness import TerminalClient, second_node, start_world
from tests.integration.test_card_pins import redeem_with_pin, set_pin, stored_tries, with_pin_key

PIN = "739152846051"
WRONG_PIN = "111111"


def test_a_key_row_holding_another_terminals_pin_key_is_refused(tmp_path: Path) -> None:
    """The GCM associated data binds a wrapped key to its key id, but nothing compares that id with
    the id it was looked up under: terminal 2's key copied into terminal 1's row works for terminal 1."""
    world = start_world(tmp_path, "", terminals=2)
    first, second = world.terminals
    try:
        with_pin_key(world, first)
        second_key = with_pin_key(world, second)
        card = world.issue(1_000, world.benefit_programme)
        set_pin(world, card, PIN)
        with world.server.engine.begin() as conn:
            other = conn.execute(
                text("SELECT wrapped FROM security_keys WHERE key_id = :id"),
                {"id": f"tpk.{second.terminal_id}"},
            ).scalar()
            conn.execute(
                text("UPDATE security_keys SET wrapped = :wrapped WHERE key_id = :id"),
                {"wrapped": other, "id": f"tpk.{first.terminal_id}"},
            )
    finally:
        world.channel.close()
        world.server.stop()
    restarted = SwitchServer(world.server.settings)
    restarted.start()
    try:
        channel = grpc.insecure_channel(restarted.address)
        again = TerminalClient(pb_grpc.TerminalStub(channel), first.credential, first.terminal_id)
        # A block made under terminal 2's key, sent by terminal 1.
        with pytest.raises(grpc.RpcError) as refused:
            redeem_with_pin(again, second_key, card, PIN)
        channel.close()
    finally:
        restarted.stop()
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "PIN key is damaged" in (refused.value.details() or "")


@pytest.mark.parametrize("max_age_s", [1.0, 30.0])  # 1.0: the default copy age on PostgreSQL
def test_wrong_card_pins_alternated_across_two_nodes_never_let_a_fourth_guess_in(
    tmp_path: Path, max_age_s: float
) -> None:
    world = start_world(tmp_path, "", 1, several_nodes="yes", shared_copy_max_age_s=max_age_s)
    try:
        with second_node(world, tmp_path / "node-b") as b:
            on_a, on_b = world.terminals[0], b.terminal
            key = with_pin_key(world, on_a)
            card = world.issue(1_000, world.benefit_programme)
            set_pin(world, card, PIN)
            assert on_a.balance(card) == 1_000 and on_b.balance(card) == 1_000  # an actor on each node
            guesses = [
                redeem_with_pin(node, key, card, WRONG_PIN).response_code for node in (on_a, on_b, on_a)
            ]
            assert stored_tries(world, card) == 3  # three wrong tries stored: the PIN is blocked
            fourth = redeem_with_pin(on_b, key, card, PIN).response_code
            assert fourth == "75", (guesses, fourth)  # it was "00", and 100 taken from the card
    finally:
        world.channel.close()
        world.server.stop()


def test_a_truncated_wrapped_key_is_a_key_integrity_error() -> None:
    master = MasterKey(bytes(32))
    zone = SecurityModule(master).generate_key("zpk-a", KeyUsage.zone_pin, KeyAlgorithm.aes128)
    # "v1:zpk-a:zone-pin:aes128:<kcv>:YWJj" in the acquirers file: a line cut short.
    truncated = WrappedKey.from_text(zone.to_text().rsplit(":", 1)[0] + ":YWJj")
    with pytest.raises(KeyIntegrityError):  # it was ValueError("Nonce must be between 8 and 128 bytes")
        unwrap_key(master, truncated, KeyUsage.zone_pin)
