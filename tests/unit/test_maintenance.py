"""The maintenance checklists' judgement (tpe_ops.maintenance): pure, no hosts."""

from __future__ import annotations

import json
from datetime import date

from tpe_ops import judgement as j
from tpe_ops import maintenance as m

T = j.Thresholds()


def test_error_log_counts_error_lines_and_shows_them():
    lines = ["started", "Error: connect ECONNREFUSED 127.0.0.1:6379", "ok",
             "UnhandledPromiseRejection: boom", "TypeError: x is undefined"]
    found = m.error_log_item("tpe-backend", lines, warn_at=1, fail_at=3)
    assert found.word == "fail"
    assert found.finding.value == 3
    assert found.evidence == [lines[1], lines[3], lines[4]]
    assert "3 error line(s) in the last 5" in found.finding.message
    assert found.finding.guide == j.GUIDE_BACKEND_DOWN


def test_error_log_thresholds():
    assert m.error_log_item("a", [], 1, 20).word == "pass"
    assert m.error_log_item("a", ["error"] * 19, 1, 20).word == "warn"
    assert m.error_log_item("a", ["error"] * 20, 1, 20).word == "fail"
    assert m.error_log_item("a", ["terror is not a word boundary match"], 1, 20).word == "pass"


def test_npm_audit_summary():
    report = {"vulnerabilities": {"next": {"severity": "high", "fixAvailable": True},
                                  "ms": {"severity": "low", "fixAvailable": False}},
              "metadata": {"vulnerabilities": {"info": 0, "low": 1, "moderate": 0, "high": 1,
                                               "critical": 0, "total": 2}}}
    found = m.npm_audit_item(json.dumps(report), 1)
    assert found.word == "warn"
    assert found.finding.message == "npm audit: 1 low, 1 high"
    assert found.evidence[0] == "next: high (fix available: True)"
    clean = {"metadata": {"vulnerabilities": {"total": 0}}}
    assert m.npm_audit_item(json.dumps(clean), 0).word == "pass"
    critical = {"metadata": {"vulnerabilities": {"critical": 2}}}
    assert m.npm_audit_item(json.dumps(critical), 1).word == "fail"


def test_npm_audit_without_a_report_is_unknown():
    found = m.npm_audit_item("npm ERR! audit endpoint returned an error", 1)
    assert found.word == "unknown" and "did not run (exit 1)" in found.finding.message
    error = {"error": {"code": "ENOAUDIT", "summary": "Your configured registry does not "
                                                      "support audit requests."}}
    found = m.npm_audit_item(json.dumps(error), 1)
    assert found.word == "unknown" and "does not support audit" in found.finding.message


def test_growth_first_run_short_interval_and_scaled_growth():
    first = m.growth_item("cap", "app", None, {"time": 0, "bytes": 1000}, 20)
    assert first.word == "pass" and "first run" in first.finding.message
    soon = m.growth_item("cap", "app", {"time": 0, "bytes": 1000},
                         {"time": 3600, "bytes": 5000}, 20)
    assert soon.word == "pass" and "too short to judge" in soon.finding.message
    # +10 % in 10 days is +30 % per 30 days: over 20
    grew = m.growth_item("cap", "app", {"time": 0, "bytes": 1000},
                         {"time": 10 * 86400, "bytes": 1100}, 20)
    assert grew.word == "warn" and "+30.0 % per 30 days" in grew.finding.message
    steady = m.growth_item("cap", "app", {"time": 0, "bytes": 1000},
                           {"time": 30 * 86400, "bytes": 1100}, 20)
    assert steady.word == "pass"


def test_thresholds_review_due():
    values = {"threshold_p95_warning_ms": 300}
    assert m.thresholds_review_item("2026-01-01", date(2026, 3, 1), 90, values).word == "pass"
    due = m.thresholds_review_item("2026-01-01", date(2026, 6, 1), 90, values)
    assert due.word == "warn" and "151 days ago" in due.finding.message
    assert due.evidence == ["threshold_p95_warning_ms = 300"]
    assert m.thresholds_review_item("", date(2026, 6, 1), 90, values).word == "warn"


def test_trend_against_history_uses_the_50_percent_criterion():
    assert m.trend_item("audit", 100.0, [], T).word == "pass"
    assert m.trend_item("audit", 140.0, [100.0, 90.0, 110.0], T).word == "pass"  # +40 %
    slower = m.trend_item("audit", 160.0, [100.0, 90.0, 110.0], T)  # +60 %, +60 ms
    assert slower.word == "warn" and "+60 %" in slower.finding.message
    assert slower.finding.guide == j.GUIDE_HIGH_LATENCY
    # +80 % but 4 ms: noise on a fast endpoint, not a regression
    assert m.trend_item("audit", 9.0, [5.0, 4.0, 6.0], T).word == "pass"
    assert m.trend_item("audit", None, [100.0], T).word == "fail"


def test_degraded_needs_both_the_percentage_and_the_milliseconds():
    assert m.degraded(400, 170, T)
    assert not m.degraded(250, 170, T)  # +47 %
    assert not m.degraded(30, 10, T)  # +200 % but 20 ms
    assert m.degraded(30, 10, j.Thresholds(degradation_min_ms=10))


def test_report_status_exit_code_and_markdown():
    items = {"h1": [m.item("disk", "ok", "disk / 27% used")],
             "h2": [m.item("pm2:tpe-backend", "critical", "tpe-backend is not running",
                           ["tpe-backend#0 stopped"])]}
    data = m.report("daily", "2026-12-04T00:00:00+00:00", items, {})
    assert data["status"] == "fail" and data["exit_code"] == 2
    text = m.report_markdown(data)
    assert "# Maintenance (daily): FAIL" in text
    assert "| pm2:tpe-backend | fail | tpe-backend is not running |" in text
    assert "tpe-backend#0 stopped" in text
    passing = m.report("daily", "t", {"h1": items["h1"]}, {})
    assert passing["status"] == "pass" and passing["exit_code"] == 0
    unreachable = m.report("daily", "t", {}, {"h3": "connection refused"})
    assert unreachable["status"] == "unknown" and unreachable["exit_code"] == 3
