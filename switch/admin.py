"""Administration: programmes, merchants, locations, employees, terminals, cards, settlement."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import functools
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ops.logs import pan_in_id_problem
from switch import credentials
from switch.config import Settings
from switch.domain import ledger
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus, make_card_number, mask, qr_payload
from switch.domain.employees import (
    EMPLOYEE_NUMBER_MAX,
    OWNER,
    PASSWORD_LENGTH_MIN,
    PortalRight,
    manage_problem,
    password_problem,
    pin_problem,
    role_problem,
)
from switch.domain.ledger import AccountKind
from switch.domain.money import Money, is_known_currency
from switch.domain.programmes import (
    LOAD_STEP_MINOR_DEFAULT,
    PAYOUT_SETTLEMENT_PREFIX,
    CoPayment,
    Programme,
    ProgrammeKind,
    commission_minor,
    commission_percent,
    cycle_payout_minor,
    load_step_setting_problem,
    repayment_transfer_minor,
)
from switch.domain.quoting import DIGIT_RUN, quoted
from switch.domain.receipts import BadEmailError, checked_email
from switch.passwords import (
    WRONG_LOGIN,
    MerchantPasswords,
    NotAllowedError,
    SignInLockout,
    login_check_now,
    void_reset_codes,
)
from switch.security import IssuedTerminalKey
from switch.store.engine import writing
from switch.store.journal import CardIssue, CyclePayout, Write, WriteResult, commit_alone
from switch.store.key_locks import lock_name
from switch.store.keys import put_key
from switch.store.repayments import repayment_disagreements
from switch.store.repository import Store, TerminalInfo, as_utc
from switch.store.schema import (
    SETTLEMENT_ID_LENGTH,
    accounts,
    employees,
    journal_entries,
    location_logos,
    locations,
    merchant_programmes,
    merchants,
    payout_cycle_dues,
    payout_cycles,
    portal_sessions,
    postings,
    programmes,
    terminals,
    transactions,
)

LOCATION_NAME_MAX = 120  # the columns' lengths
LOCATION_ADDRESS_MAX = 250
EMPLOYEE_NAME_MAX = 120
DEVICE_NAME_MAX = 120
# The device name of a location's terminal for redemptions in the web back office (the portal's
# Redeem): made by the switch, never activated, so no device may take the name.
WEB_BACK_OFFICE = "web back office"
# The device name of a programme's terminal for the cardholders' online top-ups (switch/top_ups.py),
# at a location of the switch's own merchant for them: made on first use, never activated.
ONLINE_TOP_UP = "online top-up"
ONLINE_TOP_UP_MERCHANT = "Online top-up"
ONLINE_TOP_UP_EMAIL = "online-top-up@txswitch.invalid"  # a login nobody holds the password of
# The switch's own terminals, which no device may take the name of nor deactivate, nor is online.
SWITCH_DEVICE_NAMES = (WEB_BACK_OFFICE, ONLINE_TOP_UP)
CARD_PREFIX_LENGTH = 6
CARD_SERIAL_SPACE = 10**9
CARD_NUMBER_ATTEMPTS_MAX = 20


DEFAULT_ZONE = ZoneInfo("Europe/Amsterdam")  # Settings.report_time_zone's default


class AdminError(ValueError):
    """A request the backoffice refuses; the message names what is wrong."""


class AdminConflictError(AdminError):
    """Refused because what the request would create exists already (a name, an e-mail, a number
    taken): gRPC's ALREADY_EXISTS rather than INVALID_ARGUMENT."""


class AdminStateError(AdminError):
    """Refused for the state of what the request names (decided already, changed since), not for
    how it was asked: gRPC's FAILED_PRECONDITION rather than INVALID_ARGUMENT."""


class AdminUnavailableError(AdminError):
    """Not done for a fault that may pass (the database, the journal), not for a rule: gRPC's
    UNAVAILABLE rather than FAILED_PRECONDITION; the same request sent again may succeed."""


class ReplacementChainTooLongError(AdminStateError):
    """The chain of replacements from a card is longer than the walk to its last card goes
    (SwitchCore.last_replacement): that card is not looked for, now or on any try again."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id(prefix: str) -> str:
    """prefix_ and 16 hex digits, never 12 decimal ones in a row: those could pass for a card
    number, and `quoted` in an error message or the card-data filter in the logs and the ops console
    would mask the id (about one id in a hundred is drawn again)."""
    while True:
        tail = uuid.uuid4().hex[:16]
        if DIGIT_RUN.search(tail) is None:
            return f"{prefix}_{tail}"


@dataclass(frozen=True, slots=True)
class NewCard:
    card_id: str
    card_number: str  # shown once, for printing; never stored
    qr_payload: str
    masked: str


@dataclass(frozen=True, slots=True)
class Activation:
    terminal: TerminalInfo
    credential: str
    merchant_name: str
    pin_key: IssuedTerminalKey | None = None  # stored with the credential, when a key was asked for


# At activation, a fresh PIN key for the terminal of this id (not stored yet)
PinKeyIssuer = Callable[[str], IssuedTerminalKey]


@dataclass(frozen=True, slots=True)
class LocationInfo:
    location_id: str
    merchant_id: str
    name: str
    address: str
    has_logo: bool  # its receipts show its own logo
    terminals: int  # activated there, active or not


@dataclass(frozen=True, slots=True)
class EmployeeInfo:
    employee_id: str
    merchant_id: str
    employee_number: str
    name: str
    role: str
    active: bool
    locked_until: dt.datetime | None
    email: str = ""  # the portal login's address; empty: no portal login
    portal_login: bool = False  # a portal password is set


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    entries: int
    unbalanced_entries: int
    negative_card_balances: int
    balance_mismatches: int
    problems: tuple[str, ...]
    # A repayment row whose entry does not move what it records, or a repayment entry with no row
    repayment_mismatches: int = 0


class Admin:
    def __init__(
        self,
        store: Store,
        card_hash_key: bytes,
        passwords: MerchantPasswords | None = None,
        on_card_issued: Callable[[str, CardState], None] | None = None,
        write: Callable[[Write], WriteResult] | None = None,
        zone: ZoneInfo = DEFAULT_ZONE,
    ) -> None:
        self._store = store
        self._zone = zone  # where the cards are used: a card's validity counts from its date there
        self._engine = store.engine
        self._key = card_hash_key
        # Card issues go through the switch's journal writer when there is one: it is the one writer
        # the payments' commits wait on. Without one (tools, tests), each commits on its own.
        self._write = write or functools.partial(commit_alone, store.engine)
        # (card hash, card state) of each card issued here, as committed with its first load.
        self._on_card_issued = on_card_issued
        # Activation checks the merchant's password like the portal: one lockout for both.
        self._passwords = passwords or MerchantPasswords(
            store.engine, SignInLockout.from_settings(Settings()), _utc_now
        )

    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def create_programme(
        self,
        name: str,
        kind: ProgrammeKind,
        currency: str,
        card_prefix: str,
        *,
        balance_max_minor: int = 50_000,
        copay: tuple[int, int] | None = None,
        funder_name: str = "",
        payout_interval_weeks: int = 4,
        card_validity_months: int = 36,
        load_step_minor: int | None = None,
    ) -> str:
        """A new programme's id. A programme with a co-payment loads in steps of load_step_minor
        (LOAD_STEP_MINOR_DEFAULT if not given), one without in any amount unless given one."""
        if not name:
            raise AdminError("name is empty")
        if not is_known_currency(currency):
            raise AdminError(f"currency {quoted(currency)} is not an ISO 4217 code the switch accepts")
        if len(card_prefix) != CARD_PREFIX_LENGTH or not card_prefix.isdigit():
            raise AdminError("card_prefix must be 6 digits")
        if balance_max_minor <= 0:
            raise AdminError("balance_max_minor must be positive")
        if kind is ProgrammeKind.benefit and copay is None:
            raise AdminError("a benefit programme needs a co-payment rule")
        if copay is not None and not (0 <= copay[0] <= copay[1] and copay[1] > 0):
            raise AdminError("co-payment must satisfy 0 <= numerator <= denominator, denominator > 0")
        if copay is not None and load_step_minor is None:
            load_step_minor = LOAD_STEP_MINOR_DEFAULT
        if load_step_minor is not None:
            copayment = CoPayment(*copay) if copay is not None else None
            step_problem = load_step_setting_problem(load_step_minor, balance_max_minor, copayment)
            if step_problem is not None:
                raise AdminError(step_problem)
        if payout_interval_weeks < 1:
            raise AdminError("payout_interval_weeks must be 1 or more")
        if card_validity_months < 1:
            raise AdminError("card_validity_months must be 1 or more")
        programme_id = new_id("prg")
        with writing(self._engine) as conn:
            if conn.execute(
                select(programmes.c.programme_id).where(programmes.c.card_prefix == card_prefix)
            ).first():
                raise AdminConflictError(f"card_prefix {card_prefix} is taken")
            conn.execute(
                insert(programmes),
                {
                    "programme_id": programme_id,
                    "name": name,
                    "kind": kind,
                    "currency": currency,
                    "card_prefix": card_prefix,
                    "next_card_serial": 1,
                    "balance_max_minor": balance_max_minor,
                    "copay_numerator_minor": copay[0] if copay else None,
                    "copay_denominator_minor": copay[1] if copay else None,
                    "funder_name": funder_name,
                    "payout_interval_weeks": payout_interval_weeks,
                    "card_validity_months": card_validity_months,
                    "load_step_minor": load_step_minor,
                    "created_at": self._now(),
                },
            )
            programme_accounts = [
                (ledger.programme_float_account(programme_id), AccountKind.programme_float),
                (ledger.funder_account(programme_id), AccountKind.funder),
                (ledger.commission_account(programme_id), AccountKind.commission_revenue),
                (ledger.payout_clearing_account(programme_id), AccountKind.payout_clearing),
            ]
            conn.execute(
                insert(accounts),
                [
                    {"account_id": a, "kind": k, "currency": currency, "balance_minor": 0}
                    for a, k in programme_accounts
                ],
            )
        return programme_id

    def set_load_step(self, programme_id: str, load_step_minor: int) -> None:
        """The programme loads in whole multiples of load_step_minor from now on, checked as at its
        creation (load_step_setting_problem). This store forgets its copy; the card actors holding
        the programme are the caller's (programme_settings.set_load_step)."""
        if not programme_id:
            raise AdminError("programme_id is missing")
        row = programmes.c
        with writing(self._engine) as conn:
            found = conn.execute(
                select(row.balance_max_minor, row.copay_numerator_minor, row.copay_denominator_minor).where(
                    row.programme_id == programme_id
                )
            ).first()
            if found is None:
                raise LookupError(f"programme_id {quoted(programme_id)}: no such programme")
            copayment = None
            if found.copay_numerator_minor is not None and found.copay_denominator_minor:
                copayment = CoPayment(found.copay_numerator_minor, found.copay_denominator_minor)
            step_problem = load_step_setting_problem(load_step_minor, found.balance_max_minor, copayment)
            if step_problem is not None:
                raise AdminError(step_problem)
            conn.execute(
                update(programmes)
                .where(row.programme_id == programme_id)
                .values(load_step_minor=load_step_minor)
            )
        self._store.forget_programme(programme_id)

    def create_merchant(self, name: str, email: str, password: str) -> str:
        if not name or "@" not in email or password_problem(password):
            raise AdminError(
                f"merchant needs a name, an e-mail address and a password of {PASSWORD_LENGTH_MIN} or more "
                "characters"
            )
        _refuse_switch_email(email)
        merchant_id = new_id("mer")
        password_hash = credentials.hash_password(password)
        with writing(self._engine) as conn:
            _lock_email(conn, email.lower())
            if conn.execute(
                select(merchants.c.merchant_id).where(merchants.c.email == email.lower())
            ).first():
                raise AdminConflictError(f"a merchant with e-mail {quoted(email)} exists")
            if conn.execute(
                select(employees.c.employee_id).where(employees.c.email == email.lower())
            ).first():
                raise AdminConflictError(f"email {quoted(email.lower())} is taken by another login")
            conn.execute(
                insert(merchants),
                {
                    "merchant_id": merchant_id,
                    "name": name,
                    "email": email.lower(),
                    "password_hash": password_hash,
                    "created_at": self._now(),
                },
            )
        return merchant_id

    def list_locations(self, merchant_id: str) -> list[LocationInfo]:
        """The merchant's locations in alphabetical order. AdminError for an unknown merchant."""
        self._require_merchant(merchant_id)
        terminals_there = (
            select(func.count())
            .where(
                terminals.c.location_id == locations.c.location_id,
                terminals.c.device_name.not_in(SWITCH_DEVICE_NAMES),  # activated there: these are not
            )
            .scalar_subquery()
        )
        has_logo = select(location_logos.c.location_id).where(
            location_logos.c.location_id == locations.c.location_id
        )
        query = (
            select(locations, terminals_there.label("terminals"), has_logo.exists().label("has_logo"))
            .where(locations.c.merchant_id == merchant_id)
            .order_by(locations.c.name)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            LocationInfo(
                row.location_id, merchant_id, row.name, row.address, bool(row.has_logo), row.terminals
            )
            for row in rows
        ]

    def add_location(self, merchant_id: str, name: str, address: str = "") -> str:
        """A new location of the merchant; AdminError naming what is wrong, a name it has included."""
        name, address = location_fields(name, address)
        self._require_merchant(merchant_id)
        location_id = new_id("loc")
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    insert(locations),
                    {
                        "location_id": location_id,
                        "merchant_id": merchant_id,
                        "name": name,
                        "address": address,
                    },
                )
        except IntegrityError:  # the (merchant, name) key: the only one a new id can meet
            raise AdminConflictError(f"location {quoted(name)} exists already") from None
        return location_id

    def add_employee(
        self,
        merchant_id: str,
        employee_number: str,
        name: str,
        pin: str,
        role: str = "cashier",
        *,
        email: str = "",
        password: str = "",
        by_role: str = OWNER,
    ) -> str:
        """A user with a PIN for the terminal and, with an e-mail and a password, a portal login.
        `by_role`: the role of the portal login that asks (NotAllowedError if it may not)."""
        problem = pin_problem(pin) or role_problem(role)
        if problem:
            raise AdminError(problem)
        refusal = manage_problem(by_role, role)
        if refusal:
            raise NotAllowedError(refusal)
        if not employee_number or not name:
            raise AdminError("employee needs a number and a name")
        _refuse_longer("employee_number", employee_number, EMPLOYEE_NUMBER_MAX)
        _refuse_pan_shaped("employee_number", employee_number)
        _refuse_longer("name", name, EMPLOYEE_NAME_MAX)
        if bool(email) != bool(password):
            raise AdminError("a portal login needs both email and password")
        login = _login_values(email, password)
        self._require_merchant(merchant_id)
        employee_id = new_id("emp")
        try:
            with writing(self._engine) as conn:
                _lock_email(conn, login.get("email"))
                _refuse_taken_email(conn, login.get("email"), employee_id)
                conn.execute(
                    insert(employees),
                    {
                        "employee_id": employee_id,
                        "merchant_id": merchant_id,
                        "employee_number": employee_number,
                        "name": name,
                        "role": role,
                        "pin_hash": credentials.hash_employee_pin(pin),
                        "failed_tries": 0,
                        "locked_until": None,
                        **login,
                    },
                )
        except IntegrityError:  # the (merchant, number) key; the e-mail was checked under its lock
            raise AdminConflictError(f"employee number {quoted(employee_number)} exists already") from None
        return employee_id

    def update_employee(
        self,
        merchant_id: str,
        employee_number: str,
        *,
        active: bool | None = None,
        pin: str = "",
        role: str = "",
        name: str = "",
        email: str = "",
        password: str = "",
        by_role: str = OWNER,
    ) -> EmployeeInfo:
        """Change what is given; a new PIN clears wrong tries and the lock. LookupError if unknown.

        A new password, address or role, or deactivation, ends the user's portal sessions.
        `by_role`: the role of the portal login that asks; NotAllowedError if it may not change a
        user of the user's role, or give the new one.
        """
        values: dict[str, object] = _login_values(email, password)
        if pin:
            problem = pin_problem(pin)
            if problem:
                raise AdminError(problem)
            values.update(
                pin_hash=credentials.hash_employee_pin(pin),
                failed_tries=0,
                locked_until=None,
                # An attempt judged against the old PIN meanwhile (on any node) is then not stored.
                pin_attempts=employees.c.pin_attempts + 1,
            )
        if role:
            problem = role_problem(role)
            if problem:
                raise AdminError(problem)
            values["role"] = role
        if name:
            _refuse_longer("name", name, EMPLOYEE_NAME_MAX)
            values["name"] = name
        if active is not None:
            values["active"] = active
        if email or password or active is False or role:
            # Signs the user out everywhere; a password check made before opens nothing after it.
            values["login_changes"] = employees.c.login_changes + 1
        if values:
            with writing(self._engine) as conn:
                _lock_email(conn, values.get("email"))
                row = conn.execute(
                    select(employees.c.employee_id, employees.c.email, employees.c.role)
                    .where(*_employee_key(merchant_id, employee_number))
                    .with_for_update()  # the role checked is the role changed
                ).first()
                if row is None:
                    raise LookupError(
                        f"employee_number {quoted(employee_number)}: no such employee of {merchant_id}"
                    )
                refusal = manage_problem(by_role, row.role, *([role] if role else []))
                if refusal:
                    raise NotAllowedError(refusal)
                if password and not (email or row.email):
                    raise AdminError("a portal password needs the user's email; give both")
                _refuse_taken_email(conn, values.get("email"), row.employee_id)
                conn.execute(
                    update(employees).where(employees.c.employee_id == row.employee_id).values(**values)
                )
                if email or password or active is False or role:
                    conn.execute(
                        delete(portal_sessions).where(portal_sessions.c.employee_id == row.employee_id)
                    )
                if email or password or active is False:
                    void_reset_codes(conn, merchant_id, row.employee_id)
        return self.employee(merchant_id, employee_number)

    def employee(self, merchant_id: str, employee_number: str) -> EmployeeInfo:
        """LookupError if the merchant has no such employee."""
        with self._engine.connect() as conn:
            row = conn.execute(select(employees).where(*_employee_key(merchant_id, employee_number))).first()
        if row is None:
            raise LookupError(f"employee_number {quoted(employee_number)}: no such employee of {merchant_id}")
        return _employee_info(row)

    def list_employees(self, merchant_id: str) -> list[EmployeeInfo]:
        self._require_merchant(merchant_id)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(employees)
                .where(employees.c.merchant_id == merchant_id)
                .order_by(employees.c.employee_number)
            ).all()
        return [_employee_info(row) for row in rows]

    def join_programme(self, merchant_id: str, programme_id: str, commission_basis_points: int) -> None:
        if not 0 <= commission_basis_points <= 10_000:
            raise AdminError("commission_basis_points must be between 0 and 10000")
        self._require_merchant(merchant_id)
        programme = self._store.programme(programme_id)
        account_id = ledger.merchant_payable_account(merchant_id, programme_id)
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    insert(merchant_programmes),
                    {
                        "merchant_id": merchant_id,
                        "programme_id": programme_id,
                        "commission_basis_points": commission_basis_points,
                    },
                )
                if not conn.execute(
                    select(accounts.c.account_id).where(accounts.c.account_id == account_id)
                ).first():
                    conn.execute(
                        insert(accounts),
                        {
                            "account_id": account_id,
                            "kind": AccountKind.merchant_payable,
                            "currency": programme.currency,
                            "balance_minor": 0,
                        },
                    )
        except IntegrityError:  # the (merchant, programme) key; its commission stays as it was
            raise AdminConflictError(
                f"merchant {merchant_id} is in programme {programme_id} already"
            ) from None
        self._store.membership_made(merchant_id, programme_id)

    def issue_card(self, programme_id: str, initial_load_minor: int = 0, request_id: str = "") -> NewCard:
        """A new card of the programme, loaded with initial_load_minor as any load is (the holder's and
        the funder's shares), in one journal write: the card and its load land together or not at all.

        A second issue with the same request_id is refused (AdminConflictError) and writes nothing.
        The number is drawn at random; the one taken already is refused by the database, and another
        is drawn.
        """
        _refuse_pan_shaped("request_id", request_id)
        programme = self._store.programme(programme_id)
        if not 0 <= initial_load_minor <= programme.balance_max_minor:
            raise AdminError(f"initial_load must be between 0 and {programme.balance_max_minor}")
        step_problem = programme.load_step_problem(initial_load_minor)
        if step_problem is not None:
            raise AdminError(f"initial_load: {step_problem}")
        expiry = _add_months(self._now().astimezone(self._zone).date(), programme.card_validity_months)
        card_id = new_id("card")
        entry = None
        if initial_load_minor:
            holder_minor, funder_minor = programme.split_load(initial_load_minor)
            key = f"issue:{request_id or card_id}"
            entry = ledger.load_entry(
                key, programme.currency, card_id, programme_id, holder_minor, funder_minor
            )
        for _ in range(CARD_NUMBER_ATTEMPTS_MAX):
            number = make_card_number(programme.card_prefix, secrets.randbelow(CARD_SERIAL_SPACE))
            card_hash = credentials.card_hash(self._key, number)
            issue = CardIssue(
                card_id, programme_id, card_hash, mask(number), expiry, programme.currency, request_id or None
            )
            result = self._write(Write(entry=entry, card_issue=issue))
            if result.ok:
                if self._on_card_issued is not None:
                    state = CardState(
                        card_id, programme, mask(number), CardStatus.active, expiry, initial_load_minor
                    )
                    self._on_card_issued(card_hash, state)
                return NewCard(card_id, number, qr_payload(number), mask(number))
            if not result.conflict:
                raise AdminError(f"card not issued: {result.problem}")
            if self._store.card_id_by_hash(card_hash) is None:  # not the number: the request_id
                raise AdminConflictError(f"request_id {quoted(request_id)} has issued a card already")
        raise AdminError(f"no free card number found under prefix {programme.card_prefix}")

    def activate(
        self,
        email: str,
        password: str,
        caller: str,
        device_name: str,
        location_name: str,
        pin_key: PinKeyIssuer | None = None,
    ) -> Activation:
        """The device's terminal, made or re-activated with a new credential and, with `pin_key`, a
        new PIN key stored in the same transaction: two activations of one device at once leave the
        credential that works with the key delivered beside it. `caller`: who asks, as the password
        check counts wrong tries per caller (`caller_address`)."""
        if not device_name:
            raise AdminError("device_name is empty")
        _refuse_longer("device_name", device_name, DEVICE_NAME_MAX)
        if not device_name.isprintable():
            raise AdminError("device_name has unprintable characters")
        if device_name.strip().lower() in SWITCH_DEVICE_NAMES:
            raise AdminError(f"device_name {quoted(device_name.strip().lower())} is the switch's own")
        _refuse_longer("location", location_name, LOCATION_NAME_MAX)
        # PermissionError, TooManySignInsError
        login, checked = self._passwords.verify_hash(email, password, caller)
        if not login.may(PortalRight.activate):
            raise NotAllowedError(f"a {login.role} may not activate terminals; ask a manager")
        with writing(self._engine) as conn:
            # Two first activations of one new device (by two logins) take turns, so the second
            # re-activates the first's terminal instead of meeting its (location, device) key.
            lock_name(conn, f"terminal-device:{login.merchant_id}:{location_name}:{device_name}")
            # A new password, address or role, or a deactivation, since the check: no terminal.
            if login_check_now(conn, login) != checked:
                raise PermissionError(WRONG_LOGIN)
            location_id = conn.execute(
                select(locations.c.location_id).where(
                    locations.c.merchant_id == login.merchant_id, locations.c.name == location_name
                )
            ).scalar()
            if location_id is None:
                raise AdminError(f"merchant has no location named {quoted(location_name)}")
            existing = conn.execute(
                select(terminals.c.terminal_id).where(
                    terminals.c.location_id == location_id, terminals.c.device_name == device_name
                )
            ).scalar()
            terminal_id = existing or new_id("trm")
            credential, credential_hash = credentials.new_credential(terminal_id)
            issued = pin_key(terminal_id) if pin_key is not None else None
            if issued is not None:
                put_key(conn, issued.stored)
            now = self._now()
            if existing:
                conn.execute(
                    update(terminals)
                    .where(terminals.c.terminal_id == terminal_id)
                    .values(credential_hash=credential_hash, active=True, activated_at=now)
                )
            else:
                conn.execute(
                    insert(terminals),
                    {
                        "terminal_id": terminal_id,
                        "merchant_id": login.merchant_id,
                        "location_id": location_id,
                        "device_name": device_name,
                        "credential_hash": credential_hash,
                        "active": True,
                        "period_number": 1,
                        "period_opened_at": now,
                        "activated_at": now,
                    },
                )
        info = self._store.terminal(terminal_id)
        assert info is not None
        return Activation(info, credential, login.merchant_name, issued)

    def web_terminal(self, merchant_id: str, location_id: str) -> str:
        """The terminal through which a location's redemptions in the web back office count (its
        periods, its reports, idempotency by transaction id): made on first use, with a credential
        nobody holds. An empty location_id names the merchant's only location. LookupError for a
        location that is not the merchant's; AdminError when it must be named."""
        location_id, existing = self.existing_web_terminal(merchant_id, location_id)
        if existing is not None:
            return existing
        web = select(terminals.c.terminal_id).where(
            terminals.c.location_id == location_id, terminals.c.device_name == WEB_BACK_OFFICE
        )
        terminal_id = new_id("trm")
        _, credential_hash = credentials.new_credential(terminal_id)  # the credential is dropped
        now = self._now()
        with writing(self._engine) as conn:
            try:
                with conn.begin_nested():  # another first use (a node, a thread) may insert it at once
                    conn.execute(
                        insert(terminals),
                        {
                            "terminal_id": terminal_id,
                            "merchant_id": merchant_id,
                            "location_id": location_id,
                            "device_name": WEB_BACK_OFFICE,
                            "credential_hash": credential_hash,
                            "active": True,
                            "period_number": 1,
                            "period_opened_at": now,
                            "activated_at": now,
                        },
                    )
            except IntegrityError:
                return str(conn.execute(web).scalar_one())
        return terminal_id

    def existing_web_terminal(self, merchant_id: str, location_id: str) -> tuple[str, str | None]:
        """The location (the merchant's only one if `location_id` is empty) and its web back office
        terminal, None before its first use; raises as web_terminal does."""
        mine = select(locations.c.location_id).where(locations.c.merchant_id == merchant_id)
        with self._engine.connect() as conn:  # a read: the write lock only for the first use
            if not location_id:
                found = conn.execute(mine.limit(2)).scalars().all()
                if len(found) != 1:
                    raise AdminError("location_id is missing: name the location where it counts")
                location_id = found[0]
            elif conn.execute(mine.where(locations.c.location_id == location_id)).first() is None:
                raise LookupError(f"location_id {quoted(location_id)}: no such location of yours")
            web = select(terminals.c.terminal_id).where(
                terminals.c.location_id == location_id, terminals.c.device_name == WEB_BACK_OFFICE
            )
            existing = conn.execute(web).scalar()
        return location_id, None if existing is None else str(existing)

    def online_top_up_terminal(self, programme_id: str) -> str:
        """The terminal through which the programme's online top-ups load cards (its periods, its
        reports, idempotency by top-up id), as a location's web back office terminal is for web
        redemptions: at a location named after the programme, of the switch's own merchant for
        online top-ups, which takes the programme; all made on first use, by any node, once."""
        t, place, shop = terminals.c, locations.c, merchants.c
        query = (
            select(t.terminal_id)
            .join(locations, place.location_id == t.location_id)
            .join(merchants, shop.merchant_id == t.merchant_id)
            .where(
                shop.email == ONLINE_TOP_UP_EMAIL, place.name == programme_id, t.device_name == ONLINE_TOP_UP
            )
        )
        with self._engine.connect() as conn:
            existing = conn.execute(query).scalar()
        if existing is not None:
            return str(existing)
        merchant_id = self._online_top_up_merchant()
        location_id = self._made_once(
            lambda: self.add_location(merchant_id, programme_id),
            select(place.location_id).where(place.merchant_id == merchant_id, place.name == programme_id),
        )
        with contextlib.suppress(AdminConflictError):
            self.join_programme(merchant_id, programme_id, 0)  # loads only: its payable stays empty
        terminal_id = new_id("trm")
        _, credential_hash = credentials.new_credential(terminal_id)  # the credential is dropped
        now = self._now()
        row = {
            "terminal_id": terminal_id,
            "merchant_id": merchant_id,
            "location_id": location_id,
            "device_name": ONLINE_TOP_UP,
            "credential_hash": credential_hash,
            "active": True,
            "period_number": 1,
            "period_opened_at": now,
            "activated_at": now,
        }
        return self._made_once(
            lambda: self._insert(terminals, row),
            select(t.terminal_id).where(t.location_id == location_id, t.device_name == ONLINE_TOP_UP),
        )

    def _online_top_up_merchant(self) -> str:
        merchant_id = new_id("mer")
        row = {
            "merchant_id": merchant_id,
            "name": ONLINE_TOP_UP_MERCHANT,
            "email": ONLINE_TOP_UP_EMAIL,
            "password_hash": credentials.hash_password(secrets.token_urlsafe(32)),  # dropped
            "created_at": self._now(),
        }
        found = select(merchants.c.merchant_id).where(merchants.c.email == ONLINE_TOP_UP_EMAIL)
        return self._made_once(lambda: self._insert(merchants, row, merchant_id), found)

    def _insert(self, table: Any, row: dict[str, Any], made: str = "") -> str:
        with writing(self._engine) as conn:
            conn.execute(insert(table), row)
        return made or str(row["terminal_id"])

    def _made_once(self, make: Callable[[], str], found: Any) -> str:
        """What `found` selects if it exists, else what make() makes; another node or thread making
        it at the same moment (a unique key) gives the one that it made."""
        with self._engine.connect() as conn:
            existing = conn.execute(found).scalar()
        if existing is not None:
            return str(existing)
        try:
            return make()
        except (IntegrityError, AdminConflictError):
            with self._engine.connect() as conn:
                return str(conn.execute(found).scalar_one())

    def web_transaction_elsewhere(self, merchant_id: str, terminal_id: str, transaction_id: str) -> bool:
        """Whether another location's web terminal of the merchant holds this transaction id: the
        browser's ids are the merchant's, not a location's (the same id for two locations moved
        the money twice, each web terminal keeping its own ids)."""
        row, t = transactions.c, terminals.c
        query = (
            select(row.transaction_id)
            .join(terminals, t.terminal_id == row.source)
            .where(
                t.merchant_id == merchant_id,
                t.device_name == WEB_BACK_OFFICE,
                t.terminal_id != terminal_id,
                row.transaction_id == transaction_id,
            )
            .limit(1)
        )
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def set_terminal_active(self, terminal_id: str, active: bool) -> TerminalInfo:
        """AdminStateError for the web back office's terminal: no device holds it, and nothing
        could activate it again (a deactivated one refused every web redemption at its location)."""
        with writing(self._engine) as conn:
            device = conn.execute(
                select(terminals.c.device_name).where(terminals.c.terminal_id == terminal_id)
            ).scalar()
            if device is None:
                raise AdminError(f"no terminal {quoted(terminal_id)}")
            if device in SWITCH_DEVICE_NAMES:
                raise AdminStateError(f"terminal {terminal_id} is the {device}'s, not a device: it stays on")
            mine = terminals.c.terminal_id == terminal_id
            conn.execute(update(terminals).where(mine).values(active=active))
        info = self._store.terminal(terminal_id)
        assert info is not None
        return info

    def programme_ids(self) -> list[str]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(select(programmes.c.programme_id).order_by(programmes.c.programme_id)).scalars()
            )

    def programme_created_at(self, programme_id: str) -> dt.datetime | None:
        """When the programme was created; None if before that was kept (or no such programme)."""
        with self._engine.connect() as conn:
            created_at = conn.execute(
                select(programmes.c.created_at).where(programmes.c.programme_id == programme_id)
            ).scalar()
        return None if created_at is None else as_utc(created_at)

    def list_terminals(self, merchant_id: str = "") -> list[TerminalInfo]:
        """Every terminal, or the merchant's; LookupError for a merchant that does not exist."""
        query = select(terminals.c.terminal_id).order_by(terminals.c.activated_at)
        if merchant_id:
            if self._store.merchant_name(merchant_id) is None:
                raise LookupError(f"merchant_id {quoted(merchant_id)}: no such merchant")
            query = query.where(terminals.c.merchant_id == merchant_id)
        with self._engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        found = [self._store.terminal(terminal_id) for terminal_id in ids]
        return [info for info in found if info is not None]

    def check_ledger(self) -> LedgerCheck:
        """Every entry sums to zero, every balance equals its postings, no card below zero, every
        repayment row has the entry that moves what it records and every repayment entry its row."""
        problems: list[str] = []
        with self._engine.connect() as conn:
            entries = conn.execute(select(func.count()).select_from(journal_entries)).scalar_one()
            unbalanced = conn.execute(
                select(postings.c.entry_id)
                .group_by(postings.c.entry_id)
                .having(func.sum(postings.c.amount_minor) != 0)
            ).all()
            negative = conn.execute(
                select(accounts.c.account_id).where(
                    accounts.c.kind == AccountKind.card, accounts.c.balance_minor < 0
                )
            ).all()
            sums = (
                select(postings.c.account_id, func.sum(postings.c.amount_minor).label("total"))
                .group_by(postings.c.account_id)
                .subquery()
            )
            mismatched = conn.execute(
                select(accounts.c.account_id, accounts.c.balance_minor, sums.c.total)
                .outerjoin(sums, sums.c.account_id == accounts.c.account_id)
                .where(accounts.c.balance_minor != func.coalesce(sums.c.total, 0))
            ).all()
            repayments = repayment_disagreements(conn)
        problems += [f"entry {row.entry_id} does not balance" for row in unbalanced]
        problems += [f"{row.account_id} is below zero" for row in negative]
        problems += [
            f"{row.account_id} balance {row.balance_minor} != postings {row.total}" for row in mismatched
        ]
        problems += repayments
        return LedgerCheck(
            entries, len(unbalanced), len(negative), len(mismatched), tuple(problems[:50]), len(repayments)
        )

    def settlement_writes(self, programme_id: str, settlement_id: str) -> list[PlannedPayout]:
        """A payout for each merchant with something to pay out, and each that owes the programme
        (its refunds exceed its redemptions since its last payout) listed, not left out."""
        programme = self._store.programme(programme_id)
        with self._engine.connect() as conn:
            members = self._members(conn, programme_id)
            balances = _payable_balances(conn, programme_id, members)
        return [
            self._planned(programme, settlement_id, merchant_id, members[merchant_id], gross_minor)
            for merchant_id, gross_minor in balances.items()
        ]

    def manual_settlement_writes(
        self, programme_id: str, settlement_id: str, cycle_settlement_id: str
    ) -> list[PlannedPayout]:
        """A Settle's payouts (settlement_writes), made in the payout cycle `cycle_settlement_id`:
        one a cycle, so each is its merchant's payout of the cycle, marked with it (CyclePayout), and
        SettleDue pays the merchant nothing more in it. The Settle is the cycle's run if SettleDue
        has not run in the cycle yet. AdminError for a settlement id no key can hold, before the run
        is recorded."""
        _refuse_longer("settlement_id", settlement_id, SETTLEMENT_ID_LENGTH)
        if not settlement_id.isascii() or not settlement_id.isprintable():
            raise AdminError("settlement_id has characters other than printable ASCII")
        _refuse_pan_shaped("settlement_id", settlement_id)
        if settlement_id.startswith(PAYOUT_SETTLEMENT_PREFIX):  # a later cycle's run: "already paid"
            raise AdminError(
                f"settlement_id may not start with {PAYOUT_SETTLEMENT_PREFIX}: the payout cycles' own"
            )
        dues = self.record_cycle_run(programme_id, cycle_settlement_id)
        planned = self.settlement_writes(programme_id, settlement_id)
        paid = [plan.merchant_id for plan in planned if plan.write is not None]
        self._hold_due_rows(programme_id, cycle_settlement_id, [m for m in paid if m not in dues])
        plans = []
        for plan in planned:
            if plan.write is None:
                plans.append(plan)
                continue
            mark = CyclePayout(programme_id, cycle_settlement_id, plan.merchant_id, settlement_id)
            plans.append(replace(plan, write=replace(plan.write, cycle_payout=mark)))
        return plans

    def cycle_settlement_writes(self, programme_id: str, settlement_id: str) -> list[PlannedPayout]:
        """The payouts of the programme's payout cycle `settlement_id` (SettleDue's, once a cycle).

        The cycle's first run records what each merchant is owed then; that run and every later one
        in the cycle pay a merchant at most that (a payout that failed is made by the next run), so a
        merchant owed nothing then is paid nothing until the next cycle, whatever it redeems since.
        A merchant a Settle paid in the cycle has had the cycle's payout (manual_settlement_writes).
        The settlement key keeps it to one payout a cycle.
        """
        programme = self._store.programme(programme_id)
        dues = self.record_cycle_run(programme_id, settlement_id)
        with self._engine.connect() as conn:
            members = self._members(conn, programme_id)
            balances = _payable_balances(conn, programme_id, members)
        plans = []
        for merchant_id, balance_minor in balances.items():
            due = dues.get(merchant_id, CycleDue(0))
            if due.paid_by and balance_minor > 0:
                reason = paid_in_this_cycle(due.paid_by)
                plans.append(PlannedPayout(merchant_id, balance_minor, 0, None, reason, waits=True))
                continue
            gross_minor = cycle_payout_minor(due.owed_minor, balance_minor)
            if balance_minor > 0 and gross_minor == 0:
                plans.append(
                    PlannedPayout(merchant_id, balance_minor, 0, None, WAITS_FOR_NEXT_CYCLE, waits=True)
                )
                continue
            paid_minor = gross_minor if balance_minor > 0 else balance_minor
            plan = self._planned(programme, settlement_id, merchant_id, members[merchant_id], paid_minor)
            if plan.write is not None:
                # Refused once a Settle has paid the merchant in the cycle since this read no mark
                mark = CyclePayout(programme_id, settlement_id, merchant_id, paid_by="")
                plan = replace(plan, write=replace(plan.write, cycle_payout=mark))
            plans.append(plan)
        return plans

    def cycle_ran(self, programme_id: str, settlement_id: str) -> bool:
        """Whether the programme's payout cycle `settlement_id` has had its run (and its record)."""
        with self._engine.connect() as conn:
            return _recorded_run(conn, programme_id, settlement_id) is not None

    def later_cycle_run(self, programme_id: str, settlement_id: str) -> str | None:
        """The first payout cycle after `settlement_id` that the programme ran (SettleDue's run or a
        Settle's), None if none has: its run was owed what the earlier cycle's was and not paid."""
        cycle = payout_cycles.c
        query = (
            select(cycle.settlement_id)
            .where(cycle.programme_id == programme_id, cycle.settlement_id > settlement_id)
            .order_by(cycle.settlement_id)
            .limit(1)
        )
        with self._engine.connect() as conn:
            later = conn.execute(query).scalar()
        return None if later is None else str(later)

    def cycle_paid_by(self, payout: CyclePayout) -> str:
        """The settlement id of the Settle that paid the merchant in the payout cycle ("": none)."""
        due = payout_cycle_dues.c
        query = select(due.paid_by).where(
            due.programme_id == payout.programme_id,
            due.settlement_id == payout.cycle_settlement_id,
            due.merchant_id == payout.merchant_id,
        )
        with self._engine.connect() as conn:
            paid_by = conn.execute(query).scalar()
        return "" if paid_by is None else str(paid_by)

    def payout_made(self, plan: PlannedPayout) -> bool:
        """Whether the journal holds the planned payout's settlement (made by this run or another)."""
        assert plan.write is not None and plan.write.entry is not None
        key = plan.write.entry.idempotency_key
        with self._engine.connect() as conn:
            found = conn.execute(
                select(journal_entries.c.entry_id).where(journal_entries.c.idempotency_key == key)
            ).first()
        return found is not None

    def record_cycle_run(self, programme_id: str, settlement_id: str) -> dict[str, CycleDue]:
        """What each merchant owed something was owed at the cycle's first run (SettleDue's, or a
        Settle's in the cycle), recorded by that run; and which were paid since by a Settle."""
        try:
            with writing(self._engine) as conn:
                recorded = _recorded_run(conn, programme_id, settlement_id)
                if recorded is not None:
                    return recorded
                members = self._members(conn, programme_id)
                owed = {m: b for m, b in _payable_balances(conn, programme_id, members).items() if b > 0}
                key = {"programme_id": programme_id, "settlement_id": settlement_id}
                conn.execute(insert(payout_cycles).values(**key, ran_at=self._now()))
                if owed:
                    rows = [{**key, "merchant_id": m, "owed_minor": b} for m, b in owed.items()]
                    conn.execute(insert(payout_cycle_dues), rows)
                return {m: CycleDue(b) for m, b in owed.items()}
        except IntegrityError:  # a run on another node recorded the cycle's run first (PostgreSQL)
            with self._engine.connect() as conn:
                recorded = _recorded_run(conn, programme_id, settlement_id)
            assert recorded is not None, "the cycle's run is recorded by the run that won"
            return recorded

    def _hold_due_rows(self, programme_id: str, cycle_settlement_id: str, merchant_ids: list[str]) -> None:
        """A due row, owed nothing at the cycle's run, for each of these merchants that has none: a
        Settle's payout marks its merchant's row (CyclePayout), and one owed nothing at the run had
        none, so SettleDue told it "owed nothing when this cycle's payout ran", not who paid it."""
        if not merchant_ids:
            return
        dues = payout_cycle_dues.c
        key = {"programme_id": programme_id, "settlement_id": cycle_settlement_id}
        for attempt in range(1, DUE_ROWS_ATTEMPTS_MAX + 1):
            try:
                with writing(self._engine) as conn:
                    held = conn.execute(
                        select(dues.merchant_id).where(
                            dues.programme_id == programme_id,
                            dues.settlement_id == cycle_settlement_id,
                            dues.merchant_id.in_(merchant_ids),
                        )
                    )
                    missing = set(merchant_ids) - set(held.scalars())
                    rows = [{**key, "merchant_id": m, "owed_minor": 0} for m in sorted(missing)]
                    if rows:
                        conn.execute(insert(payout_cycle_dues), rows)
                return
            except IntegrityError:  # a Settle on another node held one first (PostgreSQL): read again
                if attempt == DUE_ROWS_ATTEMPTS_MAX:
                    raise

    def _members(self, conn: Connection, programme_id: str) -> dict[str, int]:
        """The programme's merchants and their commission in basis points."""
        found = conn.execute(
            select(merchant_programmes.c.merchant_id, merchant_programmes.c.commission_basis_points).where(
                merchant_programmes.c.programme_id == programme_id
            )
        ).all()
        return {merchant_id: int(basis_points) for merchant_id, basis_points in found}

    def _planned(
        self, programme: Programme, settlement_id: str, merchant_id: str, basis_points: int, gross_minor: int
    ) -> PlannedPayout:
        if gross_minor < 0:
            reason = owes_reason(Money(-gross_minor, programme.currency), basis_points)
            return PlannedPayout(merchant_id, gross_minor, 0, None, reason)
        commission = commission_minor(gross_minor, basis_points)
        entry = ledger.settlement_entry(
            ledger.settlement_key(programme.programme_id, settlement_id, merchant_id),
            programme.currency,
            programme.programme_id,
            merchant_id,
            gross_minor,
            commission,
        )
        return PlannedPayout(merchant_id, gross_minor, commission, Write(entry=entry))

    def _require_merchant(self, merchant_id: str) -> None:
        if self._store.merchant_name(merchant_id) is None:
            raise AdminError(f"no merchant {quoted(merchant_id)}")


def owes_reason(owed: Money, commission_basis_points: int) -> str:
    """A payout run's line for a merchant owing the programme: the debt, and the bank transfer
    that clears it (record-repayment's amount), the commission on it given back."""
    transfer = Money(repayment_transfer_minor(owed.amount_minor, commission_basis_points), owed.currency)
    commission = f"the {commission_percent(commission_basis_points)} commission on it given back"
    why = "refunds exceed redemptions since the last payout; later redemptions pay it back"
    if transfer.amount_minor == 0:
        return f"owes {owed.decimal()} (nothing to transfer: {commission} is all of it): {why}"
    return (
        f"owes {owed.decimal()} (cleared by a bank transfer of {transfer.decimal()}, {commission}): {why}, "
        f"or record the transfer with record-repayment --amount {transfer.decimal()}"
    )


@dataclass(frozen=True, slots=True)
class PlannedPayout:
    """A merchant's payout to write, or (write None) why it is not made."""

    merchant_id: str
    gross_minor: int  # negative: what the merchant owes the programme
    commission_minor: int
    write: Write | None
    reason: str = ""
    # Not made because the merchant waits for the next cycle: SettleDue's answer every day of the
    # cycle to a merchant that redeemed since, not a problem
    waits: bool = False


@dataclass(frozen=True, slots=True)
class CycleDue:
    """What a merchant was owed at its programme's payout cycle's run, the most it is paid in it;
    paid_by: the settlement id of a Settle that paid it in the cycle since ("": none has)."""

    owed_minor: int
    paid_by: str = ""


# Settles on other nodes holding due rows of the same merchants at once: each attempt reads again
DUE_ROWS_ATTEMPTS_MAX = 3
WAITS_FOR_NEXT_CYCLE = "owed nothing when this cycle's payout ran; waits for the next cycle"


def paid_in_this_cycle(paid_by: str) -> str:
    """Why SettleDue pays a merchant nothing more in the cycle once a Settle paid it in it."""
    return f"paid under settlement {paid_by} in this cycle; waits for the next cycle"


def _payable_balances(conn: Connection, programme_id: str, members: dict[str, int]) -> dict[str, int]:
    """The members' payables in the programme that are not zero, by merchant id (in account order)."""
    payable = {ledger.merchant_payable_account(m, programme_id): m for m in members}
    found = conn.execute(
        select(accounts.c.account_id, accounts.c.balance_minor)
        .where(accounts.c.account_id.in_(list(payable)), accounts.c.balance_minor != 0)
        .order_by(accounts.c.account_id)
    ).all()
    return {payable[account_id]: int(balance_minor) for account_id, balance_minor in found}


def _recorded_run(conn: Connection, programme_id: str, settlement_id: str) -> dict[str, CycleDue] | None:
    """What merchants were owed at the cycle's run, as it recorded; None before the cycle's run."""
    ran = conn.execute(
        select(payout_cycles.c.ran_at).where(
            payout_cycles.c.programme_id == programme_id, payout_cycles.c.settlement_id == settlement_id
        )
    ).first()
    if ran is None:
        return None
    dues = payout_cycle_dues.c
    found = conn.execute(
        select(dues.merchant_id, dues.owed_minor, dues.paid_by).where(
            dues.programme_id == programme_id, dues.settlement_id == settlement_id
        )
    ).all()
    return {merchant_id: CycleDue(int(owed_minor), paid_by) for merchant_id, owed_minor, paid_by in found}


def _refuse_longer(field: str, text: str, most: int) -> None:
    """AdminError naming the field when text does not fit its column (PostgreSQL refuses it whole)."""
    if len(text) > most:
        raise AdminError(f"{field} is {len(text)} characters; at most {most}")


def _refuse_pan_shaped(field: str, value: str) -> None:
    """An id kept as given (a journal key, a unique column) may not hold a card number: it would be
    in the database in clear."""
    problem = pan_in_id_problem(field, value)
    if problem is not None:
        raise AdminError(problem)


def location_fields(name: str, address: str) -> tuple[str, str]:
    """A location's name and address as stored (stripped); AdminError naming what is wrong."""
    name, address = name.strip(), address.strip()
    if not name:
        raise AdminError("location name is empty")
    for field, text, most in (("name", name, LOCATION_NAME_MAX), ("address", address, LOCATION_ADDRESS_MAX)):
        if len(text) > most:
            raise AdminError(f"location {field} is {len(text)} characters; at most {most}")
    return name, address


def _employee_key(merchant_id: str, employee_number: str) -> tuple[ColumnElement[bool], ...]:
    return (employees.c.merchant_id == merchant_id, employees.c.employee_number == employee_number)


def _employee_info(row: Any) -> EmployeeInfo:
    return EmployeeInfo(
        row.employee_id,
        row.merchant_id,
        row.employee_number,
        row.name,
        row.role,
        bool(row.active),
        as_utc(row.locked_until) if row.locked_until is not None else None,
        row.email or "",
        row.password_hash is not None,
    )


def _login_values(email: str, password: str) -> dict[str, object]:
    """The columns of a user's portal login that are given; AdminError naming what is wrong."""
    values: dict[str, object] = {}
    if email:
        _refuse_switch_email(email)
        try:
            values["email"] = checked_email(email).lower()
        except BadEmailError as error:
            raise AdminError(str(error)) from None
    if password:
        problem = password_problem(password)
        if problem:
            raise AdminError(problem)
        values["password_hash"] = credentials.hash_password(password)
    return values


def _refuse_switch_email(email: str) -> None:
    """The online top-up merchant's address is the switch's: a login made with it before the first
    top-up would be taken for that merchant (_online_top_up_merchant), its password known."""
    if email.strip().lower() == ONLINE_TOP_UP_EMAIL:
        raise AdminError(f"e-mail {ONLINE_TOP_UP_EMAIL} is the switch's own")


def _lock_email(conn: Connection, email: object) -> None:
    """Before the first read: a merchant and a user taking one address at once take turns, so
    the second sees the first's login (the tables' unique keys each cover only their own)."""
    if isinstance(email, str):
        lock_name(conn, f"login-email:{email}")


def _refuse_taken_email(conn: Connection, email: object, employee_id: str) -> None:
    """AdminError if a merchant or another user signs in with this address already."""
    if email is None:
        return
    taken = conn.execute(select(merchants.c.merchant_id).where(merchants.c.email == email)).first() or (
        conn.execute(
            select(employees.c.employee_id).where(
                employees.c.email == email, employees.c.employee_id != employee_id
            )
        ).first()
    )
    if taken:
        raise AdminConflictError(f"email {quoted(str(email))} is taken by another login")


def _add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later, or that month's last day when it has no such day (31 Jan +1)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
