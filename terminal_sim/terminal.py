"""One simulated A77 terminal: activation, the shop's flows, faults and their recovery."""

from __future__ import annotations

import collections
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import trio

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from terminal_sim.bridge import Metadata, TrioGrpcBridge, rpc_code
from terminal_sim.cards import CardKind, CardPopulation, SimCard
from terminal_sim.config import WRONG_PIN, ShopLogin, SimConfig
from terminal_sim.faults import Fault, Recovery, choose_fault, choose_recovery
from terminal_sim.load_models import Pacer
from terminal_sim.metrics import Recorder
from terminal_sim.provision import COPAY_DENOMINATOR_MINOR
from terminal_sim.records import APPROVING_CODES, Exchange, Operation, Outcome

# grpc's own deadline sits behind the terminal's cancel scope, so the terminal decides.
GRPC_DEADLINE_MARGIN_S = 1.0
ACTIVATION_RETRY_S = 0.1  # the longest pause before asking again when the switch is busy
RECOVERY_ATTEMPTS_MAX = 3
# The benefit programme's load step is its co-payment's unit; the switch declines other loads (13).
LOAD_STEP_MINOR = COPAY_DENOMINATOR_MINOR
LOAD_STEPS_MAX = 10
REDEEM_MINOR_MIN = 50
# Statuses only the switch's own answer carries (its handler has returned: nothing of the call is still
# committing). DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE, UNKNOWN and INTERNAL the client may make up
# while the switch still works on the request.
SWITCH_REFUSALS = frozenset(
    {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
SETTLED_STATUSES = frozenset({"approved", "declined", "reversed", "cancelled", "voided"})


class RunFullError(Exception):
    """The run holds as many exchanges as it may keep for the auditor."""


@dataclass
class RunContext:
    """What every terminal of one run shares."""

    config: SimConfig
    login: ShopLogin
    cards: CardPopulation
    bridge: TrioGrpcBridge
    recorder: Recorder
    run_id: str
    end_s: float = 0.0
    exchanges: list[Exchange] = field(default_factory=list)
    stopped_early: str = ""
    flows_started: int = 0
    unanswered: int = 0  # requests sent that no reply ended: the switch may still commit them

    def keep(self, exchange: Exchange) -> None:
        if len(self.exchanges) >= self.config.exchanges_max:
            raise RunFullError(f"{self.config.exchanges_max} exchanges kept; raise exchanges_max")
        self.exchanges.append(exchange)


@dataclass
class _Recent:
    """An approved transaction of this terminal that a refund or cancel may refer to."""

    transaction_id: str
    operation: Operation
    card: SimCard
    amount_minor: int
    period: int
    refunded_minor: int = 0
    cancelled: bool = False


@dataclass(frozen=True)
class _Sent:
    reply: Any
    outcome: Outcome
    grpc_code: str | None
    started_s: float
    latency_s: float
    measured: bool = True  # in the latency histograms; a fault's send only counted (_MoneySend)


class SimTerminal:
    def __init__(self, index: int, stub: pb_grpc.TerminalStub, context: RunContext) -> None:
        self.index = index
        self.device_name = f"sim-{index:05d}"
        self.stub = stub
        self.context = context
        self.rng = random.Random(context.config.seed * 1_000_003 + index)
        self.terminal_id = ""
        self.metadata: Metadata = ()
        self.period = 0
        self._period_known = True  # False after a day close left unanswered, until one is answered
        self.day = 0
        self._counter = 0
        self._pacer: Pacer | None = None  # while run() goes
        self._recent: collections.deque[_Recent] = collections.deque(
            maxlen=context.config.recent_transactions_max
        )

    # --- sending ----------------------------------------------------------------------------

    async def _send(
        self,
        operation: Operation,
        method: grpc.UnaryUnaryMultiCallable[Any, Any],
        request: Any,
        *,
        started_s: float | None = None,
        timeout_s: float | None = None,
        measure: bool = True,
    ) -> _Sent:
        """One request under the terminal's cancel scope; measured from started_s."""
        config = self.context.config
        timeout_s = config.terminal_timeout_s if timeout_s is None else timeout_s
        sent_s = trio.current_time()
        started_s = sent_s if started_s is None else started_s
        reply, outcome, grpc_code = None, Outcome.timed_out, None
        self.context.unanswered += 1  # until a reply arrives: a cancel on the way leaves it counted
        with trio.move_on_after(timeout_s):
            try:
                reply = await self.context.bridge.call(
                    method,
                    request,
                    metadata=self.metadata,
                    timeout_s=timeout_s + GRPC_DEADLINE_MARGIN_S,
                )
                outcome = Outcome.answered
                self.context.unanswered -= 1
            except grpc.RpcError as error:
                code = rpc_code(error)
                outcome, grpc_code = Outcome.failed, code.name if code else "UNKNOWN"
                if code in SWITCH_REFUSALS:
                    self.context.unanswered -= 1
        now_s = trio.current_time()
        latency_s = now_s - started_s
        if measure:
            response_code = getattr(reply, "response_code", None) if reply is not None else None
            # Not transactions: codes of their own, so they count in no approval rate (as "00"
            # they did: a bench run's 200 day closes among its approvals).
            if operation is Operation.status and reply is not None:
                response_code = "found" if reply.found else "not_found"
            elif operation is Operation.day_close and reply is not None:
                response_code = "closed"
            self.context.recorder.record(
                operation.value, latency_s, response_code or grpc_code, outcome, now_s
            )
        return _Sent(reply, outcome, grpc_code, sent_s, latency_s, measure)

    def _next_transaction_id(self) -> str:
        self._counter += 1
        return transaction_id_of(self.context.run_id, self.index, self._counter)

    # --- activation and the day -------------------------------------------------------------

    async def activate(self) -> None:
        login = self.context.login
        request = pb.ActivateRequest(
            merchant_email=login.merchant_email,
            password=login.password,
            device_name=self.device_name,
            location=login.location,
        )
        # Activation checks the merchant's password with a deliberately slow hash, and a fleet
        # activates at once: it gets the patience of a one-off set-up, not of a payment.
        # The switch turns sign-ins away (RESOURCE_EXHAUSTED) beyond a few password checks at
        # once; like a terminal told the switch is busy, try again shortly, until the timeout.
        deadline_s = trio.current_time() + self.context.config.activation_timeout_s
        while True:
            timeout_s = max(deadline_s - trio.current_time(), 0.001)
            sent = await self._send(Operation.activate, self.stub.Activate, request, timeout_s=timeout_s)
            if sent.grpc_code != "RESOURCE_EXHAUSTED" or trio.current_time() >= deadline_s:
                break
            await trio.sleep(self.rng.uniform(ACTIVATION_RETRY_S / 2, ACTIVATION_RETRY_S))
        if sent.outcome is not Outcome.answered:
            raise RuntimeError(f"{self.device_name} could not activate: {sent.grpc_code}")
        self.terminal_id = sent.reply.terminal_id
        self.metadata = (("authorization", f"Bearer {sent.reply.credential}"),)
        self.period = sent.reply.period_number

    async def day_close(self) -> None:
        self.day += 1
        close_id = close_id_of(self.context.run_id, self.index, self.day)
        # The period named, as a terminal does, so a close pressed twice closes it once; none after
        # a close left unanswered, which may have landed (its period named would refuse every close).
        named = self.period if self._period_known else 0
        request = pb.DayCloseRequest(close_id=close_id, period_number=named)
        sent = await self._send(Operation.day_close, self.stub.DayClose, request)
        self._keep(Operation.day_close, close_id, sent)
        self._period_known = sent.outcome is Outcome.answered
        if sent.outcome is Outcome.answered and sent.reply.next_period_number:
            self.period = sent.reply.next_period_number

    async def run(self, pacer: Pacer) -> None:
        """Transactions until the run's end, a day close at the end of each simulated day."""
        self._pacer = pacer
        config = self.context.config
        day_end_s = trio.current_time() + config.day_length_s
        flows = self._flows()
        names = list(flows)
        weights = [getattr(config.flows, name) for name in names]
        end_s = self.context.end_s
        while True:
            # Wake at the day's end too: an open loop's close waited for the next customer (seconds
            # late, or never when none came before the run's end).
            intended_s = await pacer.wait_next(end_s, day_end_s)
            if trio.current_time() >= day_end_s and day_end_s < end_s:  # the run's end closes below
                await self.day_close()
                day_end_s += config.day_length_s
            # Nothing new after the end, however late the schedule runs: an overloaded open loop
            # sent its backlog into the drain's grace.
            if intended_s >= end_s or trio.current_time() >= end_s:
                break
            if intended_s > trio.current_time():  # it arrives after the day close just made
                await trio.sleep_until(intended_s)
            name = self.rng.choices(names, weights)[0]
            self.context.flows_started += 1
            await flows[name](intended_s)
        await self.day_close()

    def _flows(self) -> dict[str, Callable[[float], Awaitable[None]]]:
        return {
            "redeem": self.redeem_flow,
            "balance": self.balance_flow,
            "load": self.load_flow,
            "refund": self.refund_flow,
            "cancel": self.cancel_flow,
        }

    # --- flows ------------------------------------------------------------------------------

    async def balance_flow(self, intended_s: float) -> None:
        card = self.context.cards.pick(self.rng)
        await self._balance(card, intended_s, by_qr=self.rng.random() < 0.5)

    async def _balance(self, card: SimCard, started_s: float, *, by_qr: bool) -> _Sent:
        ref = pb.CardRef(qr_payload=card.qr_payload) if by_qr else pb.CardRef(card_number=card.card_number)
        sent = await self._send(
            Operation.balance, self.stub.Balance, pb.BalanceRequest(card=ref), started_s=started_s
        )
        self._keep(Operation.balance, "", sent, card=card)
        return sent

    async def redeem_flow(self, intended_s: float) -> None:
        """Scan the QR, show the balance, redeem part or all of it."""
        card = self.context.cards.pick(self.rng)
        shown = await self._balance(card, intended_s, by_qr=True)
        if shown.outcome is not Outcome.answered or shown.reply.response_code not in APPROVING_CODES:
            return
        balance_minor = shown.reply.balance.amount_minor
        if balance_minor < REDEEM_MINOR_MIN:
            return
        allow_partial = self.rng.random() < self.context.config.partial_share
        if allow_partial:
            amount_minor = self.rng.randint(REDEEM_MINOR_MIN, balance_minor + balance_minor // 4)
        elif self.rng.random() < 0.2:
            amount_minor = balance_minor  # the customer spends it all
        else:
            amount_minor = self.rng.randint(REDEEM_MINOR_MIN, balance_minor)
        transaction_id = self._next_transaction_id()
        request = pb.RedeemRequest(
            transaction_id=transaction_id,
            card=pb.CardRef(qr_payload=card.qr_payload),
            amount=self._amount(amount_minor),
            allow_partial=allow_partial,
        )
        await self._money(Operation.redeem, self.stub.Redeem, request, card, amount_minor)

    async def load_flow(self, intended_s: float) -> None:
        """Load in steps of 5.00; on a benefit card the co-payment rule splits who pays."""
        kind = CardKind.benefit if self.rng.random() < 0.5 else CardKind.gift
        card = self.context.cards.pick_kind(self.rng, kind)
        amount_minor = LOAD_STEP_MINOR * self.rng.randint(1, LOAD_STEPS_MAX)
        transaction_id = self._next_transaction_id()
        request = pb.LoadRequest(
            transaction_id=transaction_id,
            card=pb.CardRef(card_number=card.card_number),
            amount=self._amount(amount_minor),
        )
        await self._money(Operation.load, self.stub.Load, request, card, amount_minor, started_s=intended_s)

    async def refund_flow(self, intended_s: float) -> None:
        candidates = [
            r
            for r in self._recent
            if r.operation is Operation.redeem and not r.cancelled and r.refunded_minor < r.amount_minor
        ]
        if not candidates:
            await self.redeem_flow(intended_s)
            return
        original = self.rng.choice(candidates)
        amount_minor = self.rng.randint(1, original.amount_minor - original.refunded_minor)
        request = pb.RefundRequest(
            transaction_id=self._next_transaction_id(),
            original_transaction_id=original.transaction_id,
            amount=self._amount(amount_minor),
            employee=self._employee(),
        )
        await self._money(
            Operation.refund,
            self.stub.Refund,
            request,
            original.card,
            amount_minor,
            started_s=intended_s,
            original=original,
        )

    async def cancel_flow(self, intended_s: float) -> None:
        candidates = [
            r
            for r in self._recent
            if not r.cancelled
            and r.refunded_minor == 0
            and r.period == self.period
            and r.operation in (Operation.redeem, Operation.load)
        ]
        if not candidates:
            await self.redeem_flow(intended_s)
            return
        original = candidates[-1]  # the customer changed their mind just now
        request = pb.CancelRequest(
            transaction_id=self._next_transaction_id(),
            original_transaction_id=original.transaction_id,
            employee=self._employee(),
        )
        await self._money(
            Operation.cancel,
            self.stub.Cancel,
            request,
            original.card,
            original.amount_minor,
            started_s=intended_s,
            original=original,
        )

    def _amount(self, amount_minor: int) -> pb.Amount:
        return pb.Amount(amount_minor=amount_minor, currency=self.context.login.currency)

    def _employee(self) -> pb.EmployeeAuth:
        number, pin = self.context.login.employee_of(self.index)
        wrong = self.rng.random() < self.context.config.wrong_pin_share
        return pb.EmployeeAuth(employee_number=number, pin=WRONG_PIN if wrong else pin)

    # --- money requests, faults and recovery ------------------------------------------------

    async def _money(
        self,
        operation: Operation,
        method: grpc.UnaryUnaryMultiCallable[Any, Any],
        request: Any,
        card: SimCard,
        amount_minor: int,
        *,
        started_s: float | None = None,
        original: _Recent | None = None,
    ) -> None:
        fault = choose_fault(self.context.config.faults, self.rng)
        send = _MoneySend(self, operation, method, request, card, amount_minor, original)
        if fault is Fault.duplicate:
            exchange = await send.twice(started_s)
        elif fault is Fault.abandon:
            await send.abandoned()
            await trio.sleep(self.context.config.switched_off_s)
            if self._pacer is not None:
                self._pacer.skip_missed()  # its own pause is no latency of the switch's
            return
        elif fault is Fault.timeout:
            exchange = await send.timing_out()
        else:
            exchange = await send.once(started_s)
        if exchange.outcome is not Outcome.answered:
            await self._recover(exchange, choose_recovery(self.rng))
        elif exchange.approved:
            self._remember(exchange, card, original)

    def _remember(self, exchange: Exchange, card: SimCard, original: _Recent | None) -> None:
        if exchange.operation in (Operation.redeem, Operation.load):
            self._recent.append(
                _Recent(
                    exchange.transaction_id,
                    exchange.operation,
                    card,
                    exchange.amount_approved_minor,
                    self.period,
                )
            )
        elif original is not None and exchange.operation is Operation.refund:
            original.refunded_minor += exchange.amount_approved_minor
        elif original is not None and exchange.operation is Operation.cancel:
            original.cancelled = True

    async def _recover(self, lost: Exchange, recovery: Recovery) -> None:
        """After a timeout: ask for the outcome, or reverse; reverse whatever stays unknown."""
        if recovery is Recovery.status:
            status_request = pb.TransactionStatusRequest(transaction_id=lost.transaction_id)
            sent = await self._send(Operation.status, self.stub.TransactionStatus, status_request)
            self._keep_status(lost, sent)
            if (
                sent.outcome is Outcome.answered
                and sent.reply.found
                and (sent.reply.status in SETTLED_STATUSES)
            ):
                return
        for _ in range(RECOVERY_ATTEMPTS_MAX):
            request = pb.ReversalRequest(original_transaction_id=lost.transaction_id)
            sent = await self._send(Operation.reversal, self.stub.Reversal, request)
            exchange = self._keep(
                Operation.reversal,
                lost.transaction_id,
                sent,
                card=None,
                card_id=lost.card_id,
            )
            if exchange.outcome is Outcome.answered:
                return

    # --- records ----------------------------------------------------------------------------

    def _keep(
        self,
        operation: Operation,
        transaction_id: str,
        sent: _Sent,
        *,
        card: SimCard | None = None,
        card_id: str | None = None,
        **extra: Any,
    ) -> Exchange:
        reply = sent.reply
        exchange = Exchange(
            terminal_id=self.terminal_id,
            transaction_id=transaction_id,
            operation=operation,
            outcome=sent.outcome,
            card_id=card.card_id if card is not None else card_id,
            response_code=getattr(reply, "response_code", None) if reply is not None else None,
            status=getattr(reply, "status", "") if reply is not None else "",
            amount_approved_minor=_approved_minor(reply),
            grpc_code=sent.grpc_code,
            started_s=sent.started_s,
            latency_s=sent.latency_s,
            **extra,
        )
        self.context.keep(exchange)
        return exchange

    def _keep_status(self, lost: Exchange, sent: _Sent) -> Exchange:
        reply = sent.reply
        answered = sent.outcome is Outcome.answered
        exchange = Exchange(
            terminal_id=self.terminal_id,
            transaction_id=lost.transaction_id,
            operation=Operation.status,
            outcome=sent.outcome,
            card_id=lost.card_id,
            response_code=reply.transaction.response_code if answered else None,
            status=reply.status if answered else "",
            found=reply.found if answered else None,
            amount_approved_minor=_approved_minor(reply.transaction) if answered else 0,
            grpc_code=sent.grpc_code,
            started_s=sent.started_s,
            latency_s=sent.latency_s,
        )
        self.context.keep(exchange)
        return exchange


def transaction_id_of(run_id: str, index: int, counter: int) -> str:
    """The id of terminal `index`'s `counter`th transaction in the run. A letter before each number
    keeps the digits from running together: the switch's log masks 12+ Luhn-valid digits as a PAN."""
    return f"{run_id}-t{index:05d}-n{counter:07d}"


def close_id_of(run_id: str, index: int, day: int) -> str:
    """Terminal `index`'s close of its `day`th day in the run; a letter before the index as in
    transaction_id_of (an all-digit run id and the index made 13 digits the switch may refuse)."""
    return f"{run_id}-t{index:05d}-day{day}"


def _approved_minor(reply: Any) -> int:
    approved = getattr(reply, "approved", None)
    return int(approved.amount_minor) if approved is not None else 0


@dataclass
class _MoneySend:
    """One money request and the ways a terminal can send it."""

    terminal: SimTerminal
    operation: Operation
    method: grpc.UnaryUnaryMultiCallable[Any, Any]
    request: Any
    card: SimCard
    amount_minor: int
    original: _Recent | None

    def _record(self, sent: _Sent, *, outcome: Outcome | None = None, duplicate: bool = False) -> Exchange:
        if not sent.measured:  # a fault's send: no latency of the switch's, but its code and outcome
            final = outcome or sent.outcome
            reply_code = getattr(sent.reply, "response_code", None) if final is Outcome.answered else None
            self.terminal.context.recorder.count(
                self.operation.value, reply_code or sent.grpc_code or final.value, final, trio.current_time()
            )
        original = self.original
        exchange = self.terminal._keep(
            self.operation,
            self.request.transaction_id,
            sent if outcome is None else replace(sent, reply=None, outcome=outcome),
            card=self.card,
            amount_requested_minor=self.amount_minor,
            original_transaction_id=original.transaction_id if original else None,
            original_operation=original.operation if original else None,
            duplicate=duplicate,
        )
        if exchange.approved and self.operation is Operation.cancel and not exchange.amount_approved_minor:
            # A switch that leaves the amount out of a cancel answer still undid the whole original.
            exchange = replace(exchange, amount_approved_minor=self.amount_minor)
            self.terminal.context.exchanges[-1] = exchange
        return exchange

    async def once(self, started_s: float | None) -> Exchange:
        sent = await self.terminal._send(self.operation, self.method, self.request, started_s=started_s)
        return self._record(sent)

    async def twice(self, started_s: float | None) -> Exchange:
        """The same request sent twice: back to back, or both in flight at once."""
        if self.terminal.rng.random() < 0.5:
            first = await self.once(started_s)
            sent = await self.terminal._send(self.operation, self.method, self.request)
            self._record(sent, duplicate=True)
            return first
        results: dict[int, _Sent] = {}

        async def copy(index: int, started: float | None) -> None:
            results[index] = await self.terminal._send(
                self.operation, self.method, self.request, started_s=started
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy, 0, started_s)  # measured from the intended start: it was due then
            nursery.start_soon(copy, 1, None)
        first = self._record(results[0])
        self._record(results[1], duplicate=True)
        return first

    async def timing_out(self) -> Exchange:
        """Half the time the terminal gives up early; else the reply is lost on the way back."""
        terminal = self.terminal
        if terminal.rng.random() < 0.5:
            timeout_s = terminal.rng.uniform(0.0, terminal.context.config.fault_timeout_s_max)
            sent = await terminal._send(
                self.operation, self.method, self.request, timeout_s=timeout_s, measure=False
            )
            return self._record(sent)
        sent = await terminal._send(self.operation, self.method, self.request, measure=False)
        return self._record(sent, outcome=Outcome.timed_out)

    async def abandoned(self) -> Exchange:
        terminal = self.terminal
        timeout_s = terminal.rng.uniform(0.0, terminal.context.config.fault_timeout_s_max)
        sent = await terminal._send(
            self.operation, self.method, self.request, timeout_s=timeout_s, measure=False
        )
        outcome = Outcome.abandoned if sent.outcome is not Outcome.answered else None
        return self._record(sent, outcome=outcome)
