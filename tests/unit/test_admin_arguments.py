"""`txswitch admin` refuses a bad key=value argument by name before it calls the switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import cli
from switch.domain.quoting import DIGIT_RUN, QUOTED_HEAD_CHARS, QUOTED_TAIL_CHARS, REDACTED_PAN


@pytest.mark.parametrize(
    ("action", "argument", "problem"),
    [
        ("issue-card", "initial_load=abc", "initial_load: must be a whole number of cents, such as 2500"),
        ("issue-card", "initial_load=5.00", "initial_load: must be a whole number of cents"),
        ("issue-card", "initial_load=99999999999999999999999", "initial_load: Value out of range"),
        ("issue-card", "currency=USD", "currency: unknown argument of IssueCardRequest"),
        ("join-programme", "commission_basis_points=2.5%", "commission_basis_points: must be a whole number"),
        ("join-programme", "commission_basis_points=" + "9" * 11, "commission_basis_points: Value out"),
        ("create-programme", "kind=voucher", "kind: must be gift or benefit, got 'voucher'"),
        ("update-employee", "active=maybe", "active: must be true or false, got 'maybe'"),
        ("issue-card", "programme_id", "argument 1 is not key=value"),
    ],
)
def test_a_bad_argument_is_refused_by_name(
    action: str, argument: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No switch listens on the target: the argument is refused before any call is made.
    assert cli.main(["admin", "--data-dir", str(tmp_path), "--target", "127.0.0.1:9", action, argument]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"txswitch admin {action}: {problem}")
    assert "invalid literal" not in printed


def test_a_data_dir_without_the_admin_token_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run from another directory than the switch's, `var/admin.token` is not there.
    arguments = ["admin", "--data-dir", str(tmp_path), "--target", "127.0.0.1:9", "check-ledger"]
    assert cli.main(arguments) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"txswitch admin check-ledger: no admin token at {tmp_path / 'admin.token'}")
    assert "--data-dir" in printed


@pytest.mark.parametrize(
    ("action", "arguments"),
    [
        ("issue-card", "programme_id= initial_load= request_id="),
        ("day-closes", "terminal_id="),
        ("transactions", "from_date= to_date= time_zone= merchant_id= terminal_id= types= "),
        ("export-transactions", "dialect= from_date="),
        ("check-ledger", "(none)"),
    ],
)
def test_the_help_names_each_actions_arguments(
    action: str, arguments: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The help listed the actions only: what an action takes was to be read in backoffice.proto.
    with pytest.raises(SystemExit) as ended:
        cli.main(["admin", "--help"])
    assert ended.value.code == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert action in lines and arguments in lines[action], lines.get(action)


@pytest.mark.parametrize(
    ("action", "argument"),
    [
        ("issue-card", "initial_load=4111 1111 1111 1111"),  # ours: "must be a whole number of cents"
        ("issue-card", "initial_load=41111111111111111111111"),  # protobuf's: "Value out of range: ..."
        ("join-programme", "commission_basis_points=4111111111111111"),
        ("create-programme", "kind=4111-1111-1111-1111"),
        ("update-employee", "active=4111111111111111"),
        ("issue-card", "4111111111111111=1"),  # the number typed where the key goes
    ],
)
def test_a_card_number_typed_into_the_wrong_argument_is_not_printed_back(
    action: str, argument: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An argument refused by name, as above, but its value masked as the switch's refusals mask it.
    assert cli.main(["admin", "--data-dir", str(tmp_path), "--target", "127.0.0.1:9", action, argument]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(f"txswitch admin {action}: ") and REDACTED_PAN in printed, printed
    assert DIGIT_RUN.search(printed) is None, printed


@pytest.mark.parametrize(
    ("action", "key", "problem"),
    [
        ("create-programme", "kind", "must be gift or benefit"),
        ("update-employee", "active", "must be true or false"),
        ("join-programme", "commission_basis_points", "must be a whole number"),
        ("issue-card", "initial_load", "must be a whole number of cents, such as 2500 or 2500:EUR"),
    ],
)
def test_a_refused_arguments_value_is_shown_as_the_switch_shows_a_refused_value(
    action: str, key: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As quoted() shows it: the card number masked, and its head and tail only (not printed whole).
    value = "4111111111111111" + "x" * 100
    arguments = ["admin", "--data-dir", str(tmp_path), "--target", "127.0.0.1:9", action, f"{key}={value}"]
    assert cli.main(arguments) == 2
    shown = f"'{REDACTED_PAN}{'x' * (QUOTED_HEAD_CHARS - len(REDACTED_PAN))}...{'x' * QUOTED_TAIL_CHARS}'"
    assert capsys.readouterr().err == f"txswitch admin {action}: {key}: {problem}, got {shown}\n"


def test_a_card_number_in_the_data_dirs_path_is_masked_where_the_token_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Session 25: the path an operator typed came back whole, as serve's own refusals no longer do.
    # Not right under tmp_path, whose name ends in a digit: joined across the slash, it would be masked too.
    data_dir = tmp_path / "cards" / "4111111111111111"
    arguments = ["admin", "--data-dir", str(data_dir), "--target", "127.0.0.1:9", "check-ledger"]
    assert cli.main(arguments) == 2
    printed = capsys.readouterr().err
    assert "4111111111111111" not in printed
    assert f"no admin token at {tmp_path / 'cards' / REDACTED_PAN / 'admin.token'}" in printed
