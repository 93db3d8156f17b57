"""Backoffice servicer: administration over gRPC, behind the admin token."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import threading
import zoneinfo
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from concurrent.futures import Executor
from contextlib import closing
from dataclasses import dataclass
from itertools import chain
from typing import Generic, NoReturn, TypeVar, cast

import grpc

from ops.grpc_interceptors import fault
from protocols import convert
from protocols.cardholder_service import id_field, stored_id_field, top_up_id_of
from protocols.convert import BadRequestError
from protocols.terminal_service import Context, RpcRefusedError, _abort, bearer
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from switch import programme_settings, report_export
from switch.admin import (
    AdminConflictError,
    AdminError,
    AdminStateError,
    AdminUnavailableError,
    EmployeeInfo,
    PlannedPayout,
    paid_in_this_cycle,
)
from switch.core import SwitchCore, utc_now
from switch.domain import reports
from switch.domain.card_rules import CardState, shown_status
from switch.domain.cards import CardStatus
from switch.domain.employees import OWNER
from switch.domain.ledger import LedgerRefusal
from switch.domain.programmes import Programme, ProgrammeKind, payout_cycle_start, payout_settlement_id
from switch.domain.quoting import quoted
from switch.domain.receipts import ReceiptLayout
from switch.domain.response_codes import ResponseCode
from switch.domain.top_ups import PSP_REFERENCE_LENGTH_MAX, TopUp, TopUpStatus, paid_problem
from switch.export_spool import Spool
from switch.location_changes import ChangeStatus, LocationChange
from switch.pins import CardPinError
from switch.receipts import ReceiptRefusedError
from switch.repayments import RepaymentAsked, record_repayment
from switch.store.repayments import Repayment
from switch.store.reports import ReportedTransaction, exported_pages, merchant_summary, transaction_report
from switch.store.repository import DAY_CLOSES_LISTED_DEFAULT, DAY_CLOSES_LISTED_MAX, TerminalInfo
from switch.store.schema import ID_LENGTH, REPAYMENT_REFERENCE_LENGTH, REPAYMENT_REQUEST_ID_LENGTH
from switch.top_ups import TopUpNotLoadedYetError

log = logging.getLogger(__name__)

T = TypeVar("T")
ADMIN_ACTOR = "backoffice"
ALREADY_PAID = "already paid out under this settlement id"
PAID_UNDER_ANOTHER_SETTLEMENT = "paid under another settlement in this cycle; waits for the next cycle"
PAYOUT_REFUSED = "the ledger refused the payout (the switch's log says why); settle again"
DIALECT_LENGTH_MAX = 20  # the longest is "excel-nl"
MERCHANT_LENGTH_MAX = 254  # an e-mail address's (merchants.email), longer than an id


@dataclass(frozen=True, slots=True)
class DueCycle:
    """A programme's payout cycle holding SettleDue's day; not_run_reason: why it is not run ("": it is)."""

    programme_id: str
    settlement_id: str
    not_run_reason: str


class BackofficeService(bo_grpc.BackofficeServicer):
    def __init__(self, core: SwitchCore, admin_token: str, blocking: Executor) -> None:
        self._core = core
        self._token = admin_token
        self._blocking = blocking  # the export's reads

    def _run(self, context: grpc.ServicerContext, action: Callable[[], T], psp_too: bool = False) -> T:
        """`psp_too`: the PSP's token opens the call as well as the admin token."""
        tokens = [self._token, self._core.settings.psp_token if psp_too else ""]
        given = bearer(context).encode()
        if not any(token and hmac.compare_digest(given, token.encode()) for token in tokens):
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong admin token")
        try:
            return action()
        except AdminStateError as error:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except AdminUnavailableError as error:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(error))
        except AdminConflictError as error:
            _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(error))
        except (AdminError, BadRequestError, reports.ReportQueryError) as error:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except LookupError as error:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(error))
        except report_export.ExportRefusedError as error:  # too many at once, or too large
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))

    def _card_view(self, state: CardState) -> bo.CardView:
        return card_view(state, self._core.today())

    def _card_id(self, ref: pb.CardRef, present: bool, field: str = "card") -> str:
        card_id = self._core.cards.card_id(convert.typed_card_number(ref, present, field))
        if card_id is None:
            raise LookupError(f"{field}: unknown card")
        return card_id

    def CreateProgramme(
        self, request: bo.CreateProgrammeRequest, context: grpc.ServicerContext
    ) -> bo.Programme:
        def action() -> bo.Programme:
            kind = {wire: kind for kind, wire in PROGRAMME_KINDS.items()}.get(request.kind)
            if kind is None:
                raise AdminError("kind must be GIFT or BENEFIT")
            copay = None
            if request.copay_denominator_minor:
                copay = (request.copay_numerator_minor, request.copay_denominator_minor)
            programme_id = self._core.admin.create_programme(
                request.name,
                kind,
                request.currency,
                request.card_prefix,
                balance_max_minor=request.balance_max_minor or 50_000,
                copay=copay,
                funder_name=request.funder_name,
                payout_interval_weeks=request.payout_interval_weeks or 4,
                card_validity_months=request.card_validity_months or 36,
                load_step_minor=request.load_step_minor or None,
            )
            return programme_view(self._core.store.programme(programme_id))

        return self._run(context, action)

    def SetLoadStep(self, request: bo.SetLoadStepRequest, context: grpc.ServicerContext) -> bo.Programme:
        def action() -> bo.Programme:
            programme = programme_settings.set_load_step(
                self._core, request.programme_id, request.load_step_minor
            )
            return programme_view(programme)

        return self._run(context, action)

    def CreateMerchant(self, request: bo.CreateMerchantRequest, context: grpc.ServicerContext) -> bo.Merchant:
        def action() -> bo.Merchant:
            merchant_id = self._core.admin.create_merchant(request.name, request.email, request.password)
            return bo.Merchant(merchant_id=merchant_id, name=request.name, email=request.email.lower())

        return self._run(context, action)

    def AddLocation(self, request: bo.AddLocationRequest, context: grpc.ServicerContext) -> bo.Location:
        return self._run(context, lambda: add_location_pb(self._core, request))

    def AddEmployee(self, request: bo.AddEmployeeRequest, context: grpc.ServicerContext) -> bo.Employee:
        return self._run(context, lambda: add_employee_pb(self._core, request))

    def ListEmployees(
        self, request: bo.ListEmployeesRequest, context: grpc.ServicerContext
    ) -> bo.EmployeeList:
        return self._run(context, lambda: list_employees_pb(self._core, request))

    def UpdateEmployee(self, request: bo.UpdateEmployeeRequest, context: grpc.ServicerContext) -> bo.Employee:
        return self._run(context, lambda: update_employee_pb(self._core, request))

    def JoinProgramme(self, request: bo.JoinProgrammeRequest, context: grpc.ServicerContext) -> bo.Merchant:
        def action() -> bo.Merchant:
            if problem := convert.missing_field(request, "merchant_id", "programme_id"):
                raise AdminError(problem)
            self._core.admin.join_programme(
                request.merchant_id, request.programme_id, request.commission_basis_points
            )
            return bo.Merchant(merchant_id=request.merchant_id, programme_ids=[request.programme_id])

        return self._run(context, action)

    def IssueCard(self, request: bo.IssueCardRequest, context: grpc.ServicerContext) -> bo.IssuedCard:
        def action() -> bo.IssuedCard:
            if not request.programme_id:
                raise AdminError("programme_id is missing")
            programme = self._core.store.programme(request.programme_id)
            load_minor = request.initial_load.amount_minor if request.HasField("initial_load") else 0
            if load_minor and request.initial_load.currency != programme.currency:
                raise AdminError(f"initial_load.currency must be {programme.currency}")
            request_id = request.request_id and convert.transaction_id(request.request_id, "request_id")
            card = self._core.admin.issue_card(request.programme_id, load_minor, request_id)
            state = self._core.store.card_state(card.card_id)
            return bo.IssuedCard(
                card_number=card.card_number, qr_payload=card.qr_payload, card=self._card_view(state)
            )

        return self._run(context, action)

    def GetCard(self, request: bo.CardRequest, context: grpc.ServicerContext) -> bo.CardView:
        return self._run(
            context,
            lambda: self._card_view(
                self._core.balance(self._card_id(request.card, request.HasField("card")))
            ),
        )

    def BlockCard(self, request: bo.BlockCardRequest, context: grpc.ServicerContext) -> bo.CardView:
        def action() -> bo.CardView:
            card_id = self._card_id(request.card, request.HasField("card"))
            state = self._core.set_card_status(
                card_id, CardStatus.blocked, request.reason or "blocked", ADMIN_ACTOR
            )
            return self._card_view(state)

        return self._run(context, action)

    def UnblockCard(self, request: bo.CardRequest, context: grpc.ServicerContext) -> bo.CardView:
        def action() -> bo.CardView:
            card_id = self._card_id(request.card, request.HasField("card"))
            state = self._core.set_card_status(card_id, CardStatus.active, "unblocked", ADMIN_ACTOR)
            return self._card_view(state)

        return self._run(context, action)

    def SetCardPin(self, request: bo.SetCardPinRequest, context: grpc.ServicerContext) -> bo.CardView:
        def action() -> bo.CardView:
            card_id = self._card_id(request.card, request.HasField("card"))
            try:
                pvv, pvv_key_id = self._core.pins.pvv_for_pin(card_id, request.pin)
            except CardPinError as error:
                raise AdminError(str(error)) from None
            return self._card_view(self._core.set_card_pin(card_id, pvv, pvv_key_id))

        return self._run(context, action)

    def ReplaceCard(
        self, request: bo.ReplaceCardRequest, context: grpc.ServicerContext
    ) -> bo.ReplaceCardResponse:
        def action() -> bo.ReplaceCardResponse:
            request_id = convert.transaction_id(request.request_id, "request_id")
            lost_id = self._card_id(request.lost_card, request.HasField("lost_card"), "lost_card")
            new_id = self._card_id(
                request.replacement_card, request.HasField("replacement_card"), "replacement_card"
            )
            transfer = self._core.replace_card(lost_id, new_id, request_id, ADMIN_ACTOR)
            return bo.ReplaceCardResponse(
                lost_card=self._card_view(transfer.lost),
                replacement_card=self._card_view(transfer.replacement),
                moved=pb.Amount(amount_minor=transfer.moved_minor, currency=transfer.lost.currency),
                journal_entry_id=str(transfer.entry_id or ""),
            )

        return self._run(context, action)

    def ListTerminals(
        self, request: bo.ListTerminalsRequest, context: grpc.ServicerContext
    ) -> bo.TerminalList:
        def action() -> bo.TerminalList:
            return bo.TerminalList(
                terminals=[terminal_view(t) for t in self._core.admin.list_terminals(request.merchant_id)]
            )

        return self._run(context, action)

    def DeactivateTerminal(
        self, request: bo.TerminalRequest, context: grpc.ServicerContext
    ) -> bo.TerminalView:
        def action() -> bo.TerminalView:
            if not request.terminal_id:
                raise AdminError("terminal_id is missing")
            self._core.deactivate_terminal(request.terminal_id)
            info = self._core.store.terminal(request.terminal_id)
            assert info is not None
            return terminal_view(info)

        return self._run(context, action)

    def ListDayCloses(
        self, request: bo.DayCloseListRequest, context: grpc.ServicerContext
    ) -> bo.DayCloseList:
        def action() -> bo.DayCloseList:
            if not request.terminal_id:
                raise AdminError("terminal_id is missing")
            if self._core.store.terminal(request.terminal_id) is None:
                raise LookupError(f"no terminal {quoted(request.terminal_id)}")
            return day_close_list(self._core, request)

        return self._run(context, action)

    def CheckLedger(self, request: bo.CheckLedgerRequest, context: grpc.ServicerContext) -> bo.LedgerCheck:
        def action() -> bo.LedgerCheck:
            check = self._core.admin.check_ledger()
            return bo.LedgerCheck(
                entries=check.entries,
                unbalanced_entries=check.unbalanced_entries,
                negative_card_balances=check.negative_card_balances,
                balance_mismatches=check.balance_mismatches,
                problems=list(check.problems),
                repayment_mismatches=check.repayment_mismatches,
            )

        return self._run(context, action)

    def Settle(self, request: bo.SettleRequest, context: grpc.ServicerContext) -> bo.SettleResponse:
        def action() -> bo.SettleResponse:
            if not request.programme_id:
                raise AdminError("programme_id is missing")
            if not request.settlement_id:
                raise AdminError("settlement_id is missing")
            return self._settle_now(request.programme_id, request.settlement_id)

        return self._run(context, action)

    def SettleDue(self, request: bo.SettleDueRequest, context: grpc.ServicerContext) -> bo.SettleDueResponse:
        def action() -> bo.SettleDueResponse:
            if request.as_of_date:
                try:
                    day = reports.day_of("as_of_date", request.as_of_date)
                except reports.ReportQueryError as error:
                    raise AdminError(str(error)) from None
            else:
                day = dt.datetime.now(self._core.report_zone).date()
            cycles = self._due_cycles(day)
            response = bo.SettleDueResponse()
            for cycle in cycles:
                settlement = bo.ProgrammeSettlement(
                    programme_id=cycle.programme_id,
                    settlement_id=cycle.settlement_id,
                    not_run_reason=cycle.not_run_reason,
                )
                if not cycle.not_run_reason:
                    plans = self._core.admin.cycle_settlement_writes(cycle.programme_id, cycle.settlement_id)
                    settlement.result.CopyFrom(self._settle(cycle.programme_id, plans))
                response.settlements.append(settlement)
            return response

        return self._run(context, action)

    def _settle_now(self, programme_id: str, settlement_id: str) -> bo.SettleResponse:
        """Pay what is owed now under the operator's settlement id, as today's payout cycle's payout
        of each merchant it pays (Admin.manual_settlement_writes)."""
        interval = self._core.store.programme(programme_id).payout_interval_weeks
        cycle_id = payout_settlement_id(dt.datetime.now(self._core.report_zone).date(), interval)
        return self._settle(
            programme_id, self._core.admin.manual_settlement_writes(programme_id, settlement_id, cycle_id)
        )

    def _due_cycles(self, day: dt.date) -> list[DueCycle]:
        """Each programme's payout cycle holding `day`, and why it is not run if it is not: a cycle
        already over that never ran for the programme (as one created since) would pay today's
        balances under the past cycle's id, a second payout in today's cycle; so would one a later
        cycle's run followed. AdminError for a day after today, AdminStateError when no programme
        runs that day's cycle, before anything is paid."""
        today = dt.datetime.now(self._core.report_zone).date()
        if day > today:
            # Its run would pay today's balances under a cycle not begun: none in today's cycle
            raise AdminError(
                f"as_of_date {day.isoformat()} is after today ({today.isoformat()} on the switch's "
                "report clock): a payout cycle is paid on its days, not before"
            )
        cycles = []
        for programme_id in self._core.admin.programme_ids():
            interval = self._core.store.programme(programme_id).payout_interval_weeks
            settlement_id = payout_settlement_id(day, interval)
            over = payout_cycle_start(day, interval) < payout_cycle_start(today, interval)
            reason = ""
            if over and not self._core.admin.cycle_ran(programme_id, settlement_id):
                reason = self._never_ran_reason(programme_id, day, today, interval)
            elif over and (later := self._core.admin.later_cycle_run(programme_id, settlement_id)):
                # What the run was owed and not paid was still on the payable at the later run, which
                # paid it: run again, this one would pay what was redeemed since, a second payout
                reason = (
                    f"payout cycle {settlement_id} is over and payout cycle {later} ran since: "
                    "what was owed at its run and not paid was owed at that one's"
                )
            cycles.append(DueCycle(programme_id, settlement_id, reason))
        if cycles and all(cycle.not_run_reason for cycle in cycles):
            first = cycles[0]
            raise AdminStateError(
                f"as_of_date {day.isoformat()}: no programme runs its payout cycle holding it "
                f"(programme {first.programme_id}: {first.not_run_reason})"
            )
        return cycles

    def _never_ran_reason(self, programme_id: str, day: dt.date, today: dt.date, interval: int) -> str:
        """Why a past cycle with no run of the programme is not run: the programme was created after
        the cycle was over, or its payout never ran then; a programme stored before its creation
        time was kept cannot tell, and says so."""
        settlement_id, today_id = payout_settlement_id(day, interval), payout_settlement_id(today, interval)
        paid_today = f"what is owed now is paid in today's cycle ({today_id})"
        created_at = self._core.admin.programme_created_at(programme_id)
        if created_at is None:
            return (
                f"payout cycle {settlement_id} is over and has no run of this programme (created on a "
                f"day not recorded: it may not have existed then); {paid_today}"
            )
        created_on = created_at.astimezone(self._core.report_zone).date()
        cycle_end = payout_cycle_start(day, interval) + dt.timedelta(weeks=interval)
        if created_on >= cycle_end:
            return (
                f"payout cycle {settlement_id} was over when this programme was created "
                f"({created_on.isoformat()}); {paid_today}"
            )
        return f"payout cycle {settlement_id} is over and never ran for this programme; {paid_today}"

    def _settle(self, programme_id: str, plans: list[PlannedPayout]) -> bo.SettleResponse:
        """Write the planned payouts (each once per settlement id); list every one not made, and why."""
        currency = self._core.store.programme(programme_id).currency
        response = bo.SettleResponse()
        for plan in plans:
            reason, waits = plan.reason, plan.waits
            if plan.write is not None:
                reason, waits = self._written(plan)
            if reason:
                # A merchant that redeemed since its cycle's payout ran waits every day until the next;
                # one paid at the run is told "already paid" every day: the daily answer, not a fault.
                level = (
                    logging.INFO if waits else logging.DEBUG if reason == ALREADY_PAID else logging.WARNING
                )
                log.log(level, "payout to %s not made: %s", plan.merchant_id, reason)
                response.skipped.append(
                    bo.SkippedPayout(
                        merchant_id=plan.merchant_id,
                        gross=pb.Amount(amount_minor=plan.gross_minor, currency=currency),
                        reason=reason,
                    )
                )
                continue
            response.payouts.append(
                bo.Payout(
                    merchant_id=plan.merchant_id,
                    gross=pb.Amount(amount_minor=plan.gross_minor, currency=currency),
                    commission=pb.Amount(amount_minor=plan.commission_minor, currency=currency),
                    net=pb.Amount(amount_minor=plan.gross_minor - plan.commission_minor, currency=currency),
                )
            )
        return response

    def _written(self, plan: PlannedPayout) -> tuple[str, bool]:
        """Write the planned payout: ("", False) if made, else why not and whether the merchant just
        waits for the next cycle. Read again only once refused."""
        assert plan.write is not None
        result = self._core.write_now(plan.write)
        if result.ok:
            return "", False
        # A run beside it paid first: its debit of the payable is refused before its key is.
        if result.conflict or self._core.admin.payout_made(plan):
            return ALREADY_PAID, False
        # A Settle paid the merchant in the cycle after this run read no mark: the ordinary answer
        # to a merchant a Settle paid, not a fault of the ledger.
        mark = plan.write.cycle_payout
        paid_by = self._core.admin.cycle_paid_by(mark) if mark is not None and not mark.paid_by else ""
        if paid_by:
            return paid_in_this_cycle(paid_by), True
        if result.refusal is LedgerRefusal.paid_under_another_settlement:  # its mark not read back
            return PAID_UNDER_ANOTHER_SETTLEMENT, True
        if result.refusal is not None:  # the ledger's own words name accounts and settlement ids
            log.warning("payout to %s refused by the ledger: %s", plan.merchant_id, result.problem)
            return PAYOUT_REFUSED, False
        return result.problem, False  # the writer's or database's ("journal stopped"): no ids

    def RecordRepayment(
        self, request: bo.RecordRepaymentRequest, context: grpc.ServicerContext
    ) -> bo.Repayment:
        return self._run(context, lambda: record_repayment_pb(self._core, request))

    def ListTransactions(
        self, request: bo.TransactionReportRequest, context: grpc.ServicerContext
    ) -> bo.TransactionReport:
        return self._run(context, lambda: transaction_report_pb(self._core, request))

    async def ExportTransactions(
        self, request: bo.TransactionExportRequest, context: Context
    ) -> AsyncIterator[bo.CsvChunk]:
        def export(step_context: grpc.ServicerContext) -> Iterator[bo.CsvChunk]:
            def action() -> Iterator[bo.CsvChunk]:
                return transaction_export_pb(self._core, request, call_active=step_context.is_active)

            return self._run(step_context, action)

        duration_max_s = self._core.settings.exports_duration_max_s
        async for chunk in stream_in_steps(self._blocking, context, export, duration_max_s):
            yield chunk

    def GetMerchantSummary(
        self, request: bo.MerchantSummaryRequest, context: grpc.ServicerContext
    ) -> bo.MerchantSummary:
        return self._run(context, lambda: merchant_summary_pb(self._core, request))

    def SetReceiptLayout(self, request: bo.ReceiptLayout, context: grpc.ServicerContext) -> bo.ReceiptLayout:
        return self._run(context, lambda: set_receipt_layout_pb(self._core, request))

    def ListLocations(
        self, request: bo.ListLocationsRequest, context: grpc.ServicerContext
    ) -> bo.LocationList:
        return self._run(context, lambda: locations_pb(self._core, request.merchant_id))

    def SetLocationLogo(self, request: bo.LocationLogo, context: grpc.ServicerContext) -> bo.Location:
        return self._run(context, lambda: set_location_logo_pb(self._core, request))

    def AskLocationChange(
        self, request: bo.AskLocationChangeRequest, context: grpc.ServicerContext
    ) -> bo.LocationChange:
        return self._run(context, lambda: ask_location_change_pb(self._core, request, ADMIN_ACTOR))

    def ListLocationChanges(
        self, request: bo.ListLocationChangesRequest, context: grpc.ServicerContext
    ) -> bo.LocationChangeList:
        return self._run(context, lambda: location_changes_pb(self._core, request))

    def DecideLocationChange(
        self, request: bo.DecideLocationChangeRequest, context: grpc.ServicerContext
    ) -> bo.LocationChange:
        def action() -> bo.LocationChange:
            if not request.change_id:
                raise AdminError("change_id is missing")
            decided = self._core.location_changes.decide(request.change_id, request.approve, request.reason)
            return location_change_pb(decided)

        return self._run(context, action)

    def ConfirmTopUp(self, request: bo.ConfirmTopUpRequest, context: grpc.ServicerContext) -> bo.TopUpRecord:
        def action() -> bo.TopUpRecord:
            top_up_id = top_up_id_of(request.top_up_id)
            # The PSP's own reference, not typed by a person: some PSPs give 16 digits, which pass the card
            # number test one time in ten (docs/decisions.md), so it is not refused for that shape.
            psp_reference = id_field("psp_reference", request.psp_reference, PSP_REFERENCE_LENGTH_MAX)
            amount_paid = convert.amount(request.amount_paid, request.HasField("amount_paid"), "amount_paid")
            malformed = paid_problem(amount_paid)
            if malformed is not None:
                raise BadRequestError(malformed)
            try:
                top_up = self._core.top_ups.confirm(top_up_id, psp_reference, amount_paid)
            except TopUpNotLoadedYetError as error:
                _abort(context, grpc.StatusCode.UNAVAILABLE, f"{error}; send the confirmation again")
            return top_up_record(top_up, utc_now())

        return self._run(context, action, psp_too=True)

    def ListTopUps(self, request: bo.ListTopUpsRequest, context: grpc.ServicerContext) -> bo.TopUpList:
        def action() -> bo.TopUpList:
            status = None
            if request.status:
                try:
                    status = TopUpStatus(request.status)
                except ValueError:
                    named = ", ".join(each.value for each in TopUpStatus)
                    raise AdminError(f"status {quoted(request.status)} is not one of {named}") from None
            now = utc_now()
            return bo.TopUpList(top_ups=[top_up_record(t, now) for t in self._core.top_ups.listed(status)])

        return self._run(context, action)

    def MarkTopUpRefunded(
        self, request: bo.MarkTopUpRefundedRequest, context: grpc.ServicerContext
    ) -> bo.TopUpRecord:
        return self._run(context, lambda: refunded_pb(self._core, request))


PROGRAMME_KINDS = {
    ProgrammeKind.gift: bo.PROGRAMME_KIND_GIFT,
    ProgrammeKind.benefit: bo.PROGRAMME_KIND_BENEFIT,
}


def programme_view(programme: Programme) -> bo.Programme:
    return bo.Programme(
        programme_id=programme.programme_id,
        name=programme.name,
        kind=PROGRAMME_KINDS[programme.kind],
        currency=programme.currency,
        card_prefix=programme.card_prefix,
        load_step_minor=programme.load_step_minor or 0,
    )


def refunded_pb(core: SwitchCore, request: bo.MarkTopUpRefundedRequest) -> bo.TopUpRecord:
    top_up_id = top_up_id_of(request.top_up_id)
    reference = id_field(
        "refund_reference", request.refund_reference, PSP_REFERENCE_LENGTH_MAX
    )  # the PSP's, as above
    return top_up_record(core.top_ups.mark_refunded(top_up_id, reference), utc_now())


def top_up_record(top_up: TopUp, now: dt.datetime) -> bo.TopUpRecord:
    def money(amount_minor: int) -> pb.Amount:
        return pb.Amount(amount_minor=amount_minor, currency=top_up.currency)

    record = bo.TopUpRecord(
        top_up_id=top_up.top_up_id,
        card_masked=top_up.card_masked,
        programme_id=top_up.programme_id,
        amount=money(top_up.amount_minor),
        holder_pays=money(top_up.holder_part_minor),
        funder_pays=money(top_up.funder_part_minor),
        status=top_up.shown_status(now).value,
        reason=top_up.reason,
        psp_reference=top_up.psp_reference,
        created_at=top_up.created_at.isoformat(),
        expires_at=top_up.expires_at.isoformat(),
        confirmed_at=top_up.confirmed_at.isoformat() if top_up.confirmed_at else "",
        refund_reference=top_up.refund_reference,
    )
    if top_up.psp_reference:
        paid = top_up.amount_paid
        record.amount_paid.CopyFrom(pb.Amount(amount_minor=paid.amount_minor, currency=paid.currency))
    return record


def set_receipt_layout_pb(core: SwitchCore, request: bo.ReceiptLayout) -> bo.ReceiptLayout:
    """Header, footer and logo of a merchant's receipts (backoffice and portal)."""
    if not request.merchant_id:
        raise AdminError("merchant_id is missing")
    try:
        layout = core.receipts.set_layout(
            request.merchant_id,
            ReceiptLayout(request.header, request.footer, request.logo_png),
            remove_logo=request.remove_logo,
        )
    except ReceiptRefusedError as refusal:
        if refusal.kind == "not_found":
            raise LookupError(str(refusal)) from None
        raise AdminError(str(refusal)) from None
    return receipt_layout_pb(request.merchant_id, layout)


def locations_pb(core: SwitchCore, merchant_id: str) -> bo.LocationList:
    if not merchant_id:
        raise AdminError("merchant_id is missing")
    listed = core.admin.list_locations(merchant_id)
    pending = {
        change.location_id: location_change_pb(change)
        for change in core.location_changes.list(merchant_id, ChangeStatus.pending)
    }
    return bo.LocationList(
        locations=[
            bo.Location(
                location_id=info.location_id,
                merchant_id=info.merchant_id,
                name=info.name,
                address=info.address,
                has_logo=info.has_logo,
                terminals=info.terminals,
                pending_change=pending.get(info.location_id),
            )
            for info in listed
        ]
    )


def ask_location_change_pb(
    core: SwitchCore,
    request: bo.AskLocationChangeRequest,
    asked_by: str,
    asked_by_employee_id: str | None = None,
    asked_by_login_changes: int | None = None,
) -> bo.LocationChange:
    """A change of a location's name or address, pending the operator's check (backoffice and portal)."""
    if problem := convert.missing_field(request, "merchant_id", "location_id"):
        raise AdminError(problem)
    change = core.location_changes.ask(
        request.merchant_id,
        request.location_id,
        request.name,
        request.address,
        asked_by,
        asked_by_employee_id,
        asked_by_login_changes,
    )
    return location_change_pb(change)


def location_changes_pb(core: SwitchCore, request: bo.ListLocationChangesRequest) -> bo.LocationChangeList:
    if request.merchant_id and core.store.merchant_name(request.merchant_id) is None:
        raise LookupError(f"merchant_id {quoted(request.merchant_id)}: no such merchant")
    changes = core.location_changes.list(request.merchant_id, request.status)
    return bo.LocationChangeList(changes=[location_change_pb(change) for change in changes])


def location_change_pb(change: LocationChange) -> bo.LocationChange:
    return bo.LocationChange(
        change_id=change.change_id,
        location_id=change.location_id,
        merchant_id=change.merchant_id,
        name=change.name,
        address=change.address,
        from_name=change.from_name,
        from_address=change.from_address,
        status=change.status.value,
        asked_by=change.asked_by,
        asked_at=change.asked_at.isoformat(timespec="seconds"),
        decided_at=change.decided_at.isoformat(timespec="seconds") if change.decided_at else "",
        reason=change.reason,
    )


def add_location_pb(core: SwitchCore, request: bo.AddLocationRequest) -> bo.Location:
    """A new location of a merchant (backoffice and portal), as listed now."""
    if not request.merchant_id:
        raise AdminError("merchant_id is missing")
    location_id = core.admin.add_location(request.merchant_id, request.name, request.address)
    listed = locations_pb(core, request.merchant_id).locations
    return next(location for location in listed if location.location_id == location_id)


def set_location_logo_pb(core: SwitchCore, request: bo.LocationLogo) -> bo.Location:
    """A location's own receipt logo set or removed (backoffice and portal); the location now."""
    if problem := convert.missing_field(request, "merchant_id", "location"):
        raise AdminError(problem)
    try:
        core.receipts.set_location_logo(
            request.merchant_id, request.location, request.logo_png, remove=request.remove_logo
        )
    except ReceiptRefusedError as refusal:
        if refusal.kind == "not_found":
            raise LookupError(str(refusal)) from None
        raise AdminError(str(refusal)) from None
    listed = locations_pb(core, request.merchant_id).locations
    return next(location for location in listed if location.name == request.location)


def receipt_layout_pb(merchant_id: str, layout: ReceiptLayout) -> bo.ReceiptLayout:
    return bo.ReceiptLayout(
        merchant_id=merchant_id,
        header=layout.header,
        footer=layout.footer,
        logo_png=layout.logo_png,
        has_logo=bool(layout.logo_png),
    )


def add_employee_pb(core: SwitchCore, request: bo.AddEmployeeRequest, by_role: str = OWNER) -> bo.Employee:
    """A new user of a merchant with a 4-digit PIN (backoffice and portal; `by_role` is the
    portal login's role)."""
    role = request.role or "cashier"
    core.admin.add_employee(
        request.merchant_id,
        request.employee_number,
        request.name,
        request.pin,
        role,
        email=request.email,
        password=request.password,
        by_role=by_role,
    )
    return employee_pb(core.admin.employee(request.merchant_id, request.employee_number))


def list_employees_pb(core: SwitchCore, request: bo.ListEmployeesRequest) -> bo.EmployeeList:
    if not request.merchant_id:
        raise AdminError("merchant_id is missing")
    return bo.EmployeeList(employees=[employee_pb(e) for e in core.admin.list_employees(request.merchant_id)])


def update_employee_pb(
    core: SwitchCore, request: bo.UpdateEmployeeRequest, by_role: str = OWNER
) -> bo.Employee:
    if problem := convert.missing_field(request, "merchant_id", "employee_number"):
        raise AdminError(problem)
    updated = core.admin.update_employee(
        request.merchant_id,
        request.employee_number,
        active=request.active if request.HasField("active") else None,
        pin=request.pin,
        role=request.role,
        name=request.name,
        email=request.email,
        password=request.password,
        by_role=by_role,
    )
    return employee_pb(updated)


def employee_pb(employee: EmployeeInfo) -> bo.Employee:
    """Never the PIN, the password or their hashes."""
    return bo.Employee(
        employee_id=employee.employee_id,
        merchant_id=employee.merchant_id,
        employee_number=employee.employee_number,
        name=employee.name,
        role=employee.role,
        active=employee.active,
        locked_until=employee.locked_until.isoformat(timespec="seconds") if employee.locked_until else "",
        email=employee.email,
        portal_login=employee.portal_login,
    )


def report_query_of(core: SwitchCore, request: bo.TransactionReportRequest) -> reports.ReportQuery:
    """The query a report request asks for; ReportQueryError names a bad field."""
    # Ids are checked for shape before they are looked up: an unknown one is quoted back whole.
    for field, value in (("merchant_id", request.merchant_id), ("terminal_id", request.terminal_id)):
        if value:
            _report_id(field, value)
    for location_id in request.location_ids:
        if location_id:  # an empty one has its own answer
            _report_id("location_ids", location_id)
    return reports.report_query(
        request.from_date,
        request.to_date,
        request.time_zone,
        default_zone=core.report_zone,
        merchant_id=request.merchant_id,
        terminal_id=request.terminal_id,
        location_ids=request.location_ids,
        types=request.types,
        payment_methods=request.payment_methods,
        statuses=request.statuses,
        page_size=request.page_size,
        page_token=request.page_token,
    )


def _report_id(field: str, value: str) -> None:
    try:
        id_field(field, value, ID_LENGTH)
    except BadRequestError as error:
        raise reports.ReportQueryError(str(error)) from None


def day_close_list(core: SwitchCore, request: bo.DayCloseListRequest) -> bo.DayCloseList:
    """A page of the terminal's stored closes (backoffice and portal); AdminError on a bad page."""
    if not 0 <= request.page_size <= DAY_CLOSES_LISTED_MAX:
        raise AdminError(
            f"page_size {request.page_size}: it must be between 1 and {DAY_CLOSES_LISTED_MAX} "
            f"(0: {DAY_CLOSES_LISTED_DEFAULT})"
        )
    if request.before_sequence_number < 0:
        raise AdminError("before_sequence_number is negative: send a page's next_before_sequence_number")
    page_size = request.page_size or DAY_CLOSES_LISTED_DEFAULT
    page = core.store.day_close_page(request.terminal_id, page_size, request.before_sequence_number)
    return bo.DayCloseList(
        reports=[convert.day_close_report(r) for r in page.reports],
        next_before_sequence_number=page.next_before_sequence_number,
    )


def transaction_report_pb(core: SwitchCore, request: bo.TransactionReportRequest) -> bo.TransactionReport:
    """The report a request asks for (backoffice and portal); ReportQueryError or LookupError."""
    query = report_query_of(core, request)
    report = transaction_report(core.store.engine, query)
    return bo.TransactionReport(
        transactions=[reported_transaction(t, query.zone) for t in report.transactions],
        totals=[
            bo.ReportTotal(
                transaction_type=t.transaction_type,
                payment_method=t.payment_method,
                status=t.status,
                count=t.count,
                approved=pb.Amount(amount_minor=t.approved_minor, currency=t.currency),
                moved_nothing=t.moved_nothing,
            )
            for t in report.totals
        ],
        next_page_token=reports.page_token(report.next_after),
        time_zone=query.zone.key,
        from_date=query.first_day.isoformat(),
        to_date=query.last_day.isoformat(),
    )


def transaction_export_pb(
    core: SwitchCore,
    request: bo.TransactionExportRequest,
    dialect_default: report_export.CsvDialect = report_export.CsvDialect.rfc4180,
    call_active: Callable[[], bool] = lambda: True,
) -> Iterator[bo.CsvChunk]:
    """The export a request asks for (backoffice and portal), from one snapshot of the database;
    spooling stops at the next page once call_active() is False (the call ended meanwhile).

    The request is checked and the whole export read into a spool before this returns, so that a
    refused export (ReportQueryError, LookupError, ExportTooLargeError, ExportSpoolFullError) or
    one the database fails is refused before its first line, and the snapshot ends before the
    client reads.
    """
    if len(request.dialect) > DIALECT_LENGTH_MAX:  # quoted back whole when it is not a dialect
        raise reports.ReportQueryError(f"dialect is longer than {DIALECT_LENGTH_MAX} characters")
    try:
        dialect = report_export.dialect_named(request.dialect) if request.dialect else dialect_default
    except ValueError as error:
        raise reports.ReportQueryError(str(error)) from None
    if request.report.page_token:
        raise reports.ReportQueryError("report.page_token: an export is never paged; leave it empty")
    query = report_query_of(core, request.report)
    core.export_slots.take_nowait()
    try:
        spool = _spooled(core, query, dialect, call_active)
    except BaseException:
        core.export_slots.give_back()
        raise
    return _export_chunks(core, spool)


def _spooled(
    core: SwitchCore,
    query: reports.ReportQuery,
    dialect: report_export.CsvDialect,
    call_active: Callable[[], bool],
) -> Spool:
    """The export's chunks, read from one snapshot into a spool as fast as the database gives them:
    the snapshot ends here, not when the client has read it all (on SQLite a read transaction held
    for the client kept the WAL from being checkpointed past it, up to the export's 15 minutes)."""
    settings = core.settings
    spool = Spool(settings.data_dir, settings.export_spool_bytes_max, settings.export_disk_free_min_bytes)
    try:
        with closing(exported_pages(core.store.engine, query)) as pages:
            first = next(pages)  # an unknown merchant or terminal is refused here (LookupError)
            try:
                chunk_bytes_max = settings.export_chunk_bytes_max
                for number, page in enumerate(chain([first], pages)):
                    if not call_active():  # a spool no one will read: end the snapshot now
                        raise RpcRefusedError(grpc.StatusCode.CANCELLED, "the export's call ended")
                    _spool_page(spool, page, query.zone, dialect, chunk_bytes_max, first=number == 0)
            except (report_export.ExportRefusedError, RpcRefusedError):
                raise
            except Exception as error:
                raise report_export.ExportFaultError("the export could not be spooled") from error
    except BaseException:
        spool.close()
        raise
    return spool


def _spool_page(
    spool: Spool,
    page: tuple[ReportedTransaction, ...],
    zone: zoneinfo.ZoneInfo,
    dialect: report_export.CsvDialect,
    chunk_bytes_max: int,
    first: bool,
) -> None:
    before = report_export.header(dialect) if first else b""  # the first page comes even when empty
    spool.write_all(report_export.chunks(page, zone, dialect, chunk_bytes_max, before))


def _export_chunks(core: SwitchCore, spool: Spool) -> Iterator[bo.CsvChunk]:
    """The spool's chunks; the spool and the export's slot are given back at the end, or when the
    call ends early (the client cancelled or its deadline passed: stream_in_steps closes this)."""
    try:
        for chunk in spool.chunks():
            yield bo.CsvChunk(csv=chunk)
    finally:
        spool.close()
        core.export_slots.give_back()


class _StepContext:
    """A call's context as the synchronous servicer code sees it in a step of stream_in_steps: the
    call's metadata, whether it is still on; an abort raises RpcRefusedError, which the event loop
    ends the call with."""

    def __init__(self, context: Context, ended: threading.Event) -> None:
        self._context = context
        self._ended = ended

    def is_active(self) -> bool:
        return not self._ended.is_set()

    def invocation_metadata(self) -> object:
        return self._context.invocation_metadata()

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise RpcRefusedError(code, details)


class _Steps(Generic[T]):
    """A stream's steps, one at a time; closing it waits for a step that is running."""

    def __init__(self, items: Generator[T]) -> None:
        self._items = items
        self._lock = threading.Lock()

    def next(self) -> T | None:
        with self._lock:
            return next(self._items, None)

    def close(self) -> None:
        with self._lock:
            self._items.close()


async def stream_in_steps(
    blocking: Executor,
    context: Context,
    start: Callable[[grpc.ServicerContext], Iterator[T]],
    duration_max_s: float,
    rpc: str = "ExportTransactions",
) -> AsyncIterator[T]:
    """The items of a synchronous stream, each step (`start` included) in a thread of `blocking`,
    the stream closed when the call ends however it ends: finished, refused, cancelled, past its
    deadline or past duration_max_s (an export then gives back its slot, connection and snapshot).

    Not a synchronous generator handler: grpc.aio (1.85) runs one in a thread that, once the client
    has gone, waits for good to hand over its next item and never closes the generator.
    """

    ended = threading.Event()  # a long step (an export's spooling) looks, and stops early

    def items() -> Generator[T]:
        yield from start(cast(grpc.ServicerContext, _StepContext(context, ended)))

    steps = _Steps(items())
    loop = asyncio.get_running_loop()
    call = asyncio.current_task()
    assert call is not None, "grpc.aio runs a call's handler in a task"

    def too_long() -> None:
        # A client that stopped reading leaves a write pending on a full window: the status goes
        # out once it reads again, and the call's task ends now (and with it the stream: `close`).
        details = f"the export took longer than the {duration_max_s:g} s an export may take"
        ending = loop.create_task(_end_with(context, grpc.StatusCode.DEADLINE_EXCEEDED, details))
        _ENDING.add(ending)  # held until done: the loop keeps only a weak reference to a task
        ending.add_done_callback(_ENDING.discard)
        call.cancel()

    timer = loop.call_later(duration_max_s, too_long)

    def close(_context: object) -> None:
        ended.set()
        timer.cancel()
        try:
            loop.run_in_executor(blocking, steps.close)
        except RuntimeError:  # the server is stopping and its pool takes no more work
            steps.close()

    context.add_done_callback(close)  # type: ignore[arg-type]  # grpc-stubs: a class with __call__
    while True:
        try:
            item = await loop.run_in_executor(blocking, steps.next)
        except RpcRefusedError as refusal:
            await context.abort(refusal.code, refusal.details)
            raise AssertionError("abort returns by raising") from None
        except Exception as error:  # a fault of ours, told as a single-reply call tells it (EdgeInterceptor)
            await context.abort(*fault(rpc, error))
            raise AssertionError("abort returns by raising") from None
        if item is None:
            return
        yield item


_ENDING: set[asyncio.Task[None]] = set()  # calls' statuses waiting for their clients to read


async def _end_with(context: Context, code: grpc.StatusCode, details: str) -> None:
    try:
        await context.abort(code, details)
    except grpc.aio.AbortError:
        pass  # how abort returns
    except Exception:  # the call ended meanwhile (the client went, or the stream finished)
        log.debug("a call ended before its status %s could be sent", code.name, exc_info=True)


def merchant_summary_pb(core: SwitchCore, request: bo.MerchantSummaryRequest) -> bo.MerchantSummary:
    """A merchant's dashboard (backoffice and portal); AdminError, ReportQueryError or LookupError."""
    if not request.merchant_id:
        raise AdminError("merchant_id is missing")
    query = reports.report_query(
        request.from_date,
        request.to_date,
        request.time_zone,
        default_zone=core.report_zone,
        merchant_id=request.merchant_id,
    )
    summary = merchant_summary(core.store.engine, query)
    return bo.MerchantSummary(
        merchant_id=summary.merchant_id,
        merchant_name=summary.merchant_name,
        from_date=query.first_day.isoformat(),
        to_date=query.last_day.isoformat(),
        time_zone=query.zone.key,
        programmes=[
            bo.ProgrammeSummary(
                programme_id=p.programme_id,
                name=p.name,
                commission_basis_points=p.commission_basis_points,
                payout_interval_weeks=p.payout_interval_weeks,
                redemptions=p.redemptions,
                cards_redeemed=p.cards_redeemed,
                redeemed=pb.Amount(amount_minor=p.redeemed_minor, currency=p.currency),
                owed=pb.Amount(amount_minor=p.owed_minor, currency=p.currency),
                to_transfer=pb.Amount(amount_minor=p.to_transfer_minor, currency=p.currency),
            )
            for p in summary.programmes
        ],
        payouts=[
            bo.PayoutMade(
                programme_id=p.programme_id,
                settlement_id=p.settlement_id,
                time=p.made_at.astimezone(query.zone).isoformat(timespec="seconds"),
                gross=pb.Amount(amount_minor=p.gross_minor, currency=p.currency),
                commission=pb.Amount(amount_minor=p.commission_minor, currency=p.currency),
                net=pb.Amount(amount_minor=p.net_minor, currency=p.currency),
            )
            for p in summary.payouts
        ],
        repayments=[repayment_pb(r, query.zone) for r in summary.repayments],
    )


def repayment_pb(repayment: Repayment, zone: dt.tzinfo) -> bo.Repayment:
    record = repayment.record
    return bo.Repayment(
        request_id=record.request_id,
        merchant_id=record.merchant_id,
        programme_id=record.programme_id,
        amount=pb.Amount(amount_minor=record.amount_minor, currency=record.currency),
        reference=record.reference,
        journal_entry_id=str(repayment.entry_id),
        time=repayment.recorded_at.astimezone(zone).isoformat(timespec="seconds"),
        cleared=pb.Amount(amount_minor=repayment.cleared_minor, currency=record.currency),
        commission=pb.Amount(amount_minor=repayment.commission_minor, currency=record.currency),
    )


def record_repayment_pb(core: SwitchCore, request: bo.RecordRepaymentRequest) -> bo.Repayment:
    """The operator's record of a merchant's bank transfer back (switch/repayments.py)."""
    asked = RepaymentAsked(
        request_id=stored_id_field("request_id", request.request_id, REPAYMENT_REQUEST_ID_LENGTH),
        merchant=id_field("merchant", request.merchant, MERCHANT_LENGTH_MAX),
        programme_id=id_field("programme_id", request.programme_id, ID_LENGTH),
        amount=convert.amount(request.amount, request.HasField("amount")),
        reference=stored_id_field("reference", request.reference, REPAYMENT_REFERENCE_LENGTH),
    )
    repayment = record_repayment(core.store.engine, core.write_now, asked)
    return repayment_pb(repayment, core.report_zone)


def reported_transaction(row: ReportedTransaction, zone: zoneinfo.ZoneInfo) -> bo.ReportedTransaction:
    return bo.ReportedTransaction(
        transaction_id=row.transaction_id,
        terminal_id=row.source,
        device_name=row.device_name,
        location_id=row.location_id,
        location_name=row.location_name,
        merchant_id=row.merchant_id,
        time=row.created_at.astimezone(zone).isoformat(timespec="seconds"),
        transaction_type=row.transaction_type,
        payment_method=row.payment_method,
        status=row.status,
        response_code=ResponseCode[row.result].iso_code,
        requested=pb.Amount(amount_minor=row.requested_minor, currency=row.currency),
        approved=pb.Amount(amount_minor=row.approved_minor, currency=row.currency),
        card_masked=row.card_masked,
        authorization_code=row.authorization_code,
        original_transaction_id=row.original_transaction_id,
        period_number=row.period_number,
    )


def card_view(state: CardState, today: dt.date) -> bo.CardView:
    return bo.CardView(
        card_id=state.card_id,
        card_masked=state.masked,
        programme_id=state.programme.programme_id,
        status=shown_status(state.status, state.expiry, today),
        expiry_date=state.expiry.isoformat(),
        balance=pb.Amount(amount_minor=state.balance_minor, currency=state.currency),
    )


def terminal_view(info: TerminalInfo) -> bo.TerminalView:
    return bo.TerminalView(
        terminal_id=info.terminal_id,
        merchant_id=info.merchant_id,
        location=info.location_name,
        device_name=info.device_name,
        active=info.active,
        period_number=info.period_number,
        activated_at=info.activated_at.isoformat(),
    )
