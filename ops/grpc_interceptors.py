"""The gRPC server interceptor for operations: request metrics, admission, the drain gate, malformed
requests, and the answer to a fault of the switch's own."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import DecodeError

from ops.metrics import SwitchMetrics
from protocols.serving import TERMINAL_SERVICE

# The web back office's commands that move money, drained as a terminal's.
PORTAL_MONEY_METHODS = frozenset(f"/txswitch.v1.Portal/{name}" for name in ("Redeem", "Refund", "Cancel"))

DRAINING_MESSAGE = "the switch is draining and takes no new work; retry on another node or later"
NO_ISO_CODE = "OK"  # answered without an ISO 8583 response code (activation, reports, backoffice)
INTERNAL_CODE = "internal"  # the metrics' code label for a fault of ours

log = logging.getLogger(__name__)

Behavior = Callable[[Any, Any], Any]  # (request, context) -> response, or an awaitable of it

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]


def rpc_name(method: str) -> str:
    """The method name: "/txswitch.v1.Terminal/Redeem" -> "Redeem"."""
    return method.rsplit("/", 1)[-1]


def service_name(method: str) -> str:
    return method.strip("/").split("/", 1)[0]


def _response_code(response: object) -> str:
    code = getattr(response, "response_code", "")
    return code if isinstance(code, str) and code else NO_ISO_CODE


def _ended_code(call: Any) -> str:
    """How a call that ended before the handler counted it is counted: its status if it has one."""
    if call.cancelled() or call.code() is None:
        return "cancelled"
    return _status_name(call)


def _status_name(context: Any) -> str:
    read = getattr(context, "code", None)  # set by context.abort / set_code; not in the stubs
    code = read() if read is not None else None
    if isinstance(code, grpc.StatusCode):
        return code.name.lower()
    return "unknown"


class EdgeInterceptor(_Interceptor):
    """Metrics, the drain gate and the malformed-request answer, in one wrapper per method.

    - Metrics: every unary RPC and every async server stream (the exports) counted by name and
      code, its latency, and in-flight requests.
      The code label is the answer's ISO 8583 response code, "OK" for answers without one, or the
      gRPC status name for errors; the RPC label is the method name. Neither can carry card data.
    - Admission: beyond `concurrent_max` unary calls in progress, a call gets RESOURCE_EXHAUSTED.
      grpc.aio's own `maximum_concurrent_rpcs` cannot do this: it counts only the calls its own
      accept loop takes, and the switch takes most in accept tasks of its own.
    - Drain gate: while draining, new terminal requests get UNAVAILABLE; requests already inside
      finish.
    - Malformed requests: a request that is not valid protobuf ends with INVALID_ARGUMENT naming
      the expected message (grpc.aio would answer UNKNOWN and log the parser's traceback). Nothing
      of the request's bytes is repeated in the answer: they may hold a card number.
    - Faults of ours: an exception a handler did not turn into a status ends with INTERNAL and a
      reference to the log line that holds it. grpc.aio would answer UNKNOWN with the exception's
      text, which for a database error is the SQL statement.

    Metrics come first, so requests refused (over the limit, draining, unparsed) are counted too.

    Each registered method's handler is wrapped once, not once per call: grpc asks the
    interceptors for a handler on every call, and the answer for a method never changes. Unknown
    methods are not remembered, so a client inventing names cannot grow the cache. The three
    concerns share one wrapper (one coroutine per call, not three): each layer of grpc.aio
    interceptor and wrapper costs a coroutine and an await on every request.

    Handlers are async (the terminal protocol) or plain functions that grpc.aio runs on its
    migration thread pool (backoffice, health); a wrapper is of the same kind as what it wraps.
    """

    def __init__(
        self, metrics: SwitchMetrics, draining: threading.Event, concurrent_max: int | None = None
    ) -> None:
        self._metrics = metrics
        self._draining = draining
        self._admission = _Admission(concurrent_max)
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value]  # an unknown method: grpc answers UNIMPLEMENTED
        wrapped = self._wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return self._wrap_stream(method, handler)
        if handler.unary_unary is None:
            return handler
        inner: Behavior = handler.unary_unary
        rpc = rpc_name(method)
        metrics = self._metrics
        activation = rpc == "Activate"
        # A drain refuses what a terminal sends, and the web back office's redemption with it.
        drained = service_name(method) == TERMINAL_SERVICE or method in PORTAL_MONEY_METHODS
        draining = self._draining if drained else None
        deserialize = handler.request_deserializer
        parse = _tolerant(deserialize, rpc) if deserialize is not None else None
        admission = self._admission

        def refusal(request: Any, admitted: bool) -> tuple[grpc.StatusCode, str] | None:
            if not admitted:
                return grpc.StatusCode.RESOURCE_EXHAUSTED, admission.refusal
            if draining is not None and draining.is_set():
                return grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE
            if isinstance(request, _Malformed):
                return grpc.StatusCode.INVALID_ARGUMENT, _malformed_message(request)
            return None

        def finished(code: str, started: float) -> None:
            metrics.request_finished(rpc)
            metrics.observe_request(rpc, code, time.perf_counter() - started)
            if activation and code == NO_ISO_CODE:
                metrics.terminal_activated()

        if inspect.iscoroutinefunction(inner):

            async def edge(request: Any, context: Any) -> Any:
                metrics.request_started(rpc)
                admitted = admission.enter()
                started = time.perf_counter()
                code = "unknown"
                try:
                    refused = refusal(request, admitted)
                    if refused is not None:
                        await context.abort(*refused)
                    response = await inner(request, context)
                    code = _response_code(response)
                    return response
                except grpc.aio.AbortError:
                    code = _status_name(context)
                    raise
                except Exception as error:
                    code = INTERNAL_CODE
                    await context.abort(*fault(rpc, error))
                except BaseException:
                    code = _status_name(context)
                    raise
                finally:
                    admission.leave()
                    finished(code, started)

            behavior: Behavior = edge
        else:

            def edge_sync(request: Any, context: Any) -> Any:
                metrics.request_started(rpc)
                admitted = admission.enter()
                started = time.perf_counter()
                code = "unknown"
                recorder = _StatusRecorder(context)
                try:
                    refused = refusal(request, admitted)
                    if refused is not None:
                        recorder.abort(*refused)
                    response = inner(request, recorder)
                    code = _response_code(response)
                    return response
                except grpc.aio.AbortError:
                    code = _status_name(recorder)
                    raise
                except Exception as error:
                    code = INTERNAL_CODE
                    recorder.abort(*fault(rpc, error))
                except BaseException:
                    code = _status_name(recorder)
                    raise
                finally:
                    admission.leave()
                    finished(code, started)

            behavior = edge_sync
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=parse or deserialize,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(self, method: str, handler: Handler) -> Handler:
        """A server stream (an export): counted, its malformed request and its faults answered, as
        a unary call's. Not admitted against concurrent_max nor drained: an export may stream for
        minutes and has a limit of its own (exports_concurrent_max)."""
        # grpc-stubs type a stream handler as a synchronous one; this one is an async generator.
        inner = cast(Callable[[Any, Any], AsyncGenerator[Any, None]], handler.unary_stream)
        assert inner is not None
        rpc = rpc_name(method)
        metrics = self._metrics
        deserialize = handler.request_deserializer
        parse = _tolerant(deserialize, rpc) if deserialize is not None else None

        async def edge_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            metrics.request_started(rpc)
            started = time.perf_counter()
            counted = False

            def finished(code: str) -> None:
                nonlocal counted
                if not counted:  # once: here, or in the call's done callback (both on the event loop)
                    counted = True
                    metrics.request_finished(rpc)
                    metrics.observe_request(rpc, code, time.perf_counter() - started)

            # A client that goes away may leave this generator suspended until the garbage collector
            # takes it; the call's end is counted when the call ends. One the client ends while the
            # stream waits to send on its full window ends with no status of ours and `cancelled()`
            # False (grpc 1.85): it was cancelled all the same, not "unknown".
            context.add_done_callback(lambda call: finished(_ended_code(call)))
            try:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _malformed_message(request))
                async with contextlib.aclosing(inner(request, context)) as items:
                    async for item in items:
                        yield item
                finished(NO_ISO_CODE)
            except grpc.aio.AbortError:
                finished(_status_name(context))
                raise
            except Exception as error:
                finished(INTERNAL_CODE)
                await context.abort(*fault(rpc, error))
            except asyncio.CancelledError:  # the client went, its deadline passed, or the stream's own
                finished(_status_name(context) if context.code() is not None else "cancelled")
                raise

        return grpc.unary_stream_rpc_method_handler(
            edge_stream,
            request_deserializer=parse or deserialize,
            response_serializer=handler.response_serializer,
        )


class _Admission:
    """At most `limit` unary calls in progress at once (None: no limit); those beyond are refused.

    Every call is counted, whichever accept took it (grpc.aio's own or the switch's accept tasks,
    `protocols/serving.py`), and on whichever thread its handler runs.
    """

    __slots__ = ("_limit", "_lock", "_taken", "refusal")

    def __init__(self, limit: int | None) -> None:
        assert limit is None or limit > 0, limit
        self._limit = limit
        self._lock = threading.Lock()
        self._taken = 0
        self.refusal = f"the switch is answering {limit} requests already, its limit; retry shortly"

    def enter(self) -> bool:
        """Count a call in; whether it is within the limit. Every enter is followed by a leave."""
        with self._lock:
            self._taken += 1
            return self._limit is None or self._taken <= self._limit

    def leave(self) -> None:
        with self._lock:
            self._taken -= 1


def fault(rpc: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    """Log the fault under a fresh reference; the caller learns the reference, not the fault."""
    reference = secrets.token_hex(4)
    log.error("%s failed (ref %s)", rpc, reference, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error in {rpc}; the switch logged it as ref {reference}"


class _StatusRecorder:
    """A plain handler's context that remembers the status it ended with.

    grpc.aio gives handlers on its thread pool a context without code(); the async one has it.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._context.abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._context.set_code(code)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Malformed:
    """What a request that does not parse becomes, so the RPC can say so instead of failing."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _malformed_message(request: _Malformed) -> str:
    return f"the request is not a valid {request.type_name} message"


def _tolerant(deserialize: Callable[[bytes], Any], rpc: str) -> Callable[[bytes], Any]:
    """deserialize, but bytes that do not parse become a _Malformed naming the expected type."""

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return _Malformed(_type_name(error, rpc))

    return parse


def _type_name(error: DecodeError, rpc: str) -> str:
    """'txswitch.v1.RedeemRequest' from the parser's message, else the RPC's name plus 'request'."""
    found = re.search(r"message with type '([\w.]+)'", str(error))
    return found.group(1) if found else f"{rpc} request"
