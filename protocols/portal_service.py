"""Portal servicer: a signed-in merchant's (or user's) own report, dashboard, devices and day closes."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

import grpc

from actors.reply import ReplyTimeoutError
from protocols import convert
from protocols.backoffice_service import (
    add_employee_pb,
    add_location_pb,
    ask_location_change_pb,
    day_close_list,
    list_employees_pb,
    location_changes_pb,
    locations_pb,
    merchant_summary_pb,
    receipt_layout_pb,
    set_location_logo_pb,
    set_receipt_layout_pb,
    stream_in_steps,
    terminal_view,
    transaction_export_pb,
    transaction_report_pb,
    update_employee_pb,
)
from protocols.convert import BadRequestError
from protocols.terminal_service import Context, _abort, bearer
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from switch.admin import AdminConflictError, AdminError, AdminStateError
from switch.caller_limit import CallerLimit, caller_address
from switch.core import SwitchCore, utc_now
from switch.domain.employees import PortalRight
from switch.domain.quoting import quoted
from switch.domain.reports import ReportQueryError
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Cancel, Redeem, Refund, TerminalCommand
from switch.password_resets import ResetsOffError
from switch.passwords import Login, NotAllowedError, TooManySignInsError
from switch.portal import PortalSessions
from switch.receipts import ReceiptRefusedError
from switch.report_export import CsvDialect, ExportRefusedError
from switch.web_days import WebDayCloseError

T = TypeVar("T")
R = TypeVar("R", bound="OwnRequest")  # a request the portal scopes to the login's merchant
RESET_ASKED = "if a login has this address, a reset code is on its way to it"
CARD_LOOKUP_WINDOW_S = 60.0
RESET_ASK_WINDOW_S = 3600.0
RESET_CODE_WINDOW_S = 3600.0


class PortalService(portal_grpc.PortalServicer):
    def __init__(self, core: SwitchCore, blocking: Executor) -> None:
        self._core = core
        self._blocking = blocking  # the export's reads
        self._sessions = PortalSessions(
            core.store.engine, core.settings.portal_session_s, core.passwords, utc_now
        )
        settings = core.settings
        self._card_lookups = CallerLimit(
            settings.portal_card_lookups_per_minute_max,
            CARD_LOOKUP_WINDOW_S,
            settings.portal_card_lookup_merchants_tracked_max,
        )
        self._reset_asks = CallerLimit(
            settings.password_reset_asks_per_caller_per_hour_max,
            RESET_ASK_WINDOW_S,
            settings.password_reset_callers_tracked_max,
        )
        self._wrong_reset_codes = CallerLimit(
            settings.password_reset_wrong_codes_per_caller_per_hour_max,
            RESET_CODE_WINDOW_S,
            settings.password_reset_callers_tracked_max,
        )

    def _count_card_lookup(self, context: grpc.ServicerContext, login: Login) -> None:
        """Counted per merchant before the card number is read: a wrong or malformed number costs as
        much as a right one, and more logins (a manager adds cashiers) give no more tries."""
        wait_s = self._card_lookups.wait_s(login.merchant_id, time.monotonic())
        if wait_s > 0:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many card lookups for your merchant; try again in {math.ceil(wait_s)} s",
            )

    def _count_reset_ask(self, context: grpc.ServicerContext) -> None:
        """Counted per caller address, every ask alike (the answer is the same whether an address
        has a login), so one caller cannot have the switch mail every address it names."""
        wait_s = self._reset_asks.wait_s(caller_address(context.peer()), time.monotonic())
        if wait_s > 0:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many password reset requests from your network address; "
                f"try again in {math.ceil(wait_s)} s",
            )

    def _count_reset_code(self, context: grpc.ServicerContext, caller: str) -> float:
        """Counted before the code is looked up, in one step with the check (codes arriving together
        pass no more than the limit), and given back unless it proves wrong: made-up codes were a
        database read each without limit, and a right code under the limit goes through."""
        counted_s = time.monotonic()
        wait_s = self._wrong_reset_codes.wait_s(caller, counted_s)
        if wait_s > 0:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many wrong password reset codes from your network address; "
                f"try again in {math.ceil(wait_s)} s",
            )
        return counted_s

    def _run(
        self, context: grpc.ServicerContext, right: PortalRight | None, action: Callable[[Login], T]
    ) -> T:
        """The action for the signed-in login if its role has the right (None: any login); the
        status of what went wrong otherwise."""
        try:
            login = self._sessions.login_of(bearer(context))
        except PermissionError as error:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(error))
        if right is not None and not login.may(right):
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"a {login.role} may not see or change {right.value}",
            )
        try:
            return action(login)
        except NotAllowedError as error:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(error))
        except AdminStateError as error:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except AdminConflictError as error:
            _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(error))
        except (AdminError, BadRequestError, ReportQueryError) as error:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except LookupError as error:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(error))
        except ExportRefusedError as error:  # too many at once, or too large
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))

    def _run_own(
        self,
        context: grpc.ServicerContext,
        request: R,
        right: PortalRight,
        build: Callable[[SwitchCore, R], T],
    ) -> T:
        """`build` of the request scoped to the signed-in login's merchant (see _own)."""

        def action(login: Login) -> T:
            _own(context, request, login.merchant_id)
            return build(self._core, request)

        return self._run(context, right, action)

    def SignIn(self, request: portal.SignInRequest, context: grpc.ServicerContext) -> portal.PortalSession:
        if problem := convert.missing_field(request, "email", "password"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            session = self._sessions.sign_in(request.email, request.password, caller_address(context.peer()))
        except PermissionError as error:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(error))
        except TooManySignInsError as error:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        login = session.login
        return portal.PortalSession(
            token=session.token,
            merchant_id=login.merchant_id,
            merchant_name=login.merchant_name,
            expires_at=session.expires_at.isoformat(timespec="seconds"),
            role=login.role,
            user_name=login.user_name,
        )

    def SignOut(
        self, request: portal.SignOutRequest, context: grpc.ServicerContext
    ) -> portal.SignOutResponse:
        def action(_login: Login) -> portal.SignOutResponse:
            self._sessions.sign_out(bearer(context))
            return portal.SignOutResponse()

        return self._run(context, None, action)

    def ChangePassword(
        self, request: portal.ChangePasswordRequest, context: grpc.ServicerContext
    ) -> portal.ChangePasswordResponse:
        if problem := convert.missing_field(request, "current_password", "new_password"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            self._sessions.change_password(
                bearer(context),
                request.current_password,
                request.new_password,
                caller_address(context.peer()),
            )
        except PermissionError as error:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(error))
        except TooManySignInsError as error:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        except ValueError as error:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return portal.ChangePasswordResponse()

    # --- the web back office's redemption -----------------------------------------------------------

    def CardBalance(self, request: pb.BalanceRequest, context: grpc.ServicerContext) -> pb.BalanceResponse:
        def action(login: Login) -> pb.BalanceResponse:
            self._count_card_lookup(context, login)
            number = convert.typed_card_number(request.card, request.HasField("card"))
            card_id = self._core.cards.card_id(number)
            state = self._core.balance(card_id) if card_id else None
            accepted = state is None or self._core.merchant_accepts(login.merchant_id, state)
            return convert.balance_response(state, number, self._core.today(), accepted=accepted)

        return self._run(context, PortalRight.redeem, action)

    def Redeem(
        self, request: portal.PortalRedeemRequest, context: grpc.ServicerContext
    ) -> pb.TransactionResponse:
        def command() -> TerminalCommand:
            txn = convert.transaction_id(request.transaction_id)
            number = convert.typed_card_number(request.card, request.HasField("card"))
            return Redeem(
                txn,
                self._core.cards.card_id(number) or "",
                convert.amount(request.amount, request.HasField("amount")),
                request.allow_partial,
                None,  # the web back office takes no card PIN
            )

        return self._web(context, request.location_id, command, names_a_card=True)

    def Refund(
        self, request: portal.PortalRefundRequest, context: grpc.ServicerContext
    ) -> pb.TransactionResponse:
        def command() -> TerminalCommand:
            return Refund(
                convert.transaction_id(request.transaction_id),
                convert.transaction_id(request.original_transaction_id, "original_transaction_id"),
                convert.amount(request.amount, request.HasField("amount")),
                convert.employee(request.employee, request.HasField("employee")),
            )

        return self._web(context, request.location_id, command)

    def Cancel(
        self, request: portal.PortalCancelRequest, context: grpc.ServicerContext
    ) -> pb.TransactionResponse:
        def command() -> TerminalCommand:
            return Cancel(
                convert.transaction_id(request.transaction_id),
                convert.transaction_id(request.original_transaction_id, "original_transaction_id"),
                convert.employee(request.employee, request.HasField("employee")),
            )

        return self._web(context, request.location_id, command)

    def _web(
        self,
        context: grpc.ServicerContext,
        location_id: str,
        command: Callable[[], TerminalCommand],
        names_a_card: bool = False,
    ) -> pb.TransactionResponse:
        """A command through the location's web back office terminal, as a terminal's; its
        transaction id is the merchant's across locations (94 when another location holds it).
        `names_a_card`: its answer tells whether a card number exists, so it counts as a lookup."""

        def action(login: Login) -> pb.TransactionResponse:
            if names_a_card:
                self._count_card_lookup(context, login)
            decoded = command()
            terminal_id = self._core.web_terminal(login.merchant_id, location_id)
            try:
                # Its earlier day is closed first, so this transaction counts in today's period; and
                # again after it if the day turned meanwhile, whatever became of it (WebDays).
                with self._core.web_days.closed_around(terminal_id):
                    return self._web_write(context, login, terminal_id, decoded)
            except WebDayCloseError as error:  # the close before it: the write was not taken
                _abort(context, grpc.StatusCode.UNAVAILABLE, f"{error}; send it again")

        return self._run(context, PortalRight.redeem, action)

    def _web_write(
        self, context: grpc.ServicerContext, login: Login, terminal_id: str, decoded: TerminalCommand
    ) -> pb.TransactionResponse:
        txn = decoded.transaction_id
        if self._core.admin.web_transaction_elsewhere(login.merchant_id, terminal_id, txn):
            code = ResponseCode.duplicate_transmission
            return pb.TransactionResponse(
                transaction_id=txn,
                response_code=code.iso_code,
                message=f"{code.message}: at another location of yours",
                status="declined",
            )
        try:
            outcome = self._core.submit_web(terminal_id, decoded)
        except ReplyTimeoutError:
            _abort(context, grpc.StatusCode.UNAVAILABLE, "outcome not known yet; send it again")
        return convert.transaction_response(outcome)

    def CloseWebDay(
        self, request: portal.CloseWebDayRequest, context: grpc.ServicerContext
    ) -> pb.DayCloseReport:
        """The location's web back office's day closed now, as a cashier presses day close on a
        terminal; the switch's own close (switch/web_days.py), so the same period closes once.

        The request names the period it closes: without it, one sent again after its answer was
        lost cannot be told from a new close, and would close the next period, cut short. One
        without is refused naming the open period, and closes nothing."""

        def action(login: Login) -> pb.DayCloseReport:
            if request.period_number < 0:
                raise AdminError("period_number is negative: name the period to close")
            _, existing = self._core.admin.existing_web_terminal(login.merchant_id, request.location_id)
            if existing is None:  # never used: nothing to close, and no terminal made to say so
                raise AdminStateError("no web transaction at this location yet: nothing to close")
            if request.period_number == 0:
                open_period = self._core.web_days.open_period(existing)
                raise AdminError(
                    "period_number is missing: name the period to close "
                    f"(the web back office's open period is {open_period})"
                )
            terminal_id = self._core.web_terminal(login.merchant_id, request.location_id)
            try:
                report = self._core.web_days.close_now(terminal_id, request.period_number)
            except WebDayCloseError as error:
                _abort(context, grpc.StatusCode.UNAVAILABLE, f"{error}; send it again")
            if report is None:
                raise AdminStateError("no web transaction since the web back office's last day close")
            return convert.day_close_report(report)

        return self._run(context, PortalRight.redeem, action)

    def RequestPasswordReset(
        self, request: portal.RequestPasswordResetRequest, context: grpc.ServicerContext
    ) -> portal.RequestPasswordResetResponse:
        if not request.email:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "email is missing")
        self._count_reset_ask(context)
        try:
            self._core.password_resets.ask(request.email)
        except ResetsOffError as error:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(error))
        return portal.RequestPasswordResetResponse(message=RESET_ASKED)

    def ResetPassword(
        self, request: portal.ResetPasswordRequest, context: grpc.ServicerContext
    ) -> portal.ResetPasswordResponse:
        if problem := convert.missing_field(request, "code", "new_password"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        caller = caller_address(context.peer())
        counted_s = self._count_reset_code(context, caller)
        wrong = False
        try:
            login = self._core.password_resets.reset(request.code, request.new_password)
        except PermissionError as error:
            wrong = True
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(error))
        except ValueError as error:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        finally:
            if not wrong:  # only wrong codes count
                self._wrong_reset_codes.give_back(caller, counted_s)
        return portal.ResetPasswordResponse(email=login.email)

    def GetReceiptLayout(
        self, request: portal.GetReceiptLayoutRequest, context: grpc.ServicerContext
    ) -> bo.ReceiptLayout:
        def action(login: Login) -> bo.ReceiptLayout:
            return receipt_layout_pb(login.merchant_id, self._core.receipts.layout(login.merchant_id))

        return self._run(context, PortalRight.settings, action)

    def SetReceiptLayout(self, request: bo.ReceiptLayout, context: grpc.ServicerContext) -> bo.ReceiptLayout:
        return self._run_own(context, request, PortalRight.settings, set_receipt_layout_pb)

    def PreviewReceipt(
        self, request: portal.PreviewReceiptRequest, context: grpc.ServicerContext
    ) -> portal.ReceiptPreview:
        def action(login: Login) -> portal.ReceiptPreview:
            location = request.location or next(
                (info.name for info in self._core.admin.list_locations(login.merchant_id)), ""
            )
            try:
                subject, body, has_logo = self._core.receipts.preview(login.merchant_id, location)
            except ReceiptRefusedError as refusal:
                raise LookupError(str(refusal)) from None
            return portal.ReceiptPreview(subject=subject, body=body, has_logo=has_logo)

        return self._run(context, PortalRight.settings, action)

    def ListLocations(
        self, request: bo.ListLocationsRequest, context: grpc.ServicerContext
    ) -> bo.LocationList:
        return self._run_own(
            context, request, PortalRight.reports, lambda core, own: locations_pb(core, own.merchant_id)
        )

    def AddLocation(self, request: bo.AddLocationRequest, context: grpc.ServicerContext) -> bo.Location:
        return self._run_own(context, request, PortalRight.settings, add_location_pb)

    def SetLocationLogo(self, request: bo.LocationLogo, context: grpc.ServicerContext) -> bo.Location:
        return self._run_own(context, request, PortalRight.settings, set_location_logo_pb)

    def AskLocationChange(
        self, request: bo.AskLocationChangeRequest, context: grpc.ServicerContext
    ) -> bo.LocationChange:
        def action(login: Login) -> bo.LocationChange:
            _own(context, request, login.merchant_id)
            return ask_location_change_pb(
                self._core, request, login.email, login.employee_id, login.login_changes
            )

        return self._run(context, PortalRight.settings, action)

    def ListLocationChanges(
        self, request: bo.ListLocationChangesRequest, context: grpc.ServicerContext
    ) -> bo.LocationChangeList:
        return self._run_own(context, request, PortalRight.reports, location_changes_pb)

    def ListTransactions(
        self, request: bo.TransactionReportRequest, context: grpc.ServicerContext
    ) -> bo.TransactionReport:
        return self._run_own(context, request, PortalRight.reports, transaction_report_pb)

    async def ExportTransactions(
        self, request: bo.TransactionExportRequest, context: Context
    ) -> AsyncIterator[bo.CsvChunk]:
        def export(step_context: grpc.ServicerContext) -> Iterator[bo.CsvChunk]:
            def action(login: Login) -> Iterator[bo.CsvChunk]:
                _own(step_context, request.report, login.merchant_id)
                # A merchant opens its export in a spreadsheet, in the Netherlands or Belgium.
                return transaction_export_pb(
                    self._core, request, CsvDialect.excel_nl, call_active=step_context.is_active
                )

            return self._run(step_context, PortalRight.reports, action)

        duration_max_s = self._core.settings.exports_duration_max_s
        async for chunk in stream_in_steps(self._blocking, context, export, duration_max_s):  # see Backoffice
            yield chunk

    def GetMerchantSummary(
        self, request: bo.MerchantSummaryRequest, context: grpc.ServicerContext
    ) -> bo.MerchantSummary:
        return self._run_own(context, request, PortalRight.payouts, merchant_summary_pb)

    def ListTerminals(
        self, request: bo.ListTerminalsRequest, context: grpc.ServicerContext
    ) -> bo.TerminalList:
        def action(login: Login) -> bo.TerminalList:
            _own(context, request, login.merchant_id)
            return bo.TerminalList(
                terminals=[terminal_view(t) for t in self._core.admin.list_terminals(login.merchant_id)]
            )

        return self._run(context, PortalRight.reports, action)

    def ListDayCloses(
        self, request: bo.DayCloseListRequest, context: grpc.ServicerContext
    ) -> bo.DayCloseList:
        def action(login: Login) -> bo.DayCloseList:
            terminal = self._core.store.terminal(request.terminal_id) if request.terminal_id else None
            if terminal is None or terminal.merchant_id != login.merchant_id:
                # The same answer for another merchant's terminal as for none: ids are not probed.
                raise LookupError(f"terminal_id {quoted(request.terminal_id)}: no such terminal of yours")
            return day_close_list(self._core, request)

        return self._run(context, PortalRight.reports, action)

    def ListEmployees(
        self, request: bo.ListEmployeesRequest, context: grpc.ServicerContext
    ) -> bo.EmployeeList:
        return self._run_own(context, request, PortalRight.users, list_employees_pb)

    def AddEmployee(self, request: bo.AddEmployeeRequest, context: grpc.ServicerContext) -> bo.Employee:
        def action(login: Login) -> bo.Employee:
            _own(context, request, login.merchant_id)
            return add_employee_pb(self._core, request, login.role)

        return self._run(context, PortalRight.users, action)

    def UpdateEmployee(self, request: bo.UpdateEmployeeRequest, context: grpc.ServicerContext) -> bo.Employee:
        def action(login: Login) -> bo.Employee:
            _own(context, request, login.merchant_id)
            return update_employee_pb(self._core, request, login.role)

        return self._run(context, PortalRight.users, action)


OwnRequest = (
    bo.TransactionReportRequest
    | bo.MerchantSummaryRequest
    | bo.ListTerminalsRequest
    | bo.ListEmployeesRequest
    | bo.AddEmployeeRequest
    | bo.UpdateEmployeeRequest
    | bo.ReceiptLayout
    | bo.ListLocationsRequest
    | bo.LocationLogo
    | bo.AddLocationRequest
    | bo.AskLocationChangeRequest
    | bo.ListLocationChangesRequest
)


def _own(context: grpc.ServicerContext, request: OwnRequest, merchant_id: str) -> None:
    """Scope the request to the signed-in merchant; another merchant's id is refused."""
    if request.merchant_id and request.merchant_id != merchant_id:
        _abort(
            context, grpc.StatusCode.PERMISSION_DENIED, "merchant_id: the portal shows only your own merchant"
        )
    request.merchant_id = merchant_id
