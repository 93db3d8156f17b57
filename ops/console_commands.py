"""Console commands: parsing, role checks and text output over an OpsBackend; no SSH here."""

from __future__ import annotations

import datetime
import enum
import logging
import shlex
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ops.console_auth import Caller, Role
from ops.console_backend import (
    AcquirerInfo,
    ActionResult,
    CardInfo,
    DayCloseListing,
    DayCloseReport,
    OpsBackend,
    StoreAndForwardEntry,
    SwitchStatus,
    TerminalInfo,
)
from ops.logs import scrub_text
from switch.store.repository import DAY_CLOSES_LISTED_DEFAULT, DAY_CLOSES_LISTED_MAX

log = logging.getLogger(__name__)

COMMAND_LINE_CHARS_MAX = 1024
# A tab separates words like a space; every other control character is refused, and so is every
# format character (Unicode Cf: invisible, and U+202E shows the rest of the line reversed).
COMMAND_CONTROL_CHARACTERS_ALLOWED = frozenset("\t")
COMMAND_CHARACTER_CATEGORIES_REFUSED = frozenset({"Cc", "Cf"})
# What the SSH layer puts for each byte of the session's input that is not UTF-8.
NOT_UTF8_REPLACEMENT = "\ufffd"
NO_ACQUIRERS = "no acquirer links configured"
NO_RECEIPTS = "e-mailed receipts are off (no mail server configured)"


class Outcome(enum.Enum):
    """How a command ended, by the name the audit log records; its exit status (EXIT_STATUSES)
    follows sysexits where one fits, so scripts over `ssh host cmd` can branch. Not the exit
    status as value: three outcomes share EX_TEMPFAIL, and an enum makes equal values one member."""

    ok = "ok"
    failed = "failed"
    usage = "usage"
    error = "error"
    # The switch did not answer in time and may still complete the command: neither done nor not
    # done, so the operator checks before sending it again.
    timed_out = "timed_out"
    # Not done for a fault that may pass (the database, the journal), not for a rule: sent again,
    # it may succeed.
    unavailable = "unavailable"
    # Still waiting for a console worker at its timeout, so cancelled: never run, sent again it
    # runs once.
    not_run = "not_run"
    refused = "refused"

    @property
    def exit_status(self) -> int:
        return EXIT_STATUSES[self]


EX_TEMPFAIL = 75
EXIT_STATUSES: dict[Outcome, int] = {
    Outcome.ok: 0,
    Outcome.failed: 1,
    Outcome.usage: 64,
    Outcome.error: 70,
    Outcome.timed_out: EX_TEMPFAIL,
    Outcome.unavailable: EX_TEMPFAIL,
    Outcome.not_run: EX_TEMPFAIL,
    Outcome.refused: 77,
}


@dataclass(frozen=True, slots=True)
class CommandResult:
    output: str
    outcome: Outcome

    @property
    def exit_status(self) -> int:
        return self.outcome.exit_status


Handler = Callable[[OpsBackend, Caller, Sequence[str]], CommandResult]
BeforeChange = Callable[[], None]  # raises OSError when the change must not go ahead
AUDIT_NOT_WRITTEN = "error: the audit log cannot be written; nothing was done (the switch log has details)"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    words: tuple[str, ...]
    params: tuple[str, ...]
    role: Role
    summary: str
    handler: Handler
    # (flag, what its value is): each may follow the params once, as `--flag value`; the handler
    # gets the params, then each option's value in this order ("" when not given).
    options: tuple[tuple[str, str], ...] = ()

    @property
    def usage(self) -> str:
        optional = (f"[{flag} {value}]" for flag, value in self.options)
        return " ".join((*self.words, *self.params, *optional))

    @property
    def changes_switch(self) -> bool:
        """The operator's commands are the ones that change the switch (or send to an acquirer)."""
        return self.role is Role.operator


def _ok(text: str) -> CommandResult:
    return CommandResult(text, Outcome.ok)


def _failed(text: str) -> CommandResult:
    return CommandResult(text, Outcome.failed)


def _action(result: ActionResult) -> CommandResult:
    if result.ok:
        return _ok(result.message)
    if result.unavailable:
        return CommandResult(f"unavailable, not done: {result.message}", Outcome.unavailable)
    return _failed(f"failed: {result.message}")


# -- formatting -----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def money(amount_minor: int, currency: str, exponent: int) -> str:
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**exponent)
    fraction = f".{minor:0{exponent}d}" if exponent else ""
    return f"{sign}{units}{fraction} {currency}"


def when(moment: datetime.datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(sep=" ", timespec="seconds")


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _terminal_row(terminal: TerminalInfo) -> list[str]:
    return [
        terminal.terminal_id,
        terminal.merchant,
        terminal.location,
        terminal.device_name,
        "active" if terminal.active else "deactivated",
        yes_no(terminal.online),
    ]


def _terminal_detail(terminal: TerminalInfo) -> str:
    fields = [
        ("terminal", terminal.terminal_id),
        ("merchant", terminal.merchant),
        ("location", terminal.location),
        ("device", terminal.device_name),
        ("state", "active" if terminal.active else "deactivated"),
        ("online", yes_no(terminal.online)),
        ("activated at", when(terminal.activated_at)),
        ("last seen at", when(terminal.last_seen_at)),
        ("day closes", str(terminal.day_close_sequence)),
    ]
    return _fields(fields)


def _fields(fields: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)


def _card_detail(card: CardInfo) -> str:
    return _fields(
        [
            ("card", card.card_ref),
            ("number", card.masked_number),
            ("programme", card.programme),
            ("status", card.status),
            ("expiry", card.expiry.isoformat()),
            ("balance", money(card.balance_minor, card.currency, card.currency_exponent)),
            ("PIN blocked", yes_no(card.pin_blocked)),
        ]
    )


def _day_close_report(report: DayCloseReport) -> str:
    state = f"closed {when(report.closed_at)}" if report.closed_at else "open (X report)"
    heading = f"#{report.sequence}  opened {when(report.opened_at)}  {state}"
    if not report.totals:
        return heading + "\n  no transactions"
    rows = [
        [
            total.transaction_type,
            str(total.count),
            money(total.amount_minor, total.currency, total.currency_exponent),
        ]
        for total in report.totals
    ]
    body = table(["type", "count", "amount"], rows)
    return heading + "\n" + "\n".join("  " + line for line in body.splitlines())


def _acquirer_row(acquirer: AcquirerInfo) -> list[str]:
    return [
        acquirer.name,
        acquirer.state,
        f"{acquirer.host}:{acquirer.port}",
        str(acquirer.requests_in_flight),
        when(acquirer.last_echo_at),
        str(acquirer.store_and_forward_pending),
    ]


def _saf_row(entry: StoreAndForwardEntry) -> list[str]:
    return [
        entry.entry_id,
        entry.acquirer,
        entry.mti,
        entry.stan,
        money(entry.amount_minor, entry.currency, entry.currency_exponent),
        str(entry.attempts),
        when(entry.created_at),
        when(entry.last_attempt_at),
    ]


# -- handlers -------------------------------------------------------------------------------


def _status(backend: OpsBackend, _caller: Caller, _args: Sequence[str]) -> CommandResult:
    status = backend.status()
    return _ok(
        _fields(
            [
                ("version", status.version),
                ("uptime", f"{status.uptime_s} s"),
                ("state", "draining" if status.draining else "serving"),
                ("terminals active", str(status.terminals_active)),
                ("switch terminals", f"{status.switch_terminals_active} (web back office, online top-up)"),
                ("terminals online", str(status.terminals_online)),
                ("card actors live", str(status.card_actors_live)),
                ("requests in flight", str(status.requests_in_flight)),
                (
                    "acquirer links up",
                    f"{status.acquirer_links_up}/{status.acquirer_links_total}",
                ),
                ("store-and-forward", f"{status.store_and_forward_pending} pending"),
                ("location changes", _changes_waiting(status)),
                ("top-ups waiting", _top_ups_waiting(status)),
                ("indexes missing", _indexes_missing(status)),
            ]
        )
    )


def _changes_waiting(status: SwitchStatus) -> str:
    if status.location_changes_pending == 0:
        return "0 pending"
    waited_h = status.location_change_oldest_waited_s // 3600
    return (
        f"{status.location_changes_pending} pending, the oldest for {waited_h} h "
        "(txswitch admin list-location-changes status=pending)"
    )


def _top_ups_waiting(status: SwitchStatus) -> str:
    waiting = status.top_ups_waiting
    if waiting is None:
        return "not counted yet (the top-up sweep counts them at start, then every top_up_sweep_interval_s)"
    confirming = f"{waiting.confirming} confirming"
    if waiting.confirming:
        confirming += f", the oldest for {_waited(waiting.oldest_confirming_waited_s)}"
    refund_due = f"{waiting.refund_due} refund_due"
    if waiting.refund_due:
        refund_due += (
            f", the oldest for {_waited(waiting.oldest_refund_due_waited_s)} "
            "(txswitch admin list-top-ups status=refund_due)"
        )
    return f"{confirming}; {refund_due}; as the last sweep counted them"


def _waited(waited_s: int) -> str:
    return f"{waited_s // 60} min" if waited_s < 3600 else f"{waited_s // 3600} h"


def _indexes_missing(status: SwitchStatus) -> str:
    if not status.indexes_missing:
        return "none"
    it = "it" if len(status.indexes_missing) == 1 else "them"
    return f"{', '.join(status.indexes_missing)} (rows break {it}; see the log)"


def _terminals_list(backend: OpsBackend, _caller: Caller, _args: Sequence[str]) -> CommandResult:
    terminals = backend.list_terminals()
    if not terminals:
        return _ok("no terminals")
    headers = ["terminal", "merchant", "location", "device", "state", "online"]
    return _ok(table(headers, [_terminal_row(terminal) for terminal in terminals]))


def _terminals_show(backend: OpsBackend, _caller: Caller, args: Sequence[str]) -> CommandResult:
    terminal = backend.find_terminal(args[0])
    if terminal is None:
        return _failed(f"no terminal {args[0]}")
    return _ok(_terminal_detail(terminal))


def _terminals_deactivate(backend: OpsBackend, caller: Caller, args: Sequence[str]) -> CommandResult:
    return _action(backend.deactivate_terminal(args[0], caller.name))


def _cards_show(backend: OpsBackend, _caller: Caller, args: Sequence[str]) -> CommandResult:
    card = backend.find_card(args[0])
    if card is None:
        return _failed("no such card")
    return _ok(_card_detail(card))


def _cards_block(backend: OpsBackend, caller: Caller, args: Sequence[str]) -> CommandResult:
    return _action(backend.block_card(args[0], caller.name))


def _cards_unblock(backend: OpsBackend, caller: Caller, args: Sequence[str]) -> CommandResult:
    return _action(backend.unblock_card(args[0], caller.name))


def _cards_replace(backend: OpsBackend, caller: Caller, args: Sequence[str]) -> CommandResult:
    if args[0] == args[1]:
        return CommandResult("the lost and the new card must differ", Outcome.usage)
    return _action(backend.replace_card(args[0], args[1], caller.name))


def _day_close_list(backend: OpsBackend, _caller: Caller, args: Sequence[str]) -> CommandResult:
    terminal_id, before_text, page_size_text = args
    before = _whole_number("--before", before_text, 0, None)
    page_size = _whole_number("--page-size", page_size_text, DAY_CLOSES_LISTED_DEFAULT, DAY_CLOSES_LISTED_MAX)
    if isinstance(before, CommandResult):
        return before
    if isinstance(page_size, CommandResult):
        return page_size
    listing = backend.day_close_reports(terminal_id, page_size, before)
    if listing is None:
        return _failed(f"no terminal {terminal_id}")
    if not listing.reports:
        return _ok(f"no day closes for {terminal_id}" + (f" before #{before}" if before else ""))
    return _ok(_day_close_listing(listing, terminal_id, page_size_text))


def _day_close_listing(listing: DayCloseListing, terminal_id: str, page_size_text: str) -> str:
    """The page's closes; when older ones are left out, the command that lists them."""
    text = "\n".join(_day_close_report(report) for report in listing.reports)
    if not listing.next_before_sequence:
        return text
    older = f"day-close list {terminal_id} --before {listing.next_before_sequence}"
    if page_size_text:
        older += f" --page-size {page_size_text}"
    return f"{text}\nolder closes: {older}"


# Digits past this are no sequence number or page size a switch holds (and int() of thousands of
# digits is slow).
WHOLE_NUMBER_DIGITS_MAX = 18


def _whole_number(flag: str, text: str, default: int, maximum: int | None) -> int | CommandResult:
    """An option's value: default when not given, else a whole number from 1 to maximum."""
    if not text:
        return default
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= WHOLE_NUMBER_DIGITS_MAX else 0
    if number < 1 or (maximum is not None and number > maximum):
        bound = f"from 1 to {maximum}" if maximum is not None else "from 1"
        return CommandResult(f"{flag} {text}: give a whole number {bound}", Outcome.usage)
    return number


def _acquirers_status(backend: OpsBackend, _caller: Caller, _args: Sequence[str]) -> CommandResult:
    acquirers = backend.list_acquirers()
    if acquirers is None:
        return _ok(NO_ACQUIRERS)
    if not acquirers:
        return _ok("no acquirer links")
    headers = ["acquirer", "state", "address", "in flight", "last echo", "saf pending"]
    return _ok(table(headers, [_acquirer_row(acquirer) for acquirer in acquirers]))


def _acquirers_sign_on(backend: OpsBackend, caller: Caller, args: Sequence[str]) -> CommandResult:
    return _action(backend.acquirer_sign_on(args[0], caller.name))


def _acquirers_echo(backend: OpsBackend, caller: Caller, args: Sequence[str]) -> CommandResult:
    return _action(backend.acquirer_echo(args[0], caller.name))


def _saf_list(backend: OpsBackend, _caller: Caller, _args: Sequence[str]) -> CommandResult:
    view = backend.store_and_forward()
    if view is None:
        return _ok(NO_ACQUIRERS)
    if not view.entries:
        return _ok("store-and-forward queue is empty")
    headers = ["entry", "acquirer", "mti", "stan", "amount", "tries", "created", "last try"]
    listing = table(headers, [_saf_row(entry) for entry in view.entries])
    # Only the oldest are listed (SAF_PENDING_LIMIT_MAX): the rest were left out without a word.
    not_listed = view.pending_total - len(view.entries)
    if not_listed > 0:
        listing += (
            f"\n{not_listed} more pending, not listed: {view.pending_total} in all, "
            f"the oldest {len(view.entries)} shown"
        )
    return _ok(listing)


def _saf_retry(backend: OpsBackend, caller: Caller, _args: Sequence[str]) -> CommandResult:
    return _action(backend.store_and_forward_retry(caller.name))


def _receipts_list(backend: OpsBackend, _caller: Caller, _args: Sequence[str]) -> CommandResult:
    view = backend.receipts()
    if view is None:
        return _ok(NO_RECEIPTS)
    counts = ", ".join(f"{state} {view.counts.get(state, 0)}" for state in ("queued", "sent", "failed"))
    if not view.entries:
        return _ok(f"receipts: {counts}; none waiting or given up")
    headers = ["receipt", "terminal", "transaction", "to", "state", "tries", "next try", "last error"]
    rows = [
        [
            e.receipt_id,
            e.terminal_id,
            e.transaction_id,
            e.email_masked,
            e.state,
            str(e.attempts),
            when(e.next_attempt_at) if e.state == "queued" else "-",
            e.last_error or "-",
        ]
        for e in view.entries
    ]
    return _ok(f"receipts: {counts}\n" + table(headers, rows))


def _receipts_retry(backend: OpsBackend, caller: Caller, _args: Sequence[str]) -> CommandResult:
    return _action(backend.receipts_retry(caller.name))


def _drain(backend: OpsBackend, caller: Caller, _args: Sequence[str]) -> CommandResult:
    return _action(backend.drain(caller.name))


def _help(_backend: OpsBackend, caller: Caller, _args: Sequence[str]) -> CommandResult:
    return _ok(help_text(caller.role))


_VIEWER, _OPERATOR = Role.viewer, Role.operator

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("status",), (), _VIEWER, "switch state at a glance", _status),
    CommandSpec(("terminals", "list"), (), _VIEWER, "all terminals", _terminals_list),
    CommandSpec(("terminals", "show"), ("ID",), _VIEWER, "one terminal", _terminals_show),
    CommandSpec(("terminals", "deactivate"), ("ID",), _OPERATOR, "stop a terminal", _terminals_deactivate),
    CommandSpec(("cards", "show"), ("REF",), _VIEWER, "a card, number masked", _cards_show),
    CommandSpec(("cards", "block"), ("REF",), _OPERATOR, "block a card now", _cards_block),
    CommandSpec(("cards", "unblock"), ("REF",), _OPERATOR, "unblock a card", _cards_unblock),
    CommandSpec(
        ("cards", "replace"),
        ("LOST", "NEW"),
        _OPERATOR,
        "block LOST and move its balance to NEW",
        _cards_replace,
    ),
    CommandSpec(
        ("day-close", "list"),
        ("TERMINAL",),
        _VIEWER,
        f"day-close reports, the newest {DAY_CLOSES_LISTED_DEFAULT} and the open period",
        _day_close_list,
        (("--before", "SEQUENCE"), ("--page-size", "N")),
    ),
    CommandSpec(("acquirers", "status"), (), _VIEWER, "acquirer links", _acquirers_status),
    CommandSpec(("acquirers", "sign-on"), ("NAME",), _OPERATOR, "send 0800 sign-on", _acquirers_sign_on),
    CommandSpec(("acquirers", "echo"), ("NAME",), _OPERATOR, "send 0800 echo", _acquirers_echo),
    CommandSpec(("saf", "list"), (), _VIEWER, "stored advices waiting", _saf_list),
    CommandSpec(("saf", "retry"), (), _OPERATOR, "retransmit stored advices now", _saf_retry),
    CommandSpec(("receipts", "list"), (), _VIEWER, "e-mailed receipts waiting or given up", _receipts_list),
    CommandSpec(("receipts", "retry"), (), _OPERATOR, "send waiting receipts now", _receipts_retry),
    CommandSpec(("drain",), (), _OPERATOR, "stop taking requests, finish in-flight", _drain),
    CommandSpec(("help",), (), _VIEWER, "this list", _help),
)


def help_text(role: Role) -> str:
    rows = [
        [spec.usage, spec.summary + ("" if _allowed(role, spec) else " (operator only)")] for spec in COMMANDS
    ]
    return table(["command", "what it does"], rows) + "\nexit or quit ends the session"


def _allowed(role: Role, spec: CommandSpec) -> bool:
    return spec.role is Role.viewer or role is Role.operator


def find_command(words: Sequence[str]) -> CommandSpec | CommandResult:
    """The spec words name, or the usage result explaining why none does."""
    for spec in COMMANDS:
        if tuple(words[: len(spec.words)]) == spec.words:
            return spec
    subcommands = [spec for spec in COMMANDS if spec.words[0] == words[0]]
    if subcommands:
        choices = ", ".join(spec.words[1] for spec in subcommands)
        return CommandResult(f"{words[0]}: choose one of {choices}", Outcome.usage)
    return CommandResult(f"unknown command {words[0]!r}; type help", Outcome.usage)


def execute(
    line: str, caller: Caller, backend: OpsBackend, before_change: BeforeChange | None = None
) -> CommandResult:
    """Run one command line for caller; never raises, never shows a traceback. before_change runs
    just before a command that changes the switch, which does not run if it raises OSError."""
    result = _execute(line, caller, backend, before_change)
    # The backend should return masked data; this is the second line of defence. A refusal may
    # echo what the operator typed ("no terminal ..."), where a card number may be mistyped: it
    # is masked as the audit log masks it, Luhn-valid or not.
    typed = result.outcome is not Outcome.ok
    return CommandResult(scrub_text(result.output, typed=typed), result.outcome)


def _control_character_refusal(line: str) -> CommandResult | None:
    """A usage result naming the first control character or non-UTF-8 byte in line, by position
    only: echoed as is, an escape sequence would be run by the operator's terminal."""
    for position, character in enumerate(line, start=1):
        if character == NOT_UTF8_REPLACEMENT:
            return CommandResult(
                f"the command holds bytes that are not UTF-8 at character {position}", Outcome.usage
            )
        category = unicodedata.category(character)
        if (
            character not in COMMAND_CONTROL_CHARACTERS_ALLOWED
            and category in COMMAND_CHARACTER_CATEGORIES_REFUSED
        ):
            kind = "control character" if category == "Cc" else "format character (invisible)"
            return CommandResult(
                f"the command holds a {kind} (U+{ord(character):04X}) at character {position}",
                Outcome.usage,
            )
    return None


def _arguments(spec: CommandSpec, words: Sequence[str]) -> list[str] | None:
    """The params, then each option's value in the spec's order ("" when not given); None when
    the words do not fit the spec's usage (a flag twice or without a value, a param too many)."""
    values = {flag: "" for flag, _ in spec.options}
    params: list[str] = []
    remaining = iter(words)
    for word in remaining:
        if word not in values:
            params.append(word)
            continue
        value = next(remaining, "")
        if not value or values[word]:
            return None
        values[word] = value
    return [*params, *values.values()] if len(params) == len(spec.params) else None


def _execute(
    line: str, caller: Caller, backend: OpsBackend, before_change: BeforeChange | None
) -> CommandResult:
    if len(line) > COMMAND_LINE_CHARS_MAX:
        return CommandResult(f"command longer than {COMMAND_LINE_CHARS_MAX} characters", Outcome.usage)
    refused = _control_character_refusal(line)
    if refused is not None:
        return refused
    try:
        words = shlex.split(line)
    except ValueError as error:
        return CommandResult(f"cannot parse the command: {error}", Outcome.usage)
    if not words:
        return _ok("")
    found = find_command(words)
    if isinstance(found, CommandResult):
        return found
    args = _arguments(found, words[len(found.words) :])
    if args is None:
        return CommandResult(f"usage: {found.usage}", Outcome.usage)
    if not _allowed(caller.role, found):
        message = f"permission denied: {' '.join(found.words)} needs the operator role"
        return CommandResult(message, Outcome.refused)
    if found.changes_switch and before_change is not None:
        try:
            before_change()
        except OSError:
            log.exception("console command not run: its audit line was not written")
            return CommandResult(AUDIT_NOT_WRITTEN, Outcome.error)
    try:
        return found.handler(backend, caller, args)
    except Exception:
        log.exception("console command failed", extra={"command": " ".join(found.words)})
        return CommandResult(
            f"error: {' '.join(found.words)} failed inside the switch; the switch log has details",
            Outcome.error,
        )
