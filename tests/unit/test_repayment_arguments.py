"""`txswitch admin record-repayment` takes its amount in major units and refuses a bad one by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import cli


@pytest.mark.parametrize(
    ("text", "currency", "amount_minor"),
    [
        ("10.00", "EUR", 1_000),
        ("10", "EUR", 1_000),
        ("0.5", "EUR", 50),
        ("12.34", "EUR", 1_234),
        ("1500", "JPY", 1_500),
        ("1.234", "KWD", 1_234),
        ("0", "EUR", 0),  # the switch refuses it, naming the amount
    ],
)
def test_an_amount_in_major_units_is_read_in_its_currencys_decimals(
    text: str, currency: str, amount_minor: int
) -> None:
    assert cli.minor_units(text, currency) == amount_minor


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--amount", "10,00"], "--amount must be an amount in major units such as 12.50, got '10,00'"),
        (["--amount", "-5.00"], "--amount must be an amount in major units"),
        (["--amount", "1e3"], "--amount must be an amount in major units"),
        (["--amount", ""], "--amount must be an amount in major units"),
        (["--amount", "10."], "--amount must be an amount in major units"),
        (["--amount", "10.001"], "--amount '10.001' has more decimals than EUR's 2"),
        (["--amount", "5.5", "--currency", "JPY"], "--amount '5.5' has more decimals than JPY's 0"),
        (["--amount", "9" * 30], "is too large"),
        (["--currency", "EUR"], "--currency needs --amount"),
        # key=value amounts are minor units elsewhere: amount=12 would have recorded 0.12
        (["amount=12"], "record-repayment takes its amount as --amount in major units (e.g. --amount 9.75)"),
    ],
)
def test_a_bad_amount_is_refused_by_name_before_any_call(
    arguments: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No switch listens on the target: the argument is refused before any call is made.
    command = [
        "admin",
        "--data-dir",
        str(tmp_path),
        "--target",
        "127.0.0.1:9",
        "record-repayment",
        *arguments,
    ]
    assert cli.main(command) == 2
    assert problem in capsys.readouterr().err


def test_a_repayment_flag_given_to_another_action_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["admin", "--data-dir", str(tmp_path), "--target", "127.0.0.1:9", "settle", "--amount", "1.00"]
    assert cli.main(command) == 2
    assert "--amount is record-repayment's, not settle's" in capsys.readouterr().err
