"""Feeds SwitchMetrics from the running switch at scrape time: actors, journal, PINs, acquirer links;
what only the database knows is read off the scrape (DatabaseReads)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import pykka

from actors.acquirer_gateway import AcquirerGateway
from actors.acquirer_types import LinkState
from actors.registry import ActorRegistry
from ops.metrics import ActorKindStats, RuntimeSnapshot, SwitchMetrics
from protocols.iso_inbound import ListenerStatistics
from switch.core import SwitchCore
from switch.location_changes import ChangesWaiting
from switch.store.engine import MissingIndexes

log = logging.getLogger(__name__)

LINK_STATE_LABELS = {
    LinkState.disconnected: "down",
    LinkState.connecting: "connecting",
    LinkState.signing_on: "connecting",
    LinkState.signed_on: "signed_on",
}


def _mailbox_depth(ref: pykka.ActorRef[Any]) -> int:
    size = getattr(ref.actor_inbox, "qsize", None)
    return int(size()) if size is not None else 0


def actor_kind_stats(registry: ActorRegistry[Any]) -> ActorKindStats:
    depths = [_mailbox_depth(ref) for ref in registry.live_refs()]
    return ActorKindStats(registry.kind, len(depths), sum(depths), max(depths, default=0))


def runtime_snapshot(core: SwitchCore) -> RuntimeSnapshot:
    """Live actors by kind (the journal writer counts as one, its queue as its mailbox)."""
    terminals = actor_kind_stats(core.terminal_actors)
    journal_depth = core.writer.statistics().queue_depth
    return RuntimeSnapshot(
        actors=(
            terminals,
            actor_kind_stats(core.card_actors),
            ActorKindStats("journal", 1, journal_depth, journal_depth),
        ),
        terminals_online=core.terminals_online(),
    )


class _Deltas:
    """Turns cumulative totals read from snapshots into counter increments."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def step(self, name: str, total: int) -> int:
        previous = self._seen.get(name, 0)
        self._seen[name] = total
        return max(0, total - previous)


class CoreFeed:
    """Card actors started/passivated, employee PIN lockouts, money following replaced cards and
    online top-ups (and those waiting, as the top-up sweep last counted them), read from the core."""

    def __init__(self, core: SwitchCore, metrics: SwitchMetrics) -> None:
        self._core = core
        self._metrics = metrics
        self._deltas = _Deltas()

    def __call__(self) -> None:
        stats = self._core.card_actors.statistics()
        metrics, deltas = self._metrics, self._deltas
        metrics.card_actor_started(deltas.step("started", stats.started))
        metrics.card_actor_passivated(deltas.step("passivated", stats.passivated))
        metrics.pin_lockout("employee", deltas.step("lockouts", self._core.employee_pins.lockouts))
        metrics.pin_lockout("card", deltas.step("card_lockouts", self._core.card_pin_store.lockouts))
        follows = self._core.follow_statistics()
        metrics.set_replaced_card_follows_waiting(follows.queued, follows.asked_later, follows.backlog)
        for (when, outcome), total in sorted(follows.moves.items()):
            metrics.replaced_card_followed(when, outcome, deltas.step(f"follows:{when}:{outcome}", total))
        for (when, currency), moved_minor in sorted(follows.moved_minor.items()):
            step = deltas.step(f"followed_minor:{when}:{currency}", moved_minor)
            metrics.replaced_card_money_followed(when, currency, step)
        for (programme_id, event), total in sorted(self._core.top_ups.statistics().items()):
            metrics.top_up(programme_id, event, deltas.step(f"top_ups:{programme_id}:{event}", total))
        waiting = self._core.top_ups.waiting()  # as the sweep last counted them: no query per scrape
        if waiting is not None:
            metrics.set_top_ups_waiting(
                waiting.confirming,
                waiting.refund_due,
                waiting.oldest_confirming_waited_s,
                waiting.oldest_refund_due_waited_s,
            )


class DatabaseFeed(Protocol):
    """A feed of what only the database knows: read() asks it, off the scrape (DatabaseReads);
    calling it sets the gauges from the last read, at scrape time, without asking the database."""

    def read(self) -> None: ...

    def __call__(self) -> None: ...


class LocationChangesFeed:
    """Location changes waiting for the operator, from the database (every node sees them all)."""

    def __init__(self, core: SwitchCore, metrics: SwitchMetrics) -> None:
        self._core = core
        self._metrics = metrics
        self._last: tuple[ChangesWaiting, float] | None = None  # and when it was read (monotonic)

    def read(self) -> None:
        read_s = time.monotonic()
        self._last = (self._core.location_changes.waiting(), read_s)

    def __call__(self) -> None:
        last = self._last
        if last is None:
            return
        waiting, read_s = last
        # The oldest ages as of the scrape, a read that hangs or not.
        waited_s = waiting.oldest_waited_s + (time.monotonic() - read_s) if waiting.pending else 0.0
        self._metrics.set_location_changes_waiting(waiting.pending, waited_s)


class SchemaFeed:
    """Unique indexes left out at start and whether they are missing still (asked of the database
    only while one is)."""

    def __init__(self, indexes: MissingIndexes, metrics: SwitchMetrics) -> None:
        self._indexes = indexes
        self._metrics = metrics
        self._missing = indexes.left_out  # missing at start, by definition

    def read(self) -> None:
        self._missing = self._indexes.missing()

    def __call__(self) -> None:
        self._metrics.set_schema_indexes_missing(self._indexes.left_out, self._missing)


class StoreAndForwardFeed:
    """Reversal advices pending by acquirer, every one counted in the database."""

    def __init__(self, gateway: AcquirerGateway, metrics: SwitchMetrics) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._pending: dict[str, int] | None = None  # None before the first read: no series

    def read(self) -> None:
        self._pending = self._gateway.saf_pending_counts()

    def __call__(self) -> None:
        pending = self._pending
        if pending is None:
            return
        for link in self._gateway.link_statistics().links:
            self._metrics.set_store_and_forward_depth(link.name, pending.get(link.name, 0))


class DatabaseReads:
    """Reads the database feeds on a thread of its own, one pass at a time, so a database that hangs
    or a lock the reads wait on (a migration's, a long transaction's) stalls this thread, never the
    scrape: every other metric stays visible exactly when the database is in trouble.

    Each scrape asks for a pass and waits for it at most wait_s from the pass's start: while the
    database answers, the gauges are as fresh as the scrape; otherwise they keep the last values and
    txswitch_database_read_age_seconds says how old they are. A scrape behind a pass that is late
    already does not wait for it again, and no second pass starts while one hangs."""

    def __init__(self, feeds: Sequence[DatabaseFeed], metrics: SwitchMetrics, wait_s: float) -> None:
        assert wait_s > 0, "a scrape must not wait for the database without a limit"
        self._feeds = tuple(feeds)
        self._metrics = metrics
        self._wait_s = wait_s
        self._changed = threading.Condition()
        self._asked = self._reading = self._stopping = False
        self._passes = 0
        self._pass_started_s = 0.0
        # When the last pass that read every feed began; before the first, when the reads were made.
        self._read_all_s = time.monotonic()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-database-reads", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(self._wait_s)  # a read that hangs is left to the daemon thread

    def __call__(self) -> None:
        """At each scrape, before the feeds: ask for a pass, wait for it within the limit."""
        with self._changed:
            now_s = time.monotonic()
            if not self._reading:
                self._asked = True
                self._changed.notify_all()
            wanted = self._passes + 1  # a pass under way counts: it began at most wait_s ago
            deadline_s = (self._pass_started_s if self._reading else now_s) + self._wait_s
            self._changed.wait_for(lambda: self._passes >= wanted, max(deadline_s - now_s, 0.0))
            read_all_s = self._read_all_s
        self._metrics.set_database_read_age(time.monotonic() - read_all_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._asked or self._stopping)
                if self._stopping:
                    return
                self._asked, self._reading = False, True
                started_s = self._pass_started_s = time.monotonic()
            read_all = self._read_each()
            with self._changed:
                self._reading = False
                self._passes += 1
                if read_all:
                    self._read_all_s = started_s
                self._changed.notify_all()

    def _read_each(self) -> bool:
        read_all = True
        for feed in self._feeds:
            try:
                feed.read()
            except Exception:  # a thread of its own: the gauges keep their last values, the age grows
                log.exception("reading a metric from the database failed")
                read_all = False
        return read_all


PaymentRecoveries = Callable[[], Mapping[tuple[str, str], int]]


class PaymentRecoveriesFeed:
    """Payments left in flight that the acquiring side recovered, by (node, outcome), from its totals."""

    def __init__(self, recoveries: PaymentRecoveries, metrics: SwitchMetrics) -> None:
        self._recoveries = recoveries
        self._metrics = metrics
        self._deltas = _Deltas()

    def __call__(self) -> None:
        for (node, outcome), total in sorted(self._recoveries().items()):
            self._metrics.payment_recovered(node, outcome, self._deltas.step(f"{node}:{outcome}", total))


class IsoInboundFeed:
    """Connections the inbound ISO 8583 listener refused past its cap or closed as idle, and the
    reversal advices it left unanswered."""

    def __init__(self, statistics: Callable[[], ListenerStatistics], metrics: SwitchMetrics) -> None:
        self._statistics = statistics
        self._metrics = metrics
        self._deltas = _Deltas()

    def __call__(self) -> None:
        stats, deltas = self._statistics(), self._deltas
        self._metrics.iso_inbound_connections_closed(
            deltas.step("refused", stats.connections_refused),
            deltas.step("idle_closed", stats.connections_idle_closed),
        )
        for reason, total in stats.advices_unanswered:
            self._metrics.iso_inbound_advice_unanswered(reason, deltas.step(f"unanswered:{reason}", total))


class AcquirerFeed:
    """Link state and timeouts per acquirer, and the reversal advices the gateway queued, had
    acknowledged and whose 0430s it refused, from the gateway's snapshot (no database)."""

    def __init__(self, gateway: AcquirerGateway, metrics: SwitchMetrics) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._deltas = _Deltas()

    def __call__(self) -> None:
        stats = self._gateway.link_statistics()  # no database: the depth is StoreAndForwardFeed's
        for link in stats.links:
            self._metrics.set_acquirer_link_state(link.name, LINK_STATE_LABELS[link.state])
            self._metrics.acquirer_timeout(link.name, self._deltas.step(link.name, link.timeouts))
        # Key outside the acquirer names' namespace: an acquirer may be called anything.
        refused = self._deltas.step(" reversal_answers_refused", stats.reversal_answers_refused)
        self._metrics.acquirer_reversal_answer_refused(refused)
        self._metrics.acquirer_reversals_counted(
            self._deltas.step(" reversals_queued", stats.reversals_queued),
            self._deltas.step(" reversals_acknowledged", stats.reversals_acknowledged),
        )


def wire_metrics(
    metrics: SwitchMetrics,
    core: SwitchCore,
    gateway: AcquirerGateway | None,
    missing_indexes: MissingIndexes | None = None,
    payment_recoveries: PaymentRecoveries | None = None,
    iso_inbound: Callable[[], ListenerStatistics] | None = None,
) -> DatabaseReads:
    """Everything the switch reports at scrape time; the hot path pays nothing for these. The
    database's feeds are read by the DatabaseReads returned, started: stop it with the metrics."""
    metrics.set_runtime_source(lambda: runtime_snapshot(core))
    metrics.add_refresh(CoreFeed(core, metrics))
    database_feeds: list[DatabaseFeed] = [LocationChangesFeed(core, metrics)]
    if missing_indexes is not None:
        database_feeds.append(SchemaFeed(missing_indexes, metrics))
    if gateway is not None:
        database_feeds.append(StoreAndForwardFeed(gateway, metrics))
        metrics.add_refresh(AcquirerFeed(gateway, metrics))
        gateway.observe_latency(metrics.observe_acquirer_request)
    if payment_recoveries is not None:
        metrics.add_refresh(PaymentRecoveriesFeed(payment_recoveries, metrics))
    if iso_inbound is not None:
        metrics.add_refresh(IsoInboundFeed(iso_inbound, metrics))
    database_reads = DatabaseReads(database_feeds, metrics, core.settings.metrics_database_wait_s)
    metrics.add_refresh(database_reads)  # before its feeds, so they set what its pass read
    for feed in database_feeds:
        metrics.add_refresh(feed)
    database_reads.start()
    return database_reads
