"""`maintain daily|weekly|monthly|quarterly`: the runbook's section 7 checklists, each item
done and judged (tpe_ops.maintenance), a report written (Markdown + JSON), an exit code a
scheduler acts on (0 pass, 1 warn, 2 fail, 3 unknown), `--notify URL` on failure.

Each item is a function `(Run) -> {host: [Item]}`; a tier is a list of them. An item that
cannot run (a host unreachable, a tool missing) becomes an 'unknown' item, never a crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operations import maintain as ops
from operations.app import layout
from operations.health import HostResources
from operations.logs import read_error_tails
from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from playbooks import cache, db
from playbooks.benchmark import STATE as BENCH_STATE
from playbooks.benchmark import BenchOptions, benchmark
from playbooks.common import Options
from playbooks.health import load_samples, notify, restarts_last_hour, write_atomically
from tpe_ops import judgement as j
from tpe_ops import maintenance as m
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.settings import pm2_apps
from tpe_ops.state import STATE_DIR, host_key

REPORTS = STATE_DIR / "reports" / "maintain"
STEP_STATUS = {"pass": "ok", "warn": "warning", "fail": "critical", "unknown": "unknown"}


@dataclass
class Run:
    loaded: LoadedInventory
    options: Options
    now: float = field(default_factory=time.time)

    def host_data(self, name: str) -> Any:
        return next(h.data for h in self.loaded.hosts if h.name == name)


ItemCheck = Callable[[Run], dict[str, list[m.Item]]]


def _per_host(run: Run, read: Callable[[Any], Any],
              judge: Callable[[Any, Any, str], list[m.Item]], what: str
              ) -> dict[str, list[m.Item]]:
    """Read facts on every host in parallel, then judge each host's facts:
    judge(facts, host data, host name)."""
    items = {}
    for name, facts in gather(run.loaded, read).items():
        if isinstance(facts, Exception):
            items[name] = [m.item(what, "unknown", f"{what}: could not read: {facts}")]
        else:
            items[name] = judge(facts, run.host_data(name), name)
    return items


# --- daily -------------------------------------------------------------------------------------

def pm2_status(run: Run) -> dict[str, list[m.Item]]:
    def read(host) -> list:
        return host.get_fact(Pm2Processes, **as_user(host, host.data.app_user))

    def judge(processes: list, data: Any, name: str) -> list[m.Item]:
        expected = [a.name for a in pm2_apps(data)]
        restarts = restarts_last_hour(processes, expected, load_samples(name), run.now)
        found = j.pm2_findings(processes, expected, restarts, j.Thresholds.from_data(data),
                               run.now)
        evidence = [f"{p['name']}#{p['pm_id']} {p['status']} restarts={p['restart_time']} "
                    f"mem={(p['memory'] or 0) // 1048576}MB" for p in processes]
        return [m.from_finding(f"pm2:{f.check.split(':', 1)[-1]}", f, evidence) for f in found
                if f.check.startswith("pm2:") or f.level != "ok"]
    return _per_host(run, read, judge, "pm2")


def error_logs(run: Run) -> dict[str, list[m.Item]]:
    """The last lines of each app's error log (the files PM2 names), errors counted."""
    def read(host) -> dict:
        return read_error_tails(host, host.data.maintain_error_log_lines)

    def judge(tails: dict, data: Any, _name: str) -> list[m.Item]:
        t = j.Thresholds.from_data(data)
        return [m.error_log_item(app, lines, t.error_log_lines_warning,
                                 t.error_log_lines_critical)
                for app, lines in tails.items()]
    return _per_host(run, read, judge, "error-log")


def disk_space(run: Run) -> dict[str, list[m.Item]]:
    def judge(resources: dict, data: Any, _name: str) -> list[m.Item]:
        found = j.disk_finding(resources["disk_pct"], j.Thresholds.from_data(data))
        return [m.from_finding("disk", found)]
    return _per_host(run, lambda host: host.get_fact(HostResources), judge, "disk")


# --- weekly ------------------------------------------------------------------------------------

def _benchmark_items(run: Run, requests: int, name: str) -> dict[str, list[m.Item]]:
    """The benchmark on each host (its localhost), against the stored baseline; with the
    history of earlier runs (read before this run appends to it) for the trend."""
    history = _p95_history(run.loaded.path.stem)
    result = benchmark(run.loaded, run.options, None, BenchOptions(requests=requests))
    items: dict[str, list[m.Item]] = {}
    for host, outcome in result.hosts.items():
        if outcome.error:
            items[host] = [m.item(name, "unknown", f"benchmark did not run: {outcome.error}")]
            continue
        t = j.Thresholds.from_data(run.host_data(host))
        items[host] = [_endpoint_item(name, r, history.get(r["url"], []), t)
                       for r in outcome.data["endpoints"]]
    return items


def _endpoint_item(name: str, report: dict, history: list[float], t: j.Thresholds) -> m.Item:
    path = "/" + report["url"].split("/", 3)[-1]
    evidence = [json.dumps({k: report.get(k) for k in (
        "count", "success_rate_pct", "min_ms", "median_ms", "avg_ms", "p95_ms", "p99_ms",
        "max_ms", "rating")})]
    if not report.get("count"):
        return m.item(f"{name}:{path}", "critical", f"{path}: no successful request",
                      evidence, guide=j.GUIDE_BACKEND_DOWN)
    cmp = report["comparison"]
    trend = m.trend_item(f"{name}:{path}", report["p95_ms"], history, t)
    slower = m.degraded(report["p95_ms"], cmp["baseline_ms"], t)
    level: j.Level = ("warning" if slower or not cmp["within_target"]
                      else trend.finding.level)
    message = (f"{path}: p95 {report['p95_ms']:.0f} ms ({report['rating']}), "
               f"{cmp['degradation_pct']:+.0f} % vs baseline {cmp['baseline_ms']:.0f} ms; "
               f"{report['success_rate_pct']:.1f} % ok; {trend.finding.message}")
    return m.item(f"{name}:{path}", level, message, evidence, trend.finding.perfdata,
                  j.GUIDE_HIGH_LATENCY if level != "ok" else None)


def _p95_history(scope: str) -> dict[str, list[float]]:
    history: dict[str, list[float]] = {}
    try:
        lines = (BENCH_STATE / f"{scope}-history.jsonl").read_text().splitlines()
    except OSError:
        return history
    for line in lines[-200:]:
        for report in json.loads(line).get("endpoints", []):
            if report.get("p95_ms") is not None:
                history.setdefault(report["url"], []).append(report["p95_ms"])
    return history


def performance(run: Run) -> dict[str, list[m.Item]]:
    data = run.loaded.hosts[0].data
    return _benchmark_items(run, data.maintain_benchmark_requests, "benchmark")


def archive_logs(run: Run) -> dict[str, list[m.Item]]:
    """Rotated PM2 logs older than N days moved to shared/log-archive; old archives pruned."""
    def deploy() -> None:
        from pyinfra import host
        data = host.data
        paths = layout(data.app_deploy_to)
        ops.archive_rotated_logs(
            logs_dir=paths["logs"], archive=f"{paths['shared']}/log-archive",
            days=data.maintain_log_archive_after_days,
            keep_days=data.maintain_log_archive_keep_days,
            name="Archive and prune rotated logs", **as_user(host, data.app_user))

    def read(host) -> dict:
        data = host.data
        paths = layout(data.app_deploy_to)
        return host.get_fact(ops.RotatedLogs, logs_dir=paths["logs"],
                             archive=f"{paths['shared']}/log-archive",
                             days=data.maintain_log_archive_after_days,
                             keep_days=data.maintain_log_archive_keep_days,
                             **as_user(host, data.app_user))

    planned = gather(run.loaded, read)
    result = run_deploy(run.loaded.fresh(), deploy, dry=run.options.dry)
    items = {}
    for name, found in planned.items():
        outcome = result.hosts.get(name)
        if isinstance(found, Exception) or (outcome and not outcome.ok):
            error = found if isinstance(found, Exception) else outcome.error or "failed"
            items[name] = [m.item("logs:archive", "critical", f"log archive failed: {error}")]
            continue
        archive = f"{layout(run.host_data(name).app_deploy_to)['shared']}/log-archive"
        items[name] = [m.archive_item(found["rotated"], found["expired"], archive)]
    return items


# --- monthly -----------------------------------------------------------------------------------

def npm_audit(run: Run) -> dict[str, list[m.Item]]:
    def read(host) -> dict:
        data = host.data
        return host.get_fact(ops.NpmAudit, release=layout(data.app_deploy_to)["current"],
                             registry=data.maintain_npm_audit_registry,
                             **as_user(host, data.app_user))

    def judge(audit: dict, _data: Any, _name: str) -> list[m.Item]:
        return [m.npm_audit_item(audit["output"], audit["exit_code"])]
    return _per_host(run, read, judge, "npm-audit")


def disk_capacity(run: Run) -> dict[str, list[m.Item]]:
    """The app's disk use (releases, shared, logs) and its growth since the previous run."""
    def read(host) -> dict:
        return host.get_fact(ops.DiskUsage, path=host.data.app_deploy_to)

    def judge(usage: dict, data: Any, name: str) -> list[m.Item]:
        path = STATE_DIR / "maintain" / f"{host_key(name)}-app-disk.json"
        previous = _read_json(path)
        now = {"time": run.now, "bytes": usage["bytes"]}
        found = m.growth_item("capacity:app-disk", f"{data.app_deploy_to}", previous, now,
                              j.Thresholds.from_data(data).disk_growth_pct_per_30_days)
        if not run.options.dry:
            write_json(path, now)
        found.evidence.append(f"filesystem: {m.human_bytes(usage['fs_used'])} used of "
                              f"{m.human_bytes(usage['fs_size'])} ({usage['fs_used_pct']:.1f} %)")
        return [found]
    return _per_host(run, read, judge, "capacity:app-disk")


# --- quarterly ---------------------------------------------------------------------------------

def performance_audit(run: Run) -> dict[str, list[m.Item]]:
    data = run.loaded.hosts[0].data
    return _benchmark_items(run, data.maintain_audit_requests, "audit")


def dr_drill(run: Run) -> dict[str, list[m.Item]]:
    data = run.loaded.hosts[0].data
    if not data.maintain_drill_inventory:
        skipped = m.item("dr-drill", "ok",
                         "skipped: no drill inventory configured (maintain_drill_inventory)")
        return {h.name: [skipped] for h in run.loaded.hosts}
    from playbooks.drill import maintenance_item  # the drill: this inventory is its source

    found = maintenance_item(run.loaded, run.options, data.maintain_drill_inventory)
    return {h.name: [found] for h in run.loaded.hosts}


def thresholds_review(run: Run) -> dict[str, list[m.Item]]:
    today = datetime.fromtimestamp(run.now, UTC).date()
    items = {}
    for host in run.loaded.hosts:
        data = host.data
        values = {k: v for k, v in data.dict().items() if k.startswith(j.SETTING_PREFIX)}
        items[host.name] = [m.thresholds_review_item(
            data.maintain_thresholds_reviewed_on, today, data.maintain_thresholds_review_days,
            values)]
    return items


# --- items that are another command's work: its result judged as one item -----------------

LEVEL_OF_STEP = {"failed": "critical", "critical": "critical", "warning": "warning",
                 "unknown": "unknown"}
SEVERITY = ("ok", "unknown", "warning", "critical")


def command_items(name: str, result: RunResult) -> dict[str, list[m.Item]]:
    """A command's per-host result as one item: its worst step decides the level, that step
    is the message, every step is evidence."""
    items = {}
    for host, outcome in result.hosts.items():
        levels = [(LEVEL_OF_STEP.get(s.status, "ok"), s) for s in outcome.steps]
        level, worst = max(levels, key=lambda ls: SEVERITY.index(ls[0]),
                           default=("ok", None))
        if outcome.error:
            level, message = "critical", outcome.error
        else:
            message = worst.name if worst and level != "ok" else (
                outcome.steps[0].name if outcome.steps else "nothing to report")
        items[host] = [m.item(name, level, f"{name}: {message}",
                              [s.name for s in outcome.steps])]
    return items


def slow_queries(run: Run) -> dict[str, list[m.Item]]:
    return command_items("db:slow-queries", db.slow_queries(
        run.loaded, run.options, None, db.DbRequest("slow-queries")))


def cache_hit_rate(run: Run) -> dict[str, list[m.Item]]:
    return command_items("cache:hit-rate", cache.stats(run.loaded, run.options, None))


def vacuum_analyze(run: Run) -> dict[str, list[m.Item]]:
    """VACUUM (ANALYZE) of the app's tables: safe and unattended, so no confirmation here."""
    options = replace(run.options, yes=True)
    return command_items("db:vacuum", db.vacuum(run.loaded, options, None,
                                                db.DbRequest("vacuum")))


def index_usage(run: Run) -> dict[str, list[m.Item]]:
    """Unused and rarely used indexes, listed; a warning only when the removal candidates
    weigh enough to matter (a small unused index is a note for the review, not an alert)."""
    result = db.index_usage(run.loaded, run.options, None, db.DbRequest("index-usage"))
    items = command_items("db:index-usage", result)
    for host, outcome in result.hosts.items():
        if outcome.error:
            continue
        (found,) = items[host]
        candidates = [i for i in outcome.data.get("indexes", []) if i.get("level") == "warning"]
        size = sum(i["bytes"] for i in candidates)
        limit = j.Thresholds.from_data(run.host_data(host)).unused_index_warning_mb
        level: j.Level = "warning" if size >= limit * 1024 * 1024 else "ok"
        items[host] = [m.item(
            "db:index-usage", level,
            f"db:index-usage: {len(candidates)} removal candidate(s), {m.human_bytes(size)} "
            f"({'at or above' if level == 'warning' else 'under'} {limit:g} MB)",
            found.evidence, [j.Perf("unused_index_bytes", size, "B")])]
    return items


def table_sizes(run: Run) -> dict[str, list[m.Item]]:
    """Table sizes and the database's growth since the last run (capacity review)."""
    return command_items("capacity:database", db.sizes(run.loaded, run.options, None,
                                                       db.DbRequest("sizes")))


TIERS: dict[str, list[ItemCheck]] = {
    "daily": [pm2_status, error_logs, disk_space],
    "weekly": [performance, slow_queries, cache_hit_rate, archive_logs],
    "monthly": [npm_audit, vacuum_analyze, index_usage, table_sizes, disk_capacity],
    "quarterly": [performance_audit, dr_drill, thresholds_review],
}


# --- the command -------------------------------------------------------------------------------

def maintain(loaded: LoadedInventory, options: Options, printer: Printer | None, tier: str,
             notify_url: str | None = None) -> RunResult:
    started = time.monotonic()
    run = Run(loaded, options)
    by_host: dict[str, list[m.Item]] = {h.name: [] for h in loaded.hosts}
    for check in TIERS[tier]:
        try:
            found = check(run)
        except Exception as error:  # noqa: BLE001 (one item failing must not stop the tier)
            found = {h.name: [m.item(check.__name__.replace("_", "-"), "unknown",
                                     f"{check.__name__}: {error}")] for h in loaded.hosts}
        for name, items in found.items():
            by_host[name].extend(items)
            for i in items:
                if printer:
                    printer(name, _step(i))
    when = datetime.fromtimestamp(run.now, UTC).isoformat(timespec="seconds")
    data = m.report(tier, when, by_host, {})
    saved = [] if options.dry else save_report(data)
    results = {}
    for name, items in by_host.items():
        result = HostResult(name, steps=[_step(i) for i in items],
                            data={"items": [i.to_dict() for i in items]})
        bad = [i for i in items if i.word in ("fail", "unknown")]
        if bad:
            result.error = "; ".join(i.finding.message for i in bad)[:300]
        results[name] = result
    status = data["status"].upper()
    counts = {w: sum(i.word == w for items in by_host.values() for i in items)
              for w in ("pass", "warn", "fail", "unknown")}
    headline = (f"MAINTAIN {tier}: {status} ("
                + ", ".join(f"{n} {w}" for w, n in counts.items() if n) + ")"
                + (f"; report {saved[0]}" if saved else ""))
    if notify_url and data["exit_code"] >= 2:
        notify(notify_url, f"TPE maintenance {tier}: {status}: "
                           + "; ".join(r.error or "" for r in results.values() if r.error))
    return RunResult(dry=options.dry, hosts=results, seconds=time.monotonic() - started,
                     headline=headline, exit_code=data["exit_code"],
                     extra={"tier": tier, "status": data["status"],
                            "reports": [str(p) for p in saved]})


def _step(i: m.Item) -> Step:
    return Step(f"{i.word:<7} {i.finding.message}", STEP_STATUS[i.word])


def save_report(data: dict[str, Any]) -> list[Path]:
    """reports/maintain/<tier>-<time>.md and .json, plus <tier>-latest.json."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = data["time"].replace(":", "").replace("-", "").replace("+0000", "Z")
    base = REPORTS / f"{data['tier']}-{stamp}"
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    write_atomically(md, m.report_markdown(data))
    write_atomically(js, json.dumps(data, indent=2) + "\n")
    write_atomically(REPORTS / f"{data['tier']}-latest.json", json.dumps(data, indent=2) + "\n")
    return [md, js]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(value))

