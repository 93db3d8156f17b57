"""Settings from TXSWITCH_* variables: a value that is none of the setting's is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import cli
from switch.config import Settings, from_environment
from switch.domain.quoting import REDACTED_PAN


@pytest.mark.parametrize(
    ("shared", "database", "max_age_s"),
    [
        ("auto", "postgresql://h/db", 1.0),
        ("auto", "", None),
        ("yes", "", 1.0),
        ("NO", "postgresql://h/db", None),
    ],
)
def test_cards_are_shared_by_nodes_on_postgres_unless_told(
    shared: str, database: str, max_age_s: float | None
) -> None:
    assert Settings(database_url=database, several_nodes=shared).copy_max_age_s == max_age_s


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"several_nodes": "always"},
            "several_nodes (TXSWITCH_SEVERAL_NODES) must be auto, yes or no, got 'always'",
        ),
        (
            {"several_nodes": "yes", "shared_copy_max_age_s": -1.0},
            "shared_copy_max_age_s (TXSWITCH_SHARED_COPY_MAX_AGE_S) must be 0 or more, got -1.0",
        ),
        (
            {"replacement_follow_workers_max": 0},
            "replacement_follow_workers_max (TXSWITCH_REPLACEMENT_FOLLOW_WORKERS_MAX) must be positive, "
            "got 0",
        ),
        (
            {"replacement_follows_queued_max": 0},
            "replacement_follows_queued_max (TXSWITCH_REPLACEMENT_FOLLOWS_QUEUED_MAX) must be positive, "
            "got 0",
        ),
    ],
)
def test_a_value_a_setting_cannot_take_is_refused_by_name(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings().with_overrides(**changes).check()
    assert str(refused.value) == problem


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
    monkeypatch.setenv("TXSWITCH_SEVERAL_NODES", "always")
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", "0"]) == 2
    assert "TXSWITCH_SEVERAL_NODES) must be auto, yes or no" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


CARD_NUMBER = "4111111111111111"  # Luhn-valid, 16 digits


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        (
            "TXSWITCH_SEVERAL_NODES",
            CARD_NUMBER,
            "several_nodes (TXSWITCH_SEVERAL_NODES) must be auto, yes or no",
        ),
        ("TXSWITCH_GRPC_PORT", "4111 1111 1111 1111", "TXSWITCH_GRPC_PORT must be a whole number"),
        ("TXSWITCH_CARD_ACTOR_IDLE_S", "4111-1111-1111-1111", "TXSWITCH_CARD_ACTOR_IDLE_S must be a number"),
    ],
)
def test_serve_names_the_setting_a_card_number_was_typed_into_but_not_the_number(
    variable: str,
    value: str,
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", "0"]) == 2
    printed = capsys.readouterr().err
    assert printed == f"txswitch serve: {named}, got '{REDACTED_PAN}'\n"
    assert not (tmp_path / "data").exists()
