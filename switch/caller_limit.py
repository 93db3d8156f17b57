"""A per-caller call limit over a sliding window: for calls anyone may make without a login, and for
wrong passwords whatever address they were tried on."""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict, deque
from urllib.parse import unquote

# The smallest block a site is given (RFC 6177): whoever holds one address of it holds them all.
IPV6_CALLER_PREFIX_LENGTH = 64


class CallerLimit:
    """At most `calls_max` calls per caller in any `window_s`; at most `callers_max` callers
    remembered, the longest quiet forgotten first.

    Thread-safe: the check and the count are one step under a lock, so a burst of calls arriving
    together (one per server thread) passes no more than `calls_max`. A limit on some outcomes only
    (wrong passwords) counts every call as it is checked and gives back those whose outcome does
    not count (`give_back`).
    """

    def __init__(self, calls_max: int, window_s: float, callers_max: int) -> None:
        assert calls_max > 0 and window_s > 0 and callers_max > 0
        self._calls_max = calls_max
        self._window_s = window_s
        self._callers_max = callers_max
        self._calls: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, caller: str, now_s: float) -> float:
        """0.0 and the call counted; or how long until this caller may call again (not counted)."""
        with self._lock:
            calls = self._calls.get(caller)
            if calls is None:
                if len(self._calls) >= self._callers_max:
                    self._calls.popitem(last=False)
                calls = self._calls[caller] = deque(maxlen=self._calls_max)
            else:
                self._calls.move_to_end(caller)
            _forget_older(calls, now_s - self._window_s)
            if len(calls) >= self._calls_max:
                return calls[0] + self._window_s - now_s
            calls.append(now_s)
            return 0.0

    def give_back(self, caller: str, counted_s: float) -> None:
        """The call counted at `counted_s` (a `wait_s` that answered 0.0) no longer counts: its
        outcome is not one the limit is on (a right password). Nothing if it left the window or
        the caller was forgotten meanwhile."""
        with self._lock:
            calls = self._calls.get(caller)
            if calls is None or counted_s not in calls:
                return
            calls.remove(counted_s)
            if not calls:
                del self._calls[caller]

    @property
    def callers(self) -> int:
        return len(self._calls)


def _forget_older(calls: deque[float], oldest_kept_s: float) -> None:
    while calls and calls[0] <= oldest_kept_s:
        calls.popleft()


def caller_address(peer: str) -> str:
    """The caller of a peer, as its calls are counted: an IPv4 address without its port
    ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"); an IPv6 one as its /64 ("ipv6:[2001:db8::1]:443"
    -> "ipv6:[2001:db8::]/64"), since one site holds all of a /64 and counting each of its 2^64
    addresses was no limit; an IPv4 client on a dual-stack socket ("[::ffff:10.0.0.7]") as its
    IPv4 address; anything else (a unix socket) as it is. gRPC may give the brackets URL-encoded
    ("ipv6:%5B::1%5D:51234")."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return _ipv6_caller(rest[1 : rest.find("]")])
    if kind == "ipv4":
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def _ipv6_caller(host: str) -> str:
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:  # not what gRPC gives: counted as it is
        return f"ipv6:[{host}]"
    if address.ipv4_mapped is not None:
        return f"ipv4:{address.ipv4_mapped}"
    network = ipaddress.IPv6Network((address, IPV6_CALLER_PREFIX_LENGTH), strict=False)
    return f"ipv6:[{network.network_address}]/{IPV6_CALLER_PREFIX_LENGTH}"
