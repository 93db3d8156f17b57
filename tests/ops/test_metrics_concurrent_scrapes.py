"""Two scrapes at once (two Prometheus servers scraping one node, the usual pair) over the real
/metrics endpoint: a counter fed from a snapshot of totals (`ops/runtime.py` feeds) still counts
each event once."""

from __future__ import annotations

import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import MetricsServer, SwitchMetrics
from ops.runtime import PaymentRecoveriesFeed

SCRAPE_TIMEOUT_S = 5.0
STALL_S = 0.5  # how long the first scrape waits, after its snapshot, for the second to end
REVERSED = ("txswitch_payment_recoveries_total", (("node", "other"), ("outcome", "reversed")))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        body = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_two_scrapes_at_once_count_each_recovery_once() -> None:
    metrics = SwitchMetrics()
    total = [5]  # payments recovered so far, as Acquiring.recoveries() would say
    in_first, second_done = threading.Event(), threading.Event()

    def recoveries() -> dict[tuple[str, str], int]:
        snapshot = {("other", "reversed"): total[0]}
        if not in_first.is_set():  # the first scrape is slow after its snapshot (a busy machine)
            in_first.set()
            second_done.wait(STALL_S)
        return snapshot

    metrics.add_refresh(PaymentRecoveriesFeed(recoveries, metrics))
    server = MetricsServer(metrics, port=0)
    url = f"http://127.0.0.1:{server.start()}/metrics"
    try:
        first = threading.Thread(target=scrape, args=(url,))
        first.start()
        assert in_first.wait(SCRAPE_TIMEOUT_S)
        total[0] = 6  # one more recovery; the other Prometheus scrapes meanwhile
        scrape(url)
        second_done.set()
        first.join(SCRAPE_TIMEOUT_S)
        assert scrape(url)[REVERSED] == 6
    finally:
        server.stop()
