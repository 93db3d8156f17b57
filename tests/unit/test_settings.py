"""Settings from TXSWITCH_* variables: a value that is none of the setting's is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import cli
from switch.config import NUMBER_RANGES, PORT_LOWEST, Settings, from_environment
from switch.domain.quoting import DIGIT_RUN, REDACTED_PAN


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
            "replacement_follow_workers_max (TXSWITCH_REPLACEMENT_FOLLOW_WORKERS_MAX) must be positive "
            "and at most 2,147,483,647, got 0",
        ),
        (
            {"acquirer_sign_on_wait_ms": -1},
            "acquirer_sign_on_wait_ms (TXSWITCH_ACQUIRER_SIGN_ON_WAIT_MS) must be 0 or more and at most "
            "600,000, got -1",
        ),
        (
            {"acquirer_sign_on_wait_ms": 600_001},
            "acquirer_sign_on_wait_ms (TXSWITCH_ACQUIRER_SIGN_ON_WAIT_MS) must be 0 or more and at most "
            "600,000, got 600001",
        ),
        (
            {"replacement_follows_queued_max": 0},
            "replacement_follows_queued_max (TXSWITCH_REPLACEMENT_FOLLOWS_QUEUED_MAX) must be positive "
            "and at most 2,147,483,647, got 0",
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
        (
            "TXSWITCH_ACQUIRER_SIGN_ON_WAIT_MS",
            "2s",
            "TXSWITCH_ACQUIRER_SIGN_ON_WAIT_MS must be a whole number, got '2s'",
        ),
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
        ("TXSWITCH_GRPC_PORT", "4111.1111.1111.1111", "TXSWITCH_GRPC_PORT must be a whole number"),
        ("TXSWITCH_CARD_ACTOR_IDLE_S", "4111/1111/1111/1112", "TXSWITCH_CARD_ACTOR_IDLE_S must be a number"),
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
    # No --grpc-port: given, it would win over TXSWITCH_GRPC_PORT, which would then not be read.
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data")]) == 2
    printed = capsys.readouterr().err
    assert printed == f"txswitch serve: {named}, got '{REDACTED_PAN}'\n"
    assert not (tmp_path / "data").exists()


HUGE = str(10**20)


@pytest.mark.parametrize(
    ("arguments", "variable", "value", "problem"),
    [
        (
            ["--grpc-port", CARD_NUMBER],
            "",
            "",
            "grpc_port (--grpc-port, TXSWITCH_GRPC_PORT) must be a port "
            f"from 0 to 65535 (0: any free port), got {REDACTED_PAN}",
        ),
        (
            ["--grpc-port", "65536"],
            "",
            "",
            "grpc_port (--grpc-port, TXSWITCH_GRPC_PORT) must be a port "
            "from 0 to 65535 (0: any free port), got 65536",
        ),
        (
            ["--grpc-port", "-1"],
            "",
            "",
            "grpc_port (--grpc-port, TXSWITCH_GRPC_PORT) must be a port "
            "from 0 to 65535 (0: any free port), got -1",
        ),
        (
            ["--metrics-port", "-2"],
            "",
            "",
            "metrics_port (--metrics-port, TXSWITCH_METRICS_PORT) must be a "
            "port from -1 to 65535 (0: any free port, -1: off), got -2",
        ),
        (
            ["--metrics-port", HUGE],
            "",
            "",
            "metrics_port (--metrics-port, TXSWITCH_METRICS_PORT) must be a "
            f"port from -1 to 65535 (0: any free port, -1: off), got {REDACTED_PAN}",
        ),
        (
            ["--console-port", CARD_NUMBER, "--console-authorized-keys", __file__],  # the console on
            "",
            "",
            "console_port (--console-port, TXSWITCH_CONSOLE_PORT) must "
            f"be a port from -1 to 65535 (0: any free port, -1: off), got {REDACTED_PAN}",
        ),
        (
            [],
            "TXSWITCH_GRPC_PORT",
            "70000",
            "grpc_port (--grpc-port, TXSWITCH_GRPC_PORT) must be a port "
            "from 0 to 65535 (0: any free port), got 70000",
        ),
        (
            [],
            "TXSWITCH_ISO_LISTEN_PORT",
            HUGE,
            "iso_listen_port (TXSWITCH_ISO_LISTEN_PORT) must be a port "
            f"from -1 to 65535 (0: any free port, -1: off), got {REDACTED_PAN}",
        ),
        (
            [],
            "TXSWITCH_ISO_LISTEN_PORT",
            "-3",
            "iso_listen_port (TXSWITCH_ISO_LISTEN_PORT) must be a port "
            "from -1 to 65535 (0: any free port, -1: off), got -3",
        ),
        (
            [],
            "TXSWITCH_SMTP_PORT",
            "0",
            "smtp_port (TXSWITCH_SMTP_PORT) must be a port from 1 to 65535, got 0",
        ),
        (
            [],
            "TXSWITCH_SMTP_PORT",
            CARD_NUMBER,
            f"smtp_port (TXSWITCH_SMTP_PORT) must be a port from 1 to 65535, got {REDACTED_PAN}",
        ),
    ],
)
def test_serve_refuses_a_port_no_socket_can_have_before_it_starts(
    arguments: list[str],
    variable: str,
    value: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A port past 65535 passed as a number and ended in a traceback once the data dir was made.
    # No row's port is ever bound: each is refused first.
    if variable:
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TXSWITCH_SMTP_HOST", "127.0.0.1")  # smtp_port is read, so checked, with mail on
    command = ["serve", "--data-dir", str(tmp_path / "data"), "--metrics-port", "-1", "--console-port", "-1"]
    assert cli.main([*command, *arguments]) == 2
    assert capsys.readouterr().err == f"txswitch serve: {problem}\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        (
            "TXSWITCH_GRPC_WORKERS",
            "0",
            "grpc_workers (TXSWITCH_GRPC_WORKERS) must be positive and at most 2,147,483,647, got 0",
        ),
        (
            "TXSWITCH_GRPC_CONCURRENT_RPCS_MAX",
            "-1",
            "grpc_concurrent_rpcs_max "
            "(TXSWITCH_GRPC_CONCURRENT_RPCS_MAX) must be positive and at most 2,147,483,647, got -1",
        ),
        (
            "TXSWITCH_CARD_ACTORS_LIVE_MAX",
            CARD_NUMBER,
            "card_actors_live_max (TXSWITCH_CARD_ACTORS_LIVE_MAX) "
            f"must be positive and at most 2,147,483,647, got {REDACTED_PAN}",
        ),
        (
            "TXSWITCH_GC_GEN0_THRESHOLD",
            HUGE,
            "gc_gen0_threshold (TXSWITCH_GC_GEN0_THRESHOLD) must be 0 or "
            f"more and at most 2,147,483,647, got {REDACTED_PAN}",
        ),
        (
            "TXSWITCH_GC_GEN2_THRESHOLD",
            "-10",
            "gc_gen2_threshold (TXSWITCH_GC_GEN2_THRESHOLD) must be 0 or "
            "more and at most 2,147,483,647, got -10",
        ),
        (
            "TXSWITCH_ASK_TIMEOUT_S",
            "nan",
            "ask_timeout_s (TXSWITCH_ASK_TIMEOUT_S) must be positive and at most 31,622,400, got nan",
        ),
        (
            "TXSWITCH_ASK_TIMEOUT_S",
            "0",
            "ask_timeout_s (TXSWITCH_ASK_TIMEOUT_S) must be positive and at most 31,622,400, got 0.0",
        ),
        (
            "TXSWITCH_REPLY_TIMEOUT_S",
            "1e20",
            "reply_timeout_s (TXSWITCH_REPLY_TIMEOUT_S) must be positive and at most 31,622,400, got 1e+20",
        ),
        (
            "TXSWITCH_CARD_ACTOR_IDLE_S",
            "-inf",
            "card_actor_idle_s (TXSWITCH_CARD_ACTOR_IDLE_S) must be "
            "0 or more and at most 31,622,400, got -inf",
        ),
        (
            "TXSWITCH_SHARED_COPY_MAX_AGE_S",
            "nan",
            "shared_copy_max_age_s (TXSWITCH_SHARED_COPY_MAX_AGE_S) "
            "must be 0 or more and at most 31,622,400, got nan",
        ),
        (
            "TXSWITCH_JOURNAL_LINGER_MS",
            "60000",
            "journal_linger_ms (TXSWITCH_JOURNAL_LINGER_MS) must be 0 or more and at most 1,000, got 60000.0",
        ),
        (
            "TXSWITCH_PORTAL_SESSION_S",
            CARD_NUMBER,
            "portal_session_s (TXSWITCH_PORTAL_SESSION_S) must be "
            f"positive and at most 31,622,400, got {REDACTED_PAN}",
        ),
        (
            "TXSWITCH_TOP_UPS_KEPT_DAYS",
            HUGE,
            "top_ups_kept_days (TXSWITCH_TOP_UPS_KEPT_DAYS) must be "
            f"positive and at most 36,600, got {REDACTED_PAN}",
        ),
        (
            "TXSWITCH_INBOUND_RESENDS_KEPT_DAYS",
            "1",
            "inbound_resends_kept_days (TXSWITCH_INBOUND_RESENDS_KEPT_DAYS) must be "
            "at least 31 and at most 36,600, got 1",
        ),
        (
            "TXSWITCH_CARD_PIN_TRIES_MAX",
            "0",
            "card_pin_tries_max (TXSWITCH_CARD_PIN_TRIES_MAX) must be "
            "positive and at most 2,147,483,647, got 0",
        ),
        (
            "TXSWITCH_ISO_INBOUND_IDLE_S",
            "1e20",
            "iso_inbound_idle_s (TXSWITCH_ISO_INBOUND_IDLE_S) must be "
            "positive and at most 31,622,400, got 1e+20",
        ),
        (
            "TXSWITCH_RECEIPT_RETRY_S",
            "0",
            "receipt_retry_s (TXSWITCH_RECEIPT_RETRY_S) must be positive and at most 31,622,400, got 0.0",
        ),
    ],
)
def test_serve_refuses_a_number_setting_out_of_its_range_before_it_starts(
    variable: str,
    value: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Zero workers, a negative limit, NaN or 1e20 seconds passed as numbers: the switch made its data
    # dir and then ended in a traceback, or started and hung on the first wait.
    # Every feature on whose settings a row holds: a setting of a feature that is off is not checked.
    features_on = {
        "TXSWITCH_SMTP_HOST": "127.0.0.1",
        "TXSWITCH_SEVERAL_NODES": "yes",
        "TXSWITCH_ISO_LISTEN_PORT": "0",
    }
    for feature_variable, on in features_on.items():
        monkeypatch.setenv(feature_variable, on)
    monkeypatch.setenv(variable, value)
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", "0"]) == 2
    assert capsys.readouterr().err == f"txswitch serve: {problem}\n"
    assert not (tmp_path / "data").exists()


# Purged sooner than a completion may come (30 days after its pre-authorisation), a resend's row no
# longer found its first: a reversal naming its field 7 was acknowledged as of a sale never seen and
# moved nothing, the card left charged. Any positive number of days was taken.
@pytest.mark.parametrize(
    ("days", "taken"),
    [
        (-1, False),
        (0, False),
        (1, False),
        (30, False),
        (31, True),
        (400, True),
        (36_600, True),
        (36_601, False),
    ],
)
def test_inbound_resends_are_kept_at_least_as_long_as_a_completion_may_come(days: int, taken: bool) -> None:
    settings = Settings().with_overrides(inbound_resends_kept_days=days)
    if taken:
        settings.check()
        return
    with pytest.raises(ValueError) as refused:
        settings.check()
    assert str(refused.value) == (
        "inbound_resends_kept_days (TXSWITCH_INBOUND_RESENDS_KEPT_DAYS) must be at least 31 and at most "
        f"36,600, got {days}"
    )


def test_every_number_setting_has_its_range() -> None:
    numbers = {
        name
        for name, value in vars(Settings()).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    assert numbers == set(NUMBER_RANGES) | set(PORT_LOWEST)
    assert all(allowed.holds(getattr(Settings(), name)) for name, allowed in NUMBER_RANGES.items())


@pytest.mark.parametrize(
    ("arguments", "variable", "value", "problem"),
    [
        ([], "TXSWITCH_DATA_DIR", "", "TXSWITCH_DATA_DIR must be a path, not empty, got ''"),
        ([], "TXSWITCH_ACQUIRERS_FILE", "", "TXSWITCH_ACQUIRERS_FILE must be a path, not empty, got ''"),
        (
            [],
            "TXSWITCH_ACQUIRERS_FILE",
            f"/nonexistent/{CARD_NUMBER}.toml",
            f"acquirers_file (TXSWITCH_ACQUIRERS_FILE) must name a file that exists, got "
            f"'/nonexistent/{REDACTED_PAN}.toml'",
        ),
        (
            ["--console-authorized-keys", f"/nonexistent/{CARD_NUMBER}"],
            "",
            "",
            "console_authorized_keys (--console-authorized-keys, TXSWITCH_CONSOLE_AUTHORIZED_KEYS) must "
            f"name a file that exists, got '/nonexistent/{REDACTED_PAN}'",
        ),
        (
            ["--console-authorized-keys", "/"],
            "",
            "",
            "console_authorized_keys (--console-authorized-keys, TXSWITCH_CONSOLE_AUTHORIZED_KEYS) must "
            "name a file that exists, got '/'",
        ),
    ],
)
def test_serve_refuses_a_path_it_cannot_use_before_it_starts(
    arguments: list[str],
    variable: str,
    value: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An acquirers file that is not there made the data dir and ended in a traceback printing its
    # path whole; a missing keys file started the switch; an empty path was the current directory.
    if variable:
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)
    # No --data-dir: given, it would win over TXSWITCH_DATA_DIR; the default, var, is refused unmade.
    assert cli.main(["serve", "--grpc-port", "0", *arguments]) == 2
    assert capsys.readouterr().err == f"txswitch serve: {problem}\n"
    assert list(tmp_path.iterdir()) == []


def test_serve_refuses_a_data_dir_that_is_a_file_and_leaves_the_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its mkdir failed, and the error printed the path whole.
    monkeypatch.chdir(tmp_path)
    Path(CARD_NUMBER).write_text("not a directory")
    assert cli.main(["serve", "--data-dir", CARD_NUMBER, "--grpc-port", "0"]) == 2
    named = "data_dir (--data-dir, TXSWITCH_DATA_DIR) must name a directory (made if missing)"
    assert capsys.readouterr().err == f"txswitch serve: {named}, got '{REDACTED_PAN}', a file\n"
    assert Path(CARD_NUMBER).read_text() == "not a directory" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("port", "shown"),
    [("70000", "70000"), ("0", "0"), ("-1", "-1"), (CARD_NUMBER, REDACTED_PAN), (HUGE, REDACTED_PAN)],
)
def test_serve_refuses_a_database_url_whose_port_is_no_port_before_it_starts(
    port: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It parsed: the data dir and its keys were made before the database refused the port.
    url = f"postgresql://postgres:secret@127.0.0.1:{port}/test"
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--database-url", url]) == 2
    problem = "the database URL's port (--database-url, TXSWITCH_DATABASE_URL) must be from 1 to 65535"
    assert capsys.readouterr().err == f"txswitch serve: {problem}, got {shown}\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("data_dir", "database_url", "problem"),
    [
        (
            "data",
            f"postgresql://postgres@127.0.0.1:1/{CARD_NUMBER}",
            # the port's digit, joined to the number across the slash, is masked with it
            f"database postgresql://postgres@127.0.0.1:{REDACTED_PAN} not usable: ",
        ),
        (f"file/{CARD_NUMBER}", "", f"[Errno 20] Not a directory: 'file/{REDACTED_PAN}'"),
    ],
)
def test_serve_masks_a_card_number_in_the_path_or_url_it_could_not_use(
    data_dir: str,
    database_url: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found only once the switch tries them (nothing listens on port 1; "file" is a file): the
    # refusal printed the operator's text whole.
    monkeypatch.chdir(tmp_path)
    Path("file").write_text("not a directory")
    assert cli.main(["serve", "--data-dir", data_dir, "--database-url", database_url]) == 2
    printed = capsys.readouterr().err  # after the switch's log lines, if it had begun
    assert printed.splitlines()[-1].startswith(f"txswitch serve: {problem}"), printed
    assert DIGIT_RUN.search(printed) is None, printed


RESET_URL_FORM = (
    "password_reset_url (TXSWITCH_PASSWORD_RESET_URL) must be an absolute http or https URL with a host, "
    "such as 'https://portal.example/reset#', got"
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (CARD_NUMBER, f"'{REDACTED_PAN}'"),
        ("4111 1111 1111 1111", f"'{REDACTED_PAN}'"),
        ("4111.1111.1111.1111", f"'{REDACTED_PAN}'"),
        ("ftp://portal.example/4111_1111_1111_1112#", f"'ftp://portal.example/{REDACTED_PAN}#'"),
        ("ftp://portal.example/reset#", "'ftp://portal.example/reset#'"),
        ("javascript:alert(1)", "'javascript:alert(1)'"),
        ("portal.example/reset#", "'portal.example/reset#'"),
        ("https://", "'https://'"),
        ("https:///reset#", "'https:///reset#'"),
        ("https://portal.example/reset #", "'https://portal.example/reset #'"),
        ("https://portal.example/\nreset#", "'https://portal.example/\\nreset#'"),
        ("https://portal.example:99999/reset#", "'https://portal.example:99999/reset#'"),
        (f"https://portal.example:{CARD_NUMBER}/", f"'https://portal.example:{REDACTED_PAN}/'"),
    ],
)
def test_serve_refuses_a_password_reset_url_that_is_no_web_address_before_it_starts(
    value: str,
    shown: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # It was not checked: a card number or an ftp: or javascript: value went into every reset mail.
    monkeypatch.setenv("TXSWITCH_SMTP_HOST", "127.0.0.1")  # no reset mail without a mail server
    monkeypatch.setenv("TXSWITCH_PASSWORD_RESET_URL", value)
    assert cli.main(["serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", "0"]) == 2
    assert capsys.readouterr().err == f"txswitch serve: {RESET_URL_FORM} {shown}\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "value",
    ["", "https://portal.example/reset#", "http://127.0.0.1:8080/reset?code=", "HTTPS://Portal.Example/"],
)
def test_a_password_reset_url_that_is_a_web_address_is_taken(value: str) -> None:
    Settings(password_reset_url=value).check()


def test_the_acquirers_sign_on_wait_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().acquirer_sign_on_wait_ms == 2_000  # the fixed wait it was
    monkeypatch.setenv("TXSWITCH_ACQUIRER_SIGN_ON_WAIT_MS", "0")
    settings = from_environment()
    settings.check()
    assert settings.acquirer_sign_on_wait_ms == 0
