"""Online top-ups: a holder's top-up stored until the PSP confirms the payment, then loaded once.

Starting one moves nothing. The PSP's confirmation takes the top-up (pending -> confirming, with
its psp_reference) in one conditional update, so of two confirmations with different references
one wins; then the card is loaded as a terminal loads it, through the programme's online top-up
terminal (Admin.online_top_up_terminal) with the top-up's id as the transaction id: the terminal
actor, the card actor and the journal's idempotency key make two confirmations (or a confirmation
sent again after a crash) one load, and the card's state is judged by its actor at that moment.
A payment that loads nothing leaves the top-up refund_due with the reason, for the operator.
A top-up left confirming (the PSP gave up on an UNAVAILABLE, the switch stopped mid-load) is
finished by a sweep (TopUpSweeper) as a confirmation sent again would finish it; the same sweep
purges finished top-ups once top_ups_kept_days old (never a confirming or a refund_due one), and
counts those waiting (confirming; refund_due, for the operator's refund) for the metrics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from actors.reply import ReplyTimeoutError
from switch.admin import AdminConflictError, AdminStateError, ReplacementChainTooLongError, new_id
from switch.domain.card_rules import CardState
from switch.domain.money import Money
from switch.domain.quoting import quoted
from switch.domain.top_ups import TopUp, TopUpStatus, confirm_problem
from switch.domain.transactions import Load, Outcome
from switch.stopping import join_within
from switch.store.engine import writing
from switch.store.repository import as_utc
from switch.store.schema import top_ups
from switch.web_days import WebDayCloseError

if TYPE_CHECKING:
    from switch.core import SwitchCore

log = logging.getLogger(__name__)

REASON_MAX = 250  # the column's length
# What is counted of top-ups (statistics(), txswitch_top_ups_total): started; and how a confirmed
# one ended, loaded or refund_due (counted by the node whose confirmation or sweep finished it).
TOP_UP_EVENTS = ("started", "loaded", "refund_due")
# A sweep's back-off doubles at most this often (2**20 intervals is far past any retry maximum):
# the tries of a top-up that never loads count on, the power stays small.
RETRY_DOUBLINGS_MAX = 20
# The states a top-up waits in, counted by the sweep (txswitch_top_ups_waiting): confirming until
# its load is known, refund_due until the operator refunds the holder.
WAITING_STATES = (TopUpStatus.confirming, TopUpStatus.refund_due)
# How long a stop waits for the sweep's thread: a sweep stuck in the database (a lock never released,
# a connection that hangs) is left to the daemon thread, logged, so the switch's stop still ends.
STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class TopUpsWaiting:
    """Top-ups waiting in each of WAITING_STATES as the last sweep counted them, and how long the
    oldest has waited as of now: since its confirmation (confirming) or since it was judged
    (refund_due); 0 when none waits."""

    confirming: int
    refund_due: int
    oldest_confirming_waited_s: float
    oldest_refund_due_waited_s: float


class TopUpNotLoadedYetError(RuntimeError):
    """The load's outcome is not known now; the top-up stays confirming: confirm it again."""


class OnlineTopUps:
    def __init__(self, engine: Engine, core: SwitchCore, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._core = core
        self._now = now
        self._valid = dt.timedelta(seconds=core.settings.top_up_valid_s)
        self._listed_max = core.settings.top_ups_listed_max
        self._confirming_grace = dt.timedelta(seconds=core.settings.top_up_confirming_grace_s)
        self._swept_max = core.settings.top_ups_swept_max
        self._sweep_interval_s = core.settings.top_up_sweep_interval_s
        self._retry_s_max = core.settings.top_up_sweep_retry_s_max
        self._kept = dt.timedelta(days=core.settings.top_ups_kept_days)
        self._purged_max = core.settings.top_ups_purged_max
        self._counts: dict[tuple[str, str], int] = {}  # (programme_id, event) -> top-ups
        self._counts_lock = threading.Lock()
        # status -> (top-ups, when the oldest began to wait) as last counted; None before the first count
        self._waiting: dict[TopUpStatus, tuple[int, dt.datetime]] | None = None

    # Starting

    def by_request(self, card_id: str, request_id: str) -> TopUp | None:
        """The top-up a request id started on this card. Ids are the card's own: callers have no
        login, so an id shared by all could be taken first by anyone who guessed it."""
        return self._one((top_ups.c.card_id == card_id) & (top_ups.c.request_id == request_id))

    def get(self, top_up_id: str) -> TopUp | None:
        return self._one(top_ups.c.top_up_id == top_up_id)

    def start(self, request_id: str, card: CardState, amount: Money) -> TopUp:
        """A pending top-up of the card (its rules checked by the caller: start_refusal). The same
        request_id again on the card: the top-up it started; with another amount, AdminConflictError."""
        holder_minor, funder_minor = card.programme.split_load(amount.amount_minor)
        now = self._now()
        top_up = TopUp(
            new_id("tup"),
            request_id,
            card.card_id,
            card.masked,
            card.programme.programme_id,
            card.currency,
            amount.amount_minor,
            holder_minor,
            funder_minor,
            TopUpStatus.pending,
            now,
            now + self._valid,
        )
        try:
            with writing(self._engine) as conn:
                conn.execute(insert(top_ups), _row_of(top_up))
        except IntegrityError:  # the card's request id: another start with it landed first
            known = self.by_request(card.card_id, request_id)
            if known is None:  # a request_id unique over all top-ups (before session 24; taken away at start)
                raise AdminConflictError(f"request_id {quoted(request_id)} is taken; use another") from None
            return same_request(known, card.card_id, amount)
        self._count(top_up.programme_id, "started")
        return top_up

    def _count(self, programme_id: str, event: str) -> None:
        assert event in TOP_UP_EVENTS, event
        with self._counts_lock:
            self._counts[programme_id, event] = self._counts.get((programme_id, event), 0) + 1

    def statistics(self) -> dict[tuple[str, str], int]:
        """Top-ups since this process started, by (programme_id, event in TOP_UP_EVENTS): a snapshot."""
        with self._counts_lock:
            return dict(self._counts)

    def count_waiting(self) -> None:
        """Count the top-ups waiting in each of WAITING_STATES from the database (one query on
        ix_top_ups_status, touching only the rows that wait), for waiting(). The sweep calls it."""
        row = top_ups.c
        # A confirming top-up has no finished_at: it waits since its confirmation.
        since = func.min(func.coalesce(row.finished_at, row.confirmed_at, row.created_at))
        query = (
            select(row.status, func.count(), since)
            .where(row.status.in_([state.value for state in WAITING_STATES]))
            .group_by(row.status)
        )
        with self._engine.connect() as conn:
            counted = {
                TopUpStatus(status): (int(count), as_utc(oldest))
                for status, count, oldest in conn.execute(query)
            }
        with self._counts_lock:
            self._waiting = counted

    def waiting(self) -> TopUpsWaiting | None:
        """The top-ups waiting as the last count_waiting found them, their ages as of now; None
        before the first count."""
        with self._counts_lock:
            counted = self._waiting
        if counted is None:
            return None
        now = self._now()
        counts = {state: count for state, (count, _) in counted.items()}
        waited_s = {state: max((now - oldest).total_seconds(), 0.0) for state, (_, oldest) in counted.items()}
        confirming, refund_due = TopUpStatus.confirming, TopUpStatus.refund_due
        return TopUpsWaiting(
            counts.get(confirming, 0),
            counts.get(refund_due, 0),
            waited_s.get(confirming, 0.0),
            waited_s.get(refund_due, 0.0),
        )

    # Confirming

    def confirm(self, top_up_id: str, psp_reference: str, amount_paid: Money) -> TopUp:
        """The top-up once the holder's payment is judged: loaded or refund_due. LookupError for an
        unknown top-up; AdminConflictError for a reference that confirmed another top-up;
        AdminStateError for a top-up another payment confirmed; TopUpNotLoadedYetError."""
        top_up = self._claim(top_up_id, psp_reference, amount_paid)
        if top_up.status is not TopUpStatus.confirming:
            return top_up  # judged already: the first answer
        return self._judge(top_up)

    def _judge(self, top_up: TopUp) -> TopUp:
        """A confirming top-up loaded or refund_due; TopUpNotLoadedYetError leaves it confirming.
        Any number of times, from any node: the load's transaction id is the top-up's."""
        assert top_up.status is TopUpStatus.confirming and top_up.confirmed_at is not None, top_up
        # Judged at the first confirmation's time, so a confirmation sent again judges the same.
        problem = confirm_problem(top_up, top_up.amount_paid, top_up.confirmed_at)
        if problem is not None:
            return self._finish(top_up, TopUpStatus.refund_due, problem)
        try:
            card = self._card_to_load(top_up)
        except ReplacementChainTooLongError as error:  # no try again finds the card: the holder is owed
            return self._finish(top_up, TopUpStatus.refund_due, f"card not loaded: {error}")
        outcome = self._load(top_up, card.card_id)
        if not outcome.code.approves:
            return self._finish(top_up, TopUpStatus.refund_due, f"card not loaded: {outcome.message}")
        if card.card_id != top_up.card_id:
            onto = f"{outcome.message}: onto {card.masked}, the card that replaced it"
            return self._finish(top_up, TopUpStatus.loaded, onto)
        return self._finish(top_up, TopUpStatus.loaded, outcome.message)

    def finish_confirming(self, stopping: threading.Event | None = None) -> int:
        """Finish the top-ups left confirming for top_up_confirming_grace_s whose next try is due, at
        most top_ups_swept_max, the longest waiting first (since their confirmation, or since the try
        that put them off), until `stopping` is set; each whose load is still not known is put off
        (`_put_off`). Returns how many were finished (loaded or refund_due)."""
        row, now = top_ups.c, self._now()
        query = (
            select(top_ups)
            .where(
                row.status == TopUpStatus.confirming.value,
                row.confirmed_at < now - self._confirming_grace,
                or_(row.next_sweep_at.is_(None), row.next_sweep_at <= now),
            )
            .order_by(func.coalesce(row.next_sweep_at, row.confirmed_at), row.top_up_id)
            .limit(self._swept_max)
        )
        with self._engine.connect() as conn:
            left = [
                (_top_up_of(found), int(found["sweep_attempts"])) for found in conn.execute(query).mappings()
            ]
        finished = 0
        for top_up, attempts in left:
            if stopping is not None and stopping.is_set():  # each load may wait for its reply timeout
                break
            try:
                judged = self._judge(top_up)
            except TopUpNotLoadedYetError as error:
                retry_s = self._put_off(top_up.top_up_id, attempts)
                log.warning(
                    "top-up %s still confirming after a sweep (try %d; next in %.0f s): %s",
                    top_up.top_up_id,
                    attempts + 1,
                    retry_s,
                    error,
                )
                continue
            except Exception:  # this top-up's own fault (a row broken): the others keep their turn
                retry_s = self._put_off(top_up.top_up_id, attempts)
                log.exception(
                    "top-up %s could not be judged by the sweep (try %d; next in %.0f s)",
                    top_up.top_up_id,
                    attempts + 1,
                    retry_s,
                )
                continue
            log.info("top-up %s left confirming is %s", top_up.top_up_id, judged.status.value)
            finished += 1
        return finished

    def _put_off(self, top_up_id: str, attempts: int) -> float:
        """The next sweep try of a top-up this try left confirming: top_up_sweep_interval_s after the
        first, twice as far after each later one, at most top_up_sweep_retry_s_max; the seconds."""
        retry_s = min(self._sweep_interval_s * (1 << min(attempts, RETRY_DOUBLINGS_MAX)), self._retry_s_max)
        row = top_ups.c
        with writing(self._engine) as conn:
            conn.execute(
                update(top_ups)
                .where(row.top_up_id == top_up_id, row.status == TopUpStatus.confirming.value)
                .values(
                    sweep_attempts=row.sweep_attempts + 1,
                    next_sweep_at=self._now() + dt.timedelta(seconds=retry_s),
                )
            )
        return retry_s

    def _card_to_load(self, top_up: TopUp) -> CardState:
        """The top-up's card, or the card that replaced it since the start (the last of a chain): the
        load follows a replaced card as other money credited to one does (SwitchCore.last_replacement).
        A confirmation sent again names the card its load was stored with, replaced since or not: the
        same id with another card would be refused as another transaction (never made twice, but
        never answered either); money loaded onto a card replaced since follows it by the transfer."""
        store = self._core.store
        terminal_id = self._core.online_top_up_terminal(top_up.programme_id)
        stored = store.transaction(terminal_id, top_up.top_up_id)
        if stored is not None and stored.record.card_id is not None:
            return store.card_state(stored.record.card_id)
        replacement_id = self._core.last_replacement(top_up.card_id)
        if replacement_id is None:
            return store.card_state(top_up.card_id)
        replacement = store.card_state(replacement_id)
        # A replacement is of the lost card's programme (Admin refuses another): the holder's part
        # paid is that programme's price.
        assert replacement.programme.programme_id == top_up.programme_id, (top_up, replacement_id)
        return replacement

    def _claim(self, top_up_id: str, psp_reference: str, amount_paid: Money) -> TopUp:
        row = top_ups.c
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    update(top_ups)
                    .where(
                        row.top_up_id == top_up_id,
                        row.status == TopUpStatus.pending.value,
                        row.psp_reference.is_(None),
                    )
                    .values(
                        status=TopUpStatus.confirming.value,
                        psp_reference=psp_reference,
                        amount_paid_minor=amount_paid.amount_minor,
                        amount_paid_currency=amount_paid.currency,
                        confirmed_at=self._now(),
                    )
                )
        except IntegrityError:  # the reference is unique: it confirmed another top-up
            raise AdminConflictError(
                f"psp_reference {quoted(psp_reference)} confirmed another top-up already; "
                "this confirmation loads nothing"
            ) from None
        top_up = self.get(top_up_id)
        if top_up is None:
            raise LookupError(
                f"top_up_id {quoted(top_up_id)}: no such top-up; the payment loads nothing: refund it"
            )
        if top_up.psp_reference != psp_reference:
            raise AdminStateError(
                f"top-up {top_up_id} was confirmed with another psp_reference; this payment loads "
                "nothing: refund it"
            )
        if top_up.amount_paid != amount_paid:
            paid = top_up.amount_paid.format()
            raise AdminStateError(
                f"psp_reference {quoted(psp_reference)} confirmed top-up {top_up_id} already, "
                f"with amount_paid {paid}"
            )
        return top_up

    def _load(self, top_up: TopUp, card_id: str) -> Outcome:
        core = self._core
        terminal_id = core.online_top_up_terminal(top_up.programme_id)
        # The price the holder was quoted at the start, paid: a load step changed since refuses nothing.
        load = Load(top_up.top_up_id, card_id, top_up.money(top_up.amount_minor), priced_at_start=True)
        try:
            with core.web_days.closed_around(terminal_id):  # so the load counts in today's period
                outcome = core.submit_web(terminal_id, load)
        except WebDayCloseError as error:
            raise TopUpNotLoadedYetError(str(error)) from None
        except ReplyTimeoutError:
            raise TopUpNotLoadedYetError("the load's outcome is not known yet") from None
        if not outcome.persisted:  # a system decline that stored nothing: the same load may be sent again
            raise TopUpNotLoadedYetError(f"the load was not made: {outcome.message}")
        return outcome

    def _finish(self, top_up: TopUp, status: TopUpStatus, reason: str) -> TopUp:
        row = top_ups.c
        with writing(self._engine) as conn:
            taken = conn.execute(
                update(top_ups)
                .where(row.top_up_id == top_up.top_up_id, row.status == TopUpStatus.confirming.value)
                .values(status=status.value, reason=reason[:REASON_MAX], finished_at=self._now())
            ).rowcount
        if taken:  # not a confirmation or sweep that another finished first
            self._count(top_up.programme_id, status.value)
            if status is TopUpStatus.refund_due:  # once, by whichever finished it: the holder is owed
                log.warning(
                    "top-up %s of card %s is refund_due: the holder paid and the card is not loaded: %s",
                    top_up.top_up_id,
                    top_up.card_masked,
                    reason,
                )
        finished = self.get(top_up.top_up_id)
        assert finished is not None and finished.status is not TopUpStatus.confirming, finished
        return finished

    def mark_refunded(self, top_up_id: str, refund_reference: str) -> TopUp:
        """A refund_due top-up whose holder was paid back. The same reference again: the same
        answer; LookupError for an unknown top-up, AdminStateError for any other state."""
        row = top_ups.c
        with writing(self._engine) as conn:
            conn.execute(
                update(top_ups)
                .where(row.top_up_id == top_up_id, row.status == TopUpStatus.refund_due.value)
                .values(
                    status=TopUpStatus.refunded.value,
                    refund_reference=refund_reference,
                    finished_at=self._now(),
                )
            )
        top_up = self.get(top_up_id)
        if top_up is None:
            raise LookupError(f"top_up_id {quoted(top_up_id)}: no such top-up")
        if top_up.status is TopUpStatus.refunded and top_up.refund_reference == refund_reference:
            return top_up
        if top_up.status is TopUpStatus.refunded:
            raise AdminStateError(
                f"top-up {top_up_id} was refunded already, as {quoted(top_up.refund_reference)}"
            )
        shown = top_up.shown_status(self._now()).value
        raise AdminStateError(f"top-up {top_up_id} is {shown}, not refund_due: nothing to refund")

    # Purging

    def purge_finished(self) -> int:
        """Delete at most top_ups_purged_max finished top-ups started and finished more than
        top_ups_kept_days ago, the oldest first: loaded, refunded, and pending ones expired by then
        (nothing was paid). Never a confirming one (its load may still move money) nor a refund_due
        one (the holder is owed). Returns how many were deleted."""
        row = top_ups.c
        before = self._now() - self._kept
        done = and_(
            row.status.in_([TopUpStatus.loaded.value, TopUpStatus.refunded.value]),
            row.created_at < before,  # ix_top_ups_status
            or_(row.finished_at.is_(None), row.finished_at < before),  # NULL: a row from before it
        )
        expired = and_(
            row.status == TopUpStatus.pending.value, row.created_at < before, row.expires_at < before
        )
        purgeable = or_(done, expired)
        oldest = select(row.top_up_id).where(purgeable).order_by(row.created_at, row.top_up_id)
        with writing(self._engine) as conn:
            # The condition again on the rows themselves: one a confirmation took meanwhile stays.
            statement = delete(top_ups).where(row.top_up_id.in_(oldest.limit(self._purged_max)), purgeable)
            purged = int(conn.execute(statement).rowcount)
        if purged:
            log.info("%d top-ups finished more than %d days ago purged", purged, self._kept.days)
        return purged

    # Listing

    def listed(self, status: TopUpStatus | None) -> list[TopUp]:
        """The newest first, at most top_ups_listed_max; `expired` are pending ones past expiry."""
        row, now = top_ups.c, self._now()
        query = select(top_ups).order_by(row.created_at.desc(), row.top_up_id).limit(self._listed_max)
        if status is TopUpStatus.expired:
            query = query.where(row.status == TopUpStatus.pending.value, row.expires_at < now)
        elif status is TopUpStatus.pending:
            query = query.where(row.status == TopUpStatus.pending.value, row.expires_at >= now)
        elif status is not None:
            query = query.where(row.status == status.value)
        with self._engine.connect() as conn:
            return [_top_up_of(found) for found in conn.execute(query).mappings()]

    def _one(self, condition: Any) -> TopUp | None:
        with self._engine.connect() as conn:
            found = conn.execute(select(top_ups).where(condition)).mappings().first()
        return None if found is None else _top_up_of(found)


class TopUpSweeper:
    """Runs OnlineTopUps.finish_confirming, then count_waiting, then purge_finished, then the other
    purges (the inbound repeat tables': switch/store/inbound_purge.py), once at start, then every
    top_up_sweep_interval_s, on a thread of its own until stopped (as the payment recovery's sweep,
    switch/acquiring.py)."""

    def __init__(
        self, top_ups: OnlineTopUps, interval_s: float, other_purges: tuple[Callable[[], int], ...] = ()
    ) -> None:
        self._top_ups = top_ups
        self._interval_s = interval_s
        self._other_purges = other_purges
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="top-up-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            join_within(self._thread, STOP_TIMEOUT_S, log, "the top-up sweep")

    def _run(self) -> None:
        while True:
            try:
                self._top_ups.finish_confirming(self._stopping)
            except Exception:  # a thread of its own: a database fault, a stop; the next sweep tries again
                log.exception("finishing top-ups left confirming failed; trying again")
            try:  # after the tries, so the count shows what they left
                self._top_ups.count_waiting()
            except Exception:  # as above: the metrics keep the last count, its ages growing
                log.exception("counting the top-ups waiting failed; trying again")
            try:
                self._top_ups.purge_finished()
            except Exception:  # as above: the next sweep purges what this one left
                log.exception("purging finished top-ups failed; trying again")
            for purge in self._other_purges:
                try:
                    purge()
                except Exception:  # as above
                    log.exception("a purge of the sweep failed; trying again")
            if self._stopping.wait(self._interval_s):
                return


def same_request(known: TopUp, card_id: str, amount: Money) -> TopUp:
    """The top-up a request id started, if this request asks the same; else AdminConflictError."""
    if not known.asks(card_id, amount):
        raise AdminConflictError(request_id_taken(known.request_id))
    return known


def request_id_taken(request_id: str) -> str:
    return f"request_id {quoted(request_id)} started another top-up already"


def _row_of(top_up: TopUp) -> dict[str, object]:
    row = dataclasses.asdict(top_up)
    row["status"] = top_up.status.value
    row["psp_reference"] = top_up.psp_reference or None
    row["amount_paid_currency"] = top_up.amount_paid_currency or None
    return row


def _top_up_of(row: Any) -> TopUp:
    confirmed_at = row["confirmed_at"]
    return TopUp(
        top_up_id=row["top_up_id"],
        request_id=row["request_id"],
        card_id=row["card_id"],
        card_masked=row["card_masked"],
        programme_id=row["programme_id"],
        currency=row["currency"],
        amount_minor=row["amount_minor"],
        holder_part_minor=row["holder_part_minor"],
        funder_part_minor=row["funder_part_minor"],
        status=TopUpStatus(row["status"]),
        created_at=as_utc(row["created_at"]),
        expires_at=as_utc(row["expires_at"]),
        confirmed_at=None if confirmed_at is None else as_utc(confirmed_at),
        psp_reference=row["psp_reference"] or "",
        amount_paid_minor=row["amount_paid_minor"],
        amount_paid_currency=row["amount_paid_currency"] or "",
        reason=row["reason"],
        refund_reference=row["refund_reference"],
    )
