"""The run's report: a table for the terminal, a JSON file and a PNG of throughput and p99."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from terminal_sim.auditor import AuditReport
from terminal_sim.fleet import FleetResult
from terminal_sim.metrics import LatencySummary, RecorderStatistics


def _row(name: str, summary: LatencySummary) -> str:
    return (
        f"{name:<11}{summary.count:>9}{summary.p50_ms:>9.2f}{summary.p90_ms:>9.2f}"
        f"{summary.p99_ms:>9.2f}{summary.p999_ms:>9.2f}{summary.max_ms:>9.2f}"
    )


def table(statistics: RecorderStatistics) -> str:
    """Latency per operation (ms), then response codes per operation, then the totals."""
    lines = [f"{'operation':<11}{'count':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}"]
    for name, summary in statistics.per_operation.items():
        lines.append(_row(name, summary))
    lines.append(_row("all", statistics.overall))
    lines.append("")
    lines.append("response codes (code or outcome: count)")
    for name, codes in statistics.response_codes.items():
        shown = "  ".join(f"{code}: {count}" for code, count in sorted(codes.items()))
        lines.append(f"  {name:<11}{shown}")
    lines.append("")
    lines.append(
        f"{statistics.completed} requests in {statistics.elapsed_s:.1f} s; in the "
        f"{statistics.window_s:.0f} s window {statistics.completed_per_s:.0f}/s, approved "
        f"{statistics.approved_per_s:.0f}/s; errors {statistics.errors}"
    )
    return "\n".join(lines)


def report_json(
    fleet: FleetResult, audit: AuditReport | None, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    statistics = fleet.statistics
    document: dict[str, Any] = {
        "elapsed_s": statistics.elapsed_s,
        "requests": statistics.completed,
        "requests_per_s": statistics.completed_per_s,
        "approved_per_s": statistics.approved_per_s,
        "errors": statistics.errors,
        "late_starts": fleet.late_starts,
        "latency_ms": asdict(statistics.overall),
        "latency_ms_per_operation": {k: asdict(v) for k, v in statistics.per_operation.items()},
        "response_codes": statistics.response_codes,
        "outcomes": statistics.outcomes,
        "timeline": [asdict(point) for point in statistics.timeline],
        "bridge": asdict(fleet.bridge),
        "stopped_early": fleet.stopped_early,
    }
    if audit is not None:
        document["audit"] = audit.counters()
        document["audit_skipped"] = list(audit.skipped_checks)
        document["audit_findings"] = [finding.line() for finding in audit.findings]
    if extra:
        document.update(extra)
    return document


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True))


def write_plot(path: Path, statistics: RecorderStatistics, title: str) -> None:
    """Throughput (requests and approvals per second) above p99 latency per second."""
    import matplotlib

    matplotlib.use("Agg")  # no screen here; and never pick an interactive backend by accident
    import matplotlib.pyplot as plt

    seconds = [point.second for point in statistics.timeline]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(seconds, [p.completed for p in statistics.timeline], label="requests/s")
    top.plot(seconds, [p.approved for p in statistics.timeline], label="approved/s")
    top.plot(seconds, [p.errors for p in statistics.timeline], label="errors/s")
    top.set_ylabel("per second")
    top.legend(loc="lower right")
    top.set_title(title)
    bottom.plot(seconds, [p.p99_ms for p in statistics.timeline], color="tab:red")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("seconds since start")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
