"""Reads of the switch's state, and the few writes outside the journal (activation, PIN tries, day close)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row, String, bindparam, exists, func, literal, select

from switch.domain.card_rules import CardState
from switch.domain.employees import PinAttempt
from switch.domain.ledger import CARD_ACCOUNT_PREFIX, card_account, merchant_payable_account
from switch.domain.programmes import CoPayment, Programme, stored_load_step_minor
from switch.domain.transactions import TransactionStatus
from switch.store import periods
from switch.store.card_pins import CardPin, card_pins
from switch.store.journal import TransactionRecord
from switch.store.periods import TypeTotal, totals_of_json
from switch.store.schema import (
    accounts,
    card_replacements,
    cards,
    day_closes,
    employees,
    inbound_resends,
    journal_entries,
    locations,
    merchant_programmes,
    merchants,
    postings,
    programmes,
    terminals,
    transactions,
)

log = logging.getLogger(__name__)

# The links a replacement walks back from its lost card for money waiting on the cards replaced
# into it (money_on_replaced_cards(chained_to=)), one query a link: a holder's lost cards make a few.
# Money further back waits, with a warning, for the next start, which reads every replaced card.
REPLACED_CHAIN_LINKS_MAX: Final = 32
# Stored closes of a terminal in one list (a page); a terminal makes one a day, for years.
DAY_CLOSES_LISTED_DEFAULT: Final = 100
DAY_CLOSES_LISTED_MAX: Final = 1_000

# The hot lookups, built once: building a statement costs more than running it.
_CARD_BY_HASH = select(cards.c.card_id).where(cards.c.card_hash == bindparam("card_hash"))
_CARD_STATE = (
    select(cards, accounts.c.balance_minor)
    .join(accounts, accounts.c.account_id == "card:" + cards.c.card_id)
    .where(cards.c.card_id == bindparam("card_id"))
)
_CARD_STATE_AND_PIN = (
    select(cards, accounts.c.balance_minor, card_pins.c.pvv, card_pins.c.pvv_key_id, card_pins.c.failed_tries)
    .join(accounts, accounts.c.account_id == "card:" + cards.c.card_id)
    .outerjoin(card_pins, card_pins.c.card_id == cards.c.card_id)
    .where(cards.c.card_id == bindparam("card_id"))
)
_MERCHANT_NAME = select(merchants.c.name).where(merchants.c.merchant_id == bindparam("merchant_id"))
_TRANSACTION = select(transactions).where(
    transactions.c.source == bindparam("source"), transactions.c.transaction_id == bindparam("transaction_id")
)
_EMPLOYEE = select(employees).where(
    employees.c.merchant_id == bindparam("merchant_id"),
    employees.c.employee_number == bindparam("employee_number"),
)

# Store.memberships_without_payable_count builds this id in SQL
assert merchant_payable_account("M", "P") == "merchant:M:P:payable"


@dataclass(frozen=True, slots=True)
class TerminalInfo:
    terminal_id: str
    merchant_id: str
    location_id: str
    location_name: str
    device_name: str
    credential_hash: str
    active: bool
    period_number: int
    period_opened_at: dt.datetime
    activated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    """A card transfer the journal holds: a lost card's balance moved to its replacement; or a
    replacement that moved nothing (an empty card's), with no entry and amount 0."""

    entry_id: int | None
    source_account: str
    target_account: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    record: TransactionRecord
    refunded_minor: int
    created_at: dt.datetime

    @property
    def status(self) -> TransactionStatus:
        return TransactionStatus(self.record.status)


@dataclass(frozen=True, slots=True)
class EmployeePin:
    employee_id: str
    pin_hash: str
    attempt: PinAttempt
    active: bool = True
    pin_attempts: int = 0  # stored so far; the next attempt's write is conditional on it


@dataclass(frozen=True, slots=True)
class DayCloseReport:
    terminal_id: str
    sequence_number: int  # 0 for an X report
    period_number: int
    opened_at: dt.datetime
    closed_at: dt.datetime
    totals: tuple[TypeTotal, ...]

    @property
    def next_period_number(self) -> int:
        return self.period_number + 1 if self.sequence_number else self.period_number


@dataclass(frozen=True, slots=True)
class DayClosePage:
    reports: tuple[DayCloseReport, ...]  # in sequence order
    next_before_sequence_number: int  # the older page's before_sequence_number; 0: none is older


# A programme's load step may change (switch/programme_settings.py): the node that changes it forgets
# its copy at once; another node reads the programme again once its copy is this old.
PROGRAMME_COPY_MAX_AGE_S = 10.0
MEMBERSHIP_REFUSALS_MAX = 10_000  # (merchant, programme) pairs remembered; all forgotten past it


class Store:
    """Reads and non-journal writes; caches programmes (PROGRAMME_COPY_MAX_AGE_S) and memberships."""

    def __init__(self, engine: Engine, copy_max_age_s: float | None = None) -> None:
        """copy_max_age_s: how long a merchant found not to take a programme is remembered, as
        Settings.copy_max_age_s (None: one node, until a join on this node). Without it an
        authenticated terminal presenting such a card (Balance, Redeem) cost a database read per
        request on the event loop's thread."""
        self.engine = engine
        self._copy_max_age_s = copy_max_age_s
        self._programmes: dict[str, tuple[Programme, float]] = {}  # id -> (programme, monotonic s read)
        # forget_programme calls so far: a read begun before one is not kept (it may predate the change).
        self._programmes_forgotten = 0
        self._memberships: set[tuple[str, str]] = set()  # (merchant, programme) known to be members
        self._refusals: dict[tuple[str, str], float] = {}  # (merchant, programme) -> monotonic s read
        # membership_made calls so far: a "no" read begun before one is not kept (it may predate the join).
        self._memberships_made = 0
        self._lock = threading.Lock()

    # Programmes and cards

    def programme(self, programme_id: str) -> Programme:
        read_at_s = time.monotonic()
        forgotten = self._programmes_forgotten
        cached = self._programmes.get(programme_id)
        if cached is not None and read_at_s - cached[1] <= PROGRAMME_COPY_MAX_AGE_S:
            return cached[0]
        with self.engine.connect() as conn:
            row = conn.execute(select(programmes).where(programmes.c.programme_id == programme_id)).first()
        if row is None:
            raise LookupError(f"unknown programme {programme_id}")
        copay = None
        if row.copay_numerator_minor is not None and row.copay_denominator_minor:
            copay = CoPayment(row.copay_numerator_minor, row.copay_denominator_minor)
        programme = Programme(
            row.programme_id,
            row.name,
            row.kind,
            row.currency,
            row.card_prefix,
            row.balance_max_minor,
            copay,
            row.payout_interval_weeks,
            row.card_validity_months,
            stored_load_step_minor(row.load_step_minor, row.balance_max_minor, copay),
        )
        with self._lock:
            if self._programmes_forgotten == forgotten:
                self._programmes[programme_id] = (programme, read_at_s)
        return programme

    def forget_programme(self, programme_id: str) -> None:
        """The programme changed: the next read of it is from the database."""
        with self._lock:
            self._programmes.pop(programme_id, None)
            self._programmes_forgotten += 1

    def merchant_accepts(self, merchant_id: str, programme_id: str) -> bool:
        """Whether the merchant takes the programme's cards. A yes is remembered for good (a
        membership is never taken back), a no as a copy of what another node may change: one made
        since counts at once on this node (`membership_made`), within copy_max_age_s on another."""
        key = (merchant_id, programme_id)
        if key in self._memberships:
            return True
        read_at_s = time.monotonic()
        refused_at_s = self._refusals.get(key)
        if refused_at_s is not None and (
            self._copy_max_age_s is None or read_at_s - refused_at_s < self._copy_max_age_s
        ):
            return False
        made = self._memberships_made
        with self.engine.connect() as conn:
            found = conn.execute(
                select(merchant_programmes.c.merchant_id).where(
                    merchant_programmes.c.merchant_id == merchant_id,
                    merchant_programmes.c.programme_id == programme_id,
                )
            ).first()
        with self._lock:
            if found is not None:
                self._memberships.add(key)
                self._refusals.pop(key, None)
            elif self._memberships_made == made:
                if len(self._refusals) >= MEMBERSHIP_REFUSALS_MAX:
                    self._refusals.clear()
                self._refusals[key] = read_at_s
        return found is not None

    def membership_made(self, merchant_id: str, programme_id: str) -> None:
        """The merchant joined the programme on this node: its cards are taken from now on."""
        with self._lock:
            self._memberships_made += 1
            self._refusals.pop((merchant_id, programme_id), None)
            self._memberships.add((merchant_id, programme_id))

    def memberships_without_payable_count(self) -> int:
        """How many (merchant, programme) memberships have no payable account: a data directory
        written before payables were kept per programme. There are no migrations; such data is
        refused. One query, each membership's account looked up by key: every start read every
        account id before, one per card ever issued."""
        member = merchant_programmes.c
        payable = (
            literal("merchant:", String)
            + member.merchant_id
            + literal(":", String)
            + member.programme_id
            + literal(":payable", String)
        )  # merchant_payable_account's id, in SQL
        query = (
            select(func.count())
            .select_from(merchant_programmes)
            .where(~exists().where(accounts.c.account_id == payable))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def merchant_currency(self, merchant_id: str) -> str:
        """The one currency of the merchant's programmes; "" if it takes none, or several (then
        nothing says which one a transaction that names no original and no amount was in)."""
        query = (
            select(programmes.c.currency)
            .join(merchant_programmes, merchant_programmes.c.programme_id == programmes.c.programme_id)
            .where(merchant_programmes.c.merchant_id == merchant_id)
            .distinct()
            .limit(2)
        )
        with self.engine.connect() as conn:
            currencies = conn.execute(query).scalars().all()
        return str(currencies[0]) if len(currencies) == 1 else ""

    def merchant_name(self, merchant_id: str) -> str | None:
        """The merchant's name; None if there is no such merchant."""
        with self.engine.connect() as conn:
            return merchant_name(conn, merchant_id)

    def card_id_by_hash(self, card_hash: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(_CARD_BY_HASH, {"card_hash": card_hash}).scalar()

    def card_state(self, card_id: str) -> CardState:
        with self.engine.connect() as conn:
            row = conn.execute(_CARD_STATE, {"card_id": card_id}).one()
        return self._card_state_of(row)

    def card_state_and_pin(self, card_id: str) -> tuple[CardState, CardPin | None]:
        """What a card actor starts from, in one query: its state and its PIN, if it has one."""
        with self.engine.connect() as conn:
            row = conn.execute(_CARD_STATE_AND_PIN, {"card_id": card_id}).one()
        pin = None if row.pvv is None else CardPin(row.pvv, row.pvv_key_id, row.failed_tries)
        return self._card_state_of(row), pin

    def _card_state_of(self, row: Row[Any]) -> CardState:
        return CardState(
            row.card_id,
            self.programme(row.programme_id),
            row.masked,
            row.status,
            row.expiry,
            row.balance_minor,
        )

    def stored_transfer(self, idempotency_key: str) -> StoredTransfer | None:
        """A stored card transfer (by its journal key): its entry, the accounts and the amount; or
        the replacement stored under that key that moved nothing (card_replacements)."""
        query = (
            select(postings.c.entry_id, postings.c.account_id, postings.c.amount_minor)
            .join(journal_entries, journal_entries.c.entry_id == postings.c.entry_id)
            .where(journal_entries.c.idempotency_key == idempotency_key)
        )
        replaced = select(card_replacements.c.lost_card_id, card_replacements.c.new_card_id).where(
            card_replacements.c.idempotency_key == idempotency_key
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).all()
            cards_named = None if found else conn.execute(replaced).first()
        if cards_named is not None:
            lost_card_id, new_card_id = cards_named
            return StoredTransfer(None, card_account(lost_card_id), card_account(new_card_id), 0)
        if not found:
            return None
        assert len(found) == 2, f"a card transfer has two postings: {idempotency_key} has {len(found)}"
        (entry_id, source, taken_minor), (_, target, _) = sorted(found, key=lambda row: row.amount_minor)
        return StoredTransfer(int(entry_id), str(source), str(target), -int(taken_minor))

    def money_on_replaced_cards(self, chained_to: str | None = None) -> list[tuple[str, int]]:
        """(card id, its last posting's id) of each replaced card that holds money: what a credit
        landed on after its replacement and a stop kept from following it (core.start). One query,
        by ix_cards_replaced: a start reads the few cards holding money, not every card replaced.
        With chained_to, only the cards whose chain of replacements leads to that card
        (core.replace_card): one query more per link of the chain, by the same index, at most
        REPLACED_CHAIN_LINKS_MAX links back."""
        account = accounts.c.account_id
        last_posting = select(func.max(postings.c.posting_id)).where(postings.c.account_id == account)
        replaced = cards.c.replaced_by.is_not(None)
        with self.engine.connect() as conn:
            if chained_to is not None:
                replaced = cards.c.card_id.in_(_replaced_into(conn, chained_to))
            query = (
                select(cards.c.card_id, last_posting.scalar_subquery())
                .join(accounts, account == literal(CARD_ACCOUNT_PREFIX, String) + cards.c.card_id)
                .where(replaced, accounts.c.balance_minor != 0)
            )  # in no order: an ORDER BY made SQLite scan every card rather than take the index
            return [(str(card_id), int(last or 0)) for card_id, last in conn.execute(query)]

    def card_replaced_by(self, card_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(cards.c.replaced_by).where(cards.c.card_id == card_id)).scalar()

    # Terminals

    def terminal(self, terminal_id: str) -> TerminalInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(terminals, locations.c.name.label("location_name"))
                .join(locations, locations.c.location_id == terminals.c.location_id)
                .where(terminals.c.terminal_id == terminal_id)
            ).first()
        if row is None:
            return None
        return TerminalInfo(
            row.terminal_id,
            row.merchant_id,
            row.location_id,
            row.location_name,
            row.device_name,
            row.credential_hash,
            row.active,
            row.period_number,
            as_utc(row.period_opened_at),
            as_utc(row.activated_at),
        )

    # Transactions

    def transaction(self, source: str, transaction_id: str) -> StoredTransaction | None:
        with self.engine.connect() as conn:
            row = conn.execute(_TRANSACTION, {"source": source, "transaction_id": transaction_id}).first()
        return None if row is None else _stored_transaction(row)

    def first_of_resend(self, source: str, transaction_id: str) -> str | None:
        """The id of the inbound sale a resend under this id was answered as; None if none was."""
        query = select(inbound_resends.c.first_transaction_id).where(
            inbound_resends.c.source == source, inbound_resends.c.transaction_id == transaction_id
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return None if found is None else str(found)

    def transaction_by_reference(
        self, source: str, id_prefix: str, retrieval_reference: str, since: dt.datetime
    ) -> StoredTransaction | None:
        """The first transaction of `source` stored since `since` under this retrieval reference
        (field 37) whose id starts with `id_prefix`; None when there is none."""
        assert retrieval_reference, "an empty reference names every row stored without one"
        query = (
            select(transactions)
            .where(
                transactions.c.source == source,
                transactions.c.retrieval_reference == retrieval_reference,
                transactions.c.transaction_id.startswith(id_prefix, autoescape=True),
                transactions.c.created_at >= since,
            )
            .order_by(transactions.c.transaction_pk)
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _stored_transaction(row)

    # Employees

    def employee_pin(self, merchant_id: str, employee_number: str) -> EmployeePin | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                _EMPLOYEE, {"merchant_id": merchant_id, "employee_number": employee_number}
            ).first()
        if row is None:
            return None
        locked_until = as_utc(row.locked_until) if row.locked_until is not None else None
        return EmployeePin(
            row.employee_id,
            row.pin_hash,
            PinAttempt(row.failed_tries, locked_until),
            bool(row.active),
            int(row.pin_attempts),
        )

    # Day close

    def period_totals(self, terminal_id: str, period_number: int) -> tuple[TypeTotal, ...]:
        with self.engine.connect() as conn:
            return periods.period_totals(conn, terminal_id, period_number)

    def day_close(self, terminal_id: str, close_id: str) -> DayCloseReport | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(day_closes).where(
                    day_closes.c.terminal_id == terminal_id, day_closes.c.close_id == close_id
                )
            ).first()
        return _report(row) if row is not None else None

    def day_closes(
        self, terminal_id: str, closes_max: int = DAY_CLOSES_LISTED_DEFAULT, before_sequence_number: int = 0
    ) -> list[DayCloseReport]:
        """The terminal's newest closes_max closes (before before_sequence_number, if not 0), in
        sequence order."""
        assert 0 < closes_max <= DAY_CLOSES_LISTED_MAX + 1, "a page's size is checked at the edge"
        query = select(day_closes).where(day_closes.c.terminal_id == terminal_id)
        if before_sequence_number:
            query = query.where(day_closes.c.sequence_number < before_sequence_number)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(day_closes.c.sequence_number.desc()).limit(closes_max)).all()
        return [_report(row) for row in reversed(rows)]

    def day_close_page(
        self, terminal_id: str, page_size: int, before_sequence_number: int = 0
    ) -> DayClosePage:
        """The newest page_size closes before before_sequence_number (0: the newest), and where the
        older page starts (the backoffice's and portal's ListDayCloses, the console's list)."""
        # One more than the page: whether an older page follows.
        closes = self.day_closes(terminal_id, page_size + 1, before_sequence_number)
        older = len(closes) > page_size
        page = closes[1:] if older else closes
        return DayClosePage(tuple(page), page[0].sequence_number if older else 0)


def merchant_name(conn: Connection, merchant_id: str) -> str | None:
    """The merchant's name on a connection already open; None if there is no such merchant."""
    name = conn.execute(_MERCHANT_NAME, {"merchant_id": merchant_id}).scalar()
    return None if name is None else str(name)


def _report(row: object) -> DayCloseReport:
    totals = totals_of_json(row.totals_json)  # type: ignore[attr-defined]
    return DayCloseReport(
        row.terminal_id,  # type: ignore[attr-defined]
        row.sequence_number,  # type: ignore[attr-defined]
        row.period_number,  # type: ignore[attr-defined]
        as_utc(row.opened_at),  # type: ignore[attr-defined]
        as_utc(row.closed_at),  # type: ignore[attr-defined]
        totals,
    )


def as_utc(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _replaced_into(conn: Connection, card_id: str) -> set[str]:
    """The cards whose chain of replacements leads to card_id (not itself), link by link, at most
    REPLACED_CHAIN_LINKS_MAX links back: a card further back is logged, and left for the next start."""
    found: set[str] = set()
    links = {card_id}
    for _ in range(REPLACED_CHAIN_LINKS_MAX):
        replaced = conn.execute(select(cards.c.card_id).where(cards.c.replaced_by.in_(links))).scalars()
        links = {str(each) for each in replaced} - found - {card_id}
        found |= links
        if not links:
            return found
    further = select(cards.c.card_id).where(cards.c.replaced_by.in_(links), cards.c.card_id.not_in(found))
    if conn.execute(further.limit(1)).first() is not None:
        log.warning(
            "money on cards replaced into card %s more than %d links back is not looked for now "
            "(REPLACED_CHAIN_LINKS_MAX): it follows at the next start",
            card_id,
            REPLACED_CHAIN_LINKS_MAX,
        )
    return found


def _stored_transaction(row: Row[Any]) -> StoredTransaction:
    values = {name: getattr(row, name) for name in TransactionRecord.__slots__}
    return StoredTransaction(TransactionRecord(**values), row.refunded_minor, as_utc(row.created_at))
