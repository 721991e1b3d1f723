"""The runbook's judgement (tpe_ops.judgement): statistics, findings at and around every
threshold, classification, severity, scheduler output, rollback criteria on timelines."""

import json
import random
import runpy
from dataclasses import fields
from pathlib import Path

import pytest

from tpe_ops import judgement as j
from tpe_ops.judgement import Finding, Thresholds

T = Thresholds()
ROOT = Path(__file__).resolve().parents[2]


# --- statistics -------------------------------------------------------------------------------


def test_percentile_nearest_rank_of_1_to_100():
    samples = list(range(1, 101))
    random.Random(4).shuffle(samples)
    assert j.percentile(samples, 50) == 50
    assert j.percentile(samples, 95) == 95
    assert j.percentile(samples, 99) == 99
    assert j.percentile(samples, 100) == 100
    assert j.percentile(samples, 0) == 1
    assert j.percentile(samples, 99.5) == 100  # rank ceil(99.5) = 100
    assert j.percentile(samples, 0.5) == 1


def test_percentile_of_50_samples():
    samples = [float(x) for x in range(10, 510, 10)]  # 10..500
    assert j.percentile(samples, 99) == 500  # p99 of 50 samples is the max
    assert j.percentile(samples, 95) == 480  # rank ceil(47.5) = 48
    assert j.percentile(samples, 50) == 250  # rank 25


def test_percentile_single_sample_and_errors():
    assert j.percentile([7.5], 1) == j.percentile([7.5], 99) == 7.5
    with pytest.raises(ValueError):
        j.percentile([], 95)
    with pytest.raises(ValueError):
        j.percentile([1.0], 101)
    with pytest.raises(ValueError):
        j.percentile([1.0], -1)


def test_percentile_float_arithmetic_does_not_round_up_a_rank():
    # In floats 0.07 * 100 is 7.000000000000001 and 64.4 * 250 / 100 is 161.00000000000003:
    # ceil would take the next rank. Exact arithmetic keeps ranks 7 and 161.
    assert j.percentile(list(range(1, 101)), 7) == 7
    assert j.percentile(list(range(1, 251)), 64.4) == 161
    assert j.percentile(list(range(1, 1001)), 99.9) == 999


def test_summarize():
    stats = j.summarize([100, 200, 300, 400], successes=4, total=5)
    assert stats["min_ms"] == 100 and stats["max_ms"] == 400
    assert stats["median_ms"] == 250 and stats["avg_ms"] == 250
    assert stats["p95_ms"] == 400 and stats["p99_ms"] == 400
    assert stats["success_rate_pct"] == 80 and stats["error_rate_pct"] == 20
    assert stats["rating"] == "GOOD" and stats["percentile_definition"] == "nearest-rank"
    empty = j.summarize([], successes=0, total=3)
    assert empty["p95_ms"] is None and empty["rating"] is None
    assert empty["error_rate_pct"] == 100
    none = j.summarize([], 0, 0)
    assert none["success_rate_pct"] is None and none["error_rate_pct"] is None
    with pytest.raises(ValueError):
        j.summarize([1], successes=2, total=1)


@pytest.mark.parametrize(
    ("p95", "expected"),
    [(0, "EXCELLENT"), (199.9, "EXCELLENT"), (200, "GOOD"), (499.9, "GOOD"),
     (500, "ACCEPTABLE"), (999.9, "ACCEPTABLE"), (1000, "NEEDS OPTIMIZATION")],
)
def test_rating(p95, expected):
    assert j.rating(p95) == expected


def test_compare_to_baseline():
    at_limit = j.compare_to_baseline(255, 170, 500, 50)  # exactly +50 %
    assert at_limit["degradation_pct"] == 50 and not at_limit["crosses_rollback"]
    assert at_limit["within_target"]
    over = j.compare_to_baseline(255.5, 170, 500, 50)
    assert over["crosses_rollback"]
    faster = j.compare_to_baseline(85, 170, 500, 50)
    assert faster["degradation_pct"] == -50 and not faster["crosses_rollback"]
    assert not j.compare_to_baseline(500, 170, 500, 50)["within_target"]
    with pytest.raises(ValueError):
        j.compare_to_baseline(100, 0, 500, 50)


# --- thresholds -------------------------------------------------------------------------------


def test_threshold_defaults_match_group_data():
    defaults = runpy.run_path(str(ROOT / "group_data" / "all.py"))
    settings = {k: v for k, v in defaults.items() if k.startswith("threshold_")}
    names = {j.SETTING_PREFIX + f.name for f in fields(Thresholds)}
    assert set(settings) <= names, "a threshold_* setting Thresholds does not read"
    for key, value in settings.items():
        assert getattr(T, key.removeprefix(j.SETTING_PREFIX)) == value, key


def test_thresholds_from_data():
    class HostData:  # like pyinfra's: attributes and get()
        def get(self, key, default=None):
            return {"threshold_p95_warning_ms": 250, "threshold_db_pool_warning_pct": None}.get(
                key, default
            )

    from_host = Thresholds.from_data(HostData())
    assert from_host.p95_warning_ms == 250 and from_host.db_pool_warning_pct == 80
    assert Thresholds.from_data({"threshold_disk_critical_pct": 95}).disk_critical_pct == 95

    class Plain:
        threshold_rollback_error_minutes = 20

    assert Thresholds.from_data(Plain()).rollback_error_minutes == 20


# --- findings: latency, error rate, 429 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("p95", "level"),
    [(0, "ok"), (299.9, "ok"), (300, "warning"), (499.9, "warning"), (500, "critical"),
     (2000, "critical")],
)
def test_latency_boundaries(p95, level):
    finding = j.latency_finding(p95, T)
    assert finding.level == level
    assert finding.guide == (None if level == "ok" else j.GUIDE_HIGH_LATENCY)
    assert finding.value == p95


def test_latency_unmeasured_is_unknown():
    assert j.latency_finding(None, T).level == "unknown"


@pytest.mark.parametrize(
    ("rate", "level"),
    [(0, "ok"), (0.09, "ok"), (0.1, "warning"), (0.5, "warning"), (1.0, "warning"),
     (1.01, "critical"), (50, "critical")],
)
def test_error_rate_boundaries(rate, level):
    assert j.error_rate_finding(rate, T).level == level


def test_error_rate_unmeasured_is_unknown():
    assert j.error_rate_finding(None, T).level == "unknown"


def test_request_outcomes_leave_429_out_of_the_error_rate():
    out = j.request_outcomes([200] * 8 + [429] * 10 + [500, 0])
    assert out == {"total": 20, "succeeded": 8, "rate_limited": 10, "failed": 2,
                   "error_rate_pct": 20.0}
    assert j.request_outcomes([429, 429])["error_rate_pct"] is None
    assert j.request_outcomes([200, 304])["error_rate_pct"] == 0


def test_rate_limited_is_a_warning_not_an_outage():
    finding = j.rate_limit_finding(3, 50)
    assert finding.level == "warning" and "rate limited" in finding.message
    assert "not an outage" in finding.message and finding.impact is None
    assert j.rate_limit_finding(0, 50).level == "ok"
    endpoint = j.health_endpoint_finding("health:public", {"status": 429, "seconds": 0.01})
    assert endpoint.level == "warning" and "rate limited" in endpoint.message
    assert j.severity([endpoint])[0] == "P2"


# --- findings: endpoints ------------------------------------------------------------------------

GOOD_BODY = {"status": "ok", "timestamp": "t", "environment": "production", "version": "1"}


def _http(code, body=None, seconds=0.02):
    text = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    return {"status": code, "seconds": seconds, "body": text}


def test_health_endpoint_ok():
    finding = j.health_endpoint_finding("health:local", _http(200, GOOD_BODY))
    assert finding.level == "ok" and finding.value == 20
    healthy = dict(GOOD_BODY, status="healthy")
    assert j.health_endpoint_finding("health:local", _http(200, healthy)).level == "ok"


@pytest.mark.parametrize(
    ("code", "guide"),
    [(0, j.GUIDE_BACKEND_DOWN), (404, j.GUIDE_HEALTH_404), (500, None),
     (502, j.GUIDE_BACKEND_DOWN), (503, j.GUIDE_BACKEND_DOWN), (301, None), (401, None)],
)
def test_health_endpoint_failures_are_outages(code, guide):
    finding = j.health_endpoint_finding("health:local", _http(code, seconds=None))
    assert finding.level == "critical" and finding.guide == guide
    assert finding.impact == "outage"
    assert j.severity([finding])[0] == "P0"


def test_unreachable_names_guide_1():
    finding = j.health_endpoint_finding("health:local", {"status": 0, "seconds": 5.0})
    assert "unreachable" in finding.message and finding.guide == 1 and not finding.perfdata


def test_health_endpoint_body():
    html = j.health_endpoint_finding("health:public", _http(200, "<html>next</html>"))
    assert html.level == "critical" and html.guide == j.GUIDE_HEALTH_404
    down = j.health_endpoint_finding("health:local", _http(200, dict(GOOD_BODY, status="down")))
    assert down.level == "critical" and down.impact == "outage"
    lacks = {k: v for k, v in GOOD_BODY.items() if k != "version"}
    partial = j.health_endpoint_finding("health:local", _http(200, lacks))
    assert partial.level == "warning" and "version" in partial.message
    assert j.health_endpoint_finding("h", _http(200, [1, 2])).level == "critical"


def test_other_endpoint_down_is_p1_not_p0():
    finding = j.endpoint_finding("endpoint:/api/state-machine/diagram", _http(500))
    assert finding.level == "critical" and finding.impact is None
    assert j.severity([finding])[0] == "P1"
    ok = j.endpoint_finding("endpoint:/api/state-machine/metadata", _http(200, seconds=0.1705))
    assert ok.level == "ok" and ok.value == pytest.approx(170.5)


# --- findings: PM2 ------------------------------------------------------------------------------


def _proc(name="tpe-backend", status="online", restarts=0, unstable=0, pm_uptime=1_000_000):
    return {"name": name, "status": status, "restart_time": restarts,
            "unstable_restarts": unstable, "memory": 50_000_000, "cpu": 3,
            "pm_uptime": pm_uptime}


def test_pm2_online_is_ok_with_figures():
    finding = j.pm2_status_finding("tpe-backend", [_proc(), _proc()], 0, now=1_000 + 3 * 3600)
    assert finding.level == "ok" and "2/2 online" in finding.message
    assert "up 3h" in finding.message
    perf = {p.label: p.value for p in finding.perfdata}
    assert perf["tpe-backend_memory"] == 100_000_000 and perf["tpe-backend_online"] == 2


def test_pm2_missing_or_all_stopped_is_an_outage():
    missing = j.pm2_status_finding("tpe-backend", [_proc("tpe-frontend")])
    assert missing.level == "critical" and missing.guide == 1 and missing.impact == "outage"
    stopped = j.pm2_status_finding("tpe-backend", [_proc(status="stopped")] * 2, 0)
    assert stopped.level == "critical" and stopped.impact == "outage"
    assert "stopped" in stopped.message and j.severity([stopped])[0] == "P0"


def test_pm2_one_instance_down_is_critical_but_not_an_outage():
    finding = j.pm2_status_finding("tpe-backend", [_proc(), _proc(status="stopped")], 0)
    assert finding.level == "critical" and finding.impact is None
    assert j.severity([finding])[0] == "P1"


@pytest.mark.parametrize("status", ["errored", "waiting restart"])
def test_pm2_restart_loop_statuses(status):
    finding = j.pm2_status_finding("tpe-backend", [_proc(status=status)], 3)
    assert finding.level == "critical" and "restart loop" in finding.message
    assert finding.message.startswith(f"tpe-backend: {status}; restart loop (0/1 online")
    assert finding.guide == 1 and finding.impact == "outage"


def test_pm2_unstable_restarts():
    # Unstable restarts and restarts this hour (or unknown): a restart loop.
    looping = j.pm2_status_finding("tpe-backend", [_proc(unstable=4)], 4)
    assert looping.level == "critical" and looping.impact is None
    assert j.pm2_status_finding("tpe-backend", [_proc(unstable=1)], None).level == "critical"
    # Old unstable restarts, none this hour: ok, noted as informational.
    quiet = j.pm2_status_finding("tpe-backend", [_proc(unstable=2)], 0)
    assert quiet.level == "ok" and quiet.impact == "minor"
    assert j.severity([quiet])[0] == "P3"


@pytest.mark.parametrize(("count", "level"), [(0, "ok"), (5, "ok"), (6, "warning")])
def test_pm2_restarts_per_hour(count, level):
    finding = j.pm2_restarts_finding("tpe-backend", count, T)
    assert finding.level == level
    assert finding.guide == (1 if level == "warning" else None)


def test_pm2_restarts_unknown_is_not_a_problem():
    finding = j.pm2_restarts_finding("tpe-backend", None, T)
    assert finding.level == "ok" and "not known" in finding.message


def test_pm2_findings_cover_expected_apps_only():
    procs = [_proc(), _proc("tpe-frontend"), _proc("pm2-logrotate", status="stopped")]
    findings = j.pm2_findings(procs, ["tpe-backend", "tpe-frontend"],
                              {"tpe-backend": 7}, T)
    assert [f.check for f in findings] == [
        "pm2:tpe-backend", "pm2:tpe-backend:restarts",
        "pm2:tpe-frontend", "pm2:tpe-frontend:restarts",
    ]
    assert j.classify(findings) == "warning"


def test_pm2_finding_keeps_no_environment():
    proc = dict(_proc(), DB_PASSWORD="s3cret-value", env={"X": "s3cret-value"})
    finding = j.pm2_status_finding("tpe-backend", [proc], 0)
    assert "s3cret-value" not in json.dumps(finding.to_dict())


def test_restart_counter_sums_instances():
    procs = [_proc(restarts=2), _proc(restarts=3), _proc("tpe-frontend", restarts=9)]
    assert j.restart_counter(procs, "tpe-backend") == 5
    assert j.restart_counter(procs, "nope") == 0


def test_restarts_in_last_hour():
    now = 10_000.0
    samples = [(now - 4000, 0), (now - 3000, 2), (now - 1000, 5), (now, 6)]
    assert j.restarts_in_last_hour(samples, now) == 4  # 2 -> 6 within the hour
    assert j.restarts_in_last_hour(list(reversed(samples)), now) == 4  # any order
    assert j.restarts_in_last_hour([(now, 6)], now) is None
    assert j.restarts_in_last_hour([], now) is None
    # A sample after `now` is ignored; the one exactly an hour ago counts.
    assert j.restarts_in_last_hour([(now - 3600, 1), (now, 3), (now + 10, 9)], now) == 2


def test_restarts_in_last_hour_across_a_resurrect():
    now = 10_000.0
    # 40 -> 42, resurrect resets to 0, then 3 more restarts, then 1 more.
    samples = [(now - 3000, 40), (now - 2000, 42), (now - 1000, 3), (now, 4)]
    assert j.restarts_in_last_hour(samples, now) == 2 + 3 + 1
    assert j.restarts_in_last_hour([(now - 10, 7), (now, 0)], now) == 0


# --- findings: database, Redis, host -----------------------------------------------------------


@pytest.mark.parametrize(
    ("connections", "level"),
    [(0, "ok"), (15, "ok"), (16, "warning"), (19, "warning"), (20, "critical"),
     (25, "critical")],
)
def test_db_connections_against_pool_of_20(connections, level):
    finding = j.db_connections_finding(connections, 20, T)
    assert finding.level == level
    assert finding.guide == (None if level == "ok" else j.GUIDE_DATABASE)
    assert j.severity([finding])[0] == {"ok": "P3", "warning": "P2", "critical": "P1"}[level]


def test_db_pool_percent_boundary_is_inclusive():
    assert j.db_connections_finding(79, 100, T).level == "ok"
    assert j.db_connections_finding(80, 100, T).level == "warning"
    assert j.db_connections_finding(99, 100, T).level == "warning"


def test_db_unavailable_and_unmeasured():
    down = j.db_connections_finding(None, 20, T, error="connection refused")
    assert down.level == "critical" and down.impact == "outage" and down.guide == 4
    assert j.severity([down])[0] == "P0"
    unknown = j.db_connections_finding(None, 20, T)
    assert unknown.level == "unknown" and unknown.guide == 4
    with pytest.raises(ValueError):
        j.db_connections_finding(1, 0, T)


def test_redis_hit_rate_from_the_delta():
    before = {"keyspace_hits": "1000", "keyspace_misses": "1000"}
    after = {"keyspace_hits": "1080", "keyspace_misses": "1020"}
    assert j.redis_hit_rate(before, after) == 80  # 80 of 100, not 1080 of 2100
    assert j.redis_hit_rate(before, before) is None  # no traffic


def test_redis_hit_rate_across_a_counter_reset():
    before = {"keyspace_hits": 5000, "keyspace_misses": 10}
    after = {"keyspace_hits": 30, "keyspace_misses": 70}  # Redis restarted in between
    assert j.redis_hit_rate(before, after) == 30
    assert j.redis_hit_rate(before, {"keyspace_hits": 0, "keyspace_misses": 0}) is None


@pytest.mark.parametrize(
    ("rate", "level", "impact"),
    [(0, "warning", None), (49.9, "warning", None), (50, "ok", "minor"), (69.9, "ok", "minor"),
     (70, "ok", None), (100, "ok", None)],
)
def test_redis_hit_rate_boundaries(rate, level, impact):
    finding = j.redis_hit_rate_finding(rate, T)
    assert finding.level == level and finding.impact == impact
    if impact or level == "warning":
        assert finding.guide == j.GUIDE_REDIS


def test_redis_no_traffic_and_unavailable():
    assert j.redis_hit_rate_finding(None, T).level == "ok"
    down = j.redis_finding(False)
    assert down.level == "critical" and down.guide == 5
    assert j.severity([down])[0] == "P1"
    up = j.redis_finding(True, used_memory_bytes=1_048_576)
    assert up.level == "ok" and up.value == 1_048_576


@pytest.mark.parametrize(
    ("used", "level"),
    [(0, "ok"), (79.9, "ok"), (80, "warning"), (89.9, "warning"), (90, "critical"),
     (None, "unknown")],
)
def test_disk_boundaries(used, level):
    assert j.disk_finding(used, T).level == level


def test_memory_and_cpu():
    assert j.memory_finding(89, T).level == "ok"
    assert j.memory_finding(90, T).level == "warning"
    assert j.memory_finding(95, T).level == "critical"
    assert j.cpu_finding(89.9, T).level == "ok"
    assert j.cpu_finding(90, T).level == "warning"
    assert j.cpu_finding(98, T).level == "critical"
    assert j.cpu_finding(None, T).level == "unknown"


def test_finding_validation():
    with pytest.raises(ValueError):
        Finding("x", "bad", "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Finding("x", "ok", "m", guide=6)
    assert Finding("x", "ok", "m", guide=2).to_dict()["guide_title"] == "high latency"


# --- classification, severity, Nagios -----------------------------------------------------------

OK = Finding("a", "ok", "fine")
WARN = Finding("b", "warning", "slowish")
CRIT = Finding("c", "critical", "slow")
DOWN = Finding("d", "critical", "backend down", 1, "outage")
UNKNOWN = Finding("e", "unknown", "not measured")
NOTE = Finding("f", "ok", "hit rate below target", 5, "minor")


@pytest.mark.parametrize(
    ("findings", "classification", "priority"),
    [
        ([OK], "healthy", "P3"),
        ([OK, NOTE], "healthy", "P3"),
        ([OK, UNKNOWN], "unknown", "P3"),
        ([], "unknown", "P3"),
        ([OK, WARN], "warning", "P2"),
        ([WARN, UNKNOWN], "warning", "P2"),
        ([WARN, CRIT], "critical", "P1"),
        ([CRIT, UNKNOWN], "critical", "P1"),
        ([WARN, CRIT, DOWN], "critical", "P0"),
        ([Finding("r", "warning", "schedule a rollback", None, "major")], "warning", "P1"),
    ],
)
def test_classify_and_severity(findings, classification, priority):
    assert j.classify(findings) == classification
    assert j.severity(findings)[0] == priority


def test_severity_reasons():
    assert j.severity([WARN, CRIT, DOWN]) == ("P0", "service unavailable: backend down")
    assert j.severity([WARN, CRIT])[1] == "major impairment: slow"
    assert j.severity([OK, WARN])[1] == "minor impairment: slowish"
    assert j.severity([OK, NOTE])[1] == "informational: hit rate below target"
    assert j.severity([OK]) == ("P3", "no problem found")


def test_exit_codes():
    assert [j.exit_code(c) for c in ("healthy", "warning", "critical", "unknown")] == [0, 1, 2, 3]
    assert j.exit_code("nonsense") == 3


def test_nagios_line():
    latency = j.latency_finding(320, T)
    rate = j.error_rate_finding(0, T)
    line = j.nagios_line("warning", [latency, rate])
    assert line == ("WARNING: p95 latency 320 ms >= 300 ms | p95=320ms;300;500 "
                    "error_rate=0%;0.1;1")
    healthy = j.nagios_line("healthy", [j.latency_finding(120.25, T)])
    assert healthy == "OK: 1 checks ok | p95=120.25ms;300;500"
    assert j.nagios_line("unknown", []) == "UNKNOWN: no check ran"
    mixed = j.nagios_line("critical", [WARN, CRIT, Finding("g", "critical", "a|b\nc")])
    assert mixed == "CRITICAL: slow; a/b/c (+1 more)"


def test_perf_labels_are_sanitised():
    perf = j.Perf("health:public /x'y", 1.5, "ms", None, 500)
    assert perf.nagios() == "health:public__x_y=1.5ms;;500"
    assert j.Perf("n", 3).nagios() == "n=3"
    hit_rate = j.redis_hit_rate_finding(62.5, T).perfdata[0]
    assert hit_rate.nagios() == "redis_hit_rate=62.5%;50:"  # a range: alert below 50


# --- rollback criteria on synthetic timelines ----------------------------------------------------

NOW = 1_000_000.0


def _timeline(minutes, step_s=30, end=NOW, **sample):
    """Samples every step_s seconds over `minutes` minutes ending at `end`, all alike."""
    count = int(minutes * 60 // step_s)
    return [dict(sample, time=end - i * step_s) for i in range(count, -1, -1)]


def _good(minutes, end):
    return _timeline(minutes, end=end, available=True, error_rate_pct=0, p95_ms=170)


def _decide(history, baseline=170.0):
    return j.rollback_decision(history, T, baseline, NOW)


def test_rollback_none_when_healthy_or_empty():
    assert _decide(_good(60, NOW))["decision"] == "none"
    assert _decide([])["decision"] == "none"


@pytest.mark.parametrize(("minutes", "decision"), [(5, "none"), (5.5, "immediate")])
def test_rollback_unavailable_5_minutes(minutes, decision):
    history = _good(20, NOW - minutes * 60 - 30) + _timeline(
        minutes, available=False, error_rate_pct=None, p95_ms=None)
    result = _decide(history)
    assert result["decision"] == decision
    assert result["sustained_seconds"]["unavailable"] == minutes * 60
    if decision == "immediate":
        assert result["triggered"] == ["unavailable"]
        assert any("unavailable" in r for r in result["reasons"])
        assert j.rollback_finding(result).impact == "outage"


@pytest.mark.parametrize(("minutes", "decision"), [(10, "none"), (10.5, "immediate")])
def test_rollback_error_rate_above_5_for_10_minutes(minutes, decision):
    history = _good(20, NOW - minutes * 60 - 30) + _timeline(
        minutes, available=True, error_rate_pct=6.0, p95_ms=170)
    result = _decide(history)
    assert result["decision"] == decision
    if decision == "immediate":
        assert result["triggered"] == ["error_rate"]
        finding = j.rollback_finding(result)
        assert finding.level == "critical" and j.severity([finding])[0] == "P1"


def test_rollback_error_rate_of_exactly_5_is_not_above_5():
    history = _timeline(20, available=True, error_rate_pct=5.0, p95_ms=170)
    assert _decide(history)["decision"] == "none"  # scheduled needs > 30 min
    assert _decide(_timeline(31, available=True, error_rate_pct=5.0,
                             p95_ms=170))["decision"] == "scheduled"


@pytest.mark.parametrize(("minutes", "decision"), [(10, "none"), (10.5, "scheduled")])
def test_rollback_degradation_over_50_percent_for_10_minutes(minutes, decision):
    history = _good(20, NOW - minutes * 60 - 30) + _timeline(
        minutes, available=True, error_rate_pct=0, p95_ms=256)  # +50.6 % over 170
    result = _decide(history)
    assert result["decision"] == decision
    if decision == "scheduled":
        assert result["triggered"] == ["degradation"]
        finding = j.rollback_finding(result)
        assert finding.level == "warning" and j.severity([finding])[0] == "P1"


def test_rollback_degradation_of_exactly_50_percent_is_not_more():
    history = _timeline(30, available=True, error_rate_pct=0, p95_ms=255)
    assert _decide(history)["decision"] == "none"


def test_rollback_uses_the_given_baseline_or_the_setting():
    history = _timeline(15, available=True, error_rate_pct=0, p95_ms=400)
    assert _decide(history, baseline=300)["decision"] == "none"  # +33 %
    assert _decide(history, baseline=None)["decision"] == "scheduled"  # 170 ms setting
    assert _decide(history, baseline=None)["baseline_p95_ms"] == 170
    with pytest.raises(ValueError):
        _decide(history, baseline=0)


@pytest.mark.parametrize(
    ("minutes", "rate", "decision"),
    [(30, 2.0, "none"), (30.5, 2.0, "scheduled"), (30.5, 1.0, "scheduled"),
     (60, 0.99, "none")],
)
def test_rollback_error_rate_1_to_5_for_30_minutes(minutes, rate, decision):
    history = _timeline(minutes, available=True, error_rate_pct=rate, p95_ms=170)
    assert _decide(history)["decision"] == decision


def test_rollback_one_good_sample_breaks_the_run():
    bad = dict(available=True, error_rate_pct=6.0, p95_ms=170)
    history = _timeline(8, end=NOW - 5 * 60, **bad) + [
        dict(bad, time=NOW - 4.5 * 60, error_rate_pct=0.0)] + _timeline(4, **bad)
    result = _decide(history)
    assert result["decision"] == "none"
    assert result["sustained_seconds"]["error_rate"] == 4 * 60


def test_rollback_gaps_break_continuity():
    bad = dict(available=False, error_rate_pct=None, p95_ms=None)
    # Two bad stretches with a 4-minute hole between them: neither is longer than 5 min.
    history = _timeline(4, end=NOW - 8 * 60, **bad) + _timeline(4, **bad)
    result = _decide(history)
    assert result["decision"] == "none"
    assert result["sustained_seconds"]["unavailable"] == 4 * 60
    # A gap no longer than rollback_max_gap_seconds (180 s) does not break the run.
    history = _timeline(3, end=NOW - 6 * 60, **bad) + _timeline(3, **bad)
    assert _decide(history)["decision"] == "immediate"


def test_rollback_stale_history_decides_nothing():
    bad = dict(available=False, error_rate_pct=None, p95_ms=None)
    history = _timeline(30, end=NOW - 181, **bad)  # the watch stopped 181 s ago
    result = _decide(history)
    assert result["decision"] == "none" and result["sustained_seconds"]["unavailable"] == 0
    assert _decide(_timeline(30, end=NOW - 180, **bad))["decision"] == "immediate"


def test_rollback_unavailable_counts_towards_the_error_criteria():
    down = _timeline(4, end=NOW - 7 * 60, available=False, error_rate_pct=None, p95_ms=None)
    errors = _timeline(6.5, available=True, error_rate_pct=8.0, p95_ms=170)
    result = _decide(down + errors)
    assert result["triggered"] == ["error_rate"] and result["decision"] == "immediate"


def test_rollback_unknown_samples_break_the_run():
    history = _timeline(20, available=True, error_rate_pct=6.0, p95_ms=170)
    history[-5]["error_rate_pct"] = None  # one sample without a measured error rate
    assert _decide(history)["decision"] == "none"


def test_rollback_ignores_samples_after_now_and_order():
    history = _timeline(11, available=True, error_rate_pct=6.0, p95_ms=170)
    random.Random(1).shuffle(history)
    history.append({"time": NOW + 60, "available": True, "error_rate_pct": 0, "p95_ms": 170})
    assert _decide(history)["decision"] == "immediate"


def test_immediate_reasons_come_before_scheduled_ones():
    history = _timeline(40, available=True, error_rate_pct=6.0, p95_ms=400)
    result = _decide(history)
    assert result["decision"] == "immediate"
    assert result["triggered"] == ["error_rate", "degradation", "sustained_error_rate"]
    assert "immediate rollback" in result["reasons"][0]
    assert "scheduled rollback" in result["reasons"][-1]


def test_rollback_finding_none():
    assert j.rollback_finding({"decision": "none", "reasons": []}).level == "ok"
