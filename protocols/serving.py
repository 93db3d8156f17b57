"""Which methods a grpc.aio server registers with grpc's core, and which it finds by name.

grpc.aio (1.85) keeps one pending accept per registered method plus one for everything else, and
for every call it accepts it runs `asyncio.wait` over all of them (`_server_main_loop` in its
`aio/server.pyx.pxi`). The generated `add_*Servicer_to_server` functions register every method:
67 futures for the switch's services, where `asyncio.wait` takes about 90 µs of CPU a call on
this machine, against 30 µs over the 11 kept here (the script in `docs/decisions.md`). Nearly
every call a shop makes is one of a few terminal methods, so only those stay registered; the
rest are found through the generic handlers the generated code adds anyway, a dictionary lookup
each. `python -m terminal_sim.accept_cost` measures the difference on a whole server.

One pending accept per method also means grpc.aio takes at most one new call of a method per
turn of its accept loop, and under load a turn lasts several turns of the event loop. In a
closed loop of 200 terminals the calls of the busiest method (Balance) waited there: 0.5 ms in
the handler, 370 ms p50 at the terminal (README, session 17). So each busy method gets more
pending accepts of its own (`ACCEPTS_PER_METHOD`), each a task that takes a call and hands it to
grpc.aio's own call handling, as its accept loop does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # pinned grpcio; tested against it

from protocols.wire import terminal_pb2

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    GenericHandler = grpc.GenericRpcHandler
    Interceptor = grpc.aio.ServerInterceptor

log = logging.getLogger(__name__)

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


# Pending accepts of each busy method: grpc.aio's one and sixteen accept tasks. In `make bench`
# (README, session 17): 1 gave 725 and 931 approved/s, 8 gave 928 and 980, 17 gave 1,066 and 1,088.
# More is not better without end: past some count the calls only wait inside the switch instead.
ACCEPTS_PER_METHOD = 17


class BusyMethodsRegistered(grpc.aio.Server):
    """A grpc.aio server that registers only the methods named in `busy` with grpc's core.

    The generated `add_*Servicer_to_server` functions hand every method to a server twice: as a
    generic handler, and as registered methods. This server passes the generic handlers on and
    keeps only the busy registered ones, so the other methods are still served, by name.

    Once started, each registered method has `accepts_per_method` pending accepts: grpc.aio's own
    and `accepts_per_method - 1` accept tasks (`_accept_calls`). A call they take is handled the
    way grpc.aio handles the calls it takes itself, through the same `interceptors` (pass the
    ones the server was made with) and handlers. They take no part in grpc.aio's
    `maximum_concurrent_rpcs`: leave that unset and limit in an interceptor, which sees every call.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        busy: Collection[str] = BUSY_METHODS,
        *,
        interceptors: Iterable[Interceptor] = (),
        accepts_per_method: int = ACCEPTS_PER_METHOD,
    ) -> None:
        if accepts_per_method < 1:
            raise ValueError(f"accepts per method must be 1 or more, not {accepts_per_method}")
        self._server = server
        self._busy = busy
        self._interceptors = tuple(interceptors)
        self._accepts_per_method = accepts_per_method
        self.registered: list[str] = []  # full method names, in the order they were registered
        self._generic: list[GenericHandler] = []
        self._handlers: dict[str, Handler] = {}  # registered, by full method name
        self._accepting: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()  # calls the accept tasks took, until answered
        self.accepted = 0  # calls the accept tasks took, since the start

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        handlers = list(generic_rpc_handlers)
        self._generic.extend(handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        busy = {name: handler for name, handler in handlers.items() if f"/{service}/{name}" in self._busy}
        if busy:
            server: Any = self._server  # grpc-stubs 1.53 predates registered methods
            server.add_registered_method_handlers(service, busy)
            for name, handler in busy.items():
                self.registered.append(f"/{service}/{name}")
                self._handlers[f"/{service}/{name}"] = handler

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()
        core = getattr(self._server, "_server")  # noqa: B009  # grpc.aio's cygrpc.AioServer
        resolver = cygrpc._MethodResolver(self._generic, self._handlers)
        loop = asyncio.get_running_loop()
        self._accepting = [
            loop.create_task(self._accept_calls(core, method, resolver))
            for method in self.registered
            for _ in range(self._accepts_per_method - 1)
        ]

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)
        # Stopped, grpc fails the accepts still pending, and each accept task ends.
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        self._accepting = []

    @property
    def accepting(self) -> int:
        """How many accept tasks are waiting for calls (besides grpc.aio's own accepts)."""
        return sum(not task.done() for task in self._accepting)

    async def _accept_calls(self, core: Any, method: str, resolver: Any) -> None:
        """Take calls of `method` while the server runs; each is handled as grpc.aio's accept loop does.

        That loop (`_server_main_loop`, grpcio 1.85.1) asks core for the next call of a registered
        method, and on one runs `_handle_rpc` (interceptors, handler lookup, the handler, the
        answer) inside `_schedule_rpc_coro` (which ends it if the client cancels), holding the task
        until it ends. This does the same, with the concurrency limit left to the interceptors.
        """
        loop = asyncio.get_running_loop()
        method_bytes = method.encode()
        while core.is_running():
            try:
                rpc_state = await core._request_registered_call(method_bytes)
            except cygrpc._RequestCallError:
                continue  # failed in core: stopping (the loop ends) or a one-off failure (ask again)
            except Exception:  # asking failed at once, and would again: grpc's own accept remains
                log.exception("stopped taking calls of %s on an accept task", method)
                return
            self.accepted += 1
            handling = cygrpc._handle_rpc(method, resolver, self._interceptors, rpc_state, loop, False)
            call = loop.create_task(cygrpc._schedule_rpc_coro(handling, rpc_state, loop, method))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)
