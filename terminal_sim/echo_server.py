"""A Terminal servicer that approves everything and does nothing: the benchmark's ceiling."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

# grpc's core prints its own errors on stderr ("E1207 ... add_port.cc:83] Failed to add port to
# server: ..." above our one line for a taken port). It reads GRPC_VERBOSITY once, when first
# imported: so here, before grpc is. Only in the program itself (`python -m terminal_sim.echo_server`):
# a process that imports this module (the accept-cost probe, a test) keeps grpc core's errors, as
# switch.grpc_core_log does for the switch. An operator's own value (ERROR, DEBUG) stands.
if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from grpc import aio

from protocols.serving import BusyMethodsRegistered
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.listening import host_port
from terminal_sim.arguments import cannot_listen_problem, listen_problem

ECHO_BALANCE_MINOR = 100_000
ECHO_CURRENCY = "EUR"
GRPC_BIND_FAILED = "grpc could not bind it (no address of this machine, or the port is taken)"


def _approved(transaction_id: str, amount: pb.Amount | None) -> pb.TransactionResponse:
    return pb.TransactionResponse(
        transaction_id=transaction_id,
        response_code="00",
        message="Approved",
        requested=amount,
        approved=amount,
        balance=pb.Amount(amount_minor=ECHO_BALANCE_MINOR, currency=ECHO_CURRENCY),
        status="approved",
    )


class EchoTerminalServicer(pb_grpc.TerminalServicer):
    """Answers every Terminal RPC with approved; keeps no state, checks nothing."""

    async def Activate(
        self, request: pb.ActivateRequest, context: aio.ServicerContext[object, object]
    ) -> pb.ActivateResponse:
        return pb.ActivateResponse(
            terminal_id=f"echo-{request.device_name}",
            credential=f"echo-{request.device_name}.secret",
            merchant_name="Echo",
            location=request.location,
            period_number=1,
        )

    async def Balance(
        self, request: pb.BalanceRequest, context: aio.ServicerContext[object, object]
    ) -> pb.BalanceResponse:
        return pb.BalanceResponse(
            response_code="00",
            message="Approved",
            balance=pb.Amount(amount_minor=ECHO_BALANCE_MINOR, currency=ECHO_CURRENCY),
            card_status="active",
        )

    async def Redeem(
        self, request: pb.RedeemRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        return _approved(request.transaction_id, request.amount)

    async def Load(
        self, request: pb.LoadRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        return _approved(request.transaction_id, request.amount)

    async def Refund(
        self, request: pb.RefundRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        return _approved(request.transaction_id, request.amount)

    async def Cancel(
        self, request: pb.CancelRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        return _approved(request.transaction_id, None)

    async def Reversal(
        self, request: pb.ReversalRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        response = _approved(request.original_transaction_id, None)
        response.status = "reversed"
        return response

    async def TransactionStatus(
        self, request: pb.TransactionStatusRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionStatusResponse:
        return pb.TransactionStatusResponse(
            found=True,
            status="approved",
            transaction=_approved(request.transaction_id, None),
        )

    async def DayClose(
        self, request: pb.DayCloseRequest, context: aio.ServicerContext[object, object]
    ) -> pb.DayCloseReport:
        return pb.DayCloseReport(sequence_number=1, period_number=1, next_period_number=2)

    async def XReport(
        self, request: pb.XReportRequest, context: aio.ServicerContext[object, object]
    ) -> pb.DayCloseReport:
        return pb.DayCloseReport(period_number=1)

    async def Pay(
        self, request: pb.PayRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        return _approved(request.transaction_id, request.amount)

    async def Abort(
        self, request: pb.AbortRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        response = _approved(request.transaction_id, None)
        response.status = "aborted"
        return response

    async def RefundCard(
        self, request: pb.CardRefundRequest, context: aio.ServicerContext[object, object]
    ) -> pb.TransactionResponse:
        return _approved(request.transaction_id, request.amount)

    async def SendReceipt(
        self, request: pb.SendReceiptRequest, context: aio.ServicerContext[object, object]
    ) -> pb.SendReceiptResponse:
        return pb.SendReceiptResponse(receipt_id="rcp_echo", email_masked="e***@example.com")


async def start_echo_server(host: str = "127.0.0.1", port: int = 0) -> tuple[aio.Server, int]:
    """Start the echo servicer on an asyncio loop; returns the server and its bound port."""
    server = BusyMethodsRegistered(aio.server())  # the switch's gRPC layer, so the ceiling is comparable
    pb_grpc.add_TerminalServicer_to_server(EchoTerminalServicer(), server)
    try:
        bound_port = server.add_insecure_port(host_port(host, port))
    except RuntimeError:  # grpc's "Failed to bind", which names no cause
        raise _bind_failure(host, port) from None
    await server.start()
    return server, bound_port


def _bind_failure(host: str, port: int) -> OSError:
    """Why grpc could not bind host:port, as far as can be told: the resolver's own error for a host
    that does not resolve."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return error
    return OSError(GRPC_BIND_FAILED)


async def _serve(host: str, port: int) -> OSError | None:
    """Serve until SIGTERM or SIGINT; what kept it from listening, if anything did."""
    try:
        server, bound_port = await start_echo_server(host, port)
    except OSError as error:
        return error
    # The parent process reads this line to learn the port.
    print(f"echo-server listening on {host_port(host, bound_port)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m terminal_sim.echo_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    if (problem := listen_problem("--host", args.host, "--port", args.port)) is not None:
        parser.error(problem)
    if (error := asyncio.run(_serve(args.host, args.port))) is not None:
        parser.error(cannot_listen_problem("--host", args.host, "--port", args.port, error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
