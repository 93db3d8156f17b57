"""gRPC server interceptors for operations: request metrics for every RPC, and the drain gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from ops.metrics import SwitchMetrics
from protocols.wire import terminal_pb2

TERMINAL_SERVICE = terminal_pb2.DESCRIPTOR.services_by_name["Terminal"].full_name
DRAINING_MESSAGE = "the switch is draining and takes no new work; retry on another node or later"
NO_ISO_CODE = "OK"  # answered without an ISO 8583 response code (activation, reports, backoffice)

Behavior = Callable[[Any, grpc.ServicerContext], Any]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], "Handler | None"]


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


def _status_name(context: grpc.ServicerContext) -> str:
    read = getattr(context, "code", None)  # set by context.abort / set_code; not in the stubs
    code = read() if read is not None else None
    if isinstance(code, grpc.StatusCode):
        return code.name.lower()
    return "unknown"


class MetricsInterceptor(_Interceptor):
    """Counts every unary RPC by name and code, its latency, and in-flight requests.

    The code label is the answer's ISO 8583 response code, "OK" for answers without one, or the
    gRPC status name for errors; the RPC label is the method name. Neither can carry card data.
    """

    def __init__(self, metrics: SwitchMetrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Behavior = handler.unary_unary
        rpc = rpc_name(handler_call_details.method)
        metrics = self._metrics
        activation = rpc == "Activate"

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            metrics.request_started(rpc)
            started = time.perf_counter()
            code = "unknown"
            try:
                response = inner(request, context)
                code = _response_code(response)
                return response
            except BaseException:
                code = _status_name(context)
                raise
            finally:
                metrics.request_finished(rpc)
                metrics.observe_request(rpc, code, time.perf_counter() - started)
                if activation and code == NO_ISO_CODE:
                    metrics.terminal_activated()

        return _wrap_unary(handler, behavior)


class DrainGate(_Interceptor):
    """While draining, new terminal requests get UNAVAILABLE; requests already inside finish."""

    def __init__(self, draining: threading.Event) -> None:
        self._draining = draining

    def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        if service_name(handler_call_details.method) != TERMINAL_SERVICE:
            return handler
        inner: Behavior = handler.unary_unary
        draining = self._draining

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            if draining.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
            return inner(request, context)

        return _wrap_unary(handler, behavior)
