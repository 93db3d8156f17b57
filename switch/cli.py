"""The `txswitch` command: `serve` runs the switch, `admin ...` talks to its backoffice, `balance`
asks a card's balance as its holder does."""

from __future__ import annotations

import argparse
import codecs
import gc
import io
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn, TextIO

# Before grpc, which reads GRPC_VERBOSITY once, on import: set in the txswitch program only.
from switch.grpc_core_log import PROGRAM_NAME

# isort: split
import grpc
from google.protobuf.json_format import MessageToDict

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from switch.config import PORT_MAX, Settings, from_environment
from switch.domain import quoting
from switch.domain.money import minor_unit_exponent

ADMIN_DEADLINE_S = 30.0
# Only after a call failed UNAVAILABLE: how long to wait for the target to take a connection at all.
SWITCH_ANSWERS_WAIT_S = 1.0
EXPORT_DEADLINE_S = 15 * 60.0  # the switch holds a read snapshot open for as long as an export runs


class _CommandLineParser(argparse.ArgumentParser):
    """argparse's own refusals quote what was typed whole (an unknown action, a port that is no
    number): masked as the switch masks a refused value. Its subcommands' parsers are of this class."""

    def error(self, message: str) -> NoReturn:
        super().error(quoting.mask_digit_runs(message))


def _path(text: str) -> Path:
    """A path option's value: an empty one is refused, not taken as Path("") (the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("must name a path, not be empty")
    return Path(text)


def _target(text: str) -> str:
    """--target: <host>:<port>. grpc took port 70000 as 4464 and -1 as 65535, and put a port it could
    not read into its error whole."""
    host, _, port = text.rpartition(":")
    if not (host and port.isascii() and port.isdigit() and len(port) <= len(str(PORT_MAX))):
        port = "0"
    if not 1 <= int(port) <= PORT_MAX:
        raise argparse.ArgumentTypeError(
            f"must be <host>:<port> with a port from 1 to {PORT_MAX}, got {quoting.quoted(text)}"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = _CommandLineParser(prog=PROGRAM_NAME, description="txswitch transaction switch")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the switch")
    # None: not given, the TXSWITCH_* variable or the default stands; a flag given wins over its variable.
    serve.add_argument("--data-dir", type=_path, default=None)
    serve.add_argument("--database-url", default=None)
    serve.add_argument("--grpc-port", type=int, default=None)
    demo = serve.add_mutually_exclusive_group()
    demo.add_argument(
        "--demo",
        action="store_true",
        help="create the demo merchant, its well-known logins and cards on an empty database (`make run`)",
    )
    # The default since the demo data became opt-in; accepted so that older command lines still start.
    demo.add_argument("--no-demo", action="store_true", help="no demo data (the default; deprecated)")
    serve.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics (0 any, -1 off)")
    serve.add_argument("--console-port", type=int, default=None, help="SSH ops console (0 any, -1 off)")
    serve.add_argument(
        "--console-authorized-keys",
        type=_path,
        default=None,
        help="file of '<viewer|operator> <OpenSSH public key>' lines; the console runs only with it",
    )
    serve.add_argument("--log-level", default="INFO", help="JSON log lines on stderr at this level")
    admin = commands.add_parser(
        "admin",
        help="backoffice administration of a running switch",
        epilog=_actions_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admin.add_argument("--data-dir", type=_path, default=Path("var"), help="where admin.token is")
    admin.add_argument("--target", type=_target, default="127.0.0.1:50051")
    admin.add_argument("action", choices=sorted(ADMIN_ACTIONS), help="what to do")
    admin.add_argument("args", nargs="*", help="key=value arguments of the action")
    repayment = admin.add_argument_group(
        "record-repayment (a merchant's bank transfer paying back what it owes)"
    )
    for flag, (_, what) in REPAYMENT_FLAGS.items():
        repayment.add_argument(f"--{flag}", dest=_flag_dest(flag), default=None, help=what)
    balance = commands.add_parser(
        "balance", help="a card's balance as its holder sees it (card number or QR payload; no login)"
    )
    balance.add_argument("--target", type=_target, default="127.0.0.1:50051")
    balance.add_argument(
        "card",
        nargs="+",  # typed as printed, unquoted: 6001 0199 ... is four arguments
        help="the number on the card (a space or dash between its groups is fine), or its QR code's text",
    )
    options = parser.parse_args(argv)
    if options.command == "serve":
        return _serve(options)
    try:
        return _balance(options) if options.command == "balance" else _admin(options)
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """stdout's reader left before the answer was written (`| head -1`): no traceback, exit 1, as
    the answer was not all delivered. stdout is pointed at /dev/null so that the interpreter's flush
    at exit does not raise the same error again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 1


def _balance(options: argparse.Namespace) -> int:
    from protocols.wire import cardholder_pb2 as ch
    from protocols.wire import cardholder_pb2_grpc as ch_grpc
    from switch.domain.cards import QR_SCHEME

    text = " ".join(options.card)
    card = pb.CardRef(qr_payload=text) if text.startswith(QR_SCHEME) else pb.CardRef(card_number=text)
    with grpc.insecure_channel(options.target) as channel:
        try:
            answer = ch_grpc.CardholderStub(channel).GetBalance(
                ch.CardholderBalanceRequest(card=card), timeout=ADMIN_DEADLINE_S
            )
        except grpc.RpcError as error:
            print(f"txswitch balance: {_call_failure(error, channel, options.target)}", file=sys.stderr)
            return 1
    print(as_json(answer))
    return 0


def _call_failure(error: grpc.RpcError, channel: grpc.Channel, target: str) -> str:
    """A failed call's code and details, masked as the switch masks a refused value: grpc's own
    details name the target as typed (UNAVAILABLE: errors resolving <host>:<port>), a card number too.
    With nothing answering at the target, first what to do about it, as txswitch-sim says it."""
    problem = f"{error.code().name}: {error.details()}"
    if error.code() == grpc.StatusCode.UNAVAILABLE and not _switch_answers(channel):
        advice = "start one (make run), or give its address with --target"
        problem = f"no switch answers at {target}: {advice}: {problem}"
    return quoting.mask_digit_runs(problem)


def _switch_answers(channel: grpc.Channel) -> bool:
    """A switch that answered UNAVAILABLE itself (a top-up whose load is not known yet) keeps its own
    words: its channel connects."""
    try:
        grpc.channel_ready_future(channel).result(timeout=SWITCH_ANSWERS_WAIT_S)
    except grpc.FutureTimeoutError:
        return False
    return True


def tune_garbage_collection(settings: Settings) -> None:
    """What start-up built lives as long as the process: freeze it, and collect young objects rarely."""
    if settings.gc_gen0_threshold <= 0:
        return
    gc.freeze()
    gc.set_threshold(settings.gc_gen0_threshold, settings.gc_gen1_threshold, settings.gc_gen2_threshold)


def _serve(options: argparse.Namespace) -> int:
    from protocols.inbound_acquirers import AcquirerConfigError, read_acquirers
    from switch.store.journal_forkserver import journal_database_url, start_forkserver
    from switch.store.node_lock import NodeLockError, node_lock_for

    try:
        flags = _serve_flags_given(options)
        settings = from_environment(Settings().with_overrides(**flags), given=flags.keys())
        settings.check()
    except ValueError as error:
        print(f"txswitch serve: {error}", file=sys.stderr)
        return 2
    try:  # before anything is made, opened or started (the ISO 8583 listener reads it again as it is made)
        if settings.iso_listen_port >= 0:
            read_acquirers(settings.iso_inbound_acquirers)
    except AcquirerConfigError as error:
        _refuse_to_serve(f"{INBOUND_ACQUIRERS}: {error}")
        return 2
    try:  # a switch already running on the file refuses this one: said before the imports below
        lock = node_lock_for(settings.effective_database_url, settings.copy_max_age_s is not None)
        if lock is not None:
            lock.check_free()
    except NodeLockError as error:
        _refuse_to_serve(str(error))
        return 2
    if journal_database_url(settings) is not None:
        # Started before the switch's imports below: its own import of the store runs beside them.
        start_forkserver()

    from sqlalchemy.exc import SQLAlchemyError

    from ops.logs import configure_logging, skip_unused_record_fields
    from switch.demo import demo_lines
    from switch.listening import CannotListenError
    from switch.secret_files import SecretFileError
    from switch.server import GRPC_SERVES, SwitchServer
    from switch.store.engine import shown_url

    configure_logging(options.log_level.upper())
    skip_unused_record_fields()
    if options.no_demo:
        print("txswitch serve: --no-demo is the default now (demo data only with --demo)", file=sys.stderr)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        server = SwitchServer(settings, on_journal_lost=exit_journal_lost)
    except (NodeLockError, SecretFileError) as error:
        _refuse_to_serve(str(error))
        return 2
    except SQLAlchemyError as error:  # not running, no such database or schema, refused
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        _refuse_to_serve(f"database {shown_url(settings.effective_database_url)} not usable: {reason}")
        return 2
    except OSError as error:  # a file the switch must make cannot be: a directory that does not exist
        _refuse_to_serve(str(error))
        return 2
    try:
        server.start()
    except CannotListenError as error:  # stopped again: nothing half started keeps answering
        _refuse_to_serve(str(error))
        return 2
    except AcquirerConfigError as error:  # read again as the ISO 8583 listener is made: stopped again too
        _refuse_to_serve(f"{INBOUND_ACQUIRERS}: {error}")
        return 2
    tune_garbage_collection(settings)
    print(f"txswitch listening for {GRPC_SERVES} on grpc://{server.address}", flush=True)
    print(f"metrics: {server.ops.metrics_url or 'off'}", flush=True)
    iso = server.iso_inbound
    print(f"ISO 8583 inbound: {f'{settings.iso_listen_host}:{iso.port}' if iso else 'off'}", flush=True)
    console = server.ops.console_address
    print(
        f"ops console: {console + ' (your key from the authorized keys file)' if console else 'off'}",
        flush=True,
    )
    database = shown_url(settings.effective_database_url)
    print(f"data in {settings.data_dir.resolve()} (database {database})", flush=True)
    for line in demo_lines(server.core, settings.data_dir):
        print(line, flush=True)
    stopping.wait()
    print("txswitch draining: finishing in-flight requests and flushing commits", flush=True)
    server.stop()
    print("txswitch stopped", flush=True)
    return 0


INBOUND_ACQUIRERS = "iso_inbound_acquirers (TXSWITCH_ISO_INBOUND_ACQUIRERS)"


def _serve_flags_given(options: argparse.Namespace) -> dict[str, object]:
    """The settings serve's command line set: each wins over its TXSWITCH_* variable."""
    flags: dict[str, object] = {
        "data_dir": options.data_dir,
        "database_url": options.database_url,
        "grpc_port": options.grpc_port,
        "metrics_port": options.metrics_port,
        "console_port": options.console_port,
        "console_authorized_keys": options.console_authorized_keys,
        "demo_data": options.demo if options.demo or options.no_demo else None,
    }
    return {name: value for name, value in flags.items() if value is not None}


def _refuse_to_serve(problem: str) -> None:
    """Masked as the switch masks a refused value: the paths and the database URL are the operator's
    own text, and a card number typed into one came back whole."""
    print(f"txswitch serve: {quoting.mask_digit_runs(problem)}", file=sys.stderr)


EXIT_JOURNAL_LOST = 75  # EX_TEMPFAIL: a restart is the remedy


def exit_journal_lost(reason: str) -> None:
    """Fail-stop: with a batch in doubt, exit at once, answering nothing more; after a restart
    every answer, the in-doubt ones included, comes from the database."""
    print(f"txswitch: journal lost ({reason}); exiting: a restart answers from the database", flush=True)
    os._exit(EXIT_JOURNAL_LOST)


ADMIN_ACTIONS: dict[str, tuple[str, Any]] = {
    "create-programme": ("CreateProgramme", bo.CreateProgrammeRequest),
    "set-load-step": ("SetLoadStep", bo.SetLoadStepRequest),  # programme_id=... load_step_minor=500
    "create-merchant": ("CreateMerchant", bo.CreateMerchantRequest),
    "add-location": ("AddLocation", bo.AddLocationRequest),
    "add-employee": ("AddEmployee", bo.AddEmployeeRequest),
    "list-employees": ("ListEmployees", bo.ListEmployeesRequest),
    "update-employee": ("UpdateEmployee", bo.UpdateEmployeeRequest),
    "join-programme": ("JoinProgramme", bo.JoinProgrammeRequest),
    "issue-card": ("IssueCard", bo.IssueCardRequest),
    "list-terminals": ("ListTerminals", bo.ListTerminalsRequest),
    "deactivate-terminal": ("DeactivateTerminal", bo.TerminalRequest),
    "day-closes": ("ListDayCloses", bo.DayCloseListRequest),  # page_size=, before_sequence_number=
    "check-ledger": ("CheckLedger", bo.CheckLedgerRequest),
    "settle": ("Settle", bo.SettleRequest),
    "settle-due": ("SettleDue", bo.SettleDueRequest),  # from cron, daily: one payout per cycle
    "show-card": ("GetCard", bo.CardRequest),
    "block-card": ("BlockCard", bo.BlockCardRequest),
    "unblock-card": ("UnblockCard", bo.CardRequest),
    "replace-card": ("ReplaceCard", bo.ReplaceCardRequest),
    "set-card-pin": ("SetCardPin", bo.SetCardPinRequest),
    "transactions": ("ListTransactions", bo.TransactionReportRequest),
    # CSV of the report from one snapshot; dialect=excel-nl for Excel in the Netherlands and Belgium
    "export-transactions": ("ExportTransactions", bo.TransactionReportRequest),
    "merchant-summary": ("GetMerchantSummary", bo.MerchantSummaryRequest),
    "set-receipt-layout": ("SetReceiptLayout", bo.ReceiptLayout),
    "list-locations": ("ListLocations", bo.ListLocationsRequest),
    "set-location-logo": ("SetLocationLogo", bo.LocationLogo),  # logo_png=<file.png> or remove_logo=true
    "ask-location-change": ("AskLocationChange", bo.AskLocationChangeRequest),
    "list-location-changes": ("ListLocationChanges", bo.ListLocationChangesRequest),  # status=pending
    "decide-location-change": ("DecideLocationChange", bo.DecideLocationChangeRequest),  # approve=true
    # the PSP's word that the holder paid: top_up_id=... psp_reference=... amount_paid=360
    "confirm-top-up": ("ConfirmTopUp", bo.ConfirmTopUpRequest),
    "list-top-ups": ("ListTopUps", bo.ListTopUpsRequest),  # status=refund_due: holders to pay back
    "mark-top-up-refunded": ("MarkTopUpRefunded", bo.MarkTopUpRefundedRequest),  # refund_reference=...
    # --merchant <e-mail or id> --programme <id> --amount 12.50 --reference ... --request-id ...
    "record-repayment": ("RecordRepayment", bo.RecordRepaymentRequest),
}
# record-repayment's flags: flag -> (its request's field, help); --amount and --currency make its amount
REPAYMENT_FLAGS: dict[str, tuple[str, str]] = {
    "merchant": ("merchant", "the merchant's e-mail address or id"),
    "programme": ("programme_id", "the programme's id"),
    "amount": ("amount", "what the merchant transferred, in major units (12.50)"),
    "currency": ("amount", "the amount's currency (EUR if not given)"),
    "reference": ("reference", "the bank transfer's reference"),
    "request-id": ("request_id", "an id of your own: the same id again records nothing more"),
}
CARD_FIELDS = {"card": "card", "lost_card": "lost_card", "replacement_card": "replacement_card"}
_EXPORT_ONLY = ("dialect",)
_NOT_FOR_EXPORT = ("page_token",)  # an export is one snapshot, never paged


def _actions_help() -> str:
    """Each action with the key=value arguments it takes: its request's fields."""
    lines = [
        "actions and their key=value arguments (cards take the number; amounts minor units[:currency],",
        "e.g. initial_load=2500; lists comma-separated, e.g. types=redemption,load):",
    ]
    for action in sorted(ADMIN_ACTIONS):
        names = [field.name for field in ADMIN_ACTIONS[action][1].DESCRIPTOR.fields]
        if action == "export-transactions":
            names = [*_EXPORT_ONLY, *(name for name in names if name not in _NOT_FOR_EXPORT)]
        lines.append(f"  {action:<24}{' '.join(f'{name}=' for name in names) or '(none)'}")
    return "\n".join(lines)


AMOUNT_FIELDS = ("initial_load", "amount_paid", "amount")  # <minor units>[:<currency>], EUR if none


def _flag_dest(flag: str) -> str:
    return f"repayment_{flag.replace('-', '_')}"


def _repayment_flags(options: argparse.Namespace) -> dict[str, str]:
    """record-repayment's flags given, by flag; ValueError if given to another action."""
    given = {flag: getattr(options, _flag_dest(flag)) for flag in REPAYMENT_FLAGS}
    given = {flag: value for flag, value in given.items() if value is not None}
    if given and options.action != "record-repayment":
        raise ValueError(f"--{next(iter(given))} is record-repayment's, not {options.action}'s")
    return given


def _with_repayment_flags(request: Any, flags: dict[str, str]) -> Any:
    """The flags set on record-repayment's request; the amount in major units of its currency."""
    for flag, value in flags.items():
        field = REPAYMENT_FLAGS[flag][0]
        if field != "amount":
            setattr(request, field, value)
    if "amount" in flags:
        currency = flags.get("currency", "EUR")
        request.amount.CopyFrom(
            pb.Amount(amount_minor=minor_units(flags["amount"], currency), currency=currency)
        )
    elif "currency" in flags:
        raise ValueError("--currency needs --amount")
    return request


INT64_MAX = 2**63 - 1


def minor_units(text: str, currency: str) -> int:
    """A decimal amount in major units ("12.50") as minor units of the currency; ValueError naming
    --amount for anything else (a sign, a comma, more decimals than the currency has)."""
    whole, point, fraction = text.partition(".")
    exponent = minor_unit_exponent(currency)
    if (
        not whole.isdigit()
        or not whole.isascii()
        or (point and not (fraction.isdigit() and fraction.isascii()))
    ):
        raise ValueError(
            f"--amount must be an amount in major units such as 12.50, got {quoting.quoted(text)}"
        )
    if len(fraction) > exponent:
        raise ValueError(f"--amount {quoting.quoted(text)} has more decimals than {currency}'s {exponent}")
    amount_minor = int(whole + fraction.ljust(exponent, "0"))
    if amount_minor > INT64_MAX:
        raise ValueError(f"--amount {quoting.quoted(text)} is too large")
    return amount_minor


def _admin(options: argparse.Namespace) -> int:
    method_name, request_type = ADMIN_ACTIONS[options.action]
    arguments: list[str] = options.args
    dialect = ""
    if options.action == "export-transactions":  # dialect= is the export's; the rest the report's
        dialect = next((a.partition("=")[2] for a in arguments if a.startswith("dialect=")), "")
        arguments = [a for a in arguments if not a.startswith("dialect=")]
    try:
        request = _with_repayment_flags(_build_request(request_type, arguments), _repayment_flags(options))
    except (ValueError, AttributeError, OSError) as error:
        # Masked as the switch masks a refused value: a card number typed into another argument
        # (or where its key goes) would come back in protobuf's, a path's or our own message.
        problem = quoting.mask_digit_runs(str(error))
        print(f"txswitch admin {options.action}: {problem}", file=sys.stderr)
        return 2
    token_path = options.data_dir / "admin.token"
    try:
        token = token_path.read_text().strip()
    except OSError as error:  # run from another directory than the switch's, or before its first start
        shown_path = quoting.mask_digit_runs(str(token_path))  # the operator's text
        print(
            f"txswitch admin {options.action}: no admin token at {shown_path} ({error.strerror}); "
            "pass --data-dir <the switch's data directory>",
            file=sys.stderr,
        )
        return 2
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(options.target) as channel:
        stub = bo_grpc.BackofficeStub(channel)
        try:
            if options.action == "export-transactions":
                _export_to_stdout(stub, request, metadata, dialect)
                return 0
            response = getattr(stub, method_name)(request, metadata=metadata, timeout=ADMIN_DEADLINE_S)
        except grpc.RpcError as error:
            print(
                f"txswitch admin {options.action}: {_call_failure(error, channel, options.target)}",
                file=sys.stderr,
            )
            return 1
    print(as_json(response))
    return 0


def as_json(message: Any) -> str:
    """Every field, zeros and empty lists included: a ledger check's 0 unbalanced entries, an empty
    card's balance of 0 and an empty list are answers too (left out, they read as missing)."""
    shown = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(shown, indent=2)


def _export_to_stdout(
    stub: bo_grpc.BackofficeStub, request: Any, metadata: tuple[tuple[str, str], ...], dialect: str
) -> None:
    """As UTF-8 whatever the terminal's encoding, and the lines' own CRLF untranslated."""
    sys.stdout.flush()
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    try:
        export_transactions(stub, request, metadata, out, dialect)
    finally:
        out.detach()


def export_transactions(
    stub: bo_grpc.BackofficeStub,
    request: bo.TransactionReportRequest,
    metadata: tuple[tuple[str, str], ...],
    out: TextIO,
    dialect: str = "",
) -> None:
    """Every transaction of the report as CSV (amounts in major units), from one snapshot of the
    switch's database, in the dialect named ("rfc4180", the default, or "excel-nl");
    request.page_size is the most rows per chunk.

    Nothing is written before the first chunk has come back, so a refused export prints no header.
    """
    chunks = stub.ExportTransactions(
        bo.TransactionExportRequest(report=request, dialect=dialect),
        metadata=metadata,
        timeout=EXPORT_DEADLINE_S,
    )
    text = codecs.getincrementaldecoder("utf-8")()
    for chunk in chunks:
        out.write(text.decode(chunk.csv))
    out.write(text.decode(b"", final=True))


def _build_request(request_type: Any, pairs: list[str]) -> Any:
    """key=value pairs; card fields take a card number, amounts take minor units and currency,
    bytes fields a file name (its contents are sent).

    A repeated field takes values split by commas (types=redemption,load).
    """
    request = request_type()
    for position, pair in enumerate(pairs, start=1):
        key, separator, value = pair.partition("=")
        if not separator:  # not echoed: it may be a card number or a PIN given without its key
            raise ValueError(f"argument {position} is not key=value (e.g. card=<number>)")
        if key == "amount" and request_type is bo.RecordRepaymentRequest:
            # key=value amounts are minor units elsewhere; what arrived by bank is typed as printed
            raise ValueError(
                "record-repayment takes its amount as --amount in major units (e.g. --amount 9.75)"
            )
        try:
            _set_argument(request, key, value)
        except ValueError as error:  # protobuf's own, such as "Value out of range: ...", name no field
            raise ValueError(f"{key}: {error}") from None
    return request


def _whole_number(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{what}, got {quoting.quoted(value)}") from None


def _set_argument(request: Any, key: str, value: str) -> None:
    if key in CARD_FIELDS:
        getattr(request, key).CopyFrom(pb.CardRef(card_number=value))
    elif key in AMOUNT_FIELDS:
        minor, _, currency = value.partition(":")
        amount_minor = _whole_number(minor, "must be a whole number of cents, such as 2500 or 2500:EUR")
        getattr(request, key).CopyFrom(pb.Amount(amount_minor=amount_minor, currency=currency or "EUR"))
    elif key == "kind":
        if value.lower() not in ("gift", "benefit"):
            raise ValueError(f"must be gift or benefit, got {quoting.quoted(value)}")
        request.kind = bo.ProgrammeKind.Value(f"PROGRAMME_KIND_{value.upper()}")
    else:
        field = request.DESCRIPTOR.fields_by_name.get(key)
        if field is None:
            raise ValueError(f"unknown argument of {request.DESCRIPTOR.name}")
        if field.is_repeated:
            getattr(request, key).extend(item for item in value.split(",") if item)
        elif field.type in (field.TYPE_INT32, field.TYPE_INT64):
            setattr(request, key, _whole_number(value, "must be a whole number"))
        elif field.type == field.TYPE_BYTES:  # a file's contents: logo_png=shop-logo.png
            setattr(request, key, Path(value).read_bytes())
        elif field.type == field.TYPE_BOOL:
            if value.lower() not in ("true", "false"):
                raise ValueError(f"must be true or false, got {quoting.quoted(value)}")
            setattr(request, key, value.lower() == "true")
        else:
            setattr(request, key, value)


if __name__ == "__main__":
    sys.exit(main())
