"""`txswitch admin` prints every field of the answer, zeros and empty lists included: a newcomer
found `check-ledger` printing only `{"entries": "1607"}` (unbalanced entries, negative balances and
mismatches, all 0, left out), an emptied card's balance as `{"currency": "EUR"}` and an empty
refund list as `{}`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switch import cli
from tests.integration.harness import ADMIN_TOKEN, World


def admin_json(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], *arguments: str) -> object:
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    common = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address]
    assert cli.main([*common, *arguments]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("arguments", "shown"),
    [
        (
            ("check-ledger",),
            {
                "unbalanced_entries": "0",
                "negative_card_balances": "0",
                "balance_mismatches": "0",
                "problems": [],
            },
        ),
        (("list-top-ups", "status=refund_due"), {"top_ups": []}),
    ],
)
def test_zeros_and_empty_lists_are_printed(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: tuple[str, ...],
    shown: dict[str, object],
) -> None:
    printed = admin_json(world, tmp_path, capsys, *arguments)
    assert isinstance(printed, dict)
    assert {key: printed.get(key) for key in shown} == shown


def test_an_empty_card_shows_a_balance_of_zero(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = world.issue(0)
    printed = admin_json(world, tmp_path, capsys, "show-card", f"card={card}")
    assert isinstance(printed, dict)
    assert printed["balance"] == {"amount_minor": "0", "currency": "EUR"}
