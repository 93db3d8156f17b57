"""Cardholder servicer: the balance of a stored-value card by its number or QR code, no login."""

from __future__ import annotations

import datetime as dt
import math
import time

import grpc

from protocols import convert
from protocols.terminal_service import Context, _decoded, _refuse, on_loop
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch.caller_limit import CallerLimit, caller_address
from switch.core import SwitchCore
from switch.domain.card_rules import CardState, shown_status
from switch.domain.cards import mask

LOOKUP_WINDOW_S = 60.0


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

    @on_loop
    async def GetBalance(
        self, request: ch.CardholderBalanceRequest, context: Context
    ) -> ch.CardholderBalance:
        # Counted before the request is read: wrong numbers cost a caller as much as right ones.
        wait_s = self._limit.wait_s(caller_address(context.peer()), time.monotonic())
        if wait_s > 0:
            _refuse(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many balance lookups from your address; try again in {math.ceil(wait_s)} s",
            )
        number = _decoded(lambda: convert.card_number(request.card, request.HasField("card")))
        card_id = self._core.cards.card_id(number)
        if not card_id:
            _refuse(grpc.StatusCode.NOT_FOUND, f"card {mask(number)}: no such card")
        return balance_view(await self._core.balance_async(card_id), self._core.today())


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
        view.holder_pays.CopyFrom(pb.Amount(amount_minor=copayment.numerator_minor, currency=state.currency))
        view.per_loaded.CopyFrom(pb.Amount(amount_minor=copayment.denominator_minor, currency=state.currency))
    return view
