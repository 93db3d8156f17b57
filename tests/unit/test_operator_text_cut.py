"""Text an operator sends and the switch keeps in a column of a given length (a console command in the
audit log, a card block's reason) is cut as it is masked: a card number across the cut shows no digit,
the kept text is no longer than its column, and only a card number's length past the cut is scrubbed,
not the whole of a huge text (scrubbing is linear in what it reads)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

import ops.logs
from actors.messages import SetStatus
from ops.console_audit import COMMAND_CHARS_MAX, AuditLog
from ops.console_auth import Caller, Role
from ops.logs import CARD_NUMBER_CHARS_MAX, scrub_cut
from switch.core import SwitchCore
from switch.domain.cards import CardStatus
from switch.store.schema import CARD_EVENT_DETAIL_MAX

# Masked whole in typed text: Luhn-valid or mistyped, in any layout a person types.
CARD_NUMBERS = [
    "6011000990139424",
    "6011000990139425",  # mistyped
    "6036000000000000008",
    "4111 1111 1111 1111",
    "4111    1111    1111    1111",
    "4111.1111.1111.1111",
    "3782 822463 10005",
    "T14111111111111111",
    "411111111111111107x",
]


def _audit_command(tmp_path: Path, command: str) -> str:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record(
        Caller("olga@ops", Role.viewer, "SHA256:x", "olga", "127.0.0.1"), command, "usage", mode="shell"
    )
    recorded: str = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])["command"]
    return recorded


def _block_reason(reason: str) -> str:
    asked: list[SetStatus] = []

    def ask(card_id: str, message: SetStatus, timeout_s: float | None) -> SetStatus:
        asked.append(message)
        return message

    core = cast(SwitchCore, SimpleNamespace(card_actors=SimpleNamespace(ask=ask)))
    SwitchCore.set_card_status(core, "card-1", CardStatus.blocked, reason, "olga")
    return asked[0].reason


@pytest.mark.parametrize("card_number", CARD_NUMBERS)
@pytest.mark.parametrize("chars_max", [COMMAND_CHARS_MAX, CARD_EVENT_DETAIL_MAX])
def test_a_card_number_across_the_cut_shows_no_digit_at_any_offset(card_number: str, chars_max: int) -> None:
    for offset in range(-3, len(card_number) + 3):  # characters of the card number before the cut
        text = "#" * (chars_max - offset - 1) + " " + card_number + " b" + "#" * 100
        kept = scrub_cut(text, chars_max, typed=True)
        assert re.search(r"\d", kept) is None, (offset, kept[-40:])
        assert len(kept) <= chars_max


def test_the_kept_text_is_never_longer_than_its_column() -> None:
    # 12-digit runs, each 14 characters once masked: the masked text is longer than the one sent.
    for length in range(CARD_EVENT_DETAIL_MAX - 30, CARD_EVENT_DETAIL_MAX + 30):
        text = ("123456789012 " * 30)[:length]
        assert len(scrub_cut(text, CARD_EVENT_DETAIL_MAX, typed=True)) <= CARD_EVENT_DETAIL_MAX


@pytest.mark.parametrize(
    ("keep", "chars_max"),
    [(_block_reason, CARD_EVENT_DETAIL_MAX), (None, COMMAND_CHARS_MAX)],
    ids=["card block reason", "console command"],
)
def test_a_huge_operator_text_is_not_scrubbed_whole(
    keep: Callable[[str], str] | None, chars_max: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    scrub_text = ops.logs.scrub_text

    def spy(text: str, *, typed: bool = False) -> str:
        read.append(len(text))
        return scrub_text(text, typed=typed)

    for module in ("ops.logs", "ops.console_audit", "switch.core"):
        monkeypatch.setattr(f"{module}.scrub_text", spy, raising=False)
    text = "cards block 6011000990139424 " + "x" * 1_000_000
    kept = keep(text) if keep is not None else _audit_command(tmp_path, text)
    assert kept == ("cards block [REDACTED-PAN] " + "x" * chars_max)[:chars_max]
    assert read and max(read) <= chars_max + CARD_NUMBER_CHARS_MAX + len("[REDACTED-PAN]"), read
