"""The dashboard's decline ratio must count what the alert TxswitchDeclineRateHigh counts: answers with
an ISO 8583 decline code out of answers with an ISO 8583 code. Answers without a code ("OK":
activations, backoffice, health) and gRPC errors are not cardholder declines."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import World, start_world

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "ops/dashboards/txswitch.json"
RULES = REPO_ROOT / "ops/rules/txswitch-alerts.yml"
_SELECTOR = re.compile(r"txswitch_requests_total\{(.*?)\}\[")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _matches(labels: dict[str, str], matchers: str) -> bool:
    for name, op, value in _MATCHER.findall(matchers):
        if name == "job":
            continue
        actual = labels.get(name, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and not re.fullmatch(value, actual):
            return False
        if op == "!~" and re.fullmatch(value, actual):
            return False
    return True


def _sum(counters: list[dict[str, str]], values: list[float], expression: str) -> float:
    (matchers,) = _SELECTOR.findall(expression)
    return sum(v for labels, v in zip(counters, values, strict=True) if _matches(labels, matchers))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(tmp_path / "data", "", 2, metrics_port=0)  # two activations: "OK"
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


def test_dashboard_decline_ratio_counts_what_the_alert_counts(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)  # backoffice IssueCard: "OK"
    for _ in range(6):
        assert terminal.redeem(card, 100).response_code == "00"
    assert terminal.redeem(card, 100_000).response_code == "51"
    assert terminal.redeem(card, 100_000).response_code == "51"
    url = world.server.ops.metrics_url
    assert url is not None
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counters, values = [], []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "txswitch_requests_total":
                counters.append(dict(sample.labels))
                values.append(sample.value)

    rules_text = RULES.read_text()
    requests_rule = re.search(r"record: txswitch:requests:rate5m\n\s+expr: (.*)", rules_text)
    declines_rule = re.search(r"record: txswitch:declines:rate5m\n(?:\s+#.*\n)*\s+expr: (.*)", rules_text)
    assert requests_rule and declines_rule
    alert_ratio = _sum(counters, values, declines_rule.group(1)) / _sum(
        counters, values, requests_rule.group(1)
    )
    assert alert_ratio == pytest.approx(2 / 8)

    panels = json.loads(DASHBOARD.read_text())["panels"]
    (panel,) = [p for p in panels if p.get("title") == "Decline ratio"]
    (target,) = panel["targets"]
    numerator, denominator = target["expr"].split(" / ")
    dashboard_ratio = _sum(counters, values, numerator) / _sum(counters, values, denominator)
    assert dashboard_ratio == pytest.approx(alert_ratio), (
        f"dashboard shows {dashboard_ratio:.0%} declined, the alert sees {alert_ratio:.0%}: {target['expr']}"
    )
