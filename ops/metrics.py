"""Every txswitch Prometheus metric, on a registry the switch owns, plus its HTTP endpoint."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.registry import Collector

from switch.domain import quoting

log = logging.getLogger(__name__)

METRICS_HOST_DEFAULT: Final = "127.0.0.1"
RECEIPT_STATES: Final = frozenset({"queued", "sent", "retried", "failed"})
METRICS_PORT_DEFAULT: Final = 9464

# Seconds, fit for a switch whose budget is ~15 ms at p99: fine steps below 50 ms.
REQUEST_LATENCY_BUCKETS_S: Final = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
COMMIT_LATENCY_BUCKETS_S: Final = REQUEST_LATENCY_BUCKETS_S
ACQUIRER_LATENCY_BUCKETS_S: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_ENTRIES_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# A label set per distinct value is a time series; a bug passing ids as labels must not
# grow memory and Prometheus without bound, so past this many we fold into "other".
LABEL_COMBINATIONS_MAX: Final = 1024
LABEL_VALUE_LENGTH_MAX: Final = 64

LABEL_FOLDED: Final = "other"
LABEL_REFUSED: Final = "invalid"

ACQUIRER_LINK_STATES: Final = ("down", "connecting", "signed_on")
PIN_LOCKOUT_KINDS: Final = ("employee", "card")
FOLLOW_WHEN: Final = ("credit", "start", "replacement")
# Moves of money on replaced cards not made yet: queued for a follow worker, waiting to look again
# for a replacement still landing, found at start and not taken yet.
FOLLOW_WAITING_STATES: Final = ("queued", "asked_later", "backlog")
FOLLOW_OUTCOMES: Final = ("moved", "nothing_moved", "not_replaced", "unblocked", "failed", "left_at_stop")
PAYMENT_RECOVERY_NODES: Final = ("own", "other")
PAYMENT_RECOVERY_OUTCOMES: Final = ("reversed", "answered_meanwhile")
TOP_UP_EVENTS: Final = ("started", "loaded", "refund_due")
# Top-ups paid and not done with: confirming (the load not known yet), refund_due (the holder is owed).
TOP_UP_WAITING_STATES: Final = ("confirming", "refund_due")
# Why an inbound advice (reversal 0420/0421, completion 0220/0221) was left unanswered
# (protocols.iso_inbound.leave_unanswered): malformed (it does not fit our spec), original_differs
# (field 4, 49 or field 90's MTI is not the original's, no such original, or a completion's final
# amount is above the authorised one or not the first completion's), not_reversible (the original
# cannot be reversed), not_completable (the authorisation is reversed or was declined), not_stored
# (its outcome could not be made durable in time), switch_fault (a fault of ours).
UNANSWERED_ADVICE_REASONS: Final = (
    "malformed",
    "original_differs",
    "not_reversible",
    "not_completable",
    "not_stored",
    "switch_fault",
)

# "/" admits gRPC full method names ("/txswitch.terminal.v1.Terminal/Redeem").
_NAME_LABEL_PATTERN: Final = re.compile(r"/?[A-Za-z][A-Za-z0-9_./\-]*")
_CODE_LABEL_PATTERN: Final = re.compile(r"[0-9A-Z]{2}")
_CURRENCY_LABEL_PATTERN: Final = re.compile(r"[A-Z]{3}")
# A programme's id (switch.admin.new_id): "prg_" and 16 hex digits, never all decimal.
_PROGRAMME_LABEL_PATTERN: Final = re.compile(r"prg_(?![0-9]{16}$)[0-9a-f]{16}")
# Requests that end with a gRPC error have no ISO 8583 code; their status name is the code.
GRPC_STATUS_CODES: Final = frozenset(
    {
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
        "timeout",
    }
)
# Card numbers and ids are long digit runs; no legitimate rpc/kind/acquirer name has one. A card
# number grouped by dashes ("acq-4111-1111-1111-1111") has no 6 digits in a row: the rule of typed
# text finds it (quoting.mask_digit_runs), Luhn-valid or not (a label is refused, not masked, so no
# Luhn check to miss a span), and keeps an acquirer's IPv4 address of 12 digits ("acq-192.168.100.200")
# that fails Luhn.
_DIGIT_RUN_PATTERN: Final = re.compile(r"\d{6,}")


def name_label(value: str) -> str:
    """An rpc, kind or acquirer label value, or "invalid" if it could carry data."""
    if (
        len(value) > LABEL_VALUE_LENGTH_MAX
        or not _NAME_LABEL_PATTERN.fullmatch(value)
        or _DIGIT_RUN_PATTERN.search(value)
        or quoting.mask_digit_runs(value) != value
    ):
        return LABEL_REFUSED
    return value


def code_label(value: str) -> str:
    """An ISO 8583 response code (two characters), "OK", a gRPC status name, or "invalid"."""
    if _CODE_LABEL_PATTERN.fullmatch(value) or value in GRPC_STATUS_CODES:
        return value
    return LABEL_REFUSED


@dataclass(frozen=True, slots=True)
class ActorKindStats:
    """Live actors of one kind (terminal, card, journal, ...) and their mailboxes."""

    kind: str
    live: int
    mailbox_messages: int
    mailbox_depth_max: int


@dataclass(frozen=True, slots=True)
class RuntimeSnapshot:
    """What the switch reports at scrape time: actors by kind and terminals online."""

    actors: Sequence[ActorKindStats]
    terminals_online: int


RuntimeSource = Callable[[], RuntimeSnapshot]
Refresh = Callable[[], None]


class _RefreshCollector(Collector):
    """Registered first, so counters and gauges fed from snapshots are fresh in the same scrape."""

    def __init__(self) -> None:
        self.refreshes: list[Refresh] = []
        # One scrape's refreshes at a time: a feed turns totals into increments (snapshot, then the
        # step from the last one), and two scrapes at once (the /metrics server has a thread per
        # request; two Prometheus servers) stepping out of order counted some events twice.
        self._refreshing = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        with self._refreshing:
            for refresh in list(self.refreshes):
                try:
                    refresh()
                except Exception:
                    log.exception("metrics refresh failed")
        return []


class _RuntimeCollector(Collector):
    """Asks the switch for a snapshot at scrape time so the hot path pays nothing."""

    def __init__(self) -> None:
        self.source: RuntimeSource | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        source = self.source
        if source is None:
            return self._families()
        try:
            snapshot = source()
        except Exception:
            # A failing snapshot must not break the scrape of every other metric.
            log.exception("runtime metrics snapshot failed")
            return self._families()
        return self._families(snapshot)

    @staticmethod
    def _families(snapshot: RuntimeSnapshot | None = None) -> list[Metric]:
        live = GaugeMetricFamily("txswitch_actors_live", "Live actors by kind.", labels=["kind"])
        messages = GaugeMetricFamily(
            "txswitch_actor_mailbox_messages",
            "Messages waiting in the mailboxes of all live actors of a kind.",
            labels=["kind"],
        )
        depth_max = GaugeMetricFamily(
            "txswitch_actor_mailbox_depth_max",
            "Deepest mailbox among live actors of a kind.",
            labels=["kind"],
        )
        online = GaugeMetricFamily("txswitch_terminals_online", "Terminals with a session active now.")
        if snapshot is not None:
            for stats in snapshot.actors:
                kind = name_label(stats.kind)
                live.add_metric([kind], stats.live)
                messages.add_metric([kind], stats.mailbox_messages)
                depth_max.add_metric([kind], stats.mailbox_depth_max)
            online.add_metric([], snapshot.terminals_online)
        return [live, messages, depth_max, online]


class _RequestChildren:
    """Pre-resolved label children for one (rpc, code) pair: no label lookup per request."""

    __slots__ = ("count", "latency")

    def __init__(self, count: Counter, latency: Histogram) -> None:
        self.count = count
        self.latency = latency


class SwitchMetrics:
    """All txswitch metrics on one private registry; typed methods for the hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._refresh = _RefreshCollector()
        self.registry.register(self._refresh)
        self._define_request_metrics()
        self._define_actor_metrics()
        self._define_journal_metrics()
        self._define_acquirer_metrics()
        self._define_security_metrics()
        self._define_backoffice_metrics()
        self._define_schema_metrics()
        self._define_database_read_metrics()
        self._define_card_metrics()
        self._define_top_up_metrics()
        self._runtime = _RuntimeCollector()
        self.registry.register(self._runtime)
        self._request_children: dict[tuple[str, str], _RequestChildren] = {}
        self._in_flight_children: dict[str, Gauge] = {}
        self._children_lock = threading.Lock()

    # -- definitions ----------------------------------------------------------------------

    def _define_request_metrics(self) -> None:
        self.requests = Counter(
            "txswitch_requests",
            "Requests answered, by RPC and ISO 8583 response code.",
            ["rpc", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "txswitch_request_duration_seconds",
            "Time from request received to response sent, by RPC.",
            ["rpc"],
            buckets=REQUEST_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.requests_in_flight = Gauge(
            "txswitch_requests_in_flight",
            "Requests received and not yet answered, by RPC.",
            ["rpc"],
            registry=self.registry,
        )
        self.terminal_activations = Counter(
            "txswitch_terminal_activations",
            "Terminals activated.",
            registry=self.registry,
        )
        self.receipts = Counter(
            "txswitch_receipts",
            "E-mailed receipts by what happened: queued, sent, retried (put off), failed (given up).",
            ["state"],
            registry=self.registry,
        )

    def _define_actor_metrics(self) -> None:
        self.card_actors_started = Counter(
            "txswitch_card_actors_started",
            "Card actors started on first use.",
            registry=self.registry,
        )
        self.card_actors_passivated = Counter(
            "txswitch_card_actors_passivated",
            "Card actors stopped after being idle or to respect the live bound.",
            registry=self.registry,
        )

    def _define_journal_metrics(self) -> None:
        self.journal_batch_entries = Histogram(
            "txswitch_journal_batch_entries",
            "Journal entries committed together in one group commit.",
            buckets=BATCH_ENTRIES_BUCKETS,
            registry=self.registry,
        )
        self.journal_commit_duration = Histogram(
            "txswitch_journal_commit_duration_seconds",
            "Time to durably commit one group-commit batch.",
            buckets=COMMIT_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.gc_pause = Histogram(
            "txswitch_gc_pause_seconds",
            "Pauses of Python's garbage collector, by generation: every thread of the switch stops.",
            ["generation"],
            buckets=REQUEST_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.event_loop_lag = Histogram(
            "txswitch_event_loop_lag_seconds",
            "How late the terminal protocol's event loop woke a task that sleeps 50 ms: every request "
            "on the loop waited as long (a long callback, a GC pause, other threads holding the "
            "interpreter lock).",
            buckets=REQUEST_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.journal_commit_failures = Counter(
            "txswitch_journal_commit_failures",
            "Group commits that failed (each entry answered with a system decline).",
            registry=self.registry,
        )

    def _define_backoffice_metrics(self) -> None:
        self.location_changes_pending = Gauge(
            "txswitch_location_changes_pending",
            "Location changes merchants asked for that wait for the operator's check "
            "(txswitch admin list-location-changes status=pending).",
            registry=self.registry,
        )
        self.location_change_oldest_pending = Gauge(
            "txswitch_location_change_oldest_pending_seconds",
            "How long the oldest pending location change has waited; 0 when none waits.",
            registry=self.registry,
        )

    def _define_database_read_metrics(self) -> None:
        self.database_read_age = Gauge(
            "txswitch_database_read_age_seconds",
            "Seconds since the last read of the gauges counted from the database (location changes "
            "pending, store-and-forward depth, indexes missing) began, as of the scrape; read off the "
            "scrape, which waits for it at most metrics_database_wait_s: near 0 while the database "
            "answers, growing while it hangs or a lock holds the read (the gauges keep their last values).",
            registry=self.registry,
        )

    def _define_schema_metrics(self) -> None:
        self.schema_index_missing = Gauge(
            "txswitch_schema_index_missing",
            "1 for a unique index this node's start left out because rows of its table break it (see "
            "the error in the log); 0 once a later start of any node created it.",
            ["index"],
            registry=self.registry,
        )

    def _define_acquirer_metrics(self) -> None:
        self.acquirer_link_up = Gauge(
            "txswitch_acquirer_link_up",
            "1 when the link to the acquirer is connected and signed on, else 0.",
            ["acquirer"],
            registry=self.registry,
        )
        self.acquirer_link_state = Gauge(
            "txswitch_acquirer_link_state",
            "1 for the state the link to the acquirer is in, 0 for the others.",
            ["acquirer", "state"],
            registry=self.registry,
        )
        self.acquirer_request_duration = Histogram(
            "txswitch_acquirer_request_duration_seconds",
            "Time from ISO 8583 request sent to response received, by acquirer.",
            ["acquirer"],
            buckets=ACQUIRER_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.acquirer_timeouts = Counter(
            "txswitch_acquirer_timeouts",
            "Acquirer requests that got no response in time, by acquirer.",
            ["acquirer"],
            registry=self.registry,
        )
        self.payment_recoveries = Counter(
            "txswitch_payment_recoveries",
            "Bank-card payments found left in flight (authorisation sent, no answer stored) and "
            "recovered, at start or by the sweep of a node sharing the database: outcome reversed (its "
            "reversal queued, its terminal answered 68) or answered_meanwhile (its node answered it "
            "first); node own (this node's, or its predecessor's on the data directory) or other.",
            ["node", "outcome"],
            registry=self.registry,
        )
        self.iso_inbound_connections_refused = Counter(
            "txswitch_iso_inbound_connections_refused",
            "Connections to the inbound ISO 8583 listener closed at once because as many as "
            "iso_inbound_connections_max were open.",
            registry=self.registry,
        )
        self.iso_inbound_connections_idle_closed = Counter(
            "txswitch_iso_inbound_connections_idle_closed",
            "Connections to the inbound ISO 8583 listener closed after iso_inbound_idle_s with no message.",
            registry=self.registry,
        )
        self.iso_inbound_advices_unanswered = Counter(
            "txswitch_iso_inbound_advices_unanswered",
            "Advices from acquirers (0420/0421 reversals, 0220/0221 completions) left unanswered "
            "because they could not be applied exactly, by reason: malformed, original_differs (field 4, "
            "the currency or field 90's MTI is not the original's, or a completion above the authorised "
            "amount), not_reversible (the original cannot be reversed), not_completable (the "
            "authorisation is reversed or was declined), not_stored (not durable in time), switch_fault. "
            "The acquirer repeats an unanswered advice; one that never gets taken goes to its exceptions.",
            ["reason"],
            registry=self.registry,
        )
        self.acquirer_reversal_answers_refused = Counter(
            "txswitch_acquirer_reversal_answers_refused",
            "0430 answers to reversal advices not taken because a field they echo disagrees with the "
            "advice waiting under their STAN (or the advice their field 37 names); that advice stays "
            "pending and goes out again. All acquirers together; the log line names the acquirer.",
            registry=self.registry,
        )
        self.acquirer_reversals_queued = Counter(
            "txswitch_acquirer_reversals_queued",
            "Reversal advices (0420) this node's acquirer gateway stored to send: an authorisation "
            "timed out, answered late or partly approved, or a reversal asked for (abort, terminal "
            "reversal). One already stored is not counted again. All acquirers together.",
            registry=self.registry,
        )
        self.acquirer_reversals_acknowledged = Counter(
            "txswitch_acquirer_reversals_acknowledged",
            "Reversal advices this node's acquirer gateway marked acknowledged on an acknowledging "
            "0430 (in time or late) whose echoed fields agree. All acquirers together.",
            registry=self.registry,
        )
        self.store_and_forward_queue_depth = Gauge(
            "txswitch_store_and_forward_queue_depth",
            "Advices (e.g. 0420 reversals) stored and not yet acknowledged, by acquirer.",
            ["acquirer"],
            registry=self.registry,
        )

    def _define_card_metrics(self) -> None:
        self.replaced_card_follows = Counter(
            "txswitch_replaced_card_follows",
            "Money credited to a replaced card (a ride undone after the office moved its balance) moved "
            "on to its replacement: when (credit: right after it landed; start: found at start; "
            "replacement: found as the office replaced a card its chain of replacements led to) and "
            "outcome (moved; nothing_moved: moved already, by the same credit's move or the card's "
            "replacement under way as it landed; not_replaced: blocked, or lost and not replaced within "
            "replacement_follow_wait_s, waits for the office; unblocked: the card is active again, not "
            "replaced, and keeps the money; failed: see the log, the next start tries again; "
            "left_at_stop: queued or waiting as the switch stopped, the next start moves it).",
            ["when", "outcome"],
            registry=self.registry,
        )
        self.replaced_card_followed_minor = Counter(
            "txswitch_replaced_card_followed_minor",
            "Minor units of money moved on from replaced cards to their replacements, by when and currency.",
            ["when", "currency"],
            registry=self.registry,
        )
        self.replaced_card_follows_waiting = Gauge(
            "txswitch_replaced_card_follows_waiting",
            "Moves of money on replaced cards not made yet, by state: queued (for a follow worker), "
            "asked_later (to look again for a replacement still landing), backlog (found at start).",
            ["state"],
            registry=self.registry,
        )

    def _define_top_up_metrics(self) -> None:
        self.top_ups = Counter(
            "txswitch_top_ups",
            "Cardholders' online top-ups, by programme (its id) and event: started; loaded (the PSP "
            "confirmed the payment and the card was loaded) or refund_due (paid, not loaded: the "
            "operator refunds it), counted by the node that finished it.",
            ["programme", "event"],
            registry=self.registry,
        )
        self.top_ups_waiting = Gauge(
            "txswitch_top_ups_waiting",
            "Top-ups paid and not done with, by state: confirming (the load not known yet: the sweep "
            "tries again) or refund_due (not loaded: the operator refunds the holder). Counted from the "
            "database by the top-up sweep every top_up_sweep_interval_s, so every node reports all of them.",
            ["state"],
            registry=self.registry,
        )
        self.top_up_oldest_waiting = Gauge(
            "txswitch_top_up_oldest_waiting_seconds",
            "How long the oldest top-up of the state has waited, as of the scrape: since its confirmation "
            "(confirming) or since it was judged (refund_due); 0 when none waits.",
            ["state"],
            registry=self.registry,
        )

    def _define_security_metrics(self) -> None:
        self.pin_lockouts = Counter(
            "txswitch_pin_lockouts",
            "Lockouts after too many wrong PINs, by kind (employee or card).",
            ["kind"],
            registry=self.registry,
        )

    # -- hot path ---------------------------------------------------------------------------

    def observe_request(self, rpc: str, code: str, latency_s: float) -> None:
        """Count one answered request and record its latency."""
        children = self._request_children.get((rpc, code))
        if children is None:
            children = self._resolve_request_children(rpc, code)
        children.count.inc()
        children.latency.observe(latency_s)

    def request_started(self, rpc: str) -> None:
        """One more request in flight; pair with request_finished."""
        self._in_flight_child(rpc).inc()

    def request_finished(self, rpc: str) -> None:
        self._in_flight_child(rpc).dec()

    def _in_flight_child(self, rpc: str) -> Gauge:
        child = self._in_flight_children.get(rpc)
        if child is None:
            with self._children_lock:
                label = self._bounded(name_label(rpc), len(self._in_flight_children))
                child = self.requests_in_flight.labels(rpc=label)
                self._in_flight_children[rpc] = child
        return child

    def _resolve_request_children(self, rpc: str, code: str) -> _RequestChildren:
        with self._children_lock:
            used = len(self._request_children)
            rpc_label = self._bounded(name_label(rpc), used)
            code_value = self._bounded(code_label(code), used)
            children = _RequestChildren(
                self.requests.labels(rpc=rpc_label, code=code_value),
                self.request_duration.labels(rpc=rpc_label),
            )
            self._request_children[(rpc, code)] = children
            return children

    @staticmethod
    def _bounded(label: str, used: int) -> str:
        return LABEL_FOLDED if used >= LABEL_COMBINATIONS_MAX else label

    def terminal_activated(self) -> None:
        self.terminal_activations.inc()

    def card_actor_started(self, count: int = 1) -> None:
        self.card_actors_started.inc(count)

    def card_actor_passivated(self, count: int = 1) -> None:
        self.card_actors_passivated.inc(count)

    def observe_commit(self, batch_entries: int, latency_s: float) -> None:
        """One group commit of batch_entries journal entries that took latency_s."""
        self.journal_batch_entries.observe(batch_entries)
        self.journal_commit_duration.observe(latency_s)

    def receipt(self, state: str) -> None:
        """An e-mailed receipt was queued, sent, put off or given up; never its address."""
        self.receipts.labels(state=state if state in RECEIPT_STATES else LABEL_REFUSED).inc()

    def set_location_changes_waiting(self, pending: int, oldest_waited_s: float) -> None:
        self.location_changes_pending.set(pending)
        self.location_change_oldest_pending.set(oldest_waited_s)

    def set_database_read_age(self, age_s: float) -> None:
        self.database_read_age.set(age_s)

    def set_schema_indexes_missing(self, left_out: Iterable[str], missing: Iterable[str]) -> None:
        """Of the unique indexes left out at start (names from the schema, a bounded set), which are
        missing still."""
        still_missing = set(missing)
        for index in left_out:
            self.schema_index_missing.labels(index=name_label(index)).set(index in still_missing)

    def commit_failed(self, count: int = 1) -> None:
        self.journal_commit_failures.inc(count)

    def pin_lockout(self, kind: str, count: int = 1) -> None:
        """kind is "employee" or "card"; never the employee or card itself."""
        self.pin_lockouts.labels(kind=kind if kind in PIN_LOCKOUT_KINDS else LABEL_REFUSED).inc(count)

    # -- acquirer links ---------------------------------------------------------------------

    def set_acquirer_link_state(self, acquirer: str, state: str) -> None:
        """state is one of ACQUIRER_LINK_STATES; link_up follows it."""
        assert state in ACQUIRER_LINK_STATES, state
        label = name_label(acquirer)
        for known in ACQUIRER_LINK_STATES:
            self.acquirer_link_state.labels(acquirer=label, state=known).set(known == state)
        self.acquirer_link_up.labels(acquirer=label).set(1 if state == "signed_on" else 0)

    def observe_acquirer_request(self, acquirer: str, latency_s: float) -> None:
        self.acquirer_request_duration.labels(acquirer=name_label(acquirer)).observe(latency_s)

    def acquirer_timeout(self, acquirer: str, count: int = 1) -> None:
        self.acquirer_timeouts.labels(acquirer=name_label(acquirer)).inc(count)

    def replaced_card_followed(self, when: str, outcome: str, count: int = 1) -> None:
        """when one of FOLLOW_WHEN; outcome one of FOLLOW_OUTCOMES; never the card."""
        when_value = when if when in FOLLOW_WHEN else LABEL_REFUSED
        outcome_value = outcome if outcome in FOLLOW_OUTCOMES else LABEL_REFUSED
        self.replaced_card_follows.labels(when=when_value, outcome=outcome_value).inc(count)

    def set_replaced_card_follows_waiting(self, queued: int, asked_later: int, backlog: int) -> None:
        """The follow workers' moves not made yet (FOLLOW_WAITING_STATES), as counted now."""
        for state, count in zip(FOLLOW_WAITING_STATES, (queued, asked_later, backlog), strict=True):
            self.replaced_card_follows_waiting.labels(state=state).set(count)

    def replaced_card_money_followed(self, when: str, currency: str, amount_minor: int) -> None:
        """Minor units moved on from replaced cards; currency an ISO 4217 code (three letters)."""
        when_value = when if when in FOLLOW_WHEN else LABEL_REFUSED
        currency_value = currency if _CURRENCY_LABEL_PATTERN.fullmatch(currency) else LABEL_REFUSED
        self.replaced_card_followed_minor.labels(when=when_value, currency=currency_value).inc(amount_minor)

    def top_up(self, programme_id: str, event: str, count: int = 1) -> None:
        """event one of TOP_UP_EVENTS; programme_id a programme's id, never the card."""
        programme_value = programme_id if _PROGRAMME_LABEL_PATTERN.fullmatch(programme_id) else LABEL_REFUSED
        event_value = event if event in TOP_UP_EVENTS else LABEL_REFUSED
        self.top_ups.labels(programme=programme_value, event=event_value).inc(count)

    def set_top_ups_waiting(
        self, confirming: int, refund_due: int, oldest_confirming_s: float, oldest_refund_due_s: float
    ) -> None:
        """Top-ups waiting in each of TOP_UP_WAITING_STATES and how long the oldest has; never one's id."""
        counts, ages_s = (confirming, refund_due), (oldest_confirming_s, oldest_refund_due_s)
        for state, count, age_s in zip(TOP_UP_WAITING_STATES, counts, ages_s, strict=True):
            self.top_ups_waiting.labels(state=state).set(count)
            self.top_up_oldest_waiting.labels(state=state).set(age_s)

    def payment_recovered(self, node: str, outcome: str, count: int = 1) -> None:
        """node is "own" or "other", outcome "reversed" or "answered_meanwhile"; never the payment."""
        node_value = node if node in PAYMENT_RECOVERY_NODES else LABEL_REFUSED
        outcome_value = outcome if outcome in PAYMENT_RECOVERY_OUTCOMES else LABEL_REFUSED
        self.payment_recoveries.labels(node=node_value, outcome=outcome_value).inc(count)

    def iso_inbound_connections_closed(self, refused: int, idle_closed: int) -> None:
        """Inbound ISO 8583 connections the listener closed: refused past its cap, or idle."""
        self.iso_inbound_connections_refused.inc(refused)
        self.iso_inbound_connections_idle_closed.inc(idle_closed)

    def iso_inbound_advice_unanswered(self, reason: str, count: int = 1) -> None:
        """reason one of UNANSWERED_ADVICE_REASONS; never the advice's fields."""
        reason_value = reason if reason in UNANSWERED_ADVICE_REASONS else LABEL_REFUSED
        self.iso_inbound_advices_unanswered.labels(reason=reason_value).inc(count)

    def acquirer_reversal_answer_refused(self, count: int = 1) -> None:
        self.acquirer_reversal_answers_refused.inc(count)

    def acquirer_reversals_counted(self, queued: int, acknowledged: int) -> None:
        """Reversal advices the gateway stored to send, and those the acquirer acknowledged."""
        self.acquirer_reversals_queued.inc(queued)
        self.acquirer_reversals_acknowledged.inc(acknowledged)

    def set_store_and_forward_depth(self, acquirer: str, depth: int) -> None:
        self.store_and_forward_queue_depth.labels(acquirer=name_label(acquirer)).set(depth)

    # -- scrape time ------------------------------------------------------------------------

    def set_runtime_source(self, source: RuntimeSource | None) -> None:
        """A function the registry calls at each scrape for actor and terminal gauges."""
        self._runtime.source = source

    def add_refresh(self, refresh: Refresh) -> None:
        """A function run at the start of each scrape, to feed counters from snapshots."""
        self._refresh.refreshes.append(refresh)

    def requests_in_flight_total(self) -> int:
        """All requests in flight now, over every RPC (for the console, not the hot path)."""
        total = 0.0
        for family in self.requests_in_flight.collect():
            total += sum(sample.value for sample in family.samples)
        return int(total)

    def exposition(self) -> bytes:
        """The text exposition, as an HTTP scrape would return it."""
        return generate_latest(self.registry)


class MetricsServer:
    """The HTTP exposition endpoint (/metrics) on its own daemon thread."""

    def __init__(
        self,
        metrics: SwitchMetrics,
        host: str = METRICS_HOST_DEFAULT,
        port: int = METRICS_PORT_DEFAULT,
    ) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen and serve; returns the bound port (useful when configured with 0)."""
        assert self._server is None, "metrics server already started"
        server, thread = start_http_server(self._port, addr=self._host, registry=self._metrics.registry)
        self._server, self._thread = server, thread
        port: int = server.server_port
        log.info("metrics listening", extra={"host": self._host, "port": port})
        return port

    @property
    def port(self) -> int:
        assert self._server is not None, "metrics server not started"
        port: int = self._server.server_port
        return port

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None


class GcPauses:
    """Times each garbage collection (gc.callbacks) into txswitch_gc_pause_seconds while started."""

    def __init__(self, metrics: SwitchMetrics) -> None:
        self._pause = metrics.gc_pause
        self._started_s: float | None = None

    def start(self) -> None:
        if self._observe not in gc.callbacks:
            gc.callbacks.append(self._observe)

    def stop(self) -> None:
        if self._observe in gc.callbacks:
            gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        # Collections do not nest, and the interpreter lock is held throughout one.
        if phase == "start":
            self._started_s = time.perf_counter()
        elif self._started_s is not None:
            self._pause.labels(str(info["generation"])).observe(time.perf_counter() - self._started_s)
            self._started_s = None


LOOP_LAG_PROBE_S: Final = 0.05


async def watch_loop_lag(metrics: SwitchMetrics, every_s: float = LOOP_LAG_PROBE_S) -> None:
    """Until cancelled: sleep every_s on the running loop, and record how late it woke us."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(every_s)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - before - every_s))
