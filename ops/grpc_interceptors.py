"""gRPC server interceptors for operations: request metrics for every RPC, and the drain gate."""

from __future__ import annotations

import abc
import contextlib
import inspect
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from ops.metrics import SwitchMetrics
from protocols.wire import terminal_pb2

TERMINAL_SERVICE = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"].full_name
DRAINING_MESSAGE = "the switch is draining and takes no new work; retry on another node or later"
NO_ISO_CODE = "OK"  # answered without an ISO 8583 response code (activation, reports, backoffice)

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


def _wrap_unary(handler: Handler, behavior: Behavior) -> Handler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _response_code(response: object) -> str:
    code = getattr(response, "response_code", "")
    return code if isinstance(code, str) and code else NO_ISO_CODE


def _status_name(context: Any) -> str:
    read = getattr(context, "code", None)  # set by context.abort / set_code; not in the stubs
    code = read() if read is not None else None
    if isinstance(code, grpc.StatusCode):
        return code.name.lower()
    return "unknown"


class _CachingInterceptor(_Interceptor):
    """Wraps each registered method's handler once, not once per call (grpc.aio server).

    Handlers are async (the terminal protocol) or plain functions that grpc.aio runs on its
    migration thread pool (backoffice, health); a wrapper is of the same kind as what it wraps.

    grpc asks the interceptors for a handler on every call; the answer for a method never changes,
    and wrapping it again cost about as much as the rest of the interceptor's work. Unknown methods
    are not remembered, so a client inventing names cannot grow the cache.
    """

    def __init__(self) -> None:
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

    @abc.abstractmethod
    def _wrap(self, method: str, handler: Handler) -> Handler:
        """The handler to serve `method` with, around the registered one."""


class MetricsInterceptor(_CachingInterceptor):
    """Counts every unary RPC by name and code, its latency, and in-flight requests.

    The code label is the answer's ISO 8583 response code, "OK" for answers without one, or the
    gRPC status name for errors; the RPC label is the method name. Neither can carry card data.
    """

    def __init__(self, metrics: SwitchMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is None:
            return handler
        inner: Behavior = handler.unary_unary
        rpc = rpc_name(method)
        metrics = self._metrics
        activation = rpc == "Activate"

        @contextlib.contextmanager
        def measuring(context: Any) -> Iterator[list[str]]:
            """Yields [code] for the caller to set from the answer; an error sets it from context."""
            metrics.request_started(rpc)
            started = time.perf_counter()
            code = ["unknown"]
            try:
                yield code
            except BaseException:
                code[0] = _status_name(context)
                raise
            finally:
                metrics.request_finished(rpc)
                metrics.observe_request(rpc, code[0], time.perf_counter() - started)
                if activation and code[0] == NO_ISO_CODE:
                    metrics.terminal_activated()

        if inspect.iscoroutinefunction(inner):

            async def measured(request: Any, context: Any) -> Any:
                with measuring(context) as code:
                    response = await inner(request, context)
                    code[0] = _response_code(response)
                    return response

            return _wrap_unary(handler, measured)

        def behavior(request: Any, context: Any) -> Any:
            recorder = _StatusRecorder(context)
            with measuring(recorder) as code:
                response = inner(request, recorder)
                code[0] = _response_code(response)
                return response

        return _wrap_unary(handler, behavior)


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


class DrainGate(_CachingInterceptor):
    """While draining, new terminal requests get UNAVAILABLE; requests already inside finish."""

    def __init__(self, draining: threading.Event) -> None:
        super().__init__()
        self._draining = draining

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is None or service_name(method) != TERMINAL_SERVICE:
            return handler
        inner: Behavior = handler.unary_unary
        draining = self._draining

        assert inspect.iscoroutinefunction(inner), "the terminal protocol is served on the event loop"

        async def gated(request: Any, context: Any) -> Any:
            if draining.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
            return await inner(request, context)

        return _wrap_unary(handler, gated)


class _Malformed:
    """What a request that does not parse becomes, so the RPC can say so instead of failing."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


class MalformedRequests(_CachingInterceptor):
    """A request that is not valid protobuf ends with INVALID_ARGUMENT naming the expected message.

    grpc.aio would answer UNKNOWN and log the parser's traceback. Nothing of the request's bytes is
    repeated in the answer: they may hold a card number.
    """

    def _wrap(self, method: str, handler: Handler) -> Handler:
        deserialize = handler.request_deserializer
        if handler.unary_unary is None or deserialize is None:
            return handler
        inner: Behavior = handler.unary_unary
        expected = rpc_name(method)

        def parse(data: bytes) -> Any:
            try:
                return deserialize(data)
            except DecodeError as error:
                return _Malformed(_type_name(error, expected))

        def message(request: _Malformed) -> str:
            return f"the request is not a valid {request.type_name} message"

        if inspect.iscoroutinefunction(inner):

            async def checked(request: Any, context: Any) -> Any:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message(request))
                return await inner(request, context)

            behavior: Behavior = checked
        else:

            def checked_sync(request: Any, context: Any) -> Any:
                if isinstance(request, _Malformed):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message(request))
                return inner(request, context)

            behavior = checked_sync
        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=parse, response_serializer=handler.response_serializer
        )


def _type_name(error: DecodeError, rpc: str) -> str:
    """'txswitch.v1.RedeemRequest' from the parser's message, else the RPC's name plus 'request'."""
    found = re.search(r"message with type '([\w.]+)'", str(error))
    return found.group(1) if found else f"{rpc} request"
