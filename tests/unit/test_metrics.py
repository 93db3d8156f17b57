"""SwitchMetrics: names, label hygiene, bounds and the runtime snapshot collector."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import (
    FOLLOW_OUTCOMES,
    FOLLOW_WHEN,
    LABEL_COMBINATIONS_MAX,
    LABEL_FOLDED,
    LABEL_REFUSED,
    UNANSWERED_ADVICE_REASONS,
    ActorKindStats,
    GcPauses,
    RuntimeSnapshot,
    SwitchMetrics,
    code_label,
    name_label,
    watch_loop_lag,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ALLOWED_LABEL_NAMES = {
    "rpc",
    "code",
    "kind",
    "acquirer",
    "state",
    "generation",
    "le",
    "index",
    "node",
    "outcome",
    "when",
    "currency",
    "programme",
    "event",
    "reason",  # a closed set: UNANSWERED_ADVICE_REASONS, else "invalid"
}
PAN_SENTINEL = "4111111111111111"
PROGRAMME = "prg_0a1b2c3d4e5f6789"

EXPECTED_FAMILIES = (
    "txswitch_replaced_card_follows_waiting",
    "txswitch_iso_inbound_advices_unanswered",
    "txswitch_requests",
    "txswitch_request_duration_seconds",
    "txswitch_requests_in_flight",
    "txswitch_actors_live",
    "txswitch_actor_mailbox_messages",
    "txswitch_actor_mailbox_depth_max",
    "txswitch_card_actors_started",
    "txswitch_card_actors_passivated",
    "txswitch_journal_batch_entries",
    "txswitch_journal_commit_duration_seconds",
    "txswitch_journal_commit_failures",
    "txswitch_acquirer_link_up",
    "txswitch_acquirer_link_state",
    "txswitch_acquirer_request_duration_seconds",
    "txswitch_acquirer_timeouts",
    "txswitch_store_and_forward_queue_depth",
    "txswitch_pin_lockouts",
    "txswitch_terminal_activations",
    "txswitch_terminals_online",
    "txswitch_receipts",
    "txswitch_schema_index_missing",
    "txswitch_payment_recoveries",
    "txswitch_iso_inbound_connections_refused",
    "txswitch_iso_inbound_connections_idle_closed",
    "txswitch_replaced_card_follows",
    "txswitch_replaced_card_followed_minor",
    "txswitch_top_ups",
    "txswitch_top_ups_waiting",
    "txswitch_top_up_oldest_waiting_seconds",
    "txswitch_database_read_age_seconds",
)


def record_everything(metrics: SwitchMetrics) -> None:
    metrics.observe_request("Redeem", "00", 0.003)
    metrics.observe_request("Redeem", "51", 0.004)
    metrics.request_started("Redeem")
    metrics.terminal_activated()
    metrics.card_actor_started()
    metrics.card_actor_passivated()
    metrics.observe_commit(batch_entries=40, latency_s=0.002)
    metrics.commit_failed()
    metrics.gc_pause.labels("0").observe(0.003)
    metrics.set_acquirer_link_state("acquirer-a", "signed_on")
    metrics.observe_acquirer_request("acquirer-a", 0.08)
    metrics.acquirer_timeout("acquirer-a")
    metrics.set_store_and_forward_depth("acquirer-a", 3)
    metrics.pin_lockout("employee")
    metrics.receipt("sent")
    metrics.receipt("someone@example.com")  # never a label value: anything unknown is "invalid"
    metrics.set_schema_indexes_missing(("uq_a", "uq_b"), ("uq_a",))  # uq_b created since start
    metrics.payment_recovered("other", "reversed", 2)
    metrics.payment_recovered("own", "left in flight")  # not an outcome: "invalid"
    metrics.iso_inbound_connections_closed(refused=3, idle_closed=1)
    metrics.iso_inbound_advice_unanswered("original_differs")
    metrics.replaced_card_followed("credit", "moved")
    metrics.set_replaced_card_follows_waiting(queued=2, asked_later=1, backlog=0)
    metrics.replaced_card_money_followed("credit", "EUR", 700)
    metrics.replaced_card_money_followed("start", "euro", 5)  # not a currency code: "invalid"
    metrics.top_up(PROGRAMME, "started", 3)
    metrics.top_up(PROGRAMME, "loaded")
    metrics.top_up("prg_1234567890123456", "refund_due")  # all decimal: no id of ours, "invalid"
    metrics.set_top_ups_waiting(confirming=2, refund_due=0, oldest_confirming_s=900.5, oldest_refund_due_s=0)
    metrics.set_database_read_age(0.25)
    metrics.set_runtime_source(
        lambda: RuntimeSnapshot(actors=(ActorKindStats("card", 7, 2, 1),), terminals_online=4)
    )


def samples(metrics: SwitchMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Redeem", "Redeem"),
        ("/txswitch.terminal.v1.Terminal/Redeem", "/txswitch.terminal.v1.Terminal/Redeem"),
        ("Redeem\n", LABEL_REFUSED),
        ("acquirer-a", "acquirer-a"),
        ("acq_2", "acq_2"),
        (PAN_SENTINEL, LABEL_REFUSED),
        ("card" + PAN_SENTINEL, LABEL_REFUSED),
        ("emp123456", LABEL_REFUSED),
        # A card number grouped as typed has no 6 digits in a row; mistyped, it is still one.
        ("acq-4111-1111-1111-1111", LABEL_REFUSED),
        ("T1-4111-1111-1111-1111", LABEL_REFUSED),
        ("acq-4111-1111-1111-1112", LABEL_REFUSED),
        ("acq-2026-12-07", "acq-2026-12-07"),
        # Split by dots, underscores or slashes (all a name label takes), mistyped too.
        ("acq.4111.1111.1111.1111", LABEL_REFUSED),
        ("acq_4111_1111_1111_1112", LABEL_REFUSED),
        ("acq/4111/1111/1111/1112", LABEL_REFUSED),
        ("acq.2026.12.07", "acq.2026.12.07"),
        # An IPv4 address of 12 digits, as typed text shows it: kept when it fails Luhn.
        ("acq-192.168.100.200", "acq-192.168.100.200"),
        ("acq-10.1.100.200", "acq-10.1.100.200"),
        ("acq-127.000.000.001", LABEL_REFUSED),  # Luhn-valid
        ("acq-256.168.100.200", LABEL_REFUSED),  # no address: a group past 255
        ("acq-1.192.168.100.200", LABEL_REFUSED),  # 13 digits
        ("", LABEL_REFUSED),
        ("with space", LABEL_REFUSED),
        ("x" * 65, LABEL_REFUSED),
    ],
)
def test_name_label(value: str, expected: str) -> None:
    assert name_label(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("00", "00"), ("51", "51"), ("N7", "N7"), ("1234", LABEL_REFUSED), ("", LABEL_REFUSED)],
)
def test_code_label(value: str, expected: str) -> None:
    assert code_label(value) == expected


def test_exposition_has_every_family_and_only_allowed_label_names() -> None:
    metrics = SwitchMetrics()
    record_everything(metrics)
    families = {
        family.name: family for family in text_string_to_metric_families(metrics.exposition().decode())
    }
    for name in EXPECTED_FAMILIES:
        assert name in families, name
    for family in families.values():
        assert family.name.startswith("txswitch_"), family.name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABEL_NAMES, (sample.name, sample.labels)


def test_recorded_values_appear() -> None:
    metrics = SwitchMetrics()
    record_everything(metrics)
    got = samples(metrics)
    assert got[("txswitch_requests_total", (("code", "00"), ("rpc", "Redeem")))] == 1
    assert got[("txswitch_receipts_total", (("state", "sent"),))] == 1
    assert got[("txswitch_replaced_card_follows_waiting", (("state", "queued"),))] == 2
    assert got[("txswitch_replaced_card_follows_waiting", (("state", "asked_later"),))] == 1
    assert got[("txswitch_top_ups_waiting", (("state", "confirming"),))] == 2
    assert got[("txswitch_top_ups_waiting", (("state", "refund_due"),))] == 0
    assert got[("txswitch_top_up_oldest_waiting_seconds", (("state", "confirming"),))] == 900.5
    assert got[("txswitch_database_read_age_seconds", ())] == 0.25
    assert got[("txswitch_receipts_total", (("state", LABEL_REFUSED),))] == 1
    assert got[("txswitch_request_duration_seconds_count", (("rpc", "Redeem"),))] == 2
    assert got[("txswitch_requests_in_flight", (("rpc", "Redeem"),))] == 1
    assert got[("txswitch_actors_live", (("kind", "card"),))] == 7
    assert got[("txswitch_terminals_online", ())] == 4
    assert got[("txswitch_journal_batch_entries_sum", ())] == 40
    assert got[("txswitch_acquirer_link_up", (("acquirer", "acquirer-a"),))] == 1
    down = ("txswitch_acquirer_link_state", (("acquirer", "acquirer-a"), ("state", "down")))
    assert got[down] == 0
    assert got[("txswitch_store_and_forward_queue_depth", (("acquirer", "acquirer-a"),))] == 3
    assert got[("txswitch_pin_lockouts_total", (("kind", "employee"),))] == 1
    assert got[("txswitch_schema_index_missing", (("index", "uq_a"),))] == 1
    assert got[("txswitch_schema_index_missing", (("index", "uq_b"),))] == 0
    assert got[("txswitch_payment_recoveries_total", (("node", "other"), ("outcome", "reversed")))] == 2
    assert got[("txswitch_payment_recoveries_total", (("node", "own"), ("outcome", LABEL_REFUSED)))] == 1
    assert got[("txswitch_iso_inbound_connections_refused_total", ())] == 3
    assert got[("txswitch_iso_inbound_connections_idle_closed_total", ())] == 1
    assert got[("txswitch_replaced_card_follows_total", (("outcome", "moved"), ("when", "credit")))] == 1
    followed = "txswitch_replaced_card_followed_minor_total"
    assert got[(followed, (("currency", "EUR"), ("when", "credit")))] == 700
    assert got[(followed, (("currency", LABEL_REFUSED), ("when", "start")))] == 5
    assert got[("txswitch_top_ups_total", (("event", "started"), ("programme", PROGRAMME)))] == 3
    assert got[("txswitch_top_ups_total", (("event", "loaded"), ("programme", PROGRAMME)))] == 1
    assert got[("txswitch_top_ups_total", (("event", "refund_due"), ("programme", LABEL_REFUSED)))] == 1


def test_card_data_passed_as_labels_never_reaches_the_exposition() -> None:
    metrics = SwitchMetrics()
    metrics.observe_request(PAN_SENTINEL, PAN_SENTINEL, 0.001)
    metrics.request_started(PAN_SENTINEL)
    metrics.acquirer_timeout(PAN_SENTINEL)
    metrics.set_store_and_forward_depth("acq" + PAN_SENTINEL, 1)
    metrics.pin_lockout("employee 1234")
    metrics.set_schema_indexes_missing((PAN_SENTINEL,), (PAN_SENTINEL,))
    metrics.payment_recovered(PAN_SENTINEL, PAN_SENTINEL)
    metrics.replaced_card_followed(PAN_SENTINEL, PAN_SENTINEL)
    metrics.replaced_card_money_followed(PAN_SENTINEL, PAN_SENTINEL, 1)
    metrics.top_up(PAN_SENTINEL, PAN_SENTINEL)
    metrics.top_up("prg_" + PAN_SENTINEL, "started")
    metrics.set_runtime_source(
        lambda: RuntimeSnapshot(actors=(ActorKindStats(PAN_SENTINEL, 1, 0, 0),), terminals_online=0)
    )
    text = metrics.exposition().decode()
    assert PAN_SENTINEL not in text
    assert "1234" not in re.sub(r"\d+\.\d+(e[+-]\d+)?", "", text)


def test_distinct_label_combinations_are_bounded() -> None:
    metrics = SwitchMetrics()
    for index in range(LABEL_COMBINATIONS_MAX + 50):
        metrics.observe_request(f"Rpc{chr(65 + index % 26)}{index}", "00", 0.001)
    got = samples(metrics)
    request_series = [key for key in got if key[0] == "txswitch_requests_total"]
    assert len(request_series) <= LABEL_COMBINATIONS_MAX + 1
    assert ("txswitch_requests_total", (("code", LABEL_FOLDED), ("rpc", LABEL_FOLDED))) in got


def test_failing_runtime_source_does_not_break_the_scrape() -> None:
    metrics = SwitchMetrics()
    metrics.observe_request("Balance", "00", 0.001)

    def broken() -> RuntimeSnapshot:
        raise RuntimeError("actor registry gone")

    metrics.set_runtime_source(broken)
    got = samples(metrics)
    assert got[("txswitch_requests_total", (("code", "00"), ("rpc", "Balance")))] == 1
    assert not [key for key in got if key[0] == "txswitch_actors_live"]


def test_two_instances_do_not_share_state() -> None:
    first, second = SwitchMetrics(), SwitchMetrics()
    first.observe_request("Redeem", "00", 0.001)
    assert ("txswitch_requests_total", (("code", "00"), ("rpc", "Redeem"))) not in samples(second)


def test_dashboard_queries_only_name_defined_metrics() -> None:
    dashboard = json.loads((REPO_ROOT / "ops/dashboards/txswitch.json").read_text())
    defined = {
        sample.name
        for family in text_string_to_metric_families(_recorded_exposition())
        for sample in family.samples
    }
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 10
    for expression in expressions:
        for name in re.findall(r"txswitch_[a-z_]+", expression):
            assert name in defined, (name, expression)


def test_alert_rules_only_name_defined_metrics() -> None:
    rules = (REPO_ROOT / "ops/rules/txswitch-alerts.yml").read_text()
    defined = {
        sample.name
        for family in text_string_to_metric_families(_recorded_exposition())
        for sample in family.samples
    }
    names = set(re.findall(r"txswitch_[a-z_]+", rules))
    assert names
    assert names <= defined, names - defined


def _recorded_exposition() -> str:
    metrics = SwitchMetrics()
    record_everything(metrics)
    return metrics.exposition().decode()


def test_gc_pauses_are_timed_by_generation_while_started() -> None:
    metrics = SwitchMetrics()
    pauses = GcPauses(metrics)

    def count(generation: str) -> float:
        value = metrics.registry.get_sample_value(
            "txswitch_gc_pause_seconds_count", {"generation": generation}
        )
        return value or 0.0

    # A full collection walks every object of the process: in a test worker that has run a few
    # hundred tests, seconds each. Frozen objects are left out of collections, so these three walk
    # only what is made after the freeze; the callbacks, and so the pauses timed, are the same.
    gc.freeze()
    try:
        pauses.start()
        try:
            gc.collect(0)
            gc.collect(2)
        finally:
            pauses.stop()
        assert count("0") >= 1 and count("2") >= 1
        stopped_at = count("2")
        gc.collect(2)
        assert count("2") == stopped_at, "stopped: no more pauses counted"
    finally:
        gc.unfreeze()


def test_a_blocked_event_loop_shows_as_lag() -> None:
    metrics = SwitchMetrics()

    def sample(name: str) -> float:
        return metrics.registry.get_sample_value(f"txswitch_event_loop_lag_seconds_{name}") or 0.0

    async def main() -> None:
        watcher = asyncio.create_task(watch_loop_lag(metrics, every_s=0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # a callback that holds the loop
        await asyncio.sleep(0.05)
        watcher.cancel()

    asyncio.run(main())
    assert sample("count") >= 3
    assert 0.15 <= sample("sum") < 0.26  # the one late wake-up, not the sleeps themselves
    under_100_ms = metrics.registry.get_sample_value("txswitch_event_loop_lag_seconds_bucket", {"le": "0.1"})
    assert under_100_ms == sample("count") - 1  # only the blocked probe was late


@pytest.mark.parametrize(
    ("family", "words"),
    [
        ("txswitch_iso_inbound_advices_unanswered", (*UNANSWERED_ADVICE_REASONS, "0420", "0220")),
        ("txswitch_replaced_card_follows", (*FOLLOW_WHEN, *FOLLOW_OUTCOMES)),
    ],
)
def test_a_counters_help_names_every_value_of_its_labels(family: str, words: tuple[str, ...]) -> None:
    """An operator reads a label value's meaning in the scrape's HELP: a value added to a counter
    (completion advices' not_completable, a stop's left_at_stop) was missing from it."""
    (found,) = (
        f for f in text_string_to_metric_families(SwitchMetrics().exposition().decode()) if f.name == family
    )
    missing = [word for word in words if re.search(rf"\b{word}\b", found.documentation) is None]
    assert missing == [], found.documentation
