"""The web back office's day: its terminal's period closed once a day, as a terminal's day close.

A location's web back office terminal (Admin.web_terminal) has no one to press "day close", so the
switch closes it: a period that holds a transaction stamped before today's midnight on the report
zone's clock is closed, once by a pass in `txswitch serve` just after midnight (and every
`web_day_close_interval_s`), and before the web terminal takes its first transaction of a new
day, so that transaction opens the next period and is never counted in the day before it. Should
the day turn between that check and the transaction's commit, its write closes the day before in
its own transaction (`WebDayRule`, switch.store.periods): the period is decided as the row commits.
A write that never reached that transaction (refused on the way, or failed with the database) is
followed by the close it did not make, when the day turned during it (`closed_around`).

A period holding only today's transactions is not closed, however long ago it opened (an empty day
needs no close report; its day's report then starts when the period opened). The close is the
terminal's own (TerminalActor's CloseDay through the journal), so it counts its period as it
commits (switch.store.periods) and is refused if the period was closed meanwhile. Its close id is
named by the period it closes, so two nodes, or a pass and a web transaction, closing the same
period at once make one close: the second finds the first's (a stored close id), or is refused on
the period. Only the switch closes a web terminal's periods (nobody holds its credential).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pykka
from sqlalchemy import Engine, and_, exists, select
from sqlalchemy.exc import SQLAlchemyError

from actors.terminal_actor import DayCloseError
from switch.admin import SWITCH_DEVICE_NAMES, AdminStateError
from switch.domain.reports import midnight
from switch.stopping import join_within
from switch.store.journal import TOMBSTONE_TYPE
from switch.store.periods import web_day_close_id
from switch.store.repository import DayCloseReport
from switch.store.schema import terminals, transactions

log = logging.getLogger(__name__)

# Web terminals closed in one pass; a longer list is taken up by the next pass.
WEB_DAY_CLOSES_PER_PASS_MAX = 1_000
# Tries to close one web terminal's day before a web transaction: a second after a close refused
# because this node's copy of the period was behind another node's close.
WEB_DAY_CLOSE_ATTEMPTS_MAX = 2
# After midnight, the pass waits this much longer, so the new day has begun on the clock it reads.
AFTER_MIDNIGHT_S = 1.0
# How long a stop waits for the pass's thread: a pass stuck in the database (a lock never released,
# a connection that hangs) is left to the daemon thread, logged, so the switch's stop still ends.
STOP_TIMEOUT_S = 10.0

CloseDay = Callable[[str, str, int], DayCloseReport]  # terminal id, close id, period -> report
# A close not made now (the period closed meanwhile, the journal slow or failing, the actor
# stopping); the same close is tried again later, by its period's close id.
CLOSE_FAULTS = (DayCloseError, TimeoutError, pykka.Timeout, pykka.ActorDeadError, SQLAlchemyError)


class WebDayCloseError(RuntimeError):
    """A web terminal's earlier day could not be closed now; its transaction is not taken (send it
    again), so it is never counted in that day."""


class WebDayPeriodError(AdminStateError):
    """The period a close named is not open yet."""


close_id_of = web_day_close_id  # one per period, whoever closes it (a write too: switch.store.periods)


class WebDays:
    def __init__(
        self,
        engine: Engine,
        zone: zoneinfo.ZoneInfo,
        now: Callable[[], dt.datetime],
        close_day: CloseDay,
        interval_s: float,
    ) -> None:
        assert interval_s > 0, "web_day_close_interval_s must be positive"
        self._engine = engine
        self._zone = zone
        self._now = now
        self._close_day = close_day
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web-day-close", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            join_within(self._thread, STOP_TIMEOUT_S, log, "the web day close pass")

    def close_due(self) -> list[DayCloseReport]:
        """Close every web terminal whose open period holds a transaction of an earlier day (at
        most WEB_DAY_CLOSES_PER_PASS_MAX); the closes made or found. A close that fails is logged
        and left to the next pass or web transaction; so are those left when stop() is asked, which
        waits for the close under way only."""
        reports = []
        for terminal_id, period_number in self._due():
            if self._stopping.is_set():
                break
            try:
                reports.append(self._close_day(terminal_id, close_id_of(period_number), period_number))
            except CLOSE_FAULTS as error:
                log.warning("web back office %s: period %d not closed: %s", terminal_id, period_number, error)
        return reports

    def close_if_due(self, terminal_id: str) -> DayCloseReport | None:
        """Before a web transaction: close the terminal's open period if it holds a transaction of
        an earlier day; the close, or None if none was due. WebDayCloseError if it could not."""
        return self._close_one(terminal_id, earlier_day_only=True)

    @contextmanager
    def closed_around(self, terminal_id: str) -> Iterator[None]:
        """Around a web write: close_if_due before it (WebDayCloseError: the write is not taken);
        and, should the day have turned between that check and the write's answer, again after
        it, whatever became of the write. A write that reached the journal after midnight closed
        the day before in its own transaction, but one refused before its transaction (a decline
        decided on the way, a refusal at the portal) or failed with the database (96) closed
        nothing; the day before then stayed open until the next web write or the pass. The
        write's answer stands whatever that close does. Costs a clock read, and a query only
        when midnight came during the write."""
        checked_on = self._today()  # read before the check's own clock: a day turning within it counts
        self.close_if_due(terminal_id)
        try:
            yield
        finally:
            if self._today() != checked_on:
                self._close_after_write(terminal_id)

    def _close_after_write(self, terminal_id: str) -> None:
        try:
            self.close_if_due(terminal_id)
        except (WebDayCloseError, SQLAlchemyError) as error:  # the next web write or the pass makes it
            log.warning(
                "web back office %s: day before not closed after a write: %s", terminal_id, _told(error)
            )
        except Exception:  # the write's answer (money moved, maybe) must reach its caller all the same
            log.exception("web back office %s: day before not closed after a write", terminal_id)

    def _today(self) -> dt.date:
        return self._now().astimezone(self._zone).date()

    def close_now(self, terminal_id: str, period_number: int = 0) -> DayCloseReport | None:
        """The portal's close: the terminal's open period if it holds any transaction; the close,
        or None if it holds none. WebDayCloseError if it could not be closed now.

        `period_number` (0: whichever is open, for callers in this process; the portal requires
        one) names the period meant: once it is closed, its close is answered again and no other
        period is closed, so a close that timed out but landed, sent again after a web sale, does
        not cut the next period short. WebDayPeriodError if that period is not open yet."""
        return self._close_one(terminal_id, earlier_day_only=False, named_period=period_number)

    def _close_one(
        self, terminal_id: str, earlier_day_only: bool, named_period: int = 0
    ) -> DayCloseReport | None:
        problem = ""
        for _ in range(WEB_DAY_CLOSE_ATTEMPTS_MAX):
            due = self._due(terminal_id, earlier_day_only)
            open_period = due[0][1] if due else None
            if named_period and open_period != named_period:
                if not self._closed_already(terminal_id, named_period):
                    return None  # open, holding nothing
                period_number = named_period  # its close is found by its id, not made again
            elif open_period is None:
                return None
            else:
                period_number = open_period
            try:
                return self._close_day(terminal_id, close_id_of(period_number), period_number)
            except CLOSE_FAULTS as error:  # read the period again: another node may have closed it
                log.warning("web back office %s: period %d not closed: %s", terminal_id, period_number, error)
                problem = _told(error)
        raise WebDayCloseError(f"the web back office's day is not closed yet: {problem}")

    def open_period(self, terminal_id: str) -> int:
        """The web terminal's open period, as stored now."""
        query = select(terminals.c.period_number).where(terminals.c.terminal_id == terminal_id)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _closed_already(self, terminal_id: str, period_number: int) -> bool:
        """Whether the web terminal's period was closed (False: it is the open one);
        WebDayPeriodError if it is not open yet."""
        open_period = self.open_period(terminal_id)
        if period_number > open_period:
            raise WebDayPeriodError(
                f"period {period_number} of the web back office is not open yet: "
                f"its open period is {open_period}"
            )
        return period_number < open_period

    def _due(self, terminal_id: str = "", earlier_day_only: bool = True) -> list[tuple[str, int]]:
        """(terminal, open period) of web terminals whose open period holds a row (committed before
        today's midnight, if earlier_day_only); one terminal's, or every one's."""
        row, web = transactions.c, terminals.c
        held = [
            row.source == web.terminal_id,
            row.period_number == web.period_number,  # ix_transactions_period
            row.transaction_type != TOMBSTONE_TYPE,
        ]
        if earlier_day_only:
            today = self._now().astimezone(self._zone).date()
            held.append(row.created_at < midnight(today, self._zone))
        query = select(web.terminal_id, web.period_number).where(
            web.device_name.in_(SWITCH_DEVICE_NAMES), exists().where(and_(*held))
        )
        if terminal_id:
            query = query.where(web.terminal_id == terminal_id)
        query = query.order_by(web.terminal_id).limit(WEB_DAY_CLOSES_PER_PASS_MAX)
        with self._engine.connect() as conn:
            return [(str(found), int(period)) for found, period in conn.execute(query)]

    def _run(self) -> None:
        while not self._stopping.wait(self._wait_s()):
            try:
                self.close_due()
            except SQLAlchemyError as error:  # the database away: the next pass tries again
                log.warning("web back office day close pass failed: %s", error)
            except Exception:  # a thread of its own: a pass that ended here would never run again
                log.exception("web back office day close pass failed; the next pass tries again")

    def _wait_s(self) -> float:
        """Until the next pass: the interval, or just past the coming midnight if that is sooner."""
        now = self._now()
        tomorrow = now.astimezone(self._zone).date() + dt.timedelta(days=1)
        until_midnight_s = (midnight(tomorrow, self._zone) - now).total_seconds() + AFTER_MIDNIGHT_S
        return max(0.0, min(self._interval_s, until_midnight_s))


def _told(error: BaseException) -> str:
    """A close not made now, in words for the portal's user: a database error's text (its SQL) is
    for the log only."""
    if isinstance(error, SQLAlchemyError):
        return "the database failed"
    if isinstance(error, TimeoutError | pykka.Timeout):
        return "it took too long"
    if isinstance(error, pykka.ActorDeadError):
        return "the web terminal's worker stopped"
    return str(error)  # DayCloseError: its own words
