"""`health`: measure each host, judge with the runbook's thresholds (tpe_ops.judgement), and
answer as a scheduler expects: first line `STATUS: text | perfdata`, exit 0/1/2/3.

Our own samples (PM2 restart counters, Redis hit/miss counters) are kept between runs in a
state file per host, because PM2's counter resets on resurrect and Redis's are cumulative.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from operations.app import layout
from operations.health import DbConnections, HostResources, HttpSample, RedisInfo, cpu_pct
from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from operations.release import HttpCheck
from playbooks.common import Options
from tpe_ops import judgement as j
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather
from tpe_ops.settings import pm2_apps
from tpe_ops.state import STATE_DIR, host_key

KEEP_SECONDS = 2 * 3600
LEVEL_STATUS = {"ok": "ok", "warning": "warning", "critical": "critical", "unknown": "unknown"}


def read_facts(host) -> dict[str, Any]:
    data = host.data
    app = as_user(host, data.app_user)
    paths = layout(data.app_deploy_to)
    base = f"http://127.0.0.1:{data.app_backend_port}"
    timeout = data.health_timeout_seconds
    facts: dict[str, Any] = {"resources_before": host.get_fact(HostResources)}
    facts["pm2"] = host.get_fact(Pm2Processes, **app)
    facts["health"] = host.get_fact(HttpCheck, url=base + data.health_endpoint, timeout=timeout)
    facts["sample"] = host.get_fact(HttpSample, url=base + data.health_endpoint,
                                    count=data.health_sample_requests, timeout=timeout)
    facts["endpoints"] = {
        path: host.get_fact(HttpSample, url=base + path, count=1, timeout=timeout)
        for path in data.health_public_endpoints if path != data.health_endpoint
    }
    facts["db"] = host.get_fact(DbConnections, shared=paths["shared"],
                                backend=f"{paths['current']}/{data.app_backend_dir}", **app)
    facts["redis"] = host.get_fact(RedisInfo, port=data.redis_port)
    facts["resources_after"] = host.get_fact(HostResources)
    return facts


def public_check(url: str, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (configured URL)
            body, code = answer.read(4096).decode("utf-8", "replace"), answer.status
    except urllib.error.HTTPError as error:
        body, code = "", error.code
    except (urllib.error.URLError, OSError):
        body, code = "", 0
    return {"status": code, "seconds": time.monotonic() - started, "body": body}


# --- our own samples between runs --------------------------------------------------------

def _state_path(host_name: str) -> Path:
    return STATE_DIR / "health" / f"{host_key(host_name)}.json"


def load_samples(host_name: str) -> list[dict[str, Any]]:
    try:
        return json.loads(_state_path(host_name).read_text())
    except (OSError, json.JSONDecodeError):
        return []


def save_samples(host_name: str, samples: list[dict[str, Any]], now: float) -> None:
    path = _state_path(host_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [s for s in samples if s["time"] >= now - KEEP_SECONDS]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept))
    tmp.replace(path)


# --- judgement -------------------------------------------------------------------------------

def judge(facts: dict[str, Any], data: Any, samples: list[dict[str, Any]], now: float,
          public: dict[str, Any] | None) -> tuple[list[j.Finding], dict[str, Any]]:
    """Findings for one host from its facts and our earlier samples; also the new sample."""
    t = j.Thresholds.from_data(data)
    expected = [a.name for a in pm2_apps(data)]
    redis = facts["redis"]
    sample = {"time": now, "restarts": restart_counters(facts["pm2"], expected),
              "redis": {k: redis[k] for k in ("keyspace_hits", "keyspace_misses")}
              if redis else None}
    restarts = restarts_last_hour(facts["pm2"], expected, samples, now)
    findings = j.pm2_findings(facts["pm2"], expected, restarts, t, now)
    findings.append(j.health_endpoint_finding("health:local", facts["health"]))
    if public is not None:
        findings.append(j.health_endpoint_finding("health:public", public))
    for path, answers in facts["endpoints"].items():
        status, ms = answers[0] if answers else (0, 0.0)
        findings.append(j.endpoint_finding(f"endpoint:{path}",
                                           {"status": status, "seconds": ms / 1000}))
    findings.extend(_sample_findings(facts["sample"], t))
    db = facts["db"]
    findings.append(j.db_connections_finding(db["connections"], data.db_pool_size, t,
                                             db["error"]))
    findings.extend(_redis_findings(redis, samples, t))
    before, after = facts["resources_before"], facts["resources_after"]
    findings.append(j.disk_finding(after["disk_pct"], t))
    findings.append(j.memory_finding(after["mem_pct"], t))
    findings.append(j.cpu_finding(cpu_pct(before["cpu"], after["cpu"]), t))
    return findings, sample


def restart_counters(processes: list[dict], expected: list[str]) -> dict[str, int]:
    return {name: j.restart_counter(processes, name) for name in expected}


def restarts_last_hour(processes: list[dict], expected: list[str], samples: list[dict],
                       now: float) -> dict[str, int | None]:
    """Restarts per app over the last hour, from our kept samples plus the counters now."""
    history = [*samples, {"time": now, "restarts": restart_counters(processes, expected)}]
    return {name: j.restarts_in_last_hour(
        [(s["time"], s["restarts"][name]) for s in history if name in s.get("restarts", {})],
        now) for name in expected}


def _sample_findings(sample: list[tuple[int, float]], t: j.Thresholds) -> list[j.Finding]:
    outcomes = j.request_outcomes([code for code, _ in sample])
    ok_ms = [ms for code, ms in sample if 200 <= code < 400]
    found = [j.latency_finding(j.percentile(ok_ms, 95) if ok_ms else None, t),
             j.error_rate_finding(outcomes.get("error_rate_pct"), t)]
    if outcomes.get("rate_limited"):
        found.append(j.rate_limit_finding(outcomes["rate_limited"], outcomes["total"]))
    return found


def _redis_findings(redis: dict | None, samples: list[dict], t: j.Thresholds) -> list:
    if redis is None:
        return [j.redis_finding(False)]
    found = [j.redis_finding(True, int(redis.get("used_memory", 0)))]
    previous = next((s["redis"] for s in reversed(samples) if s.get("redis")), None)
    rate = j.redis_hit_rate(previous, redis) if previous else None
    found.append(j.redis_hit_rate_finding(rate, t))
    return found


# --- the command -----------------------------------------------------------------------------

def health(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    started = time.monotonic()
    measured = gather(loaded, read_facts)
    results: dict[str, HostResult] = {}
    every: list[j.Finding] = []
    now = time.time()
    for host in loaded.hosts:
        result = HostResult(host.name)
        facts = measured[host.name]
        if isinstance(facts, Exception):
            findings = [j.Finding("connect", "unknown", str(facts))]
        else:
            data = host.data
            public = (public_check(data.health_public_url.rstrip("/") + data.health_endpoint,
                                    data.health_timeout_seconds)
                      if data.health_public_url else None)
            samples = load_samples(host.name)
            findings, sample = judge(facts, data, samples, now, public)
            save_samples(host.name, [*samples, sample], now)
        level = j.classify(findings)
        prio, reason = j.severity(findings)
        result.data = {"classification": level, "severity": prio, "severity_reason": reason,
                       "findings": [f.to_dict() for f in findings]}
        result.steps = [Step(_line(f), LEVEL_STATUS[f.level]) for f in findings]
        if level in ("critical", "unknown"):
            result.error = f"{level} ({prio}): {reason}"
        results[host.name] = result
        every.extend(findings)
    overall = j.classify(every)
    prio, reason = j.severity(every)
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - started,
                     headline=j.nagios_line(overall, every), exit_code=j.exit_code(overall),
                     extra={"classification": overall, "severity": prio,
                            "severity_reason": reason})


def _line(finding: j.Finding) -> str:
    guide = f" (troubleshooting guide {finding.guide})" if finding.guide else ""
    text = finding.message
    if not text.startswith(finding.check):
        text = f"{finding.check}: {text}"
    return f"{text}{guide}"


# --- --watch: a history for the rollback criteria, notifications, Prometheus ------------------

def history_sample(result: HostResult, now: float) -> dict[str, Any]:
    """The figures the rollback criteria need, from one host's findings."""
    by_check = {f["check"]: f for f in result.data.get("findings", [])}
    local = by_check.get("health:local", {})
    p95 = next((p["value"] for p in by_check.get("latency", {}).get("perfdata", ())
                if p.get("label") == "p95"), None)
    error = next((p["value"] for p in by_check.get("error_rate", {}).get("perfdata", ())
                  if p.get("label") == "error_rate"), None)
    return {"time": now, "available": local.get("level") == "ok",
            "error_rate_pct": error, "p95_ms": p95}


def _history_path(host_name: str) -> Path:
    return STATE_DIR / "health" / f"{host_key(host_name)}-history.jsonl"


def read_history(host_name: str) -> list[dict[str, Any]]:
    """The samples `health --watch` kept for a host (newest 2,000), [] if none."""
    try:
        lines = _history_path(host_name).read_text().splitlines()[-2000:]
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def append_history(host_name: str, sample: dict[str, Any]) -> list[dict[str, Any]]:
    path = _history_path(host_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(sample) + "\n")
    return read_history(host_name)


def prometheus_text(result: RunResult, now: float) -> str:
    level = {"healthy": 0, "warning": 1, "critical": 2, "unknown": 3}
    lines = ["# HELP tpe_health_status 0 healthy, 1 warning, 2 critical, 3 unknown",
             "# TYPE tpe_health_status gauge"]
    for name, host in result.hosts.items():
        lines.append(f'tpe_health_status{{host="{name}"}} '
                     f'{level.get(host.data.get("classification"), 3)}')
        for finding in host.data.get("findings", []):
            for perf in finding.get("perfdata", ()):
                metric = "".join(c if c.isalnum() else "_" for c in perf["label"]).strip("_")
                lines.append(f'tpe_health_{metric}{{host="{name}"}} {perf["value"]}')
    lines += ["# TYPE tpe_health_last_success_timestamp_seconds gauge",
              f"tpe_health_last_success_timestamp_seconds {now:.0f}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def notify(url: str, text: str) -> None:
    """POST a Slack-compatible JSON message; a failing webhook is reported, not fatal."""
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=5).read()  # noqa: S310 (configured URL)
    except (urllib.error.URLError, OSError) as error:
        print(f"notify: {url} failed: {error}")


def watch(loaded: LoadedInventory, options: Options, printer: Printer | None, interval: float,
          count: int | None, notify_url: str | None, prometheus: str | None) -> RunResult:
    """Sample every `interval` seconds (`count` times, or until Ctrl-C); evaluate the rollback
    criteria over the kept history; notify on status changes."""
    previous: str | None = None
    result: RunResult | None = None
    done = 0
    while count is None or done < count:
        result = health(loaded, options, printer)
        now = time.time()
        decisions = {}
        for host in loaded.hosts:
            history = append_history(host.name, history_sample(result.hosts[host.name], now))
            decision = j.rollback_decision(history, j.Thresholds.from_data(host.data), None, now)
            decisions[host.name] = decision
            result.hosts[host.name].data["rollback_decision"] = decision
        status = result.headline or ""
        if not options.json:
            print(status)
            for name, decision in decisions.items():
                print(f"  [{name}] rollback decision: {decision['decision']}"
                      + (f" ({'; '.join(decision['reasons'])})" if decision["reasons"] else ""))
        state = result.extra.get("classification")
        if notify_url and previous is not None and state != previous:
            notify(notify_url, f"TPE health changed {previous} -> {state}: {status}")
        previous = state
        if prometheus:
            write_atomically(Path(prometheus), prometheus_text(result, now))
        done += 1
        if count is None or done < count:
            time.sleep(interval)
    assert result is not None
    return result
