"""`txswitch`'s own refusals of a command line (argparse's): a card number typed where a command,
an action or a port goes is masked as the switch masks a refused value; the refusal names the argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import cli
from switch.domain.quoting import DIGIT_RUN, REDACTED_PAN


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["4111111111111111"], "argument command: invalid choice: '[REDACTED-PAN]'"),
        (["admin", "4111 1111 1111 1111", "card=1"], "argument action: invalid choice: '[REDACTED-PAN]'"),
        (["serve", "--grpc-port", "4111-1111-1111-1111"], "argument --grpc-port: invalid int value"),
        (["serve", "--metrics-port", "4111111111111111x"], "argument --metrics-port: invalid int value"),
        # The card's words are all the card (typed as printed, 4111 1111 ...): an unknown option is not.
        (["balance", "--target", "127.0.0.1:9", "--card=4111111111111111", "x"], "unrecognized arguments: "),
    ],
)
def test_a_card_number_in_a_refused_command_line_is_masked(
    arguments: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.main(arguments)
    assert ended.value.code == 2
    printed = capsys.readouterr().err
    assert named in printed and REDACTED_PAN in printed, printed
    assert DIGIT_RUN.search(printed) is None, printed


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["serve", "--data-dir", ""], "argument --data-dir: must name a path, not be empty"),
        (["serve", "--console-authorized-keys", ""], "argument --console-authorized-keys: must name a path"),
        (["admin", "--data-dir", "", "check-ledger"], "argument --data-dir: must name a path, not be empty"),
    ],
)
def test_an_empty_path_is_refused_not_taken_as_the_current_directory(
    arguments: list[str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Path("") is "."; `serve --data-dir ""` made its database and keys in whatever directory it ran in.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        cli.main(arguments)
    assert ended.value.code == 2
    assert named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


TARGET_FORM = "argument --target: must be <host>:<port> with a port from 1 to 65535, got"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["admin", "--target", "127.0.0.1:70000", "check-ledger"], f"{TARGET_FORM} '127.0.0.1:70000'"),
        (["admin", "--target", "127.0.0.1:-1", "check-ledger"], f"{TARGET_FORM} '127.0.0.1:-1'"),
        (["admin", "--target", "127.0.0.1:0", "check-ledger"], f"{TARGET_FORM} '127.0.0.1:0'"),
        (["admin", "--target", "", "check-ledger"], f"{TARGET_FORM} ''"),
        (["admin", "--target", "127.0.0.1", "check-ledger"], f"{TARGET_FORM} '127.0.0.1'"),
        (["admin", "--target", "127.0.0.1:4111111111111111", "check-ledger"], f"{TARGET_FORM} '127.0.0.1:"),
        (["admin", "--target", f"127.0.0.1:{10**20}", "check-ledger"], f"{TARGET_FORM} '127.0.0.1:"),
        (["balance", "--target", "localhost:port", "x"], f"{TARGET_FORM} 'localhost:port'"),
        (["balance", "--target", "4111111111111111", "x"], f"{TARGET_FORM} '{REDACTED_PAN}'"),
    ],
)
def test_a_target_that_is_no_host_and_port_is_refused_before_any_call(
    arguments: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # grpc took 70000 as port 4464 and -1 as 65535 (another service's), and put a port it could not
    # read into its UNAVAILABLE error whole.
    with pytest.raises(SystemExit) as ended:
        cli.main(arguments)
    assert ended.value.code == 2
    printed = capsys.readouterr().err
    assert problem in printed and DIGIT_RUN.search(printed) is None, printed


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("192.168.100.200", "192.168.100.200"),  # 12 digits, fails Luhn: no card number
        ("127.000.000.001", REDACTED_PAN),  # 12 digits, Luhn-valid: may be one
    ],
)
def test_an_ip_address_in_a_refusal_is_shown_unless_it_may_be_a_card_number(
    address: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["admin", "--target", f"{address}:70000", "check-ledger"])
    assert f"{TARGET_FORM} '{shown}:70000'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["admin", "--data-dir", "{data}", "--target", "4111111111111111:50051", "check-ledger"],
        ["admin", "--data-dir", "{data}", "--target", "4111-1111-1111-1111:50051", "check-ledger"],
        ["admin", "--data-dir", "{data}", "--target", "4111111111111111:50051", "export-transactions"],
        ["balance", "--target", "4111111111111111:50051", "x"],
        ["balance", "--target", "4111 1111 1111 1111:50051", "x"],
    ],
)
def test_a_card_number_in_a_target_that_cannot_be_reached_is_masked(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A host no name service knows: grpc's UNAVAILABLE named the target whole, and it was printed.
    (tmp_path / "admin.token").write_text("token")
    assert cli.main([part.format(data=tmp_path) for part in command]) == 1
    printed = capsys.readouterr().err
    assert f": UNAVAILABLE: errors resolving {REDACTED_PAN}:50051" in printed, printed
    assert DIGIT_RUN.search(printed) is None, printed
