"""Which methods a grpc.aio server registers with grpc's core, and which it finds by name.

grpc.aio (1.85) keeps one pending accept per registered method plus one for everything else, and
for every call it accepts it runs `asyncio.wait` over all of them (`_server_main_loop` in its
`aio/server.pyx.pxi`). The generated `add_*Servicer_to_server` functions register every method:
67 futures for the switch's services, where `asyncio.wait` takes about 90 µs of CPU a call on
this machine, against 30 µs over the 11 kept here (the script in `docs/decisions.md`). Nearly
every call a shop makes is one of a few terminal methods, so only those stay registered; the
rest are found through the generic handlers the generated code adds anyway, a dictionary lookup
each. `python -m terminal_sim.accept_cost` measures the difference on a whole server."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from protocols.wire import terminal_pb2

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    GenericHandler = grpc.GenericRpcHandler

_TERMINAL = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"]
TERMINAL_SERVICE = _TERMINAL.full_name

# What terminals send all day: the shop's flows and the bank-card payments. Registering a method
# lets grpc accept one call of it per turn of the event loop alongside the others, and costs every
# call about 1 µs more; the rest (activation, day close, receipts, reports, the backoffice, the
# portal, health, reflection) share the one generic accept. A name not in the service fails here.
BUSY_METHODS = frozenset(
    f"/{TERMINAL_SERVICE}/{_TERMINAL.methods_by_name[name].name}"
    for name in (
        "Balance",
        "Redeem",
        "Load",
        "Refund",
        "Cancel",
        "Reversal",
        "TransactionStatus",
        "Pay",
        "Abort",
        "RefundCard",
    )
)


class BusyMethodsRegistered(grpc.aio.Server):
    """A grpc.aio server that registers only the methods named in `busy` with grpc's core.

    The generated `add_*Servicer_to_server` functions hand every method to a server twice: as a
    generic handler, and as registered methods. This server passes the generic handlers on and
    keeps only the busy registered ones, so the other methods are still served, by name.
    """

    def __init__(self, server: grpc.aio.Server, busy: Collection[str] = BUSY_METHODS) -> None:
        self._server = server
        self._busy = busy
        self.registered: list[str] = []  # full method names, in the order they were registered

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        busy = {name: handler for name, handler in handlers.items() if f"/{service}/{name}" in self._busy}
        if busy:
            server: Any = self._server  # grpc-stubs 1.53 predates registered methods
            server.add_registered_method_handlers(service, busy)
            self.registered.extend(f"/{service}/{name}" for name in busy)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)
