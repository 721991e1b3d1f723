"""The runbook's troubleshooting guides (section 4) as pure judgement, no I/O:
evidence -> which guide matches, why, the safe automatic fix, and what a human must do.

It builds on the health judgement (tpe_ops.judgement): health's findings already name their
guide (1 backend process down, 2 high latency, 3 health endpoint 404, 4 database connection
errors, 5 Redis not working). Each guide here adds the evidence of its own investigation (the
runbook's "Investigation" commands, measured by playbooks/diagnose.py) and splits its
resolution into what is safe to do automatically (start a PM2 app that is down, start Redis,
warm the cache, a graceful reload to reset the backend's pool; a cache flush only when asked)
and what needs a person (code, proxy rewrites, the database itself).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tpe_ops import judgement as j
from tpe_ops.judgement import Finding, Level

FixKind = Literal["start_redis", "flush_cache", "restart_app", "reload_app", "warm_cache"]
# The order fixes run in on a host: Redis up before anything uses it, the flush before the
# warm-up refills the cache, apps started before the warm-up (it needs the database only, but a
# restarted backend would otherwise serve cold), the warm-up last.
FIX_ORDER: tuple[FixKind, ...] = (
    "start_redis", "flush_cache", "restart_app", "reload_app", "warm_cache",
)
FRONTEND_CHECK = "frontend:direct"
BAD_LEVELS = ("warning", "critical")
# Backend error-log lines shown as evidence of guides 4 and 5 (the client libraries' prefixes).
LOG_KEYWORDS = {j.GUIDE_DATABASE: ("postgres", "database", "pool"), j.GUIDE_REDIS: ("redis",)}
LOG_MATCHES_SHOWN = 3


@dataclass(frozen=True)
class Fix:
    """One safe automatic resolution step. target: the PM2 app (restart/reload) or the Redis
    service unit (start)."""

    kind: FixKind
    target: str = ""

    @property
    def label(self) -> str:
        return {
            "start_redis": f"Start Redis ({self.target})",
            "flush_cache": "Clear the Redis cache (FLUSHDB)",
            "restart_app": f"Restart {self.target} (PM2)",
            "reload_app": f"Reload {self.target} (PM2, graceful): a fresh connection pool",
            "warm_cache": "Warm the cache",
        }[self.kind]


@dataclass
class GuideResult:
    """One guide on one host. level: the worst evidence that matched ("ok" if none)."""

    guide: int
    matched: bool = False
    level: Level = "ok"
    reasons: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    human: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return j.GUIDES[self.guide]

    def match(self, finding: Finding | None, reason: str | None = None) -> None:
        """Count `finding` (or a reason of our own, at `critical`) as a match."""
        level: Level = finding.level if finding is not None else "critical"
        self.matched = True
        self.level = "critical" if "critical" in (self.level, level) else level
        self.reasons.append(reason or (finding.message if finding else "matched"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "guide": self.guide, "title": self.title, "matched": self.matched,
            "level": self.level, "reasons": self.reasons, "evidence": self.evidence,
            "fixes": [{"kind": f.kind, "target": f.target, "label": f.label} for f in self.fixes],
            "human": self.human,
        }


@dataclass
class Evidence:
    """What playbooks/diagnose.py measured on one host, with health's findings over it."""

    findings: Sequence[Finding]
    apps: Sequence[tuple[str, str]]  # expected PM2 apps: (name, role)
    local_health: Mapping[str, Any]  # the backend's health endpoint from the host: status, body
    backend_url: str
    public_url: str = ""  # health_public_url + health endpoint; "" when not configured
    frontend: Mapping[str, Any] | None = None  # GET / of the frontend from the host
    frontend_url: str = ""
    endpoints: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)
    sample: Sequence[tuple[int, float]] = ()  # the health endpoint, sampled: (status, ms)
    db: Mapping[str, Any] = field(default_factory=dict)  # {connections, error}
    db_activity: Mapping[str, Any] = field(default_factory=dict)  # {states, max_connections}
    redis_info: Mapping[str, Any] | None = None
    redis_state: Mapping[str, Any] = field(default_factory=dict)  # {ping, keys, service}
    redis_unit: str = "redis-server"
    redis_port: int = 6379
    error_logs: Mapping[str, Sequence[str]] = field(default_factory=dict)  # app -> last lines
    pm2_events: Mapping[str, Sequence[str]] = field(default_factory=dict)  # app -> PM2's log
    warm_cache: bool = True  # a warm-cache command is configured
    flush: bool = False  # --flush: clearing the cache is allowed (guide 5)


# --- helpers -----------------------------------------------------------------------------------


def _bad(finding: Finding | None) -> bool:
    return finding is not None and finding.level in BAD_LEVELS


def _findings(e: Evidence) -> dict[str, Finding]:
    found = {f.check: f for f in e.findings}
    if e.frontend is not None:
        found[FRONTEND_CHECK] = j.endpoint_finding(FRONTEND_CHECK, e.frontend)
    return found


def health_body(http: Mapping[str, Any]) -> dict[str, Any]:
    """The health endpoint's JSON object ({} when it did not answer one)."""
    if http.get("status") != 200:
        return {}
    try:
        body = json.loads(http.get("body") or "")
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _message(found: dict[str, Finding], check: str, missing: str) -> str:
    """A finding's message without its check's name in front (the evidence line names it)."""
    finding = found.get(check)
    if finding is None:
        return missing
    return finding.message.removeprefix(f"{check}: ")


def _apps(e: Evidence, role: str | None = None) -> list[str]:
    return [name for name, app_role in e.apps if role is None or app_role == role]


def _down_apps(e: Evidence, found: dict[str, Finding], role: str | None = None) -> list[str]:
    """Apps whose PM2 status is critical (not running, not online, or looping)."""
    return [name for name in _apps(e, role)
            if (f := found.get(f"pm2:{name}")) is not None and f.level == "critical"]


def _log_tail(e: Evidence, app: str) -> list[str]:
    """The runbook's `pm2 logs <app> --err`, and what PM2 itself logged about the app."""
    shown = []
    for what, lines in (("error log", e.error_logs.get(app, ())),
                        ("PM2 daemon log", e.pm2_events.get(app, ()))):
        if lines:
            shown += [f"{app} {what}, last {len(lines)} line(s):", *(f"  {x}" for x in lines)]
        else:
            shown.append(f"{app} {what}: nothing")
    return shown


def _log_matches(e: Evidence, guide: int) -> list[str]:
    """The backend's last error-log lines about this guide's component."""
    words = LOG_KEYWORDS[guide]
    lines = [line for app in _apps(e, "backend") for line in e.error_logs.get(app, ())
             if any(word in line.lower() for word in words)]
    if not lines:
        return []
    return ["backend error log mentions it:", *(f"  {x}" for x in lines[-LOG_MATCHES_SHOWN:])]


def _known(value: Any) -> str:
    return "?" if value is None else str(value)


def _db_reachable(e: Evidence) -> bool:
    return e.db.get("connections") is not None


def _redis_down(found: dict[str, Finding]) -> bool:
    redis = found.get("redis")
    return redis is not None and redis.level == "critical"


def _can_start_redis(e: Evidence, found: dict[str, Finding]) -> bool:
    """Redis does not answer and its service is not running: starting it is the fix."""
    return _redis_down(found) and e.redis_state.get("service") != "active"


def _warm_needed(e: Evidence, found: dict[str, Finding]) -> bool:
    """The runbook warms "if needed": Redis was down, the cache is empty, or the hit rate is
    below the target. Warming reads the database, so it must answer."""
    if not e.warm_cache or not _db_reachable(e):
        return False
    hit_rate = found.get("redis:hit_rate")
    return (_can_start_redis(e, found) or e.redis_state.get("keys") == 0
            or (hit_rate is not None and hit_rate.guide == j.GUIDE_REDIS))


def _slowest(e: Evidence, count: int = 3) -> str:
    """The slowest answers (requests that got none have no latency)."""
    timed = [(ms, path, code) for path, answers in e.endpoints.items()
             for code, ms in answers if code]
    answered = [(ms, code) for code, ms in e.sample if code]
    if answered:
        ms, code = max(answered)
        timed.append((ms, "health endpoint (slowest of the sample)", code))
    if not timed:
        return "slowest endpoints: none answered"
    shown = sorted(timed, reverse=True)[:count]
    return "slowest endpoints: " + ", ".join(
        f"{path} {ms:.0f} ms ({code})" for ms, path, code in shown)


# --- the five guides -------------------------------------------------------------------------


def backend_down(e: Evidence, found: dict[str, Finding]) -> GuideResult:
    """Guide 1: a PM2 app stopped, errored or restarting too often; the backend not answering.
    Resolution: start the app again (`pm2 restart`); if it does not stay up, the logs."""
    result = GuideResult(j.GUIDE_BACKEND_DOWN)

    def guide_1(check: str) -> Finding | None:
        finding = found.get(check)
        return finding if _bad(finding) and finding.guide == j.GUIDE_BACKEND_DOWN else None

    restarting = [name for name in _apps(e) if guide_1(f"pm2:{name}:restarts")]
    local, front = guide_1("health:local"), guide_1(FRONTEND_CHECK)
    for finding in [guide_1(f"pm2:{name}") for name in _apps(e)] + [
            guide_1(f"pm2:{name}:restarts") for name in restarting] + [local, front]:
        if finding is not None:
            result.match(finding)
    result.evidence = [_message(found, f"pm2:{name}", f"{name}: not measured")
                       for name in _apps(e)]
    result.evidence.append(f"backend {e.backend_url}: "
                           + _message(found, "health:local", "not measured"))
    if e.frontend is not None:
        result.evidence.append(f"frontend {e.frontend_url}: "
                               + _message(found, FRONTEND_CHECK, "not measured"))
    result.evidence.append("; ".join(_message(found, check, f"{check} not measured")
                                     for check in ("memory", "disk:/")))
    if not result.matched:
        return result
    down = _down_apps(e, found)
    silent = ((_apps(e, "backend") if local and not _down_apps(e, found, "backend") else [])
              + (_apps(e, "frontend") if front and not _down_apps(e, found, "frontend")
                 else []))
    for name in dict.fromkeys(down + restarting + silent):
        result.evidence.extend(_log_tail(e, name))
    result.fixes = [Fix("restart_app", name) for name in down]
    for name in down:
        result.human.append(
            f"if {name} does not stay online: read `pm2 logs {name} --lines 200 --err`, fix "
            "the code or roll back (`deploy.py rollback`)")
    for name in restarting:
        if name not in down:
            result.human.append(
                f"{name} restarts too often: find why in its logs (exceptions, "
                "max_memory_restart) before it goes down")
    for name in silent:
        url = e.backend_url if (name, "backend") in e.apps else e.frontend_url
        result.human.append(f"PM2 reports {name} online but {url} does not answer: check "
                            "its PORT in shared/ and its logs")
    return result


def high_latency(e: Evidence, found: dict[str, Finding]) -> GuideResult:
    """Guide 2: p95 over the thresholds. Resolution: Redis running, cache warm; then slow
    queries, indexes, scaling (people)."""
    result = GuideResult(j.GUIDE_HIGH_LATENCY)
    latency = found.get("latency")
    if _bad(latency) and latency.guide == j.GUIDE_HIGH_LATENCY:
        result.match(latency)
    result.evidence = [
        _message(found, "latency", "p95 latency not measured"),
        _slowest(e),
        "database: " + _message(found, "db:connections", "not measured"),
        "Redis: " + "; ".join(_message(found, check, "not measured")
                              for check in ("redis", "redis:hit_rate")),
    ]
    if not result.matched:
        return result
    if _can_start_redis(e, found):
        result.fixes.append(Fix("start_redis", e.redis_unit))
    if _warm_needed(e, found):
        result.fixes.append(Fix("warm_cache"))
    result.human = [
        "review slow queries (pg_stat_statements, mean_exec_time > 100 ms) and add indexes "
        "where they scan",
        "compare with the baseline (`deploy.py benchmark`): a release more than 50% slower "
        "than the baseline is a rollback candidate (`deploy.py rollback`)",
        "if the database is consistently slow, consider scaling it",
    ]
    return result


def health_404(e: Evidence, found: dict[str, Finding]) -> GuideResult:
    """Guide 3: compare the backend directly with the public URL (the proxy). Resolution:
    routes and rewrites are people's work; a frontend that is down is started again."""
    result = GuideResult(j.GUIDE_HEALTH_404)
    local, public = found.get("health:local"), found.get("health:public")
    local_404 = local is not None and local.guide == j.GUIDE_HEALTH_404
    public_bad = (public is not None and public.level == "critical"
                  and local is not None and local.level in ("ok", "warning"))
    if local_404:
        result.match(local)
    if public_bad:
        result.match(public, f"the backend answers directly but the public URL does not: "
                             f"{public.message}")
    result.evidence = [f"backend directly {e.backend_url}: "
                       + _message(found, "health:local", "not measured")]
    if e.public_url:
        result.evidence.append(f"public {e.public_url}: "
                               + _message(found, "health:public", "not measured"))
    else:
        result.evidence.append("public URL not configured (health_public_url): only the "
                               "backend was checked")
    result.evidence.extend(_message(found, f"pm2:{name}", f"{name}: not measured")
                           for name in _apps(e, "frontend"))
    if local_404:
        result.human.append(
            f"the backend itself answers 404 for {e.backend_url}: the route is missing from "
            "this release; deploy a release that has it in server.js, or roll back")
    if public_bad:
        frontends = _apps(e, "frontend")
        down = _down_apps(e, found, "frontend")
        result.fixes = [Fix("restart_app", name) for name in down]
        restart = f"`pm2 restart {frontends[0]}`" if frontends else "restart the proxy"
        result.human.append(
            f"the proxy does not route {e.public_url} to the backend: check the rewrites of "
            f"/api in next.config.js (or the proxy in front), then {restart}")
    return result


def database(e: Evidence, found: dict[str, Finding]) -> GuideResult:
    """Guide 4: connections refused, pool exhausted. Resolution: a graceful reload resets the
    backend's pool when the database answers; a database that refuses needs people."""
    result = GuideResult(j.GUIDE_DATABASE)
    connections = found.get("db:connections")
    if _bad(connections) and connections.guide == j.GUIDE_DATABASE:
        result.match(connections)
    body = health_body(e.local_health)
    if body.get("database") == "error":
        result.match(None, "the backend's health endpoint reports its database as 'error'")
    if _db_reachable(e):
        result.evidence.append("connection test through the app host: ok; pool: "
                               + _message(found, "db:connections", "not measured"))
    else:
        result.evidence.append("connection test through the app host: failed: "
                               f"{e.db.get('error') or 'not measured'}")
    pool = body.get("pool")
    if isinstance(pool, dict):
        result.evidence.append(
            f"backend pool (one worker): {pool.get('total')} open of max {pool.get('max')}, "
            f"{pool.get('idle')} idle, {pool.get('waiting')} waiting; health says database "
            f"{body.get('database', '?')}")
    states = e.db_activity.get("states") or {}
    if states or e.db_activity.get("max_connections"):
        by_state = ", ".join(f"{state} {n}" for state, n in sorted(states.items())) or "none"
        result.evidence.append(f"connections to this database by state: {by_state}; "
                               f"max_connections {e.db_activity.get('max_connections', '?')}")
    if not result.matched:
        return result
    result.evidence.extend(_log_matches(e, j.GUIDE_DATABASE))
    if _db_reachable(e):
        result.fixes = [Fix("reload_app", name) for name in _apps(e, "backend")]
        result.human.append(
            "review the pool settings (db_pool_size, DB_POOL_MAX) against max_connections; "
            "terminate idle connections if other clients hold them; ask AWS support if RDS "
            "needs a parameter change")
    else:
        result.human.append(
            "the database refuses the app or does not answer: check that it runs (RDS "
            "console), the network path from the app host, the role and its password "
            "(secrets), and max_connections; no automatic fix is safe")
    return result


def redis(e: Evidence, found: dict[str, Finding]) -> GuideResult:
    """Guide 5: Redis down, low hit rate, the backend unable to use it. Resolution: start
    Redis, warm the cache; clear it first only with --flush."""
    result = GuideResult(j.GUIDE_REDIS)
    reach, hit_rate = found.get("redis"), found.get("redis:hit_rate")
    down = _redis_down(found)
    if down:
        result.match(reach)
    if _bad(hit_rate) and hit_rate.guide == j.GUIDE_REDIS:
        result.match(hit_rate)
    app_error = health_body(e.local_health).get("redis") == "error" and not down
    if app_error:
        result.match(None, "the backend's health endpoint reports Redis as 'error' while "
                           "redis-cli gets an answer")
    info = e.redis_info or {}
    state = e.redis_state
    result.evidence = [
        f"redis-cli ping (port {e.redis_port}): {state.get('ping') or 'no answer'}",
        f"service {e.redis_unit}: {state.get('service') or 'unknown'}",
        f"keys: {_known(state.get('keys'))}; memory used: {_known(info.get('used_memory_human'))}",
        _message(found, "redis:hit_rate", "hit rate not measured"),
    ]
    if not result.matched:
        return result
    result.evidence.extend(_log_matches(e, j.GUIDE_REDIS))
    startable = _can_start_redis(e, found)
    if startable:
        result.fixes.append(Fix("start_redis", e.redis_unit))
    if e.flush and (startable or not down):
        result.fixes.append(Fix("flush_cache"))
    if _warm_needed(e, found) or (e.flush and e.warm_cache and _db_reachable(e)):
        result.fixes.append(Fix("warm_cache"))
    if down and not startable:
        result.human.append(
            f"{e.redis_unit} runs but does not answer on port {e.redis_port}: check port and "
            "bind in its redis.conf (`deploy.py provision` converges it)")
    if app_error:
        result.human.append("if it persists: check REDIS_HOST and REDIS_PORT in "
                            "shared/backend.env, then reload the backend")
    if not e.flush and not down:
        result.human.append("if cached data is corrupted: `deploy.py diagnose --fix --flush` "
                            "clears the cache (FLUSHDB) before warming it")
    return result


GUIDE_CHECKS = (backend_down, high_latency, health_404, database, redis)


def diagnose(e: Evidence) -> list[GuideResult]:
    """The five guides, in the runbook's order."""
    found = _findings(e)
    return [check(e, found) for check in GUIDE_CHECKS]


def plan(results: Sequence[GuideResult]) -> list[Fix]:
    """The fixes of the matched guides, once each, in FIX_ORDER. A reload of an app that is
    started again anyway is dropped."""
    fixes: list[Fix] = []
    for result in results:
        if result.matched:
            fixes.extend(f for f in result.fixes if f not in fixes)
    started = {f.target for f in fixes if f.kind == "restart_app"}
    fixes = [f for f in fixes if not (f.kind == "reload_app" and f.target in started)]
    return sorted(fixes, key=lambda f: FIX_ORDER.index(f.kind))


def matched(results: Sequence[GuideResult]) -> list[int]:
    return [r.guide for r in results if r.matched]


def fixable(results: Sequence[GuideResult]) -> list[int]:
    """Matched guides with an automatic fix: worth waiting for after --fix."""
    return [r.guide for r in results if r.matched and r.fixes]


def outcome(before: Sequence[GuideResult], after: Sequence[GuideResult]) -> dict[int, bool]:
    """For each guide matched before the fix: is it fixed (no longer matched) now?"""
    still = set(matched(after))
    return {guide: guide not in still for guide in matched(before)}


def worst_level(results: Sequence[GuideResult]) -> Level:
    """The worst level of the matched guides ("ok" when none matched)."""
    levels = {r.level for r in results if r.matched}
    return next((level for level in ("critical", "warning") if level in levels), "ok")


def verdict(results: Sequence[GuideResult]) -> str:
    found = [r for r in results if r.matched]
    if not found:
        return "no troubleshooting guide matches"
    return "matches " + ", ".join(f"guide {r.guide} ({r.title})" for r in found)
