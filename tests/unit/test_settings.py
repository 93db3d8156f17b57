"""Settings from TXSWITCH_* variables: a value that is none of the setting's is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import cli
from switch.config import Settings, from_environment


@pytest.mark.parametrize(
    ("reads", "database", "expected"),
    [
        ("auto", "postgresql://h/db", True),
        ("auto", "", False),
        ("on", "", True),
        ("OFF", "postgresql://h/db", False),
    ],
)
def test_cards_are_read_each_message_on_postgres_unless_told(
    reads: str, database: str, expected: bool
) -> None:
    settings = Settings(database_url=database, card_reads_each_message=reads)
    assert settings.cards_read_each_message is expected


def test_an_unknown_choice_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as refused:
        _ = Settings(card_reads_each_message="always").cards_read_each_message
    assert str(refused.value) == (
        "card_reads_each_message (TXSWITCH_CARD_READS_EACH_MESSAGE) must be auto, on or off, got 'always'"
    )


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TXSWITCH_GRPC_WORKERS", "many", "TXSWITCH_GRPC_WORKERS must be a whole number, got 'many'"),
        ("TXSWITCH_CARD_ACTOR_IDLE_S", "1m", "TXSWITCH_CARD_ACTOR_IDLE_S must be a number, got '1m'"),
    ],
)
def test_a_variable_that_is_not_a_number_is_refused_by_name(
    variable: str, value: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as refused:
        from_environment()
    assert str(refused.value) == problem


def test_serve_with_a_bad_setting_says_which_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TXSWITCH_CARD_READS_EACH_MESSAGE", "always")
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", "0"]) == 2
    assert "TXSWITCH_CARD_READS_EACH_MESSAGE) must be auto, on or off" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
