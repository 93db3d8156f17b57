"""Sets up a shop for a run through the Backoffice: programmes, merchant, employee, cards."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Any

import grpc
import trio

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from terminal_sim.bridge import TrioGrpcBridge, open_channel
from terminal_sim.cards import CardKind, SimCard
from terminal_sim.config import WRONG_PIN, ShopLogin

ADMIN_TIMEOUT_S = 30.0
ISSUE_CONCURRENCY_MAX = 32
PREFIX_TRIES_MAX = 8
BALANCE_MAX_MINOR = 200_000
COPAY_NUMERATOR_MINOR = 180  # the holder pays 1.80 per 5.00 loaded, the funder the rest
COPAY_DENOMINATOR_MINOR = 500
EMPLOYEE_NUMBER = "1001"  # the first employee's; the others follow it
LOCATION = "Sim Street"


@dataclass(frozen=True)
class ShopSetup:
    login: ShopLogin
    cards: list[SimCard]


class _Admin:
    def __init__(self, bridge: TrioGrpcBridge, stub: bo_grpc.BackofficeStub, token: str) -> None:
        self.bridge = bridge
        self.stub = stub
        self.metadata: tuple[tuple[str, str | bytes], ...] = (("authorization", f"Bearer {token}"),)

    async def call(self, name: str, request: Any) -> Any:
        return await self.bridge.call(
            getattr(self.stub, name), request, metadata=self.metadata, timeout_s=ADMIN_TIMEOUT_S
        )

    async def programme(self, rng: random.Random, kind: CardKind, currency: str) -> str:
        """A new programme on a free 6-digit prefix (a taken one is refused; try another)."""
        for _ in range(PREFIX_TRIES_MAX):
            request = bo.CreateProgrammeRequest(
                name=f"sim {kind.value} {rng.randrange(10**6):06d}",
                kind=bo.PROGRAMME_KIND_BENEFIT if kind is CardKind.benefit else bo.PROGRAMME_KIND_GIFT,
                currency=currency,
                # Not from the seeded generator: a run again with the same seed tried the same
                # prefixes, all taken by the earlier runs on that switch.
                card_prefix=f"7{secrets.randbelow(10**5):05d}",
                payout_interval_weeks=4,
                balance_max_minor=BALANCE_MAX_MINOR,
                card_validity_months=36,
            )
            if kind is CardKind.benefit:
                request.copay_numerator_minor = COPAY_NUMERATOR_MINOR
                request.copay_denominator_minor = COPAY_DENOMINATOR_MINOR
                request.funder_name = "Sim City Council"
            try:
                return str((await self.call("CreateProgramme", request)).programme_id)
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS):
                    raise
        raise RuntimeError("no free card prefix found for the simulator's programme")


async def provision_shop(
    address: str,
    admin_token: str,
    card_count: int,
    start_balance_minor: int,
    *,
    seed: int,
    employees: int = 1,
    benefit_share: float = 0.3,
    currency: str = "EUR",
) -> ShopSetup:
    """A merchant of its own (fresh login per run) with a gift and a benefit programme."""
    assert employees >= 1, employees
    rng = random.Random(seed)
    bridge = TrioGrpcBridge()
    with open_channel(address) as channel:
        admin = _Admin(bridge, bo_grpc.BackofficeStub(channel), admin_token)
        programmes = {
            kind: await admin.programme(rng, kind, currency) for kind in (CardKind.gift, CardKind.benefit)
        }
        password = secrets.token_urlsafe(12)
        email = f"sim-{secrets.token_hex(4)}@txswitch.example"
        signers = [(str(int(EMPLOYEE_NUMBER) + index), _employee_pin(rng)) for index in range(employees)]
        merchant = await admin.call(
            "CreateMerchant", bo.CreateMerchantRequest(name="Sim Shop", email=email, password=password)
        )
        merchant_id = merchant.merchant_id
        await admin.call("AddLocation", bo.AddLocationRequest(merchant_id=merchant_id, name=LOCATION))
        for number, pin in signers:
            await admin.call(
                "AddEmployee",
                bo.AddEmployeeRequest(
                    merchant_id=merchant_id,
                    employee_number=number,
                    name=f"Sim Manager {number}",
                    pin=pin,
                    role="manager",
                ),
            )
        for programme_id in programmes.values():
            await admin.call(
                "JoinProgramme",
                bo.JoinProgrammeRequest(
                    merchant_id=merchant_id, programme_id=programme_id, commission_basis_points=250
                ),
            )
        kinds = [
            CardKind.benefit if rng.random() < benefit_share else CardKind.gift for _ in range(card_count)
        ]
        cards = await _issue_cards(admin, programmes, kinds, start_balance_minor, currency)
    (first_number, first_pin), *others = signers
    login = ShopLogin(email, password, LOCATION, first_number, first_pin, currency, tuple(others))
    return ShopSetup(login, cards)


def _employee_pin(rng: random.Random) -> str:
    while (pin := f"{rng.randrange(10_000):04d}") == WRONG_PIN:
        pass
    return pin


async def _issue_cards(
    admin: _Admin,
    programmes: dict[CardKind, str],
    kinds: list[CardKind],
    start_balance_minor: int,
    currency: str,
) -> list[SimCard]:
    issued: list[SimCard | None] = [None] * len(kinds)
    limiter = trio.CapacityLimiter(ISSUE_CONCURRENCY_MAX)
    run_tag = secrets.token_hex(4)

    async def issue(index: int) -> None:
        async with limiter:
            request = bo.IssueCardRequest(
                programme_id=programmes[kinds[index]],
                initial_load=pb.Amount(amount_minor=start_balance_minor, currency=currency),
                request_id=f"sim-{run_tag}-c{index}",  # a letter: no digit run a card number's length
            )
            card = await admin.call("IssueCard", request)
            issued[index] = SimCard(
                card.card.card_id,
                card.card_number,
                card.qr_payload,
                kinds[index],
                card.card.balance.amount_minor,
            )

    async with trio.open_nursery() as nursery:
        for index in range(len(kinds)):
            nursery.start_soon(issue, index)
    return [card for card in issued if card is not None]
