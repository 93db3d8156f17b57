"""promtool checks the alert rules, runs their unit tests and lints a real scraped exposition."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.metrics import ActorKindStats, MetricsServer, RuntimeSnapshot, SwitchMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = REPO_ROOT / "ops/rules/txswitch-alerts.yml"
RULES_TEST_PATH = REPO_ROOT / "ops/rules/txswitch-alerts.test.yml"
PROMTOOL_TIMEOUT_S = 60
SCRAPE_TIMEOUT_S = 5
PAN_SENTINEL = "4111111111111111"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is not None:
        return found
    if os.environ.get("TXSWITCH_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool not found on PATH but TXSWITCH_REQUIRE_PROMTOOL=1")
    pytest.skip("promtool not found on PATH (Debian package 'prometheus'; .ci/run installs it)")


@pytest.fixture(scope="module")
def promtool() -> str:
    return _promtool()


def run_promtool(promtool: str, *args: str, stdin: bytes | None = None) -> str:
    completed = subprocess.run(
        [promtool, *args],
        input=stdin,
        capture_output=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )
    output = (completed.stdout + completed.stderr).decode(errors="replace")
    assert completed.returncode == 0, output
    return output


def test_check_rules(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(RULES_PATH))
    assert "SUCCESS" in output


def test_rule_unit_tests(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", str(RULES_TEST_PATH))
    assert "SUCCESS" in output


@pytest.fixture
def scraped_exposition() -> Iterator[bytes]:
    metrics = SwitchMetrics()
    _record_samples(metrics)
    server = MetricsServer(metrics, port=0)
    port = server.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            yield response.read()
    finally:
        server.stop()


def _record_samples(metrics: SwitchMetrics) -> None:
    for code, count in (("00", 40), ("51", 3), ("55", 1), ("96", 1)):
        for index in range(count):
            metrics.observe_request("Redeem", code, 0.001 + index / 10_000)
    metrics.observe_request("Balance", "00", 0.0007)
    metrics.observe_request(PAN_SENTINEL, PAN_SENTINEL, 0.001)
    metrics.request_started("Redeem")
    metrics.terminal_activated()
    metrics.card_actor_started()
    metrics.card_actor_passivated()
    metrics.observe_commit(batch_entries=64, latency_s=0.004)
    metrics.set_acquirer_link_state("acquirer-a", "signed_on")
    metrics.set_acquirer_link_state("acquirer-b", "down")
    metrics.observe_acquirer_request("acquirer-a", 0.12)
    metrics.acquirer_timeout("acquirer-b")
    metrics.set_store_and_forward_depth("acquirer-b", 2)
    metrics.payment_recovered("other", "reversed")
    metrics.iso_inbound_connections_closed(refused=2, idle_closed=1)
    metrics.replaced_card_followed("credit", "moved")
    metrics.replaced_card_money_followed("credit", "EUR", 700)
    metrics.replaced_card_money_followed("start", PAN_SENTINEL, 1)
    metrics.top_up("prg_0a1b2c3d4e5f6789", "started", 2)
    metrics.top_up("prg_0a1b2c3d4e5f6789", "loaded")
    metrics.top_up(PAN_SENTINEL, "refund_due")
    metrics.set_top_ups_waiting(1, 2, oldest_confirming_s=2700.0, oldest_refund_due_s=60.0)
    metrics.pin_lockout("card")
    metrics.set_schema_indexes_missing(("uq_card_payments_original",), ("uq_card_payments_original",))
    metrics.set_runtime_source(
        lambda: RuntimeSnapshot(
            actors=(ActorKindStats("terminal", 20, 0, 0), ActorKindStats("card", 150, 9, 3)),
            terminals_online=20,
        )
    )


def test_check_metrics_on_scraped_exposition(promtool: str, scraped_exposition: bytes) -> None:
    assert b'txswitch_requests_total{code="00",rpc="Redeem"} 40.0' in scraped_exposition
    assert b'txswitch_actors_live{kind="card"} 150.0' in scraped_exposition
    assert PAN_SENTINEL.encode() not in scraped_exposition
    output = run_promtool(promtool, "check", "metrics", stdin=scraped_exposition)
    # promtool exits 0 on lint warnings too; any line it prints is a lint finding.
    assert output.strip() == "", output


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    dashboard = json.loads((REPO_ROOT / "ops/dashboards/txswitch.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert expressions
    # Grafana fills these in at query time; any fixed value makes the PromQL checkable.
    grafana_variables = {"$__rate_interval": "5m", "$job": ".*"}
    rules = []
    for index, expression in enumerate(expressions):
        checkable = expression
        for variable, value in grafana_variables.items():
            checkable = checkable.replace(variable, value)
        rules.append({"record": f"dashboard:panel_query_{index}", "expr": checkable})
    rules_path = tmp_path / "dashboard-queries.yml"
    # JSON is YAML, so the rule file needs no YAML library.
    rules_path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool(promtool, "check", "rules", str(rules_path))
    assert f"SUCCESS: {len(expressions)} rules found" in output
