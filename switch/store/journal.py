"""What one durable write is, and how a batch of them is applied in one database transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    Dialect,
    Engine,
    Insert,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from switch.domain.card_rules import status_decline
from switch.domain.cards import CardStatus
from switch.domain.ledger import AccountKind, JournalEntry, LedgerRefusal, card_account
from switch.domain.pickling import pickled_by_fields
from switch.domain.transactions import TransactionStatus, TransactionType
from switch.store.engine import writing
from switch.store.periods import (
    WebDayRule,
    earlier_days,
    open_periods_by_device,
    period_totals,
    totals_json,
    transaction_rows,
    web_day_close_id,
)
from switch.store.schema import (
    INBOUND_REPEAT_WINDOW,
    accounts,
    card_events,
    card_replacements,
    cards,
    day_closes,
    employees,
    inbound_repeat_keys,
    inbound_resends,
    journal_entries,
    merchant_repayments,
    payout_cycle_dues,
    postings,
    terminals,
    transactions,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

# The transaction_type of a record that holds the id of a transaction reversed before it ever
# arrived, so the late original cannot move money; it is no transaction of its own.
TOMBSTONE_TYPE = "tombstone"


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """The row that records a terminal transaction and the answer it got."""

    source: str
    transaction_id: str
    transaction_type: str
    fingerprint: str
    currency: str
    result: str
    status: str
    card_id: str | None = None
    merchant_id: str | None = None
    requested_minor: int = 0
    approved_minor: int = 0
    balance_after_minor: int | None = None
    cardholder_part_minor: int = 0
    funder_part_minor: int = 0
    detail: str = ""
    authorization_code: str = ""
    period_number: int = 0
    original_transaction_id: str = ""
    card_masked: str = ""
    payment_method: str = "stored_value"
    mti: str = ""  # the ISO 8583 MTI of an inbound request (TransactionRow.mti)
    retrieval_reference: str = ""  # field 37 of an inbound 0100/0200 (TransactionRow.retrieval_reference)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OriginalChange:
    """A conditional change of an earlier transaction: refunded further, cancelled or reversed."""

    source: str
    transaction_id: str
    new_status: str
    refund_minor: int = 0
    require_unrefunded: bool = False


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CardIssue:
    """A new card: its row and its account, at zero in the programme's currency. The write that
    issues it may load it too (its entry), so a card and its first load land together."""

    card_id: str
    programme_id: str
    card_hash: str  # unique: a number issued twice refuses the write (a conflict)
    masked: str
    expiry: dt.date
    currency: str
    issue_key: str | None = None  # unique: the request_id that issued it, so a replay is a conflict


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CardChange:
    card_id: str
    status: CardStatus
    event_kind: str
    detail: str
    actor: str
    replaced_by: str | None = None
    # The transfer key of a replacement that moved no money, kept in card_replacements (a transfer's
    # is its entry's): unique, so the same request landing twice is a conflict; refused too when a
    # transfer's entry holds it (the same request moved money first).
    replacement_key: str | None = None
    # A replacement's (replaced_by set): the card's replaced_by as the replacement was judged on it.
    # The change lands only if it is still that, or the new card already: two replacements of one
    # card by two cards at once both judged it not replaced, and the second took the first's place.
    replaced_by_seen: str | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PeriodClose:
    """Close a terminal's open period and open the next one; at most once per close id."""

    terminal_id: str
    close_id: str
    period_number: int  # the period being closed; the close is refused if it is no longer open
    opened_at: dt.datetime
    closed_at: dt.datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PinRehash:
    """A right employee PIN hashed again at today's cost: stored only over the hash it was checked
    against, so a PIN changed meanwhile stays; nothing is refused when it was (no row matched)."""

    employee_id: str
    checked_hash: str
    new_hash: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class EmployeeAttempt:
    """An employee's PIN-check state after one attempt: wrong tries and lockout."""

    employee_id: str
    failed_tries: int
    locked_until: dt.datetime | None
    # The employee's stored attempts when the check read its state; the write is refused
    # (BackstopError) if another attempt was stored since, on another node. None: unconditional.
    attempts_before: int | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CyclePayout:
    """A payout as its merchant's payout of the programme's payout cycle (payout_cycle_dues), judged
    and marked in the payout's own transaction, whatever crashes or runs beside it.

    A Settle's (paid_by its settlement id) is marked as the cycle's payout, unless an earlier
    Settle's is. The cycle's own (SettleDue's, paid_by "") is refused once a Settle's is marked:
    the run read no mark, then a Settle paid and the merchant redeemed as much again."""

    programme_id: str
    cycle_settlement_id: str  # payout-<cycle start>
    merchant_id: str
    paid_by: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class BalanceAsRead:
    """A card's balance as read by the write that moves all of it (a replacement's transfer where
    nodes share cards): the write is refused (BalanceChangedError) unless the card still holds that
    when it lands, so money another node credited or took meanwhile is never left behind."""

    card_id: str
    balance_minor: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class InboundResend:
    """An inbound sale sent again under a new field 7, answered as its first (inbound_resends)."""

    source: str
    transaction_id: str  # the resend's: "<field 41>:<STAN>:<its field 7>"
    first_transaction_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RepaymentRecord:
    """A merchant's bank transfer back to the programme: stored with its entry (merchant_repayments);
    its request id stored twice is a conflict, answered by the first's row."""

    request_id: str
    merchant_id: str
    programme_id: str
    currency: str
    amount_minor: int
    reference: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Write:
    """Everything that lands together or not at all. All writes of the switch go through the one
    journal writer, so none of them waits on another connection's write lock."""

    record: TransactionRecord | None = None
    # A reversal of a transaction never seen holds its id, so a late original cannot move money.
    tombstone: TransactionRecord | None = None
    entry: JournalEntry | None = None
    original: OriginalChange | None = None
    card_changes: tuple[CardChange, ...] = ()
    period_close: PeriodClose | None = None
    employee_attempt: EmployeeAttempt | None = None
    pin_rehash: PinRehash | None = None
    card_issue: CardIssue | None = None
    # A refund undone gives its redemption back what it had refunded (refund_minor negative).
    refund_undone: OriginalChange | None = None
    # The card this write credits must still be active and not replaced when it lands: a lost
    # card's balance must not land on a card replaced in turn meanwhile (A onto B while B onto C).
    active_card: str | None = None
    # Other nodes share the cards: the card this write credits, decided on a copy that may be older
    # than a replacement there. Not refused (money given back); the result says whether the card
    # was lost or replaced when the write landed (WriteResult.credited_lost_card), so it follows.
    credited_card: str | None = None
    # Other nodes share the cards: the lost card whose whole balance this write moves, as it was read
    balance_as_read: BalanceAsRead | None = None
    # A payout that is its merchant's payout of the cycle (a Settle's)
    cycle_payout: CyclePayout | None = None
    # A merchant's repayment: its row, beside the entry that moves its money
    repayment: RepaymentRecord | None = None
    # An inbound resend answered as its first: its field 7 names that first from now on
    resend: InboundResend | None = None


class BackstopError(Exception):
    """A backstop condition failed: the write would overdraw, repeat, or undo twice; `refusal`
    names the rule where the caller's answer must say what happened (WriteResult.refusal)."""

    def __init__(self, problem: str, refusal: LedgerRefusal | None = None) -> None:
        super().__init__(problem)
        self.refusal = refusal


class PeriodClosedError(BackstopError):
    """A cancel or reversal whose original's period was closed after its check: a day close, or
    the write of a web transaction that closed the web terminal's day before (WebDayRule)."""


class CardNotActiveError(BackstopError):
    """The card a write may credit only while active (Write.active_card) was not when it landed:
    blocked, lost, or replaced on another node since the deciding copy was read."""

    def __init__(self, card_id: str, status: CardStatus) -> None:
        super().__init__(f"card {card_id} is no longer active (replaced or blocked meanwhile)")
        self.status = status


class BalanceChangedError(BackstopError):
    """A card's balance changed between its read and the write moving all of it (Write.balance_as_read)."""


# The statuses an undo gives its original: allowed only while the original's period is open.
UNDONE_STATUSES: Final = frozenset({"cancelled", "reversed"})


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class WriteResult:
    ok: bool
    entry_id: int | None = None
    problem: str = ""
    conflict: bool = False  # the transaction id was stored already (by a replay or another node)
    sequence_number: int | None = None  # of the write's period close
    totals_json: str = ""  # of the write's period close, counted in its own transaction
    period_closed: bool = False  # refused: an undo of an original whose period closed since its check
    credited_lost_card: bool = False  # landed on Write.credited_card, lost or replaced by then
    balance_changed: bool = False  # refused: Write.balance_as_read no longer held; read the card again
    # Refused: Write.active_card was not active when the write landed; its status then (a card
    # replaced but active again counts as lost: its money and later credits go to the replacement).
    card_not_active: CardStatus | None = None
    refusal: LedgerRefusal | None = None  # refused: the rule the write broke, where one is named
    # With card_not_active: the write's record was stored declined as that status declines (no money
    # moved), so a status query and the same id sent again find that decline.
    decline_stored: bool = False
    # Not stored for a fault of the database or the journal (commit failed or in doubt, queue full,
    # journal stopped or lost), not refused by a rule: the same write sent again may land.
    fault: bool = False


def apply_batch(
    conn: Connection,
    writes: list[Write],
    now: dt.datetime,
    web_days: WebDayRule | None = None,
    web_days_closed: list[str] | None = None,
) -> list[WriteResult]:
    """Apply all writes, one statement per kind of row for the whole batch.

    Raises one of BACKSTOP_ERRORS when any one write fails; the caller then applies the writes one
    by one, in order, so that only the failing one is refused. `web_days`: the switch's own
    terminals whose earlier day the writes close first (`_close_earlier_web_days`); the terminals
    so closed are added to `web_days_closed`, so a refused write's caller can make those closes again.
    """
    _issue_cards(conn, [w.card_issue for w in writes if w.card_issue is not None], now)
    active_cards = {w.active_card for w in writes if w.active_card is not None}
    if len(writes) > 1 and active_cards & {c.card_id for w in writes for c in w.card_changes}:
        # One write replaces a card another credits: only in write order can each be judged.
        raise BackstopError("a card of the batch is changed and credited in it")
    for card_id in sorted(active_cards):
        _require_active(conn, card_id)
    for write in writes:
        if write.balance_as_read is not None:
            _require_balance_as_read(conn, write.balance_as_read)
    changes = [change for w in writes for change in (w.original, w.refund_undone) if change is not None]
    _change_originals(conn, changes)
    records = [r for w in writes for r in (w.record, w.tombstone) if r is not None]
    if records:
        opened = open_periods_by_device(conn, (r.source for r in records))
        open_now = {terminal_id: period for terminal_id, (period, _) in opened.items()}
        if web_days is not None:
            moved = _close_earlier_web_days(conn, opened, now, web_days)
            open_now.update(moved)
            if web_days_closed is not None:
                web_days_closed.extend(moved)
        _require_open_originals(writes, open_now)
        conn.execute(_NEW_TRANSACTIONS, transaction_rows(records, now, open_now))
        keyed = [r for r in records if r.retrieval_reference]  # inbound sales only
        if keyed:
            _hold_repeat_keys(conn, keyed, now)
    entries = [w.entry for w in writes if w.entry is not None]
    entry_ids = _post_entries(conn, entries, now)
    # After the postings: a replacement on another node that moved the card's balance holds its
    # account's row until it commits, so the card's row is read as that replacement left it.
    credited_lost = _lost_cards(conn, {w.credited_card for w in writes if w.credited_card is not None})
    results = []
    ids = iter(entry_ids)
    for write in writes:
        for change in write.card_changes:
            _change_card(conn, change, now)
        if write.employee_attempt is not None:
            _save_attempt(conn, write.employee_attempt)
        if write.pin_rehash is not None:
            _save_pin_rehash(conn, write.pin_rehash)
        if write.cycle_payout is not None:
            _mark_cycle_payout(conn, write.cycle_payout)
        sequence_number, totals = (
            _close_period(conn, write.period_close) if write.period_close else (None, "")
        )
        entry_id = next(ids) if write.entry is not None else None
        if write.repayment is not None:
            assert entry_id is not None, "a repayment moves money"
            _record_repayment(conn, write.repayment, entry_id, now)
        if write.resend is not None:  # stored already (a repeat of it): the row kept, no conflict
            statement = _NEW_RESEND[conn.dialect.name]
            conn.execute(statement, {**dataclasses.asdict(write.resend), "created_at": now})
        lost = write.credited_card in credited_lost
        results.append(
            WriteResult(
                True, entry_id, sequence_number=sequence_number, totals_json=totals, credited_lost_card=lost
            )
        )
    return results


def apply_alone(
    conn: Connection,
    write: Write,
    now: dt.datetime,
    web_days: WebDayRule | None = None,
    web_days_closed: list[str] | None = None,
) -> WriteResult:
    return apply_batch(conn, [write], now, web_days, web_days_closed)[0]


def _close_earlier_web_days(
    conn: Connection, opened: dict[str, tuple[int, str]], now: dt.datetime, rule: WebDayRule
) -> dict[str, int]:
    """The new open periods of the switch's own terminals among these (open period, device name)
    whose period held a row of an earlier day: each is closed here, in the transaction that writes
    the new rows, so each row is counted in the day it commits on, though its check for an earlier
    day was made before midnight and it commits after (switch/web_days.py). The close is the one
    any other closer of that period makes (its close id is the period's): another node closing it
    at once waits for the terminal's row, then finds this close. No query at all when none of them
    is the switch's own (a terminal's batch)."""
    own = {
        terminal_id: period for terminal_id, (period, device) in opened.items() if device in rule.device_names
    }
    moved = {}
    for day in earlier_days(conn, own, now, rule, TOMBSTONE_TYPE) if own else ():
        close_id = web_day_close_id(day.period_number)
        _close_period(conn, PeriodClose(day.terminal_id, close_id, day.period_number, day.opened_at, now))
        moved[day.terminal_id] = day.period_number + 1
    return moved


def _require_open_originals(writes: list[Write], open_now: dict[str, int]) -> None:
    """PeriodClosedError unless each cancel or reversal's original is of its terminal's open period
    as it commits. The card actor approved it against the period its terminal's actor held (the
    record's period, then the original's); a close may have come between: the write of a web
    transaction that closed the day before (its own write too, checked before midnight and
    committed after), or a close on another node. A closed period was counted in its close and
    may be paid out: refund instead. No query: the open periods are the rows' own."""
    for write in writes:
        change, record = write.original, write.record
        if change is None or record is None or change.new_status not in UNDONE_STATUSES:
            continue
        if open_now.get(record.source, record.period_number) != record.period_number:
            raise PeriodClosedError(
                f"original {change.transaction_id} is of period {record.period_number}, closed since"
            )


# Statements built once; executemany runs each over a whole batch. Bind names carry a b_ prefix
# because SQLAlchemy reserves the column names for the SET clause.
_row = transactions.c
_CHANGE_ORIGINAL = (
    update(transactions)
    .where(
        _row.source == bindparam("b_source"),
        _row.transaction_id == bindparam("b_transaction_id"),
        _row.status == "approved",
        _row.refunded_minor + bindparam("b_refund_minor") <= _row.approved_minor,
        # 1: the original must not have been refunded at all; 0: no such condition.
        _row.refunded_minor * bindparam("b_unrefunded_required") == 0,
    )
    .values(status=bindparam("b_status"), refunded_minor=_row.refunded_minor + bindparam("b_refund_minor"))
)
_GUARDED_POSTING = (
    update(accounts)
    .where(
        accounts.c.account_id == bindparam("b_account_id"),
        # The backstop across nodes: never let a card go below zero, whatever an actor believed
        # (nor a payable paid out from what it held when read: Posting.only_if_held).
        accounts.c.balance_minor + bindparam("b_amount_minor") >= 0,
    )
    .values(balance_minor=accounts.c.balance_minor + bindparam("b_amount_minor"))
)
_CAPPED_POSTING = (
    update(accounts)
    .where(
        accounts.c.account_id == bindparam("b_account_id"),
        # Across nodes: never let a card go above its maximum, whatever an actor believed.
        accounts.c.balance_minor + bindparam("b_amount_minor") <= bindparam("b_ceiling_minor"),
    )
    .values(balance_minor=accounts.c.balance_minor + bindparam("b_amount_minor"))
)
_POSTING = (
    update(accounts)
    .where(accounts.c.account_id == bindparam("b_account_id"))
    .values(balance_minor=accounts.c.balance_minor + bindparam("b_amount_minor"))
)
# Rows come back in any order (asking for parameter order makes SQLite insert one row at a time),
# so each id is matched to its entry by the entry's unique idempotency key.
_NEW_ENTRY = insert(journal_entries).returning(journal_entries.c.idempotency_key, journal_entries.c.entry_id)
# A statement built per batch has its cache key computed again at every execution; one built here
# once (as all of the above) keeps it.
_NEW_TRANSACTIONS = insert(transactions)
_NEW_REPEAT_KEYS = insert(inbound_repeat_keys)
# A resend repeated again is stored once: its row exists already and is kept (the same first, as
# the first's row never changes). Inserting it again broke the batch, sent then write by write.
_NEW_RESEND = {
    "postgresql": postgresql.insert(inbound_resends).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(inbound_resends).on_conflict_do_nothing(),
}
_STALE_REPEAT_KEY = delete(inbound_repeat_keys).where(
    inbound_repeat_keys.c.source == bindparam("b_source"),
    inbound_repeat_keys.c.id_prefix == bindparam("b_id_prefix"),
    inbound_repeat_keys.c.retrieval_reference == bindparam("b_reference"),
    inbound_repeat_keys.c.created_at < bindparam("b_held_since"),
)
_NEW_POSTINGS = insert(postings)
# The checks of writes on cards other nodes share (Write.active_card, Write.credited_card).
_ACTIVE_CARD = (
    select(cards.c.status, cards.c.replaced_by)
    .where(cards.c.card_id == bindparam("b_card_id"))
    .with_for_update()
)
_LOST_CARDS = select(cards.c.card_id).where(
    cards.c.card_id.in_(bindparam("b_card_ids", expanding=True)),
    (cards.c.status == CardStatus.lost) | cards.c.replaced_by.is_not(None),
)


def _update_each(
    conn: Connection,
    statement: Update,
    rows: list[dict[str, object]],
    problem: str,
    refusal: LedgerRefusal | None = None,
) -> None:
    """Run a conditional update once per row; BackstopError unless every row matched exactly once."""
    if not rows:
        return
    if conn.dialect.supports_sane_multi_rowcount:
        if _execute_driver_sql(conn, statement, rows).rowcount != len(rows):
            raise BackstopError(problem, refusal)
        return
    for row in rows:
        if _execute_driver_sql(conn, statement, [row]).rowcount != 1:
            raise BackstopError(problem, refusal)


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A statement's SQL for one dialect, and how a row of its parameters is given to the driver."""

    sql: str
    positions: tuple[str, ...] | None  # the parameters' names in order; None: the driver takes names
    constants: dict[str, object]  # the values the statement holds itself (its literals)


# The journal process runs each of these statements for every batch. Executed as SQLAlchemy
# statements, each execution looked up its compiled form in the cache and built its parameters
# again (about 15 us of CPU a statement on SQLite, half its cost); compiled here once per
# dialect, each is handed to the driver as SQL. Only statements whose values the driver takes as
# they are (no type converts them on the way in) may be run so; exec_driver_sql still wraps the
# driver's errors as SQLAlchemy's (IntegrityError, DBAPIError), on which the batch's handling hangs.
# Keyed by the id of one of this module's statements (built once, never freed), the dialect and the
# row's keys: a handful of entries, so no limit.
_DRIVER_STATEMENTS: dict[tuple[int, str, tuple[str, ...]], _DriverStatement] = {}


def _execute_driver_sql(
    conn: Connection, statement: Update | Insert, rows: list[dict[str, object]]
) -> CursorResult[Any]:
    """Run statement once per row (executemany for more than one), as its SQL compiled once; every
    row has the same keys (they name the columns an insert sets)."""
    key = (id(statement), conn.dialect.name, tuple(rows[0]))
    driver = _DRIVER_STATEMENTS.get(key)
    if driver is None:
        driver = _DRIVER_STATEMENTS[key] = _driver_statement(statement, conn.dialect, list(rows[0]))
    merged = [{**driver.constants, **row} for row in rows]
    params: list[Any] = (
        merged if driver.positions is None else [tuple([row[n] for n in driver.positions]) for row in merged]
    )
    return conn.exec_driver_sql(driver.sql, params[0] if len(params) == 1 else params)


def _driver_statement(statement: Update | Insert, dialect: Dialect, keys: list[str]) -> _DriverStatement:
    # for_executemany: no RETURNING of a single row's new key, as SQLAlchemy's own executemany
    compiled = statement.compile(dialect=dialect, column_keys=keys, for_executemany=True)
    assert not compiled._bind_processors, f"a value of this statement is converted: {statement}"
    positions = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    constants = {name: value for name, value in compiled.params.items() if name not in keys}
    return _DriverStatement(compiled.string, positions, constants)


# The rows that hold an inbound sale's repeat key: the sale (approved or declined) and the tombstone
# a reversal before it left in its place; a reversal's or a completion's row holds none.
REPEAT_KEYED_TYPES: Final = frozenset({TransactionType.redemption.value, TOMBSTONE_TYPE})


def _hold_repeat_keys(conn: Connection, records: list[TransactionRecord], now: dt.datetime) -> None:
    """Each inbound sale's (acquirer, field 41, STAN, field 37) held by its row, in the row's own
    transaction: a resend under a new field 7 that another node stores meanwhile breaks the key
    (IntegrityError, a conflict) and moves nothing. A key held longer than INBOUND_REPEAT_WINDOW
    is another sale's, of a day before: it is replaced. Field 41 and STAN are read from the id,
    "<field 41>:<STAN>:<field 7>" (iso_inbound.transaction_identity)."""
    rows = [
        {
            "source": record.source,
            "id_prefix": record.transaction_id.rpartition(":")[0],
            "retrieval_reference": record.retrieval_reference,
            "transaction_id": record.transaction_id,
            "created_at": now,
        }
        for record in records
        if record.transaction_type in REPEAT_KEYED_TYPES
    ]
    if not rows:
        return
    held_since = now - INBOUND_REPEAT_WINDOW
    stale = [
        {
            "b_source": row["source"],
            "b_id_prefix": row["id_prefix"],
            "b_reference": row["retrieval_reference"],
            "b_held_since": held_since,
        }
        for row in rows
    ]
    conn.execute(_STALE_REPEAT_KEY, stale)
    conn.execute(_NEW_REPEAT_KEYS, rows)


def _issue_cards(conn: Connection, issues: list[CardIssue], now: dt.datetime) -> None:
    """The cards' rows, then their accounts, so entries later in the batch can post to them."""
    if not issues:
        return
    conn.execute(
        insert(cards),
        [
            {
                "card_id": issue.card_id,
                "programme_id": issue.programme_id,
                "card_hash": issue.card_hash,
                "masked": issue.masked,
                "status": CardStatus.active,
                "expiry": issue.expiry,
                "replaced_by": None,
                "created_at": now,
                "issue_key": issue.issue_key,
            }
            for issue in issues
        ],
    )
    conn.execute(
        insert(accounts),
        [
            {
                "account_id": card_account(issue.card_id),
                "kind": AccountKind.card,
                "currency": issue.currency,
                "balance_minor": 0,
            }
            for issue in issues
        ],
    )


def _change_originals(conn: Connection, changes: list[OriginalChange]) -> None:
    rows: list[dict[str, object]] = [
        {
            "b_source": change.source,
            "b_transaction_id": change.transaction_id,
            "b_refund_minor": change.refund_minor,
            "b_unrefunded_required": 1 if change.require_unrefunded else 0,
            "b_status": change.new_status,
        }
        for change in changes
    ]
    what = changes[0] if len(changes) == 1 else None
    problem = (
        f"original {what.transaction_id} can no longer be {what.new_status}"
        if what is not None
        else "an original in the batch can no longer be changed"
    )
    _update_each(conn, _CHANGE_ORIGINAL, rows, problem, LedgerRefusal.original_changed_meanwhile)


def _post_entries(conn: Connection, entries: list[JournalEntry], now: dt.datetime) -> list[int]:
    """Guarded postings one by one, the other postings summed per account, then capped credits
    one by one (each kind sorted by account)."""
    if not entries:
        return []
    guarded: list[dict[str, object]] = []
    capped: list[dict[str, object]] = []
    credits: dict[str, int] = defaultdict(int)
    for entry in entries:
        for posting in entry.postings:
            if posting.guarded:
                guarded.append({"b_account_id": posting.account_id, "b_amount_minor": posting.amount_minor})
            elif posting.ceiling_minor is not None and posting.amount_minor > 0:
                capped.append(
                    {
                        "b_account_id": posting.account_id,
                        "b_amount_minor": posting.amount_minor,
                        "b_ceiling_minor": posting.ceiling_minor,
                    }
                )
            else:
                credits[posting.account_id] += posting.amount_minor
    # Row locks in one order on every node (PostgreSQL): two nodes debiting the same cards in
    # opposite orders deadlocked. The sort is stable: one account's postings keep their order.
    guarded.sort(key=lambda row: str(row["b_account_id"]))
    capped.sort(key=lambda row: str(row["b_account_id"]))
    guarded_problem = (
        f"{guarded[0]['b_account_id']} would go below zero"
        if len(guarded) == 1
        else "an account in the batch would go below zero"
    )
    _update_each(conn, _GUARDED_POSTING, guarded, guarded_problem, LedgerRefusal.below_zero)
    # The other postings before the capped credits: a capped credit is then judged with every
    # other credit of the batch on its account, its own write's and later ones' too. That is never
    # more lenient than the writes one by one (a load after a cancel in one batch took a card past
    # its maximum when capped credits came first), and a refusal sends the batch one by one.
    credit_rows: list[dict[str, object]] = [
        {"b_account_id": account_id, "b_amount_minor": delta}
        for account_id, delta in sorted(credits.items())
        if delta != 0
    ]
    if credit_rows:
        result = _execute_driver_sql(conn, _POSTING, credit_rows)
        assert not conn.dialect.supports_sane_multi_rowcount or result.rowcount == len(credit_rows), (
            "an account of the batch does not exist"
        )
    capped_problem = (
        f"{capped[0]['b_account_id']} would go above its maximum"
        if len(capped) == 1
        else "a card in the batch would go above its maximum"
    )
    _update_each(conn, _CAPPED_POSTING, capped, capped_problem, LedgerRefusal.above_maximum)
    entry_rows = [
        {"idempotency_key": e.idempotency_key, "kind": e.kind, "currency": e.currency, "created_at": now}
        for e in entries
    ]
    id_by_key = {str(key): int(entry_id) for key, entry_id in conn.execute(_NEW_ENTRY, entry_rows)}
    entry_ids = [id_by_key[entry.idempotency_key] for entry in entries]
    _execute_driver_sql(
        conn,
        _NEW_POSTINGS,
        [
            {"entry_id": entry_id, "account_id": p.account_id, "amount_minor": p.amount_minor}
            for entry_id, entry in zip(entry_ids, entries, strict=True)
            for p in entry.postings
        ],
    )
    return entry_ids


def _lost_cards(conn: Connection, card_ids: set[str]) -> set[str]:
    """Those of the cards lost or replaced; no query when there are none (always on one node)."""
    if not card_ids:
        return set()
    return set(conn.execute(_LOST_CARDS, {"b_card_ids": sorted(card_ids)}).scalars())


def _require_active(conn: Connection, card_id: str) -> None:
    """BackstopError unless the card is active and not replaced; its row locked (PostgreSQL) so a
    replacement on another node waits for this write, or this one for it."""
    row = conn.execute(_ACTIVE_CARD, {"b_card_id": card_id}).first()
    if row is None:
        raise BackstopError(f"card {card_id} is no longer active (replaced or blocked meanwhile)")
    if row.status is not CardStatus.active:
        raise CardNotActiveError(card_id, row.status)
    if row.replaced_by is not None:
        raise CardNotActiveError(card_id, CardStatus.lost)


def _require_balance_as_read(conn: Connection, read: BalanceAsRead) -> None:
    """BalanceChangedError unless the card holds what was read; its account's row locked
    (PostgreSQL), so a credit on another node landing after this read waits for this write, then
    finds the card replaced and follows it (Write.credited_card). The card's row is locked first, as
    a load's `active_card` check locks it before the load's postings lock the account: in the other
    order a load and a replacement of one card on two nodes deadlocked (PostgreSQL aborted one)."""
    conn.execute(select(cards.c.card_id).where(cards.c.card_id == read.card_id).with_for_update())
    account_id = card_account(read.card_id)
    query = select(accounts.c.balance_minor).where(accounts.c.account_id == account_id).with_for_update()
    balance_minor = conn.execute(query).scalar_one()
    if balance_minor != read.balance_minor:
        raise BalanceChangedError(f"card {read.card_id}'s balance changed since it was read (another node)")


def _change_card(conn: Connection, change: CardChange, now: dt.datetime) -> None:
    if change.replacement_key is not None:
        _require_no_transfer_under(conn, change.replacement_key)
    values: dict[str, object] = {"status": change.status}
    statement = update(cards).where(cards.c.card_id == change.card_id)
    if change.replaced_by is not None:
        values["replaced_by"] = change.replaced_by
        seen = change.replaced_by_seen
        replaced_as_seen = cards.c.replaced_by.is_(None) if seen is None else cards.c.replaced_by == seen
        statement = statement.where(replaced_as_seen | (cards.c.replaced_by == change.replaced_by))
    # Only a replacement marks a card lost, one that read it active or blocked: two at once (a
    # request sent again) both read it so; the one landing second finds it lost and adds no event.
    marks_lost = change.event_kind == CardStatus.lost.value
    if marks_lost:
        statement = statement.where(cards.c.status != CardStatus.lost)
    # A block or unblock, judged on the card not replaced: a replacement landing since (on another
    # node) keeps it lost; blocked or active, money credited to it later would stay on it.
    keeps_lost = change.replaced_by is None and change.status in (CardStatus.blocked, CardStatus.active)
    if keeps_lost:
        statement = statement.where(cards.c.replaced_by.is_(None))
    if conn.execute(statement.values(**values)).rowcount == 0:
        if marks_lost:
            return
        if change.replaced_by is not None:
            raise BackstopError(
                f"card {change.card_id} was replaced by another card meanwhile",
                LedgerRefusal.replaced_meanwhile,
            )
        if keeps_lost:
            raise BackstopError(
                f"card {change.card_id} was replaced meanwhile: it stays lost, not {change.status.value}",
                LedgerRefusal.replaced_meanwhile,
            )
    conn.execute(
        insert(card_events),
        {
            "card_id": change.card_id,
            "kind": change.event_kind,
            "detail": change.detail,
            "actor": change.actor,
            "at": now,
        },
    )
    if change.replacement_key is not None:
        assert change.replaced_by is not None, "a replacement's key names its new card"
        row = {"lost_card_id": change.card_id, "new_card_id": change.replaced_by, "at": now}
        conn.execute(insert(card_replacements), {"idempotency_key": change.replacement_key, **row})


def _require_no_transfer_under(conn: Connection, replacement_key: str) -> None:
    """BackstopError if a transfer's entry holds this key: the same replacement sent twice at once
    moved the money first, and this one found the card empty. Its row would answer later replays
    "moved nothing"; refused, it answers what the first did (core.replace_card). The first's entry
    has landed: this card's balance read 0 only once it had."""
    query = select(journal_entries.c.entry_id).where(journal_entries.c.idempotency_key == replacement_key)
    if conn.execute(query).first() is not None:
        raise BackstopError("this replacement moved the balance already (the same request, landed first)")


def _save_attempt(conn: Connection, attempt: EmployeeAttempt) -> None:
    row = employees.c
    statement = update(employees).where(row.employee_id == attempt.employee_id)
    if attempt.attempts_before is not None:
        statement = statement.where(row.pin_attempts == attempt.attempts_before)
    saved = conn.execute(
        statement.values(
            failed_tries=attempt.failed_tries,
            locked_until=attempt.locked_until,
            pin_attempts=row.pin_attempts + 1,
        )
    )
    if saved.rowcount == 0 and attempt.attempts_before is not None:
        raise BackstopError(
            f"employee {attempt.employee_id}: another PIN attempt was stored meanwhile",
            LedgerRefusal.pin_try_stored_meanwhile,
        )


def _save_pin_rehash(conn: Connection, rehash: PinRehash) -> None:
    row = employees.c
    conn.execute(
        update(employees)
        .where(row.employee_id == rehash.employee_id, row.pin_hash == rehash.checked_hash)
        .values(pin_hash=rehash.new_hash)
    )


def _mark_cycle_payout(conn: Connection, payout: CyclePayout) -> None:
    """A Settle's payout names itself on the merchant's due row of the cycle, unless an earlier one
    does; BackstopError for the cycle's own payout once one does. The row is locked either way
    (PostgreSQL), so a Settle and a run on two nodes are judged one after the other."""
    due = payout_cycle_dues.c
    marked = conn.execute(
        update(payout_cycle_dues)
        .where(
            due.programme_id == payout.programme_id,
            due.settlement_id == payout.cycle_settlement_id,
            due.merchant_id == payout.merchant_id,
            due.paid_by == "",
        )
        .values(paid_by=payout.paid_by)
    )
    if not payout.paid_by and marked.rowcount != 1:
        raise BackstopError(
            f"{payout.merchant_id} was paid under another settlement in this cycle "
            f"({payout.cycle_settlement_id}) meanwhile",
            LedgerRefusal.paid_under_another_settlement,
        )


def _record_repayment(conn: Connection, repayment: RepaymentRecord, entry_id: int, now: dt.datetime) -> None:
    """Its row; the same request id stored already fails the primary key (a conflict)."""
    row = {**dataclasses.asdict(repayment), "entry_id": entry_id, "recorded_at": now}
    conn.execute(insert(merchant_repayments), row)


def _close_period(conn: Connection, close: PeriodClose) -> tuple[int, str]:
    """The close's sequence number and totals; BackstopError if the period was closed meanwhile.

    The totals are counted here, after the terminal has moved on to the next period: every row
    committed before this close is in them, every row after it is in the next period
    (`switch.store.periods`).

    A close id stored already fails the unique (terminal_id, close_id) constraint instead, which
    the writer reports as a conflict: the caller then answers with the stored close.
    """
    sequence_number = int(
        conn.execute(
            select(func.coalesce(func.max(day_closes.c.sequence_number), 0) + 1).where(
                day_closes.c.terminal_id == close.terminal_id
            )
        ).scalar_one()
    )
    moved = conn.execute(
        update(terminals)
        .where(
            terminals.c.terminal_id == close.terminal_id,
            terminals.c.period_number == close.period_number,
        )
        .values(period_number=close.period_number + 1, period_opened_at=close.closed_at)
    )
    totals = totals_json(period_totals(conn, close.terminal_id, close.period_number))
    # Inserted before the period is checked, so a replayed close id reports a conflict.
    conn.execute(
        insert(day_closes),
        {
            "terminal_id": close.terminal_id,
            "sequence_number": sequence_number,
            "close_id": close.close_id,
            "period_number": close.period_number,
            "opened_at": close.opened_at,
            "closed_at": close.closed_at,
            "totals_json": totals,
        },
    )
    if moved.rowcount != 1:
        raise BackstopError(f"period {close.period_number} of {close.terminal_id} is closed already")
    return sequence_number, totals


# Errors one write's content causes: the batch's writes are then tried one by one, so that only
# that write is refused. A value longer than its column (PostgreSQL's DataError) is one of them;
# it declined every write of its batch with 96 before.
BACKSTOP_ERRORS = (BackstopError, IntegrityError, DataError)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """The results of one batch, in the order of its writes; `failed` when its commit failed whole;
    `in_doubt` when the COMMIT itself failed, so the batch may or may not have landed."""

    results: list[WriteResult]
    failed: bool = False
    in_doubt: bool = False


class CommitInDoubtError(Exception):
    """The database failed while committing: what was applied may or may not have landed."""


# PostgreSQL's deadlock_detected and serialization_failure: nothing landed; the batch may be tried again.
RETRYABLE_SQLSTATES: Final = frozenset({"40P01", "40001"})
BATCH_ATTEMPTS_MAX: Final = 3


def commit_batch(
    engine: Engine | Connection, writes: list[Write], web_days: WebDayRule | None = None
) -> BatchOutcome:
    """Commit writes in one transaction; if one breaks a backstop, each alone so only it is refused.

    A failure of the COMMIT itself is in doubt, not "nothing stored": the writes are answered
    nothing and the journal is lost (the switch exits), as when the journal process dies."""
    for attempt in range(1, BATCH_ATTEMPTS_MAX + 1):
        try:
            applied = _committed(engine, lambda conn: apply_batch(conn, writes, utc_now(), web_days))
            return BatchOutcome(applied)
        except BACKSTOP_ERRORS:
            try:
                return BatchOutcome([commit_alone(engine, write, web_days) for write in writes])
            except CommitInDoubtError:
                return _in_doubt(writes)
        except CommitInDoubtError:
            return _in_doubt(writes)
        except DBAPIError as error:
            if _retryable(error) and attempt < BATCH_ATTEMPTS_MAX:
                log.warning("journal batch of %d writes: %s; trying again", len(writes), error.orig)
                continue
            log.exception("journal commit failed; %d writes declined with 96", len(writes))
        except Exception:
            log.exception("journal commit failed; %d writes declined with 96", len(writes))
        break
    failed = WriteResult(False, problem="database commit failed", fault=True)
    return BatchOutcome([failed] * len(writes), failed=True)


def _committed(engine: Engine | Connection, apply: Callable[[Connection], T]) -> T:
    """apply's result once committed; CommitInDoubtError if the commit itself failed."""
    applied = False
    try:
        with writing(engine) as conn:
            result = apply(conn)
            applied = True
    except Exception as error:
        if applied:
            raise CommitInDoubtError(str(error)) from error
        raise
    return result


def _retryable(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def _in_doubt(writes: list[Write]) -> BatchOutcome:
    log.critical("journal commit failed while committing: %d writes may or may not have landed", len(writes))
    in_doubt = WriteResult(False, problem="commit in doubt", fault=True)
    return BatchOutcome([in_doubt] * len(writes), failed=True, in_doubt=True)


def commit_alone(
    engine: Engine | Connection, write: Write, web_days: WebDayRule | None = None
) -> WriteResult:
    """One write in a transaction of its own: a refusal or failure as a result, never raised;
    CommitInDoubtError when the commit itself failed. A refused write's closes of earlier web days
    are made again on their own (`_close_web_days_again`)."""
    closed: list[str] = []
    try:
        return _committed(engine, lambda conn: apply_alone(conn, write, utc_now(), web_days, closed))
    except CommitInDoubtError:
        raise
    except IntegrityError:
        refused = WriteResult(False, problem="transaction id already stored", conflict=True)
    except PeriodClosedError as error:
        refused = WriteResult(False, problem=f"refused by the ledger: {error}", period_closed=True)
    except BalanceChangedError as error:
        refused = WriteResult(False, problem=f"refused by the ledger: {error}", balance_changed=True)
    except CardNotActiveError as error:
        refused = _card_not_active_result(engine, write.record, error, web_days)
    except BackstopError as error:
        refused = WriteResult(False, problem=f"refused by the ledger: {error}", refusal=error.refusal)
    except DataError:
        log.exception("journal write refused by the database: a value does not fit its column")
        refused = WriteResult(False, problem="a value does not fit its column")
    except Exception:
        log.exception("journal commit of one write failed")
        return WriteResult(False, problem="database commit failed", fault=True)
    if web_days is not None and closed:
        _close_web_days_again(engine, closed, web_days)
    return refused


def _card_not_active_result(
    engine: Engine | Connection,
    record: TransactionRecord | None,
    error: CardNotActiveError,
    web_days: WebDayRule | None,
) -> WriteResult:
    """The refusal of a write onto a card no longer active, its record stored declined in a
    transaction of its own (no entry: nothing moves), so the terminal's status query finds the
    decline and the same id sent again is answered it. A conflict when the record is stored already:
    a request sent again after its first write landed (the card check comes before the insert that
    would conflict), answered as stored, not declined. Only on this refusal: batches pay nothing."""
    refused = WriteResult(False, problem=f"refused by the ledger: {error}", card_not_active=error.status)
    if record is None:
        return refused
    try:
        stored = commit_alone(engine, Write(record=declined_record(record, error.status)), web_days)
    except CommitInDoubtError:  # a decline moves nothing: landed or not, the same id is judged again
        log.warning("journal: storing a load refused on a card no longer active is in doubt")
        return refused
    if stored.ok:
        return dataclasses.replace(refused, decline_stored=True)
    if stored.conflict:
        return stored
    return refused


def declined_record(record: TransactionRecord, status: CardStatus) -> TransactionRecord:
    """The record of a write refused on a card found in this status: declined as that status
    declines, nothing approved, no balance quoted (the deciding copy's is stale)."""
    decision = status_decline(status)
    return dataclasses.replace(
        record,
        result=decision.code.name,
        status=TransactionStatus.declined.value,
        detail=decision.detail,
        approved_minor=0,
        balance_after_minor=None,
        cardholder_part_minor=0,
        funder_part_minor=0,
        authorization_code="",
    )


def _close_web_days_again(engine: Engine | Connection, terminal_ids: list[str], rule: WebDayRule) -> None:
    """The closes of earlier web days that a refused write made, rolled back with it, made in a
    transaction of their own: the day before is closed as the refusal is answered, not left open
    until the next web write or the pass. Each is the close any closer makes (its close id is its
    period's), judged again now: one closed meanwhile is found closed and not made twice. A close
    that fails here is left to the next web write or the pass; the refusal stands either way."""

    def close(conn: Connection) -> dict[str, int]:
        return _close_earlier_web_days(conn, open_periods_by_device(conn, terminal_ids), utc_now(), rule)

    try:
        _committed(engine, close)
    except Exception as error:  # a close not made now is made later; the refusal stands
        log.warning(
            "web day close after a refused write not made (%s); the next web write or the pass makes it",
            type(error).__name__,
        )


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
