"""The runbook's judgement as pure functions over measurements (no I/O).

What each part of the TPE production runbook becomes here:

- section 2, health monitoring: one `Finding` per check (healthy / warning / critical), and
  `classify` over them; `exit_code` and `nagios_line` for schedulers;
- section 3, performance baselines: `percentile`, `summarize`, `rating`, `compare_to_baseline`;
- section 4, troubleshooting guides: every finding names the guide (1-5) that applies;
- section 5, rollback decision criteria: `rollback_decision` over a sampled history;
- section 6, escalation paths: `severity` (P0-P3, with the reason).

The numbers are the `threshold_*` settings of group data (defaults in group_data/all.py),
read through `Thresholds.from_data`. Callers measure; this module only judges.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from itertools import pairwise
from typing import Any, Literal

from tpe_ops.health import HEALTH_KEYS

Level = Literal["ok", "warning", "critical", "unknown"]
Classification = Literal["healthy", "warning", "critical", "unknown"]
# Escalation hint of a finding (section 6): "outage" -> P0, "major" -> at least P1,
# "minor" -> an informational note of a P3 (an optimisation opportunity).
Impact = Literal["outage", "major", "minor"]

LEVELS: tuple[Level, ...] = ("ok", "warning", "critical", "unknown")

# The runbook's troubleshooting guides (section 4).
GUIDE_BACKEND_DOWN = 1
GUIDE_HIGH_LATENCY = 2
GUIDE_HEALTH_404 = 3
GUIDE_DATABASE = 4
GUIDE_REDIS = 5
GUIDES = {
    GUIDE_BACKEND_DOWN: "backend process down",
    GUIDE_HIGH_LATENCY: "high latency",
    GUIDE_HEALTH_404: "health endpoint returns 404 (proxy)",
    GUIDE_DATABASE: "database connection errors",
    GUIDE_REDIS: "Redis cache not working",
}

PERCENTILE_DEFINITION = "nearest-rank"
HEALTHY_BODY_STATUSES = ("ok", "healthy")  # as tpe_ops.health.health_problems accepts
# PM2 statuses that mean the app is crashing and being restarted over and over.
RESTART_LOOP_STATUSES = ("errored", "waiting restart")
# A gateway error from the proxy in front of the backend: the backend is not answering.
GATEWAY_ERRORS = (502, 503, 504)


# --- statistics (section 3) ------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile by the nearest-rank definition.

    The value at rank ceil(p/100 * n) of the n samples sorted ascending (rank at least 1):
    always one of the samples, never interpolated. p95 of 1..100 is 95, p99 of 50 samples
    is their maximum (rank ceil(49.5) = 50), p95 of 50 samples is the 48th smallest, and
    any percentile of a single sample is that sample. p = 0 gives the minimum.

    Raises ValueError for no samples or p outside [0, 100].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside [0, 100]")
    ordered = sorted(samples)
    # Exact arithmetic: in floats 64.4 * 250 / 100 is 161.00000000000003 (rank 162).
    rank = max(1, math.ceil(Fraction(str(p)) * len(ordered) / 100))
    return ordered[rank - 1]


def rating(p95_ms: float) -> str:
    """The runbook's rating of a p95 latency (section 3's table)."""
    if p95_ms < 200:
        return "EXCELLENT"
    if p95_ms < 500:
        return "GOOD"
    if p95_ms < 1000:
        return "ACCEPTABLE"
    return "NEEDS OPTIMIZATION"


def summarize(latencies_ms: Sequence[float], successes: int, total: int) -> dict[str, Any]:
    """Benchmark statistics of one endpoint.

    latencies_ms: the latencies to describe (the caller chooses which requests count,
    usually the successful ones); successes and total: request counts. Rates are percentages
    (None when total is 0). min/max/avg are the obvious ones; median is the usual median (the
    mean of the two middle samples for an even count); p95 and p99 are nearest-rank (see
    `percentile`). Latency figures and the rating are None when there is no latency.
    """
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes ({successes}) <= total ({total})")
    success_rate = successes / total * 100 if total else None
    stats: dict[str, Any] = {
        "total": total,
        "successes": successes,
        "success_rate_pct": success_rate,
        "error_rate_pct": 100 - success_rate if success_rate is not None else None,
        "count": len(latencies_ms),
        "percentile_definition": PERCENTILE_DEFINITION,
    }
    keys = ("min_ms", "median_ms", "avg_ms", "p95_ms", "p99_ms", "max_ms")
    if not latencies_ms:
        return stats | dict.fromkeys(keys) | {"rating": None}
    figures = (
        min(latencies_ms),
        statistics.median(latencies_ms),
        statistics.fmean(latencies_ms),
        percentile(latencies_ms, 95),
        percentile(latencies_ms, 99),
        max(latencies_ms),
    )
    return stats | dict(zip(keys, figures, strict=True)) | {"rating": rating(figures[3])}


def degradation_pct(p95_ms: float, baseline_ms: float) -> float:
    """How much slower than the baseline, in percent (negative: faster)."""
    if baseline_ms <= 0:
        raise ValueError(f"baseline {baseline_ms} ms must be positive")
    return (p95_ms - baseline_ms) / baseline_ms * 100


def compare_to_baseline(
    p95_ms: float, baseline_ms: float, target_ms: float, degradation_limit_pct: float
) -> dict[str, Any]:
    """A p95 against the stored baseline and the target (sections 3 and 5).

    within_target: p95 below the target (the runbook's "< 500 ms"); crosses_rollback: the
    degradation is more than the limit (the runbook's "degradation > 50% from baseline").
    One measurement crossing it is a finding; the rollback criterion wants it sustained
    (see `rollback_decision`).
    """
    degradation = degradation_pct(p95_ms, baseline_ms)
    return {
        "p95_ms": p95_ms,
        "baseline_ms": baseline_ms,
        "target_ms": target_ms,
        "degradation_pct": degradation,
        "degradation_limit_pct": degradation_limit_pct,
        "within_target": p95_ms < target_ms,
        "crosses_rollback": degradation > degradation_limit_pct,
    }


# --- thresholds (group data) -------------------------------------------------------------------

SETTING_PREFIX = "threshold_"


@dataclass(frozen=True)
class Thresholds:
    """The runbook's numbers; field <name> is the setting threshold_<name> of group data.

    The defaults are the runbook's (and group_data/all.py's). Fields marked "new" are not in
    the runbook's text: they make its words ("at max pool", "sustained", durations) measurable.
    """

    p95_warning_ms: float = 300
    p95_critical_ms: float = 500
    error_rate_warning_pct: float = 0.1
    error_rate_critical_pct: float = 1.0
    db_pool_warning_pct: float = 80
    db_pool_critical_pct: float = 100  # new: "database connections at max pool"
    pm2_restarts_per_hour: int = 5
    redis_hit_rate_warning_pct: float = 50
    redis_hit_rate_target_pct: float = 70
    disk_warning_pct: float = 80
    disk_critical_pct: float = 90
    memory_warning_pct: float = 90  # new (the runbook checks `free -h`, gives no number)
    memory_critical_pct: float = 95  # new
    cpu_warning_pct: float = 90  # new (the runbook checks `top`, gives no number)
    cpu_critical_pct: float = 98  # new
    baseline_p95_ms: float = 170
    target_p95_ms: float = 500
    rollback_error_rate_pct: float = 5
    rollback_error_minutes: float = 10
    rollback_unavailable_minutes: float = 5
    rollback_degradation_pct: float = 50
    rollback_degradation_minutes: float = 10  # new: how long "degradation > 50%" must last
    rollback_sustained_error_rate_pct: float = 1  # new: lower bound of "error rate 1-5%"
    rollback_sustained_error_minutes: float = 30  # new: "sustained for > 30 minutes"
    # new: a longer silence between two samples breaks a "for N minutes" run (nobody looked).
    rollback_max_gap_seconds: float = 180
    # new (maintenance, section 7): error-log lines in the daily check; disk growth monthly.
    error_log_lines_warning: int = 1
    error_log_lines_critical: int = 20
    disk_growth_pct_per_30_days: float = 20
    # new: a p95 slower than its reference by less than this is noise, whatever the percentage
    # (3 ms -> 5 ms is +66 %); applies to the maintenance benchmarks' comparisons.
    degradation_min_ms: float = 50
    # new (maintenance, monthly): unused or rarely used indexes worth an alert, in MB.
    unused_index_warning_mb: float = 100

    @classmethod
    def from_data(cls, data: Any) -> Thresholds:
        """From host data (pyinfra HostData, a dict, or any object with the attributes).

        A setting that is absent or None keeps the default above.
        """
        get = getattr(data, "get", None)
        values = {}
        for field in fields(cls):
            key = SETTING_PREFIX + field.name
            value = get(key) if callable(get) else getattr(data, key, None)
            if value is not None:
                values[field.name] = value
        return cls(**values)


# --- findings (sections 2 and 4) ---------------------------------------------------------------

_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _limit(value: float | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _num(value)


@dataclass(frozen=True)
class Perf:
    """One performance figure, in Nagios perfdata form: label=value[unit];warn;crit.

    warn/crit are numbers (alert above them) or Nagios range strings ("50:" alerts below 50).
    """

    label: str
    value: float
    unit: str = ""  # Nagios units: "", "ms", "s", "%", "B", "c"
    warn: float | str | None = None
    crit: float | str | None = None

    def nagios(self) -> str:
        label = _LABEL_UNSAFE.sub("_", self.label)
        limits = [_limit(x) for x in (self.warn, self.crit)]
        return f"{label}={_num(self.value)}{self.unit};{';'.join(limits)}".rstrip(";")


@dataclass(frozen=True)
class Finding:
    """The judgement of one check.

    check: a stable name ("pm2:tpe-backend", "health:local", "latency", ...);
    level: ok / warning / critical / unknown (could not be measured);
    guide: the troubleshooting guide (1-5) that applies, or None;
    impact: escalation hint for `severity` (None: decided by the level alone);
    perfdata: the figures measured, for --json, Nagios and Prometheus.
    """

    check: str
    level: Level
    message: str
    guide: int | None = None
    impact: Impact | None = None
    perfdata: tuple[Perf, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r}")
        if self.guide is not None and self.guide not in GUIDES:
            raise ValueError(f"no troubleshooting guide {self.guide}")

    @property
    def value(self) -> float | None:
        """The main figure (the first perfdata value), if any."""
        return self.perfdata[0].value if self.perfdata else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"guide_title": GUIDES.get(self.guide or 0)}


def latency_finding(p95_ms: float | None, t: Thresholds, check: str = "latency") -> Finding:
    """p95 latency: >= 300 ms warning, >= 500 ms critical (guide 2)."""
    if p95_ms is None:
        return Finding(check, "unknown", "p95 latency not measured (no request succeeded)")
    perf = (Perf("p95", p95_ms, "ms", t.p95_warning_ms, t.p95_critical_ms),)
    text = f"p95 latency {_num(p95_ms)} ms"
    if p95_ms >= t.p95_critical_ms:
        return Finding(check, "critical", f"{text} >= {_num(t.p95_critical_ms)} ms",
                       GUIDE_HIGH_LATENCY, perfdata=perf)
    if p95_ms >= t.p95_warning_ms:
        return Finding(check, "warning", f"{text} >= {_num(t.p95_warning_ms)} ms",
                       GUIDE_HIGH_LATENCY, perfdata=perf)
    return Finding(check, "ok", text, perfdata=perf)


def request_outcomes(status_codes: Sequence[int]) -> dict[str, Any]:
    """Count a sample's HTTP answers: 2xx/3xx succeeded, 429 rate limited, the rest failed.

    Status 0 stands for no answer (refused, timeout). The error rate leaves the rate-limited
    requests out: the app's own limiter refusing our probe is not an error of the app.
    """
    limited = sum(1 for code in status_codes if code == 429)
    succeeded = sum(1 for code in status_codes if 200 <= code < 400)
    failed = len(status_codes) - limited - succeeded
    judged = len(status_codes) - limited
    return {
        "total": len(status_codes),
        "succeeded": succeeded,
        "rate_limited": limited,
        "failed": failed,
        "error_rate_pct": failed / judged * 100 if judged else None,
    }


def error_rate_finding(
    error_rate_pct: float | None, t: Thresholds, check: str = "error_rate"
) -> Finding:
    """Error rate: 0.1 % or more warning (the runbook's healthy is "< 0.1%"), above 1 %
    critical. No guide of its own: the PM2, database and Redis findings name the cause."""
    if error_rate_pct is None:
        return Finding(check, "unknown", "error rate not measured (no request judged)")
    perf = (Perf("error_rate", error_rate_pct, "%", t.error_rate_warning_pct,
                 t.error_rate_critical_pct),)
    text = f"error rate {_num(error_rate_pct)}%"
    if error_rate_pct > t.error_rate_critical_pct:
        return Finding(check, "critical", f"{text} > {_num(t.error_rate_critical_pct)}%",
                       perfdata=perf)
    if error_rate_pct >= t.error_rate_warning_pct:
        return Finding(check, "warning", f"{text} >= {_num(t.error_rate_warning_pct)}%",
                       perfdata=perf)
    return Finding(check, "ok", text, perfdata=perf)


def rate_limit_finding(rate_limited: int, total: int, check: str = "rate_limit") -> Finding:
    """HTTP 429s in a sample: the app's rate limiter refused us. A warning, not an outage."""
    perf = (Perf("rate_limited", rate_limited),)
    if not rate_limited:
        return Finding(check, "ok", "not rate limited", perfdata=perf)
    return Finding(
        check, "warning",
        f"rate limited: {rate_limited} of {total} requests answered HTTP 429 by the app's own "
        "limiter (not an outage); sample fewer requests or less often",
        perfdata=perf,
    )


def _http_failure(check: str, code: int, health: bool) -> Finding:
    outage: Impact | None = "outage" if health else None
    if code == 0:
        return Finding(check, "critical", f"{check}: unreachable (refused or timed out)",
                       GUIDE_BACKEND_DOWN, outage)
    if code == 404:
        return Finding(check, "critical", f"{check}: answered 404", GUIDE_HEALTH_404, outage)
    guide = GUIDE_BACKEND_DOWN if code in GATEWAY_ERRORS else None
    return Finding(check, "critical", f"{check}: answered {code}", guide, outage)


def endpoint_finding(check: str, http: Mapping[str, Any], *, health: bool = False) -> Finding:
    """One HTTP answer ({status, seconds, body}; status 0 = no answer).

    Unreachable: critical, guide 1. 404: critical, guide 3. 429: rate limited, a warning and
    not an outage. 502/503/504 (the proxy cannot reach the backend): critical, guide 1. Any
    other non-2xx: critical. health=True marks a failure as an outage (P0): the health
    endpoint failing means the service is down; another endpoint failing is a P1.
    """
    code = int(http.get("status") or 0)
    seconds = http.get("seconds")
    perf = (Perf(f"{check}_time", seconds * 1000, "ms"),) if code and seconds is not None else ()
    if code == 429:
        return Finding(check, "warning",
                       f"{check}: rate limited (HTTP 429), not an outage", perfdata=perf)
    if not 200 <= code < 300:
        return _http_failure(check, code, health)
    timing = f" in {_num(seconds * 1000)} ms" if seconds is not None else ""
    return Finding(check, "ok", f"{check}: answered {code}{timing}", perfdata=perf)


def _json_object(body: str | None) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body or "")
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def health_endpoint_finding(check: str, http: Mapping[str, Any]) -> Finding:
    """The health endpoint: `endpoint_finding(health=True)`, then the runbook's JSON shape.

    Not JSON (e.g. the proxy serving the frontend's page): critical, guide 3. A status other
    than ok/healthy: critical (the app says it is down). A missing key: warning.
    """
    found = endpoint_finding(check, http, health=True)
    if found.level != "ok":
        return found
    body = _json_object(http.get("body"))
    if body is None:
        return Finding(check, "critical", f"{check}: answered 200 but not a JSON object",
                       GUIDE_HEALTH_404, "outage", found.perfdata)
    if body.get("status") not in HEALTHY_BODY_STATUSES:
        return Finding(check, "critical", f"{check}: reports status {body.get('status')!r}",
                       None, "outage", found.perfdata)
    missing = [key for key in HEALTH_KEYS if key not in body]
    if missing:
        return Finding(check, "warning", f"{check}: answer lacks {', '.join(missing)}",
                       perfdata=found.perfdata)
    return found


# --- PM2 -------------------------------------------------------------------------------------


def restart_counter(processes: Sequence[Mapping[str, Any]], app: str) -> int:
    """PM2's restart counter of an app: restart_time summed over its instances."""
    return sum(p.get("restart_time") or 0 for p in processes if p.get("name") == app)


def restarts_in_last_hour(
    samples: Sequence[tuple[float, int]], now: float, window_s: float = 3600
) -> int | None:
    """Restarts of one app within the window, from our own (epoch seconds, counter) samples.

    Only samples inside [now - window_s, now] count, so a restart is counted when it falls
    between two of them (sample more often than the window). PM2's counter goes back to 0
    on `pm2 resurrect` (and drops when instances are removed): when a counter is lower than
    the one before, the new value is the number of restarts since that reset. None when
    fewer than two samples are in the window (nothing to compare).
    """
    recent = sorted((t, c) for t, c in samples if now - window_s <= t <= now)
    if len(recent) < 2:
        return None
    return sum(
        after - before if after >= before else after
        for (_, before), (_, after) in pairwise(recent)
    )


def _app_figures(
    procs: Sequence[Mapping[str, Any]], name: str, now: float | None
) -> tuple[list[Mapping[str, Any]], tuple[Perf, ...], str]:
    online = [p for p in procs if p.get("status") == "online"]
    memory = sum(p.get("memory") or 0 for p in procs)
    cpu = sum(p.get("cpu") or 0 for p in procs)
    perf = (Perf(f"{name}_online", len(online)), Perf(f"{name}_memory", memory, "B"),
            Perf(f"{name}_cpu", cpu, "%"))
    detail = f"{len(online)}/{len(procs)} online, {memory / 1e6:.0f} MB, {_num(cpu)}% CPU"
    started = [p["pm_uptime"] for p in online if p.get("pm_uptime")]
    if now is not None and started:
        detail += f", up {_duration(now - min(started) / 1000)}"
    return online, perf, detail


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def pm2_status_finding(
    name: str,
    processes: Sequence[Mapping[str, Any]],
    restarts_last_hour: int | None = None,
    now: float | None = None,
) -> Finding:
    """One expected PM2 app (records of operations.pm2.parse_jlist; now in epoch seconds).

    Not running, or any instance not online (stopped, errored, ...): critical, guide 1; an
    outage (P0) when no instance is online. A restart loop (an instance errored or waiting
    restart, or unstable restarts while it restarted within the hour or that is unknown):
    critical, guide 1. Unstable restarts with no restart in the hour: ok, noted (P3).
    """
    check = f"pm2:{name}"
    procs = [p for p in processes if p.get("name") == name]
    if not procs:
        return Finding(check, "critical", f"{name} is not running under PM2",
                       GUIDE_BACKEND_DOWN, "outage")
    online, perf, detail = _app_figures(procs, name, now)
    statuses = sorted({p.get("status") or "?" for p in procs} - {"online"})
    unstable = sum(p.get("unstable_restarts") or 0 for p in procs)
    looping = any(p.get("status") in RESTART_LOOP_STATUSES for p in procs) or (
        unstable > 0 and restarts_last_hour != 0
    )
    loop = "restart loop" + (f" ({unstable} unstable restarts)" if unstable else "")
    problems = ([", ".join(statuses)] if statuses else []) + ([loop] if looping else [])
    if problems:
        return Finding(check, "critical", f"{name}: {'; '.join(problems)} ({detail})",
                       GUIDE_BACKEND_DOWN, None if online else "outage", perf)
    if unstable:
        return Finding(check, "ok", f"{name}: {detail}; {unstable} unstable restarts earlier",
                       GUIDE_BACKEND_DOWN, "minor", perf)
    return Finding(check, "ok", f"{name}: {detail}", perfdata=perf)


def pm2_restarts_finding(name: str, restarts_last_hour: int | None, t: Thresholds) -> Finding:
    """Restarts in the last hour: more than threshold_pm2_restarts_per_hour is a warning."""
    check = f"pm2:{name}:restarts"
    if restarts_last_hour is None:
        return Finding(check, "ok", f"{name}: restarts in the last hour not known yet "
                       "(needs two samples within the hour)")
    limit = t.pm2_restarts_per_hour
    perf = (Perf(f"{name}_restarts_1h", restarts_last_hour, "", limit),)
    text = f"{name}: {restarts_last_hour} restarts in the last hour"
    if restarts_last_hour > limit:
        return Finding(check, "warning", f"{text} (> {limit})", GUIDE_BACKEND_DOWN,
                       perfdata=perf)
    return Finding(check, "ok", text, perfdata=perf)


def pm2_findings(
    processes: Sequence[Mapping[str, Any]],
    expected: Sequence[str],
    restarts_last_hour: Mapping[str, int | None],
    t: Thresholds,
    now: float | None = None,
) -> list[Finding]:
    """Status and restart findings for each expected app (apps not expected are ignored)."""
    findings = []
    for name in expected:
        restarts = restarts_last_hour.get(name)
        findings.append(pm2_status_finding(name, processes, restarts, now))
        findings.append(pm2_restarts_finding(name, restarts, t))
    return findings


# --- database, Redis, host -----------------------------------------------------------------


def db_connections_finding(
    connections: int | None, pool_size: int, t: Thresholds, error: str | None = None
) -> Finding:
    """Connections in use against the pool: >= 80 % warning, at the pool size critical
    (guide 4). connections None: unknown, or with `error` (a short, secret-free reason the
    database could not be reached) critical and an outage (the runbook's P0 example
    "database unavailable")."""
    check = "db:connections"
    if connections is None:
        if error:
            return Finding(check, "critical", f"database unavailable: {error}",
                           GUIDE_DATABASE, "outage")
        return Finding(check, "unknown", "database connections not measured", GUIDE_DATABASE)
    if pool_size <= 0:
        raise ValueError(f"pool size {pool_size} must be positive")
    used = connections / pool_size * 100
    perf = (Perf("db_pool_used", used, "%", t.db_pool_warning_pct, t.db_pool_critical_pct),
            Perf("db_connections", connections, "", None, pool_size))
    text = f"{connections} of {pool_size} pool connections in use ({_num(round(used, 1))}%)"
    if used >= t.db_pool_critical_pct:
        return Finding(check, "critical", f"{text}: pool exhausted", GUIDE_DATABASE,
                       perfdata=perf)
    if used >= t.db_pool_warning_pct:
        return Finding(check, "warning", text, GUIDE_DATABASE, perfdata=perf)
    return Finding(check, "ok", text, perfdata=perf)


def redis_hit_rate(before: Mapping[str, Any], after: Mapping[str, Any]) -> float | None:
    """Hit rate in percent between two `INFO stats` samples (keyspace_hits/keyspace_misses).

    The counters are cumulative since Redis started; the rate is over their delta. When a
    counter went down (Redis restarted, or CONFIG RESETSTAT), the second sample's counters are
    the traffic since that reset. None when there was no lookup between the samples.
    """
    hits_0, misses_0 = int(before["keyspace_hits"]), int(before["keyspace_misses"])
    hits, misses = int(after["keyspace_hits"]), int(after["keyspace_misses"])
    if hits >= hits_0 and misses >= misses_0:
        hits, misses = hits - hits_0, misses - misses_0
    lookups = hits + misses
    return hits / lookups * 100 if lookups else None


def redis_finding(reachable: bool, used_memory_bytes: int | None = None) -> Finding:
    """Redis unavailable: critical, guide 5 (a P1: the app still answers, slower)."""
    if not reachable:
        return Finding("redis", "critical", "Redis unavailable", GUIDE_REDIS)
    perf = (Perf("redis_memory", used_memory_bytes, "B"),) if used_memory_bytes is not None else ()
    return Finding("redis", "ok", "Redis answers", perfdata=perf)


def redis_hit_rate_finding(hit_rate_pct: float | None, t: Thresholds) -> Finding:
    """Hit rate below 50 %: warning, guide 5. Below the 70 % target: ok, noted (P3)."""
    check = "redis:hit_rate"
    if hit_rate_pct is None:
        return Finding(check, "ok", "no cache lookups between the two samples")
    perf = (Perf("redis_hit_rate", hit_rate_pct, "%", f"{_num(t.redis_hit_rate_warning_pct)}:"),)
    text = f"Redis hit rate {_num(round(hit_rate_pct, 1))}%"
    if hit_rate_pct < t.redis_hit_rate_warning_pct:
        return Finding(check, "warning", f"{text} < {_num(t.redis_hit_rate_warning_pct)}%",
                       GUIDE_REDIS, perfdata=perf)
    if hit_rate_pct < t.redis_hit_rate_target_pct:
        return Finding(check, "ok",
                       f"{text}, below the {_num(t.redis_hit_rate_target_pct)}% target",
                       GUIDE_REDIS, "minor", perf)
    return Finding(check, "ok", text, perfdata=perf)


def _usage_finding(check: str, what: str, used_pct: float | None, warn: float,
                   crit: float) -> Finding:
    if used_pct is None:
        return Finding(check, "unknown", f"{what} use not measured")
    perf = (Perf(check.replace(":", "_"), used_pct, "%", warn, crit),)
    text = f"{what} {_num(round(used_pct, 1))}% used"
    if used_pct >= crit:
        return Finding(check, "critical", f"{text} (>= {_num(crit)}%)", perfdata=perf)
    if used_pct >= warn:
        return Finding(check, "warning", f"{text} (>= {_num(warn)}%)", perfdata=perf)
    return Finding(check, "ok", text, perfdata=perf)


def disk_finding(used_pct: float | None, t: Thresholds, mount: str = "/") -> Finding:
    """Disk use of a mount: >= 80 % warning, >= 90 % critical."""
    return _usage_finding(f"disk:{mount}", f"disk {mount}", used_pct, t.disk_warning_pct,
                          t.disk_critical_pct)


def memory_finding(used_pct: float | None, t: Thresholds) -> Finding:
    """Memory in use, (total - available) / total as `free` reports it."""
    return _usage_finding("memory", "memory", used_pct, t.memory_warning_pct,
                          t.memory_critical_pct)


def cpu_finding(used_pct: float | None, t: Thresholds) -> Finding:
    """CPU busy over a short interval (one instant is noise: sample over a second or more)."""
    return _usage_finding("cpu", "CPU", used_pct, t.cpu_warning_pct, t.cpu_critical_pct)


# --- classification, severity, scheduler output (sections 2 and 6) ----------------------------


def classify(findings: Sequence[Finding]) -> Classification:
    """Any critical: critical; else any warning: warning; else any unknown (or no finding at
    all): unknown; else healthy."""
    levels = {f.level for f in findings}
    if "critical" in levels:
        return "critical"
    if "warning" in levels:
        return "warning"
    if "unknown" in levels or not findings:
        return "unknown"
    return "healthy"


def _messages(findings: Sequence[Finding]) -> str:
    return "; ".join(f.message for f in findings)


def severity(findings: Sequence[Finding]) -> tuple[str, str]:
    """The runbook's section 6 severity and why.

    P0: the service is down (a critical finding with impact "outage": an app with no online
    process, the health endpoint unreachable or failing, the database unavailable).
    P1: major impairment (any other critical, or impact "major": a critical endpoint down,
    critical latency or error rate, pool exhausted, Redis down, a scheduled rollback).
    P2: minor impairment (warnings). P3: nothing worse than informational notes or checks
    that could not be measured.
    """
    outage = [f for f in findings if f.level == "critical" and f.impact == "outage"]
    if outage:
        return "P0", f"service unavailable: {_messages(outage)}"
    major = [f for f in findings if f.level == "critical" or f.impact == "major"]
    if major:
        return "P1", f"major impairment: {_messages(major)}"
    warnings = [f for f in findings if f.level == "warning"]
    if warnings:
        return "P2", f"minor impairment: {_messages(warnings)}"
    notes = [f for f in findings if f.impact == "minor" or f.level == "unknown"]
    if notes:
        return "P3", f"informational: {_messages(notes)}"
    return "P3", "no problem found"


EXIT_CODES = {"healthy": 0, "warning": 1, "critical": 2, "unknown": 3}
NAGIOS_STATUS = {"healthy": "OK", "warning": "WARNING", "critical": "CRITICAL",
                 "unknown": "UNKNOWN"}


def exit_code(classification: str) -> int:
    """Scheduler exit code: 0 healthy, 1 warning, 2 critical, 3 unknown (or anything else)."""
    return EXIT_CODES.get(classification, 3)


def _nagios_text(classification: str, findings: Sequence[Finding]) -> str:
    if classification == "healthy":
        return f"{len(findings)} checks ok"
    worst = {"warning": "warning", "critical": "critical"}.get(classification, "unknown")
    shown = [f for f in findings if f.level == worst]
    text = _messages(shown) or "no check ran"
    more = sum(1 for f in findings if f.level not in ("ok", worst))
    return f"{text} (+{more} more)" if more else text


def nagios_line(classification: str, findings: Sequence[Finding]) -> str:
    """`STATUS: text | perfdata`: the worst findings' messages, then every figure."""
    status = NAGIOS_STATUS.get(classification, "UNKNOWN")
    text = re.sub(r"[|\n\r]", "/", _nagios_text(classification, findings))
    perf = " ".join(p.nagios() for f in findings for p in f.perfdata)
    return f"{status}: {text}" + (f" | {perf}" if perf else "")


# --- rollback criteria (section 5) -------------------------------------------------------------

Sample = Mapping[str, Any]  # {time (epoch s), available: bool, error_rate_pct, p95_ms}


def _error_rate(sample: Sample) -> float | None:
    # Unavailable: every request failed, whatever the sample recorded.
    if sample.get("available") is False:
        return 100.0
    return sample.get("error_rate_pct")


def sustained_seconds(
    history: Sequence[Sample], condition: Callable[[Sample], bool], now: float,
    max_gap_s: float,
) -> float:
    """How long `condition` has held, without interruption, up to the newest sample.

    Measured from the first to the last sample of the unbroken run that ends at the newest
    sample: a lower bound (it may have started up to one interval earlier). A sample where the
    condition is false or unknown breaks the run, and so does a gap between two consecutive
    samples longer than max_gap_s (nobody looked: it cannot count as "continuously"). When the
    newest sample (at or before now) is older than max_gap_s, nothing holds now: 0.
    """
    samples = sorted((s for s in history if s["time"] <= now), key=lambda s: s["time"])
    if not samples or now - samples[-1]["time"] > max_gap_s:
        return 0.0
    start = None
    for sample in reversed(samples):
        if not condition(sample):
            break
        if start is not None and start["time"] - sample["time"] > max_gap_s:
            break
        start = sample
    return samples[-1]["time"] - start["time"] if start is not None else 0.0


@dataclass(frozen=True)
class _Criterion:
    name: str
    decision: Literal["immediate", "scheduled"]
    condition: Callable[[Sample], bool]
    minutes: float
    reason: str


def _criteria(t: Thresholds, baseline_ms: float) -> list[_Criterion]:
    def above(limit: float, inclusive: bool) -> Callable[[Sample], bool]:
        def check(sample: Sample) -> bool:
            rate = _error_rate(sample)
            return rate is not None and (rate >= limit if inclusive else rate > limit)
        return check

    def degraded(sample: Sample) -> bool:
        if sample.get("available") is False:
            return True
        p95 = sample.get("p95_ms")
        return p95 is not None and degradation_pct(p95, baseline_ms) > t.rollback_degradation_pct

    return [
        _Criterion("unavailable", "immediate", lambda s: s.get("available") is False,
                   t.rollback_unavailable_minutes, "system unavailable"),
        _Criterion("error_rate", "immediate", above(t.rollback_error_rate_pct, False),
                   t.rollback_error_minutes,
                   f"error rate above {_num(t.rollback_error_rate_pct)}%"),
        _Criterion("degradation", "scheduled", degraded, t.rollback_degradation_minutes,
                   f"p95 more than {_num(t.rollback_degradation_pct)}% over the "
                   f"{_num(baseline_ms)} ms baseline"),
        _Criterion("sustained_error_rate", "scheduled",
                   above(t.rollback_sustained_error_rate_pct, True),
                   t.rollback_sustained_error_minutes,
                   f"error rate at {_num(t.rollback_sustained_error_rate_pct)}% or more"),
    ]


def rollback_decision(
    history: Sequence[Sample], thresholds: Thresholds, baseline_p95_ms: float | None,
    now: float,
) -> dict[str, Any]:
    """The runbook's rollback decision criteria over a sampled history.

    history: samples {time (epoch s), available (bool), error_rate_pct, p95_ms}, in any
    order; an unavailable sample counts as 100 % errors and as degraded. Immediate: unavailable
    for more than 5 minutes, or error rate above 5 % for more than 10 minutes. Scheduled: p95
    more than 50 % over the baseline for more than 10 minutes, or error rate at 1 % or more (the
    runbook's "1-5%"; above 5 % is worse and still counts) for more than 30 minutes. Durations
    are measured by `sustained_seconds` (gaps longer than rollback_max_gap_seconds break a
    run). baseline_p95_ms None: thresholds.baseline_p95_ms.

    Returns {decision: immediate|scheduled|none, reasons: [...], triggered: [criterion names],
    sustained_seconds: {criterion: seconds}, baseline_p95_ms}. Criterion names: unavailable,
    error_rate, degradation, sustained_error_rate.
    """
    t = thresholds
    baseline = baseline_p95_ms if baseline_p95_ms is not None else t.baseline_p95_ms
    if baseline <= 0:
        raise ValueError(f"baseline {baseline} ms must be positive")
    reasons: dict[str, list[str]] = {"immediate": [], "scheduled": []}
    sustained: dict[str, float] = {}
    triggered: list[str] = []
    for rule in _criteria(t, baseline):
        held = sustained_seconds(history, rule.condition, now, t.rollback_max_gap_seconds)
        sustained[rule.name] = held
        if held > rule.minutes * 60:
            triggered.append(rule.name)
            reasons[rule.decision].append(
                f"{rule.reason} for {_num(round(held / 60, 1))} min "
                f"(> {_num(rule.minutes)} min): {rule.decision} rollback"
            )
    decision = next((d for d in ("immediate", "scheduled") if reasons[d]), "none")
    return {
        "decision": decision,
        "reasons": reasons["immediate"] + reasons["scheduled"],
        "triggered": triggered,
        "sustained_seconds": sustained,
        "baseline_p95_ms": baseline,
    }


def rollback_finding(decision: Mapping[str, Any]) -> Finding:
    """A rollback decision as a finding. Immediate: critical (an outage when the system was
    unavailable). Scheduled: a warning with impact "major" (P1, as section 6 ranks
    "performance degradation > 50%")."""
    reasons = "; ".join(decision.get("reasons") or [])
    if decision.get("decision") == "immediate":
        unavailable = "unavailable" in (decision.get("triggered") or [])
        impact: Impact = "outage" if unavailable else "major"
        return Finding("rollback", "critical", f"roll back now: {reasons}", None, impact)
    if decision.get("decision") == "scheduled":
        return Finding("rollback", "warning", f"schedule a rollback: {reasons}", None, "major")
    return Finding("rollback", "ok", "no rollback criterion met")
