"""A per-caller call limit over a sliding window, for calls anyone may make without a login."""

from __future__ import annotations

from collections import OrderedDict, deque
from urllib.parse import unquote


class CallerLimit:
    """At most `calls_max` calls per caller in any `window_s`; at most `callers_max` callers
    remembered, the longest quiet forgotten first.

    Not thread-safe: one event loop owns it (the gRPC server's).
    """

    def __init__(self, calls_max: int, window_s: float, callers_max: int) -> None:
        assert calls_max > 0 and window_s > 0 and callers_max > 0
        self._calls_max = calls_max
        self._window_s = window_s
        self._callers_max = callers_max
        self._calls: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_s(self, caller: str, now_s: float) -> float:
        """0.0 and the call counted; or how long until this caller may call again (not counted)."""
        calls = self._calls.get(caller)
        if calls is None:
            if len(self._calls) >= self._callers_max:
                self._calls.popitem(last=False)
            calls = self._calls[caller] = deque()
        else:
            self._calls.move_to_end(caller)
        while calls and calls[0] <= now_s - self._window_s:
            calls.popleft()
        if len(calls) >= self._calls_max:
            return calls[0] + self._window_s - now_s
        calls.append(now_s)
        return 0.0

    @property
    def callers(self) -> int:
        return len(self._calls)


def caller_address(peer: str) -> str:
    """The caller's address without its port: "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7",
    "ipv6:[::1]:51234" -> "ipv6:[::1]"; anything else (a unix socket) as it is. gRPC may give the
    brackets URL-encoded ("ipv6:%5B::1%5D:51234"): each connection's port was then kept, so every
    new connection got a fresh limit."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return f"{kind}:{rest[: rest.find(']') + 1]}"
    if kind == "ipv4":
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer
