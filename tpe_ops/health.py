"""The runbook's judgement of health, as pure functions over measurements (no I/O)."""

from __future__ import annotations

import json
from typing import Any

# The runbook's /api/health answer: {status, timestamp, environment, version}.
HEALTH_KEYS = ("status", "timestamp", "environment", "version")
# Dependencies an app may report in the same answer: when present, they must be up (a release
# that cannot reach its database is not healthy, whatever its own status says).
DEPENDENCY_KEYS = ("database", "redis")
DEPENDENCY_UP = ("ok", "up", "connected", "healthy")


def health_problems(http: dict[str, Any]) -> list[str]:
    """Problems with a health-endpoint answer ({status, seconds, body}); [] if healthy."""
    code = http.get("status", 0)
    if code == 0:
        return ["health endpoint unreachable"]
    if code == 404:
        return ["health endpoint answered 404 (troubleshooting guide 3)"]
    if code != 200:
        return [f"health endpoint answered {code}"]
    try:
        body = json.loads(http.get("body") or "")
    except json.JSONDecodeError:
        return ["health endpoint did not answer JSON"]
    missing = [key for key in HEALTH_KEYS if key not in body]
    if missing:
        return [f"health answer lacks {', '.join(missing)}"]
    if body.get("status") not in ("healthy", "ok"):
        return [f"health status is {body.get('status')!r}"]
    return [f"health reports {key}: {body[key]!r}" for key in DEPENDENCY_KEYS
            if key in body and body[key] not in DEPENDENCY_UP]


def _by_name(processes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for proc in processes:
        grouped.setdefault(proc.get("name") or "?", []).append(proc)
    return grouped


def pm2_problems(
    before: list[dict[str, Any]], after: list[dict[str, Any]], expected: list[str]
) -> list[str]:
    """Every expected app online in both samples, with no restarts between them."""
    problems = []
    first, second = _by_name(before), _by_name(after)
    for name in expected:
        procs = second.get(name, [])
        if not procs:
            problems.append(f"{name} is not running under PM2")
            continue
        bad = sorted({p.get("status") or "?" for p in procs if p.get("status") != "online"})
        if bad:
            problems.append(f"{name} is {', '.join(bad)}")
        restarts_before = sum(p.get("restart_time") or 0 for p in first.get(name, []))
        restarts_after = sum(p.get("restart_time") or 0 for p in procs)
        if restarts_after > restarts_before:
            problems.append(
                f"{name} restarted {restarts_after - restarts_before} time(s) while stabilising"
            )
    return problems
