"""The actor registry: never two live actors for one key, even when passivation races with requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka

from actors.registry import ActorRegistry


class Probe(pykka.ThreadingActor):
    """Counts how many actors for a key are alive at once."""

    live: dict[str, int] = {}
    live_max: dict[str, int] = {}
    lock = threading.Lock()

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def on_start(self) -> None:
        with Probe.lock:
            Probe.live[self.key] = Probe.live.get(self.key, 0) + 1
            Probe.live_max[self.key] = max(Probe.live_max.get(self.key, 0), Probe.live[self.key])

    def on_stop(self) -> None:
        time.sleep(0.002)  # a slow stop widens the race window
        with Probe.lock:
            Probe.live[self.key] -= 1

    def on_receive(self, message: Any) -> Any:
        return (self.key, message)


def test_passivation_racing_requests_never_leaves_two_live_actors() -> None:
    registry: ActorRegistry[str] = ActorRegistry(
        "probe", Probe.start, live_max=3, idle_s=0.0, stop_timeout_s=5.0
    )
    keys = [f"k{index}" for index in range(5)]
    stop = threading.Event()

    def reaper() -> None:
        while not stop.is_set():
            registry.reap()

    reaping = threading.Thread(target=reaper)
    reaping.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda i: registry.ask(keys[i % 5], i, timeout_s=5.0), range(2_000)))
    finally:
        stop.set()
        reaping.join()
        registry.stop_all()
    assert answers == [(keys[i % 5], i) for i in range(2_000)]
    assert max(Probe.live_max.values()) == 1
    assert all(count == 0 for count in Probe.live.values())
    assert registry.statistics().passivated > 0


def test_live_count_is_bounded() -> None:
    registry: ActorRegistry[str] = ActorRegistry(
        "probe", Probe.start, live_max=4, idle_s=60.0, stop_timeout_s=5.0
    )
    try:
        for index in range(20):
            registry.ask(f"bound{index}", "hello", timeout_s=5.0)
            stats = registry.statistics()
            assert stats.live <= 4
    finally:
        registry.stop_all()
