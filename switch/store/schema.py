"""SQLAlchemy tables of the switch: one MetaData that every store module registers on."""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from switch.domain.cards import CardStatus
from switch.domain.ledger import AccountKind
from switch.domain.programmes import ProgrammeKind

metadata = MetaData()

ID_LENGTH = 40
IDEMPOTENCY_KEY_LENGTH = 140
# A Settle's settlement id: its payouts' key, settle:<programme id>:<settlement id>:<merchant id>, fits
SETTLEMENT_ID_LENGTH = IDEMPOTENCY_KEY_LENGTH - len("settle:::") - 2 * ID_LENGTH
# A repayment's request id (its entry's key is repay:<request id>) and its bank reference
REPAYMENT_REQUEST_ID_LENGTH = 64
REPAYMENT_REFERENCE_LENGTH = 64
MONEY = BigInteger


class Base(DeclarativeBase):
    metadata = metadata


class ProgrammeRow(Base):
    __tablename__ = "programmes"
    programme_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[ProgrammeKind] = mapped_column(Enum(ProgrammeKind, native_enum=False, length=16))
    currency: Mapped[str] = mapped_column(String(3))
    card_prefix: Mapped[str] = mapped_column(String(6), unique=True)
    next_card_serial: Mapped[int] = mapped_column(BigInteger, default=1)
    balance_max_minor: Mapped[int] = mapped_column(MONEY)
    copay_numerator_minor: Mapped[int | None] = mapped_column(MONEY, nullable=True)
    copay_denominator_minor: Mapped[int | None] = mapped_column(MONEY, nullable=True)
    funder_name: Mapped[str] = mapped_column(String(120), default="")
    payout_interval_weeks: Mapped[int] = mapped_column(Integer, default=4)
    card_validity_months: Mapped[int] = mapped_column(Integer, default=36)
    # Loads are whole multiples of it (NULL: any amount, or a programme stored before it was a
    # setting: see domain.programmes.stored_load_step_minor).
    load_step_minor: Mapped[int | None] = mapped_column(MONEY, nullable=True)
    # NULL: created before it was kept; a past payout cycle cannot tell then whether it existed
    created_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MerchantRow(Base):
    __tablename__ = "merchants"
    merchant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class MerchantProgrammeRow(Base):
    __tablename__ = "merchant_programmes"
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"), primary_key=True)
    programme_id: Mapped[str] = mapped_column(ForeignKey("programmes.programme_id"), primary_key=True)
    commission_basis_points: Mapped[int] = mapped_column(Integer, default=0)


class LocationRow(Base):
    __tablename__ = "locations"
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)
    location_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"))
    name: Mapped[str] = mapped_column(String(120))
    address: Mapped[str] = mapped_column(String(250), default="")


class EmployeeRow(Base):
    __tablename__ = "employees"
    __table_args__ = (UniqueConstraint("merchant_id", "employee_number"),)
    employee_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"))
    employee_number: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(20))
    pin_hash: Mapped[str] = mapped_column(String(200))  # salted; the PIN itself is never stored
    failed_tries: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # PIN attempts stored so far: each attempt's write counts on the value its check read, so two
    # nodes judging the same employee at once cannot both count from the same state.
    pin_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A deactivated employee's PIN opens nothing (added after the first release: a server default)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # A user who signs in to the portal (added after the first release: both nullable). The
    # address is stored lower-cased; unique across users (and checked against merchants).
    email: Mapped[str | None] = mapped_column(String(254), nullable=True, unique=True, index=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Changes that sign the user out everywhere (address, password, role, deactivation), counted: a
    # password check made before one opens nothing after it, also when the change was undone since.
    login_changes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TerminalRow(Base):
    __tablename__ = "terminals"
    __table_args__ = (
        UniqueConstraint("location_id", "device_name"),
        # The web day pass looks up the switch's own terminals by name (switch/web_days.py).
        Index("ix_terminals_device_name", "device_name"),
    )
    terminal_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"))
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"))
    device_name: Mapped[str] = mapped_column(String(120))
    credential_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    period_number: Mapped[int] = mapped_column(BigInteger, default=1)
    period_opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CardRow(Base):
    __tablename__ = "cards"
    # Each start looks at the replaced cards for money left on them (money_on_replaced_cards): the
    # few replaced among many, a partial index (SQLite will not take a whole one for IS NOT NULL)
    __table_args__ = (
        Index(
            "ix_cards_replaced",
            "replaced_by",
            sqlite_where=text("replaced_by IS NOT NULL"),
            postgresql_where=text("replaced_by IS NOT NULL"),
        ),
        # A programme's cards in card id order (set-load-step fences them, programme_settings.py)
        Index("ix_cards_programme", "programme_id", "card_id"),
    )
    card_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    programme_id: Mapped[str] = mapped_column(ForeignKey("programmes.programme_id"))
    # Keyed hash of the card number; the number itself is never stored.
    card_hash: Mapped[str] = mapped_column(String(64), unique=True)
    masked: Mapped[str] = mapped_column(String(19))
    status: Mapped[CardStatus] = mapped_column(Enum(CardStatus, native_enum=False, length=16))
    expiry: Mapped[dt.date] = mapped_column(Date)
    replaced_by: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # The IssueCard request_id that issued the card, if it had one: a replay is refused by this index,
    # with or without an initial load. A unique index, not a constraint, so older databases get it too.
    issue_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)


CARD_EVENT_DETAIL_MAX = 250


class CardEventRow(Base):
    """Audit trail of a card's status changes and transfers."""

    __tablename__ = "card_events"
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.card_id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(String(CARD_EVENT_DETAIL_MAX))
    actor: Mapped[str] = mapped_column(String(120))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CardReplacementRow(Base):
    """The request id of a replacement that moved no money (an empty card's), which no journal entry
    keeps as it keeps a transfer's: a replay answers what the first did, and one naming other cards
    is refused, as a transfer's is (core.replace_card)."""

    __tablename__ = "card_replacements"
    idempotency_key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), primary_key=True)
    lost_card_id: Mapped[str] = mapped_column(ForeignKey("cards.card_id"))
    new_card_id: Mapped[str] = mapped_column(ForeignKey("cards.card_id"))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AccountRow(Base):
    __tablename__ = "accounts"
    account_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[AccountKind] = mapped_column(Enum(AccountKind, native_enum=False, length=24))
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(MONEY, default=0)


class TransactionRow(Base):
    """Every answered terminal transaction, approved or declined: the source of idempotent replies."""

    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("source", "transaction_id"),
        Index("ix_transactions_period", "source", "period_number"),
        Index("ix_transactions_merchant_time", "merchant_id", "created_at"),  # the portal's report
        # An inbound request sent again under a new field 7 is found by its field 37
        Index("ix_transactions_retrieval_reference", "source", "retrieval_reference"),
    )
    transaction_pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    source: Mapped[str] = mapped_column(String(ID_LENGTH))  # terminal id, or "backoffice"
    transaction_id: Mapped[str] = mapped_column(String(80))
    transaction_type: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(32))
    card_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True, index=True)
    merchant_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    requested_minor: Mapped[int] = mapped_column(MONEY, default=0)
    approved_minor: Mapped[int] = mapped_column(MONEY, default=0)
    refunded_minor: Mapped[int] = mapped_column(MONEY, default=0)
    balance_after_minor: Mapped[int | None] = mapped_column(MONEY, nullable=True)
    cardholder_part_minor: Mapped[int] = mapped_column(MONEY, default=0)
    funder_part_minor: Mapped[int] = mapped_column(MONEY, default=0)
    result: Mapped[str] = mapped_column(String(40))  # ResponseCode member name
    detail: Mapped[str] = mapped_column(String(250), default="")
    status: Mapped[str] = mapped_column(String(16))
    authorization_code: Mapped[str] = mapped_column(String(6), default="")
    period_number: Mapped[int] = mapped_column(BigInteger, default=0)
    original_transaction_id: Mapped[str] = mapped_column(String(80), default="")
    payment_method: Mapped[str] = mapped_column(String(16), default="stored_value")
    card_masked: Mapped[str] = mapped_column(String(19), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # The MTI an inbound ISO 8583 request came as (0100 or 0200 alike redeem, but only an 0100 is
    # completed); "" for the terminal protocol and for rows stored before it was kept (a server
    # default, so an older database gets the column at start).
    mti: Mapped[str] = mapped_column(String(4), default="", server_default="")
    # Field 37 (retrieval reference number) of an inbound 0100/0200, a reference and never card
    # data: a resend under a new field 7 is the same sale. "" otherwise, and for rows stored before
    # it was kept (a server default, so an older database gets the column at start).
    retrieval_reference: Mapped[str] = mapped_column(String(12), default="", server_default="")


# How long an inbound 0100/0200 with the same acquirer, field 41, STAN and field 37 is the one stored,
# whatever its field 7: a resend comes within seconds (a repeat from the acquirer's store and forward
# within its business day), and a day stays far from the STAN's wrap and the reuse of a field 37, so
# a new sale is not taken for an old one.
INBOUND_REPEAT_WINDOW = dt.timedelta(hours=24)
# A key is purged this long after the window (switch/store/inbound_purge.py): each node reads the
# window on its own clock, so a node whose clock is behind may still hold a key the purging node
# finds past it; an hour is far beyond the clocks' drift between NTP-synced nodes.
INBOUND_REPEAT_KEY_PURGE_MARGIN = dt.timedelta(hours=1)


class InboundRepeatKeyRow(Base):
    """The inbound 0100/0200 (or the tombstone holding its place) that holds its acquirer (source),
    field 41, STAN and field 37 within INBOUND_REPEAT_WINDOW, inserted in the same transaction as
    its row (journal `_hold_repeat_keys`): a resend under a new field 7 stored meanwhile by another
    node breaks the key and moves nothing. The row is the key's only while younger than the window;
    an older one is replaced when the key comes again."""

    __tablename__ = "inbound_repeat_keys"
    __table_args__ = (Index("ix_inbound_repeat_keys_created_at", "created_at"),)  # the purge's
    source: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    id_prefix: Mapped[str] = mapped_column(String(80), primary_key=True)  # "<field 41>:<STAN>"
    retrieval_reference: Mapped[str] = mapped_column(String(12), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class InboundResendRow(Base):
    """An inbound 0100/0200 sent again under a new field 7 and answered as its first (iso_inbound):
    it has no row of its own in transactions, so a reversal or completion naming its field 7
    without field 37 finds the first through this one. Written once per resend id (a conflict
    after), only on that rare path."""

    __tablename__ = "inbound_resends"
    __table_args__ = (Index("ix_inbound_resends_created_at", "created_at"),)  # the purge's
    source: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(80), primary_key=True)  # the resend's
    first_transaction_id: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class JournalEntryRow(Base):
    __tablename__ = "journal_entries"
    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # At most once per key: a transaction, a reversal of it, a card transfer, a settlement.
    idempotency_key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PostingRow(Base):
    __tablename__ = "postings"
    posting_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.entry_id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"), index=True)
    amount_minor: Mapped[int] = mapped_column(MONEY)


class DayCloseRow(Base):
    __tablename__ = "day_closes"
    __table_args__ = (UniqueConstraint("terminal_id", "close_id"),)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.terminal_id"), primary_key=True)
    sequence_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    close_id: Mapped[str] = mapped_column(String(80))
    period_number: Mapped[int] = mapped_column(BigInteger)
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    totals_json: Mapped[str] = mapped_column(Text)


class ReceiptLayoutRow(Base):
    """A merchant's own lines on every receipt."""

    __tablename__ = "receipt_layouts"
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"), primary_key=True)
    header: Mapped[str] = mapped_column(Text, default="")
    footer: Mapped[str] = mapped_column(Text, default="")
    logo_png: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class LocationLogoRow(Base):
    """A location's own logo on its terminals' receipts, in place of the merchant's."""

    __tablename__ = "location_logos"
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"), primary_key=True)
    logo_png: Mapped[bytes] = mapped_column(LargeBinary)


class LocationChangeRow(Base):
    """A change of a location's name or address the merchant asked for, and the operator's decision."""

    __tablename__ = "location_changes"
    change_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"), index=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    address: Mapped[str] = mapped_column(String(250))
    from_name: Mapped[str] = mapped_column(String(120))
    from_address: Mapped[str] = mapped_column(String(250))
    status: Mapped[str] = mapped_column(String(20))  # pending, approved, rejected, replaced
    asked_by: Mapped[str] = mapped_column(String(254))
    # The user whose portal login asked (None: the merchant's own account or the backoffice): an
    # approval needs that user still active and still allowed to ask (added later: nullable).
    asked_by_employee_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    # That user's login_changes as its session saw them at the ask: a login changed since (a new
    # password, address or role, or a deactivation) no longer vouches for it (None: asked before
    # this column, or not by a user).
    asked_by_login_changes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    asked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str] = mapped_column(String(250), default="")


class ReceiptRow(Base):
    """An e-mailed receipt until its mail server took it (or refused it for good).

    The clear address is kept only while the receipt waits; once it is sent or given up, only
    the masked address stays.
    """

    __tablename__ = "receipts"
    __table_args__ = (Index("ix_receipts_due", "state", "next_attempt_at"),)
    receipt_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.terminal_id"))
    transaction_id: Mapped[str] = mapped_column(String(80))
    recipient: Mapped[str] = mapped_column(String(254))  # "" once sent or given up
    recipient_masked: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(250))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10))  # queued, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(String(250), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PortalSessionRow(Base):
    """A merchant signed in to the portal; the token itself is never stored."""

    __tablename__ = "portal_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # The user signed in; None for the merchant's own account (added after the first release).
    employee_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True, index=True)


class SignInFailureRow(Base):
    """Wrong portal sign-ins in a row for one e-mail address (known or not), kept as a hash."""

    __tablename__ = "sign_in_failures"
    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PasswordResetRow(Base):
    """A forgotten-password code mailed to a login: only its hash is kept, and it works once."""

    __tablename__ = "password_resets"
    __table_args__ = (Index("ix_password_resets_email", "email_hash", "created_at"),)
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64))  # the address it went to, as a hash
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"))
    employee_id: Mapped[str | None] = mapped_column(ForeignKey("employees.employee_id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PayoutCycleRow(Base):
    """A programme's payout cycle whose payout has run (SettleDue): what each merchant is paid in
    the cycle was decided then, once."""

    __tablename__ = "payout_cycles"
    programme_id: Mapped[str] = mapped_column(ForeignKey("programmes.programme_id"), primary_key=True)
    settlement_id: Mapped[str] = mapped_column(String(100), primary_key=True)  # payout-<cycle start>
    ran_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PayoutCycleDueRow(Base):
    """A merchant owed something when its programme's payout cycle ran: the most it is paid in it;
    or owed nothing then (0) and paid by a Settle in the cycle since (paid_by)."""

    __tablename__ = "payout_cycle_dues"
    __table_args__ = (
        ForeignKeyConstraint(
            ["programme_id", "settlement_id"], ["payout_cycles.programme_id", "payout_cycles.settlement_id"]
        ),
    )
    programme_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    settlement_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"), primary_key=True)
    owed_minor: Mapped[int] = mapped_column(MONEY)
    # The settlement id of a Settle that paid the merchant in the cycle after this was recorded: that
    # was the cycle's payout ("" while none has)
    paid_by: Mapped[str] = mapped_column(String(100), default="", server_default="")


class TopUpRow(Base):
    """A cardholder's online top-up (switch/top_ups.py): started, paid at the PSP, then loaded, or
    refund_due. Only the masked card number is kept, beside the card's id."""

    __tablename__ = "top_ups"
    __table_args__ = (
        Index("ix_top_ups_status", "status", "created_at"),
        # The client's request id is the card's own (callers have no login): a unique index, not a
        # constraint, so older databases get it too (their unique request_id over all top-ups is
        # taken away at start: engine.SUPERSEDED_UNIQUE_CONSTRAINTS).
        Index("uq_top_ups_card_request", "card_id", "request_id", unique=True),
    )
    top_up_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))  # the client's, for idempotency
    card_id: Mapped[str] = mapped_column(ForeignKey("cards.card_id"), index=True)
    card_masked: Mapped[str] = mapped_column(String(19))
    programme_id: Mapped[str] = mapped_column(ForeignKey("programmes.programme_id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(MONEY)
    holder_part_minor: Mapped[int] = mapped_column(MONEY)
    funder_part_minor: Mapped[int] = mapped_column(MONEY)
    status: Mapped[str] = mapped_column(String(16))  # TopUpStatus, never "expired" (shown only)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The PSP's id of the holder's payment: one payment confirms one top-up (NULL until confirmed).
    psp_reference: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    amount_paid_minor: Mapped[int] = mapped_column(MONEY, default=0)
    # The currency the holder paid in (NULL until confirmed): not always the top-up's.
    amount_paid_currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    reason: Mapped[str] = mapped_column(String(250), default="")
    refund_reference: Mapped[str] = mapped_column(String(64), default="")
    # The sweep's tries that left it confirming (its load not known), and when it may try again
    # (NULL: not tried yet): a back-off, so top-ups that never load leave the sweep to the others.
    sweep_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_sweep_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When it was loaded, found refund_due, or marked refunded (NULL: not yet, or a row from before
    # this column): a purge keeps it top_ups_kept_days from then (switch/top_ups.py).
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MerchantRepaymentRow(Base):
    """A merchant's bank transfer paying back what it owed a programme (its payable below zero),
    stored with its journal entry in one transaction; the request id makes it once."""

    __tablename__ = "merchant_repayments"
    request_id: Mapped[str] = mapped_column(String(REPAYMENT_REQUEST_ID_LENGTH), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.merchant_id"), index=True)
    programme_id: Mapped[str] = mapped_column(ForeignKey("programmes.programme_id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(MONEY)
    reference: Mapped[str] = mapped_column(String(REPAYMENT_REFERENCE_LENGTH))  # the bank's
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.entry_id"))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


programmes = cast(Table, ProgrammeRow.__table__)
merchants = cast(Table, MerchantRow.__table__)
merchant_programmes = cast(Table, MerchantProgrammeRow.__table__)
locations = cast(Table, LocationRow.__table__)
employees = cast(Table, EmployeeRow.__table__)
terminals = cast(Table, TerminalRow.__table__)
cards = cast(Table, CardRow.__table__)
card_events = cast(Table, CardEventRow.__table__)
card_replacements = cast(Table, CardReplacementRow.__table__)
accounts = cast(Table, AccountRow.__table__)
transactions = cast(Table, TransactionRow.__table__)
inbound_repeat_keys = cast(Table, InboundRepeatKeyRow.__table__)
inbound_resends = cast(Table, InboundResendRow.__table__)
journal_entries = cast(Table, JournalEntryRow.__table__)
postings = cast(Table, PostingRow.__table__)
day_closes = cast(Table, DayCloseRow.__table__)
receipt_layouts = cast(Table, ReceiptLayoutRow.__table__)
receipts = cast(Table, ReceiptRow.__table__)
location_logos = cast(Table, LocationLogoRow.__table__)
location_changes = cast(Table, LocationChangeRow.__table__)
portal_sessions = cast(Table, PortalSessionRow.__table__)
sign_in_failures = cast(Table, SignInFailureRow.__table__)
password_resets = cast(Table, PasswordResetRow.__table__)
payout_cycles = cast(Table, PayoutCycleRow.__table__)
payout_cycle_dues = cast(Table, PayoutCycleDueRow.__table__)
top_ups = cast(Table, TopUpRow.__table__)
merchant_repayments = cast(Table, MerchantRepaymentRow.__table__)
