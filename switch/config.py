"""Settings: every port, path, limit and timeout of the switch, set in this one place."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from protocols.serving import ACCEPTS_PER_METHOD
from switch.domain.quoting import mask_digit_runs, quoted


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: SQLite file in data_dir
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    grpc_workers: int = 32  # threads for backoffice, health and the terminal RPCs that may block
    grpc_concurrent_rpcs_max: int = 2048  # admission control: beyond this, RESOURCE_EXHAUSTED
    # Calls of each busy terminal method grpc may hold for the switch to take (protocols/serving.py);
    # 1 is grpc.aio alone, which takes one call of a method per turn of its accept loop
    grpc_accepts_per_method: int = ACCEPTS_PER_METHOD
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # 0: ephemeral, -1: off
    # How long a scrape waits for the gauges only the database knows (location changes, store-and-
    # forward depth, indexes missing), read on a thread of their own: past it, the scrape answers
    # with their last values, so a hung or locked database never stalls /metrics
    metrics_database_wait_s: float = 1.0
    console_host: str = "127.0.0.1"
    console_port: int = 2222  # 0: ephemeral, -1: off
    console_authorized_keys: Path | None = None
    # Well-known demo logins and cards on an empty database: for trying the switch only (`--demo`)
    demo_data: bool = False
    # Actors
    card_actors_live_max: int = 20_000
    card_actor_idle_s: float = 60.0
    # Several nodes on one database: a copy this node keeps of what another node may change is read
    # again once older than shared_copy_max_age_s, so what the other node did counts here within
    # that time: a card actor's card (balance, status, PIN tries; before a message that finds no
    # write of the actor's own in flight) and a terminal's credential and state (a deactivation).
    # 0: before every use. "auto": yes on PostgreSQL, the database for several nodes; no on SQLite,
    # where one node is the rule and a copy lasts until this node changes what it copies.
    several_nodes: str = "auto"
    shared_copy_max_age_s: float = 1.0
    terminal_actors_live_max: int = 5_000
    terminal_actor_idle_s: float = 600.0
    terminal_recent_transactions_max: int = 256
    ask_timeout_s: float = 5.0
    reply_timeout_s: float = 10.0
    reaper_interval_s: float = 1.0
    # Money credited to a replaced card, moved on to its replacement (core._follow_replacement):
    # threads moving it at once, and moves waiting for one (a credit finding the queue full leaves
    # its money on the lost card, logged, for the next start to move)
    replacement_follow_workers_max: int = 4
    replacement_follows_queued_max: int = 10_000
    # How long a follow that finds its card lost, not yet replaced, waits for the replacement under
    # way to land (it moves the credit with the balance); then the money waits for the office. 0: no wait.
    # It waits on the follow queue, looked at again every core.FOLLOW_WAIT_POLL_S, not on a worker.
    replacement_follow_wait_s: float = 5.0
    # Journal writer (group commit)
    journal_batch_writes_max: int = 256
    journal_queue_writes_max: int = 20_000
    journal_linger_ms: float = 0.0
    # Commit in a process of the journal's own (not for an in-memory SQLite database): the batch
    # then never waits for this process's interpreter lock (docs/decisions.md)
    journal_process: bool = True
    # Bank-card payments: the acquirers file (TOML, see README); None: no acquirer, Pay is UNIMPLEMENTED
    acquirers_file: Path | None = None
    # How long the switch's start waits for its acquirers' sign-on (a down one does not stop the start:
    # its payments are declined until the link signs on); 0: not at all
    acquirer_sign_on_wait_ms: int = 2_000
    # Garbage collection (txswitch serve): the collector's pauses grow with the live actors it scans;
    # with Python's defaults (700, 10, 10) full collections ran every few seconds and took 110-170 ms.
    # Every gRPC call leaves a small reference cycle inside grpc.aio, so young collections come
    # every gen0_threshold calls or so and take time in proportion (100,000: about 50 ms; 10,000:
    # about 4 ms; docs/decisions.md). 0: leave Python's defaults.
    gc_gen0_threshold: int = 10_000
    gc_gen1_threshold: int = 10
    gc_gen2_threshold: int = 10
    # Employee PINs
    employee_pin_tries_max: int = 3
    employee_lock_duration_s: int = 900
    # Inbound ISO 8583 from acquirers (our cards at their terminals); port 0: ephemeral, -1: off
    iso_listen_host: str = "127.0.0.1"
    iso_listen_port: int = -1
    iso_inbound_in_flight_max: int = 64
    # Connections at once (more are closed as they come), and how long one may send no message
    # before it is closed (acquirers echo with 0800 every minute or so)
    iso_inbound_connections_max: int = 64
    iso_inbound_idle_s: float = 300.0
    # "<acquirer id>:<merchant e-mail>:<zone PIN key hex>[:tdes|aes128]", entries split by ','
    iso_inbound_acquirers: str = field(default="", repr=False)
    # The portal's transaction report counts days on this clock unless a request names another
    report_time_zone: str = "Europe/Amsterdam"
    # The web back office's day (switch/web_days.py): how often, at most, serve looks for a web
    # terminal whose open period holds transactions of an earlier day and closes it (it also looks
    # just after midnight on the report zone's clock, and before each web transaction)
    web_day_close_interval_s: float = 300.0
    # Merchant portal: how long a signed-in session lasts
    portal_session_s: int = 8 * 3600
    # The merchant's password, at portal sign-in and terminal activation: wrong tries in a row for
    # one e-mail address before it is locked, and for how long; password checks (scrypt, ~70 ms
    # of a core each) at once, more are turned away (RESOURCE_EXHAUSTED) rather than queued
    sign_in_tries_max: int = 5
    sign_in_lock_s: int = 900
    sign_ins_concurrent_max: int = 2
    # Wrong passwords from one caller address (an IPv6 caller is its /64), whatever e-mail addresses
    # they were tried on, at most this many in any sign_in_caller_window_s; then every password
    # check of the caller is refused (RESOURCE_EXHAUSTED) before it is hashed, until the oldest
    # leaves the window. Right passwords are not counted. Callers remembered at once, the longest
    # quiet forgotten first
    sign_in_caller_failures_max: int = 20
    sign_in_caller_window_s: int = 900
    sign_in_callers_tracked_max: int = 10_000
    # CSV exports at once (backoffice and portal): each holds a database connection and a read
    # snapshot while it is spooled, and its spool while it streams; more are turned away
    # (RESOURCE_EXHAUSTED), not queued
    exports_concurrent_max: int = 4
    # The longest an export may stream (the command's deadline): a client that stops reading would
    # otherwise hold its slot and spool for as long as it stays connected
    exports_duration_max_s: float = 15 * 60.0
    # The most CSV bytes in one message of an export (a page's rows are cut between lines): a gRPC
    # client takes at most 4 MB in one message by default, and 5,000 long rows are some 6 MB
    export_chunk_bytes_max: int = 1024 * 1024
    # The most CSV bytes one export may spool in the data directory: an export is read into a
    # spool before it streams (its read snapshot then ends at once, not when the client has read
    # it), so each export at once may take this much disk; a larger one is refused by name
    export_spool_bytes_max: int = 512 * 1024 * 1024
    # ... and no spool may leave less than this free on the data directory's disk, which the
    # database shares: a disk filled by exports turns every commit, so every payment, into a 96
    export_disk_free_min_bytes: int = 64 * 1024 * 1024
    # Forgotten portal passwords: a one-time code by e-mail (needs smtp_host), valid this long; at
    # most this many codes per address in an hour (more asks mail nothing); mails waiting at most
    # (more are dropped and logged: the login asks again); reset_url, if set, is put before the
    # code in the mail ("https://portal.example/reset#")
    password_reset_code_s: int = 1800
    password_resets_per_hour_max: int = 3
    password_reset_mails_queued_max: int = 100
    password_reset_url: str = ""
    # Reset asks from one caller address (an IPv6 caller is its /64), whatever e-mail addresses
    # they name, at most this many in any hour: more are refused (RESOURCE_EXHAUSTED) before
    # anything is read or mailed. Callers remembered at once, the longest quiet forgotten first.
    # Always read, mail on or off, as the portal counts before it knows
    password_reset_asks_per_caller_per_hour_max: int = 20
    password_reset_callers_tracked_max: int = 10_000
    # Wrong reset codes (unknown, used or expired) from one caller address in any hour: past it
    # ResetPassword is refused (RESOURCE_EXHAUSTED) before the code is looked up, right code or
    # not; each made-up code was a database read. Callers remembered as for asks (just above)
    password_reset_wrong_codes_per_caller_per_hour_max: int = 10
    # Cardholders' own balance lookups (service Cardholder, no login): per caller address at most
    # this many in any minute; callers remembered at once, the longest quiet forgotten first
    cardholder_lookups_per_minute_max: int = 20
    cardholder_callers_tracked_max: int = 10_000
    # The web back office's card lookups (Portal.CardBalance and Portal.Redeem name a card number):
    # per merchant, all its logins together, at most this many in any minute, so a login cannot try
    # numbers at the switch's speed; merchants remembered at once, the longest quiet forgotten first
    portal_card_lookups_per_minute_max: int = 60
    portal_card_lookup_merchants_tracked_max: int = 10_000
    # Online top-ups (Cardholder.StartTopUp): how long the holder has to pay at the PSP; at most
    # this many listed by ListTopUps (the newest first)
    top_up_valid_s: int = 30 * 60
    top_ups_listed_max: int = 1_000
    # A top-up left confirming (the PSP gave up after UNAVAILABLE, or the switch stopped mid-load)
    # is finished by a sweep at start and every top_up_sweep_interval_s, once it has been confirming
    # top_up_confirming_grace_s (a live confirmation's load has answered or timed out by then), at
    # most top_ups_swept_max a sweep (the longest waiting first). A try that leaves one confirming
    # (its load not known) puts its next try off by top_up_sweep_interval_s, twice as far each time
    # up to top_up_sweep_retry_s_max: top-ups that never load leave the others their turn
    top_up_sweep_interval_s: float = 60.0
    top_up_confirming_grace_s: float = 120.0
    top_ups_swept_max: int = 100
    top_up_sweep_retry_s_max: float = 3600.0
    # The same sweep purges finished top-ups (loaded, refunded, pending ones that expired) started
    # and finished more than top_ups_kept_days ago (a year of records for the operator, and then
    # some), at most top_ups_purged_max a sweep; confirming and refund_due ones are never purged
    top_ups_kept_days: int = 400
    top_ups_purged_max: int = 1_000
    # The same sweep purges the inbound repeat tables (switch/store/inbound_purge.py): repeat keys a
    # day old and more, and a resend's row (its field 7 naming its first) once inbound_resends_kept_days
    # old: far past the latest completion or reversal a scheme allows (30 days for a pre-authorisation),
    # as long as top-ups are kept; at least INBOUND_RESENDS_KEPT_DAYS_LOWEST. At most
    # inbound_repeat_rows_purged_max rows a transaction (the write lock held briefly),
    # inbound_repeat_purge_batches_max transactions a sweep.
    inbound_resends_kept_days: int = 400
    inbound_repeat_rows_purged_max: int = 1_000
    inbound_repeat_purge_batches_max: int = 100
    # E-mailed receipts: queued by the terminal, sent by the mailer; smtp_host empty: off
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_sender: str = "receipts@txswitch.example"
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    receipt_attempts_max: int = 8  # then the receipt is given up (a permanent refusal: at once)
    receipt_retry_s: float = 30.0  # the first wait after a failed attempt; it doubles, up to an hour
    receipts_per_transaction_max: int = 3
    # Closed-loop card PINs: wrong tries before the card's PIN is blocked
    card_pin_tries_max: int = 3
    # Secrets; empty: generated once and kept in data_dir
    card_hash_key_hex: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    # The PSP's token: opens Backoffice.ConfirmTopUp only (the admin token opens it too); empty: none
    psp_token: str = field(default="", repr=False)
    # Key-encrypting key of every stored key (64 hex); empty: generated once, kept in data_dir
    master_key_hex: str = field(default="", repr=False)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'txswitch.sqlite'}"

    @property
    def copy_max_age_s(self) -> float | None:
        """How old this node's copy of what another node may change (a card, a terminal) may be;
        None: one node, a copy lasts. ValueError naming the setting that holds none of its values."""
        choice = self.several_nodes.lower()
        if choice not in ("auto", "yes", "no"):
            raise ValueError(
                f"several_nodes ({ENVIRONMENT_PREFIX}SEVERAL_NODES) must be auto, yes or no, "
                f"got {quoted(choice)}"
            )
        if self.shared_copy_max_age_s < 0:
            raise ValueError(
                f"shared_copy_max_age_s ({ENVIRONMENT_PREFIX}SHARED_COPY_MAX_AGE_S) must be 0 or more, "
                f"got {self.shared_copy_max_age_s}"
            )
        shared = self.effective_database_url.startswith("postgresql") if choice == "auto" else choice == "yes"
        return self.shared_copy_max_age_s if shared else None

    def features_on(self) -> frozenset[str]:
        """The features of FEATURE_SETTINGS these settings switch on, as the switch reads them."""
        on = {
            "console": self.console_authorized_keys is not None and self.console_port != PORT_OFF,
            "iso_listener": self.iso_listen_port != PORT_OFF,
            "mail": bool(self.smtp_host),
            "gc_tuning": self.gc_gen0_threshold > 0,
            "several_nodes": self.copy_max_age_s is not None,
        }
        return frozenset(feature for feature, is_on in on.items() if is_on)

    def unread(self) -> frozenset[str]:
        """The settings of features switched off: the switch never reads them, so they are not checked."""
        on = self.features_on()
        return frozenset(
            name for feature, names in FEATURE_SETTINGS.items() if feature not in on for name in names
        )

    def check(self) -> None:
        """ValueError naming the first setting that holds none of its values, but for those of a
        feature switched off (unread), which the switch never reads."""
        _ = self.copy_max_age_s
        if self.database_url and not _parses_as_database_url(self.database_url):
            # Not shown: it holds the database's password.
            raise ValueError(
                f"the database URL (--database-url, {ENVIRONMENT_PREFIX}DATABASE_URL) does not parse; "
                "the form is dialect+driver://user:password@host:port/database"
            )
        database_port = make_url(self.database_url).port if self.database_url else None
        if database_port is not None and not 1 <= database_port <= PORT_MAX:
            raise ValueError(
                f"the database URL's port (--database-url, {ENVIRONMENT_PREFIX}DATABASE_URL) must be from 1 "
                f"to {PORT_MAX}, got {shown_number(database_port)}"
            )
        unread = self.unread()
        for name, number_range in NUMBER_RANGES.items():
            value = getattr(self, name)
            if name not in unread and not number_range.holds(value):
                raise ValueError(f"{setting_named(name)} must be {number_range}, got {shown_number(value)}")
        self._check_paths(unread)
        reset_url = "" if "password_reset_url" in unread else self.password_reset_url
        if reset_url and not _is_web_address(reset_url):
            raise ValueError(
                f"{setting_named('password_reset_url')} must be an absolute http or https URL with a host, "
                f"such as 'https://portal.example/reset#', got {quoted(self.password_reset_url)}"
            )
        for name, lowest in PORT_LOWEST.items():
            port = getattr(self, name)
            if name not in unread and not lowest <= port <= PORT_MAX:
                allowed = f"a port from {lowest} to {PORT_MAX}{PORT_MEANINGS[lowest]}"
                raise ValueError(f"{setting_named(name)} must be {allowed}, got {shown_number(port)}")

    def _check_paths(self, unread: Collection[str]) -> None:
        # Checked before the data dir is made: the files are read only once the switch is starting.
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ValueError(
                f"{setting_named('data_dir')} must name a directory (made if missing), "
                f"got {quoted(str(self.data_dir))}, a file"
            )
        for name in ("console_authorized_keys", "acquirers_file"):
            path: Path | None = getattr(self, name)
            if path is not None and name not in unread and not path.is_file():
                shown = quoted(str(path))
                raise ValueError(f"{setting_named(name)} must name a file that exists, got {shown}")

    def with_overrides(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _parses_as_database_url(url: str) -> bool:
    try:
        make_url(url)
    except (ValueError, ArgumentError):  # ValueError: a port that is not a number
        return False
    return True


def _is_web_address(text: str) -> bool:
    """An absolute http(s) URL with a host (and a port, if any, that is one), without spaces or
    control characters: it is put into mails as a link, and urlsplit drops a newline unseen."""
    if not text.isprintable() or any(character.isspace() for character in text):
        return False
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError: not a number, or past 65535
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and port != 0


ENVIRONMENT_PREFIX = "TXSWITCH_"
# The settings `txswitch serve` also takes on its command line, named in a refusal by both
COMMAND_LINE_OPTIONS = {
    "data_dir": "--data-dir",
    "database_url": "--database-url",
    "grpc_port": "--grpc-port",
    "metrics_port": "--metrics-port",
    "console_port": "--console-port",
    "console_authorized_keys": "--console-authorized-keys",
}
PORT_MAX = 65_535
PORT_OFF = -1
# Each port setting and the lowest value it takes: 0 is any free port, PORT_OFF no listener at all
PORT_LOWEST = {
    "grpc_port": 0,
    "metrics_port": PORT_OFF,
    "console_port": PORT_OFF,
    "iso_listen_port": PORT_OFF,
    "smtp_port": 1,
}
PORT_MEANINGS = {PORT_OFF: " (0: any free port, -1: off)", 0: " (0: any free port)", 1: ""}
# The settings only one feature reads, by feature (Settings.features_on says which are on). A setting
# of a feature that is off is not read, so not checked: it may be anything, as it was before the
# checks (a missing keys file with the console off was refused, and that switch no longer started).
# The acquirers (acquirers_file) and the metrics (metrics_port) are switched by their own setting,
# checked only when set or on already.
FEATURE_SETTINGS: dict[str, tuple[str, ...]] = {
    "console": ("console_port", "console_authorized_keys"),
    "iso_listener": ("iso_inbound_in_flight_max", "iso_inbound_connections_max", "iso_inbound_idle_s"),
    "mail": (
        "smtp_port",
        "smtp_timeout_s",
        "receipt_attempts_max",
        "receipt_retry_s",
        "receipts_per_transaction_max",
        "password_reset_code_s",
        "password_resets_per_hour_max",
        "password_reset_mails_queued_max",
        "password_reset_url",
    ),
    "gc_tuning": ("gc_gen1_threshold", "gc_gen2_threshold"),
    "several_nodes": ("shared_copy_max_age_s",),
}


@dataclass(frozen=True)
class NumberRange:
    """The values a number setting takes: above 0 (or 0 too), at least lowest when it has one, and
    at most highest. NaN is none."""

    zero_allowed: bool
    highest: float
    lowest: float = 0.0  # above 0: the least a setting whose smaller values lose money may be

    def holds(self, value: float) -> bool:
        lowest_held = value >= 0 if self.zero_allowed else value > 0
        return lowest_held and self.lowest <= value <= self.highest

    def __str__(self) -> str:
        if self.lowest > 0:
            return f"at least {self.lowest:,} and at most {self.highest:,}"
        return f"{'0 or more' if self.zero_allowed else 'positive'} and at most {self.highest:,}"


# A resend's row is how a completion or reversal naming the resend's field 7 without field 37 finds
# its first: purged sooner, a reversal is acknowledged as of a sale never seen (the card stays charged
# while the acquirer has reversed) and a completion is left unanswered (the card stays charged all the
# authorisation took). A completion may come 30 days after its pre-authorisation; a day more for
# the clocks and the sweep's interval.
INBOUND_RESENDS_KEPT_DAYS_LOWEST = 31
COUNT_MAX = 2**31 - 1  # grpc and the garbage collector take a count as a C int
# A year: a longer wait overflows what threads and dates take (10**20 s did), and means forever anyway
DURATION_S_MAX = 366 * 24 * 3600
POSITIVE_COUNT = NumberRange(zero_allowed=False, highest=COUNT_MAX)
POSITIVE_DURATION_S = NumberRange(zero_allowed=False, highest=DURATION_S_MAX)
DURATION_S = NumberRange(zero_allowed=True, highest=DURATION_S_MAX)
NUMBER_RANGES = {  # every number setting but the ports (PORT_LOWEST)
    "grpc_workers": POSITIVE_COUNT,
    "grpc_concurrent_rpcs_max": POSITIVE_COUNT,
    "grpc_accepts_per_method": POSITIVE_COUNT,
    "card_actors_live_max": POSITIVE_COUNT,
    # 0: an actor stops at the reaper's next pass once it has nothing to do (the harness runs so)
    "card_actor_idle_s": DURATION_S,
    "shared_copy_max_age_s": DURATION_S,
    "terminal_actors_live_max": POSITIVE_COUNT,
    "terminal_actor_idle_s": DURATION_S,
    "terminal_recent_transactions_max": POSITIVE_COUNT,
    "ask_timeout_s": POSITIVE_DURATION_S,
    "reply_timeout_s": POSITIVE_DURATION_S,
    "reaper_interval_s": POSITIVE_DURATION_S,
    "metrics_database_wait_s": NumberRange(zero_allowed=False, highest=60.0),  # scrapes time out by then
    "replacement_follow_workers_max": POSITIVE_COUNT,
    "replacement_follows_queued_max": POSITIVE_COUNT,
    "replacement_follow_wait_s": DURATION_S,
    "journal_batch_writes_max": POSITIVE_COUNT,
    "journal_queue_writes_max": POSITIVE_COUNT,
    # every commit's reply waits as long: a second is already far more than a batch gains
    "journal_linger_ms": NumberRange(zero_allowed=True, highest=1_000),
    # a start held longer than 10 minutes is one an operator takes for a hang
    "acquirer_sign_on_wait_ms": NumberRange(zero_allowed=True, highest=600_000),
    "gc_gen0_threshold": NumberRange(zero_allowed=True, highest=COUNT_MAX),
    "gc_gen1_threshold": NumberRange(zero_allowed=True, highest=COUNT_MAX),
    "gc_gen2_threshold": NumberRange(zero_allowed=True, highest=COUNT_MAX),
    "employee_pin_tries_max": POSITIVE_COUNT,
    "employee_lock_duration_s": POSITIVE_DURATION_S,
    "iso_inbound_in_flight_max": POSITIVE_COUNT,
    "iso_inbound_connections_max": POSITIVE_COUNT,
    "iso_inbound_idle_s": POSITIVE_DURATION_S,
    "web_day_close_interval_s": POSITIVE_DURATION_S,
    "portal_session_s": POSITIVE_DURATION_S,
    "sign_in_tries_max": POSITIVE_COUNT,
    "sign_in_lock_s": POSITIVE_DURATION_S,
    "sign_ins_concurrent_max": POSITIVE_COUNT,
    "sign_in_caller_failures_max": POSITIVE_COUNT,
    "sign_in_caller_window_s": POSITIVE_DURATION_S,
    "sign_in_callers_tracked_max": POSITIVE_COUNT,
    "exports_concurrent_max": POSITIVE_COUNT,
    "exports_duration_max_s": POSITIVE_DURATION_S,
    "export_chunk_bytes_max": POSITIVE_COUNT,
    "export_spool_bytes_max": POSITIVE_COUNT,
    "export_disk_free_min_bytes": NumberRange(zero_allowed=True, highest=2**62),  # 0: no reserve
    "password_reset_code_s": POSITIVE_DURATION_S,
    "password_resets_per_hour_max": POSITIVE_COUNT,
    "password_reset_mails_queued_max": POSITIVE_COUNT,
    "password_reset_asks_per_caller_per_hour_max": POSITIVE_COUNT,
    "password_reset_callers_tracked_max": POSITIVE_COUNT,
    "password_reset_wrong_codes_per_caller_per_hour_max": POSITIVE_COUNT,
    "cardholder_lookups_per_minute_max": POSITIVE_COUNT,
    "cardholder_callers_tracked_max": POSITIVE_COUNT,
    "portal_card_lookups_per_minute_max": POSITIVE_COUNT,
    "portal_card_lookup_merchants_tracked_max": POSITIVE_COUNT,
    "top_up_valid_s": POSITIVE_DURATION_S,
    "top_ups_listed_max": POSITIVE_COUNT,
    "top_up_sweep_interval_s": POSITIVE_DURATION_S,
    "top_up_confirming_grace_s": POSITIVE_DURATION_S,
    "top_ups_swept_max": POSITIVE_COUNT,
    "top_up_sweep_retry_s_max": POSITIVE_DURATION_S,
    "top_ups_kept_days": NumberRange(zero_allowed=False, highest=100 * 366),  # dates end at year 9999
    "top_ups_purged_max": POSITIVE_COUNT,
    "inbound_resends_kept_days": NumberRange(
        zero_allowed=False, highest=100 * 366, lowest=INBOUND_RESENDS_KEPT_DAYS_LOWEST
    ),
    "inbound_repeat_rows_purged_max": POSITIVE_COUNT,
    "inbound_repeat_purge_batches_max": POSITIVE_COUNT,
    "smtp_timeout_s": POSITIVE_DURATION_S,
    "receipt_attempts_max": POSITIVE_COUNT,
    "receipt_retry_s": POSITIVE_DURATION_S,
    "receipts_per_transaction_max": POSITIVE_COUNT,
    "card_pin_tries_max": POSITIVE_COUNT,
}


def setting_named(name: str) -> str:
    """How a refusal names a setting: its field, and the option and variable that set it."""
    option = COMMAND_LINE_OPTIONS.get(name)
    return f"{name} ({option + ', ' if option else ''}{ENVIRONMENT_PREFIX}{name.upper()})"


def shown_number(value: float) -> str:
    """A refused number as a message shows it: a card number's length of digits masked."""
    return mask_digit_runs(str(value))


def from_environment(base: Settings | None = None, given: Collection[str] = ()) -> Settings:
    """Settings with TXSWITCH_<FIELD> environment variables applied, but for the fields in given:
    those the command line set, whose flag wins over the variable (flags, then variables, then
    defaults), and whose variable is then not read, a value it could not use included."""
    settings = base or Settings()
    changes: dict[str, object] = {}
    for item in dataclasses.fields(Settings):
        raw = os.environ.get(ENVIRONMENT_PREFIX + item.name.upper())
        if raw is None or item.name in given:
            continue
        current = getattr(settings, item.name)
        try:
            changes[item.name] = _parse(raw, current)
        except ValueError:
            kind = "a whole number" if isinstance(current, int) else "a number"
            if isinstance(current, Path) or current is None:
                kind = "a path, not empty"
            variable = ENVIRONMENT_PREFIX + item.name.upper()
            raise ValueError(f"{variable} must be {kind}, got {quoted(raw)}") from None
    return settings.with_overrides(**changes)


def _parse(raw: str, current: object) -> object:
    if isinstance(current, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, Path) or current is None:
        if not raw:  # Path("") is the current directory
            raise ValueError("empty path")
        return Path(raw)
    return raw
