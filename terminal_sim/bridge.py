"""Bridge from trio tasks to grpcio unary calls through call futures and the trio token."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc._channel as grpc_channel_module
import trio

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

Metadata = tuple[tuple[str, str | bytes], ...]

_LOGGER = logging.getLogger(__name__)
# A method no server implements: the call that lets a pinned spin thread finish cleanly.
_UNPIN_METHOD = "/txswitch.sim.Bridge/Unpin"
UNPIN_TIMEOUT_S = 2.0
UNPIN_POLL_S = 0.005


@dataclass(frozen=True)
class BridgeStatistics:
    calls_started: int
    calls_completed: int
    calls_cancelled: int
    wakeups_scheduled: int
    wakeup_batches_run: int
    in_flight: int


class _Waiter:
    """One trio task parked on one grpc future; touched only on the trio thread once parked."""

    __slots__ = ("future", "task", "waiting")

    def __init__(self, future: grpc.Future[Any], task: trio.lowlevel.Task) -> None:
        self.future = future
        self.task = task
        self.waiting = True


class TrioGrpcBridge:
    """Awaits grpc call futures from trio without a thread per call.

    grpc runs a future's done-callback on its channel-spin thread. That thread only appends the
    waiter to a deque and, when the deque was empty, asks the trio loop (through the trio token)
    to drain it. Completions that arrive while a drain is pending ride on that one wakeup, so a
    burst of N replies costs one wakeup write and one GIL handoff instead of N
    (docs/sim-bridge.md has the measurements behind this choice).
    """

    def __init__(self, *, batch_wakeups: bool = True) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._batch_wakeups = batch_wakeups
        self._ready: collections.deque[_Waiter] = collections.deque()
        # Guards the "drain already scheduled" flag between the grpc thread and the trio thread.
        self._lock = threading.Lock()
        self._drain_scheduled = False
        self._calls_started = 0
        self._calls_completed = 0
        self._calls_cancelled = 0
        self._wakeups_scheduled = 0
        self._wakeup_batches_run = 0

    def statistics(self) -> BridgeStatistics:
        in_flight = self._calls_started - self._calls_completed - self._calls_cancelled
        return BridgeStatistics(
            calls_started=self._calls_started,
            calls_completed=self._calls_completed,
            calls_cancelled=self._calls_cancelled,
            wakeups_scheduled=self._wakeups_scheduled,
            wakeup_batches_run=self._wakeup_batches_run,
            in_flight=in_flight,
        )

    async def call(
        self,
        method: grpc.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        *,
        metadata: Metadata | None = None,
        timeout_s: float | None = None,
    ) -> ResponseT:
        """Start the call and park this task until it completes; raises grpc.RpcError on failure.

        Cancellation from trio (a cancel scope, a nursery failing) cancels the grpc call.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        token = self._bind_token()
        future = method.future(request, timeout=timeout_s, metadata=metadata)
        waiter = _Waiter(future, trio.lowlevel.current_task())
        self._calls_started += 1
        if self._batch_wakeups:
            future.add_done_callback(lambda _f: self._on_done_batched(token, waiter))
        else:
            future.add_done_callback(lambda _f: self._on_done_single(token, waiter))

        def abort(_raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            waiter.waiting = False
            self._calls_cancelled += 1
            future.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves cancel untyped
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        # The future is done: result() returns at once or raises the call's RpcError.
        return future.result(timeout=0)

    def _bind_token(self) -> trio.lowlevel.TrioToken:
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:
            assert not self._drain_scheduled, "bridge reused across trio runs with calls pending"
            self._token = token
        return token

    # --- grpc thread side -------------------------------------------------------------------

    def _on_done_single(self, token: trio.lowlevel.TrioToken, waiter: _Waiter) -> None:
        self._wakeups_scheduled += 1
        # RunFinishedError: the trio run ended with this call still out; nobody waits for it.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._wake_one, waiter)

    def _on_done_batched(self, token: trio.lowlevel.TrioToken, waiter: _Waiter) -> None:
        with self._lock:
            self._ready.append(waiter)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
            self._wakeups_scheduled += 1
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._drain)

    # --- trio thread side -------------------------------------------------------------------

    def _wake_one(self, waiter: _Waiter) -> None:
        self._wakeup_batches_run += 1
        self._reschedule(waiter)

    def _drain(self) -> None:
        self._wakeup_batches_run += 1
        with self._lock:
            ready = list(self._ready)
            self._ready.clear()
            self._drain_scheduled = False
        for waiter in ready:
            self._reschedule(waiter)

    def _reschedule(self, waiter: _Waiter) -> None:
        if not waiter.waiting:
            return  # cancelled from trio already; abort() counted it
        waiter.waiting = False
        self._calls_completed += 1
        trio.lowlevel.reschedule(waiter.task)


def rpc_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    """The status code of a failed call, or None where grpc gave no code."""
    code = getattr(error, "code", None)
    if code is None:
        return None
    result = code()
    return result if isinstance(result, grpc.StatusCode) else None


def _pin_spin_thread(channel: grpc.Channel) -> bool:
    """Keep the channel's completion-queue thread alive between calls; False if not possible.

    grpcio's sync channel starts a "channel spin" thread when its count of managed calls goes
    from 0 to 1 and lets it exit when the count is back at 0. At 1-16 calls in flight the count
    touches 0 often, so calls pay for a thread start and its first GIL handoff: that is the
    odd tail at low concurrency (docs/sim-bridge.md). One phantom managed call keeps the thread.
    This reaches into grpc._channel; if the internals change we fall back to grpc's behaviour.
    """
    state = getattr(channel, "_call_state", None)
    start_spin = getattr(grpc_channel_module, "_run_channel_spin_thread", None)
    if state is None or start_spin is None or not hasattr(state, "managed_calls"):
        _LOGGER.warning("grpc internals changed; bridge runs without a pinned spin thread")
        return False
    with state.lock:
        if state.managed_calls == 0:
            state.managed_calls = 1
            start_spin(state)
        else:
            state.managed_calls += 1
    return True


def _unpin_spin_thread(channel: grpc.Channel) -> None:
    """Drop the phantom call so the spin thread exits before the channel closes.

    The thread exits only when it sees a call end and the count then reaches 0. Dropping the
    phantom is safe only while a real call is still counted (the count stays above 0), so the
    thread sees that call end. When there is none, one is made (it fails, any answer will do).
    That call can end, and the thread take it off the count, before the phantom is dropped: the
    count then went to 0 with the thread still waiting for a next event, and closing the channel
    hands it a shutdown event with no tag ("'NoneType' object is not callable" in channel_spin).
    So the phantom is dropped under the count's lock, and only while another call is counted."""
    state = channel._call_state  # type: ignore[attr-defined]
    unpin = channel.unary_unary(_UNPIN_METHOD, request_serializer=None, response_deserializer=None)
    deadline_s = time.monotonic() + UNPIN_TIMEOUT_S
    futures: list[grpc.Future[Any]] = []
    while True:
        with state.lock:
            if state.managed_calls > 1:
                state.managed_calls -= 1
                break
        if time.monotonic() >= deadline_s:
            _LOGGER.warning("the bridge's spin thread is still pinned as its channel closes")
            return
        futures.append(unpin.future(b"", timeout=UNPIN_TIMEOUT_S))
    for future in futures:
        with contextlib.suppress(grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
            future.result(timeout=UNPIN_TIMEOUT_S * 2)
    # Calls cancelled from trio finish a moment later: let the count reach zero, the thread go.
    while state.managed_calls > 0 and time.monotonic() < deadline_s + UNPIN_TIMEOUT_S:
        time.sleep(UNPIN_POLL_S)


@contextlib.contextmanager
def open_channel(
    address: str, *, pin_spin_thread: bool = True, own_subchannel: bool = True
) -> Iterator[grpc.Channel]:
    """An insecure channel for the bridge, spin thread pinned, closed on exit.

    own_subchannel gives the channel its own TCP connection instead of sharing one with every
    channel to the same address, so a pool of channels spreads load over connections.
    """
    options = [("grpc.use_local_subchannel_pool", 1)] if own_subchannel else []
    channel = grpc.insecure_channel(address, options=options)
    pinned = pin_spin_thread and _pin_spin_thread(channel)
    try:
        yield channel
    finally:
        if pinned:
            _unpin_spin_thread(channel)
        channel.close()
