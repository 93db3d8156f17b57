"""Cardholder servicer: the balance of a stored-value card by its number or QR code, no login."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import time

import grpc

from ops.logs import pan_in_id_problem
from protocols import convert
from protocols.terminal_service import Context, _decoded, _refuse, on_loop
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch.admin import AdminConflictError
from switch.caller_limit import CallerLimit, caller_address
from switch.core import SwitchCore, utc_now
from switch.domain.card_rules import CardState, shown_status
from switch.domain.cards import mask
from switch.domain.quoting import quoted
from switch.domain.top_ups import TOP_UP_REQUEST_ID_LENGTH_MAX, TopUp, start_refusal
from switch.store.schema import ID_LENGTH
from switch.top_ups import request_id_taken

LOOKUP_WINDOW_S = 60.0
TOP_UP_ID = re.compile(r"tup_[0-9a-f]{16}")  # admin.new_id("tup")


class CardholderService(ch_grpc.CardholderServicer):
    """On the event loop, like the terminal's Balance: the card actor answers with the balance
    the ledger has committed, which is never behind an answer a terminal was given."""

    def __init__(self, core: SwitchCore) -> None:
        settings = core.settings
        self._core = core
        self._limit = CallerLimit(
            settings.cardholder_lookups_per_minute_max,
            LOOKUP_WINDOW_S,
            settings.cardholder_callers_tracked_max,
        )

    def _count(self, context: Context, calls: str) -> None:
        """Counted before the request is read: wrong numbers cost a caller as much as right ones.
        One count for every call of this service, so a top-up is no way round the lookups' limit."""
        wait_s = self._limit.wait_s(caller_address(context.peer()), time.monotonic())
        if wait_s > 0:
            _refuse(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many {calls} from your address; try again in {math.ceil(wait_s)} s",
            )

    def _card_id(self, request: ch.CardholderBalanceRequest | ch.StartTopUpRequest) -> str:
        number = _decoded(lambda: convert.typed_card_number(request.card, request.HasField("card")))
        card_id = self._core.cards.card_id(number)
        if not card_id:
            _refuse(grpc.StatusCode.NOT_FOUND, f"card {mask(number)}: no such card")
        return card_id

    @on_loop
    async def GetBalance(
        self, request: ch.CardholderBalanceRequest, context: Context
    ) -> ch.CardholderBalance:
        self._count(context, "balance lookups")
        card_id = self._card_id(request)
        return balance_view(await self._core.balance_async(card_id), self._core.today())

    @on_loop
    async def StartTopUp(self, request: ch.StartTopUpRequest, context: Context) -> ch.TopUp:
        self._count(context, "top-up requests")
        request_id = _decoded(lambda: top_up_request_id(request.request_id))
        amount = _decoded(lambda: convert.amount(request.amount, request.HasField("amount")))
        card_id = self._card_id(request)
        top_ups = self._core.top_ups
        known = await asyncio.to_thread(top_ups.by_request, card_id, request_id)
        if known is not None and known.asks(card_id, amount):
            return top_up_view(known, utc_now())  # sent again: judged when it started
        card = await self._core.balance_async(card_id)  # its balance less what is reserved
        refusal = start_refusal(card, card.balance_minor, amount, self._core.today())
        # The request's own fault first, by name: with a known request id too (it was ALREADY_EXISTS).
        if refusal is not None and refusal.malformed:
            _refuse(grpc.StatusCode.INVALID_ARGUMENT, refusal.detail)
        if known is not None:
            _refuse(grpc.StatusCode.ALREADY_EXISTS, request_id_taken(request_id))
        if refusal is not None:
            _refuse(grpc.StatusCode.FAILED_PRECONDITION, refusal.detail)
        try:
            started = await asyncio.to_thread(top_ups.start, request_id, card, amount)
        except AdminConflictError as error:
            _refuse(grpc.StatusCode.ALREADY_EXISTS, str(error))
        return top_up_view(started, utc_now())

    @on_loop
    async def GetTopUp(self, request: ch.TopUpRequest, context: Context) -> ch.TopUp:
        self._count(context, "top-up lookups")
        top_up_id = _decoded(lambda: top_up_id_of(request.top_up_id))
        top_up = await asyncio.to_thread(self._core.top_ups.get, top_up_id)
        if top_up is None:
            _refuse(grpc.StatusCode.NOT_FOUND, f"top_up_id {quoted(top_up_id)}: no such top-up")
        return top_up_view(top_up, utc_now())


def balance_view(state: CardState, today: dt.date) -> ch.CardholderBalance:
    programme, currency = state.programme, state.currency
    view = ch.CardholderBalance(
        card_masked=state.masked,
        balance=pb.Amount(amount_minor=state.balance_minor, currency=currency),
        card_status=shown_status(state.status, state.expiry, today),
        expiry_date=state.expiry.isoformat(),
        programme_name=programme.name,
    )
    copayment = programme.copayment
    # "Both absent when the holder pays all of it" (cardholder.proto).
    if copayment is not None and copayment.numerator_minor < copayment.denominator_minor:
        # Per load step, as loads are made: a price stored as 18.00 per 50.00 is 1.80 per 5.00.
        per_loaded_minor = programme.load_step_minor or copayment.denominator_minor
        holder_minor, _ = programme.split_load(per_loaded_minor)
        view.holder_pays.CopyFrom(pb.Amount(amount_minor=holder_minor, currency=currency))
        view.per_loaded.CopyFrom(pb.Amount(amount_minor=per_loaded_minor, currency=currency))
    return view


def top_up_request_id(value: str) -> str:
    return stored_id_field("request_id", value, TOP_UP_REQUEST_ID_LENGTH_MAX)


def top_up_id_of(value: str, field: str = "top_up_id") -> str:
    """A top-up's id as StartTopUp gave it. One of another shape is never looked up nor quoted
    back: it may be the card's number, typed where the top-up's id goes."""
    top_up_id = id_field(field, value, ID_LENGTH)
    if TOP_UP_ID.fullmatch(top_up_id) is None:
        raise convert.BadRequestError(f"{field} is not a top-up's id (tup_ and 16 hex digits)")
    return top_up_id


def id_field(field: str, value: str, length_max: int) -> str:
    if not value:
        raise convert.BadRequestError(f"{field} is missing")
    if len(value) > length_max:
        raise convert.BadRequestError(f"{field} is longer than {length_max} characters")
    if not value.isprintable() or not value.isascii():
        raise convert.BadRequestError(f"{field} has characters other than printable ASCII")
    return value


def stored_id_field(field: str, value: str, length_max: int) -> str:
    """An id_field the switch stores as given (a unique column): one holding a card number is
    refused, as it would be kept in clear."""
    problem = pan_in_id_problem(field, id_field(field, value, length_max))
    if problem is not None:
        raise convert.BadRequestError(problem)
    return value


def top_up_view(top_up: TopUp, now: dt.datetime) -> ch.TopUp:
    def money(amount_minor: int) -> pb.Amount:
        return pb.Amount(amount_minor=amount_minor, currency=top_up.currency)

    return ch.TopUp(
        top_up_id=top_up.top_up_id,
        card_masked=top_up.card_masked,
        amount=money(top_up.amount_minor),
        holder_pays=money(top_up.holder_part_minor),
        funder_pays=money(top_up.funder_part_minor),
        status=top_up.shown_status(now).value,
        expires_at=top_up.expires_at.isoformat(),
        reason=top_up.reason,
    )
