"""A terminal against an in-process fake switch on trio's clock: no grpc, no threads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from protocols.wire import terminal_pb2 as pb
from terminal_sim.cards import CardKind, CardPopulation, SimCard
from terminal_sim.config import ShopLogin, SimConfig
from terminal_sim.records import Outcome
from terminal_sim.terminal import RunContext, SimTerminal


class FakeStub:
    """Answers every money request approved in full, at once."""

    @staticmethod
    def _approve(request: Any) -> pb.TransactionResponse:
        amount = getattr(request, "amount", None)
        minor = amount.amount_minor if amount is not None else 0
        return pb.TransactionResponse(
            transaction_id=getattr(request, "transaction_id", ""),
            response_code="00",
            approved=pb.Amount(amount_minor=minor, currency="EUR"),
            status="approved",
        )

    def Balance(self, request: Any) -> Any:
        return pb.BalanceResponse(response_code="00", balance=pb.Amount(amount_minor=5_000, currency="EUR"))

    Redeem = Load = Refund = Cancel = Reversal = _approve

    def TransactionStatus(self, request: Any) -> Any:
        return pb.TransactionStatusResponse(found=False, status="unknown")

    def DayClose(self, request: Any) -> Any:
        return pb.DayCloseReport()


@dataclass
class FakeBridge:
    """Every call takes service_s of trio time."""

    service_s: float
    calls: int = 0

    async def call(self, method: Any, request: Any, *, metadata: Any = None, timeout_s: Any = None) -> Any:
        self.calls += 1
        await trio.sleep(self.service_s)
        return method(request)


@dataclass
class CapturingRecorder:
    """Stands in for Recorder: keeps (operation, latency_s) of every measured request."""

    records: list[tuple[str, float]] = field(default_factory=list)

    def record(self, operation: str, latency_s: float, code: Any, outcome: Outcome, now_s: float) -> None:
        self.records.append((operation, latency_s))


def cards(count: int = 50) -> CardPopulation:
    return CardPopulation(
        [SimCard(f"c{i}", f"9{i:015d}", f"QR:{i}", CardKind.gift, 5_000) for i in range(count)], 1.1
    )


LOGIN = ShopLogin("m@example", "pw", "Loc", "1001", "1234")


def terminal(config: SimConfig, service_s: float, recorder: Any, index: int = 0) -> SimTerminal:
    context = RunContext(config, LOGIN, cards(), FakeBridge(service_s), recorder, "run")  # type: ignore[arg-type]
    sim = SimTerminal(index, FakeStub(), context)  # type: ignore[arg-type]
    sim.terminal_id = f"trm_{index}"
    return sim


def context_of(config: SimConfig, service_s: float, recorder: Any) -> RunContext:
    return RunContext(config, LOGIN, cards(), FakeBridge(service_s), recorder, "run")  # type: ignore[arg-type]


__all__ = ["CapturingRecorder", "FakeBridge", "FakeStub", "context_of", "terminal"]
