"""The runbook's section 7 maintenance checklists, judged: pure functions, no I/O.

Each checklist item ends as an `Item`: a `Finding` (ok / warning / critical / unknown, shown
as pass / warn / fail / unknown) plus the evidence a person reads in the report. The tier's
outcome and exit code are the worst item's, as `health` does (0 pass, 1 warn, 2 fail,
3 unknown), so a scheduler treats both commands alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from tpe_ops import judgement as j

TIERS = ("daily", "weekly", "monthly", "quarterly")
MIN_GROWTH_DAYS = 1
WORDS = {"ok": "pass", "warning": "warn", "critical": "fail", "unknown": "unknown"}
# "Error: ...", "FATAL", "UnhandledPromiseRejection", "ECONNREFUSED"; and class names such as
# "TypeError" or "SequelizeConnectionError" (case-sensitive, so "terror" is not one).
ERROR_WORD = re.compile(r"\b(error|exception|fatal|unhandled|uncaught|econnrefused|etimedout)",
                        re.IGNORECASE)
ERROR_CLASS = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")


@dataclass
class Item:
    """One checklist item on one host."""

    name: str
    finding: j.Finding
    evidence: list[str] = field(default_factory=list)

    @property
    def word(self) -> str:
        return WORDS[self.finding.level]

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.name, "status": self.word, **self.finding.to_dict(),
                "evidence": self.evidence}


def item(name: str, level: j.Level, message: str, evidence: Sequence[str] = (),
         perfdata: Sequence[j.Perf] = (), guide: int | None = None) -> Item:
    return Item(name, j.Finding(name, level, message, guide=guide, perfdata=tuple(perfdata)),
                list(evidence))


def from_finding(name: str, finding: j.Finding, evidence: Sequence[str] = ()) -> Item:
    return Item(name, finding, list(evidence))


def worst(items: Sequence[Item]) -> j.Finding:
    """The item findings merged into one for the host (classification through judgement)."""
    level = j.classify([i.finding for i in items])
    return j.Finding("tier", {"healthy": "ok"}.get(level, level), level)


# --- daily -------------------------------------------------------------------------------------

def error_lines(lines: Sequence[str]) -> list[str]:
    return [line for line in lines if ERROR_WORD.search(line) or ERROR_CLASS.search(line)]


def error_log_item(app: str, lines: Sequence[str], warn_at: int, fail_at: int) -> Item:
    """The last lines of an app's error log: errors counted and shown."""
    errors = error_lines(lines)
    count = len(errors)
    level: j.Level = "critical" if count >= fail_at else "warning" if count >= warn_at else "ok"
    message = (f"{app}: {count} error line(s) in the last {len(lines)} of its error log"
               if count else f"{app}: no errors in the last {len(lines)} error-log lines")
    guide = j.GUIDE_BACKEND_DOWN if level != "ok" else None
    return item(f"error-log:{app}", level, message, errors[-10:],
                [j.Perf(f"{app}_error_lines", count, "", warn_at, fail_at)], guide)


# --- weekly ------------------------------------------------------------------------------------

def archive_item(moved: Sequence[str], pruned: Sequence[str], archive_dir: str) -> Item:
    message = (f"{len(moved)} rotated log file(s) archived to {archive_dir}, "
               f"{len(pruned)} expired archive file(s) pruned")
    return item("logs:archive", "ok", message, [f"archived {m}" for m in moved]
                + [f"pruned {p}" for p in pruned],
                [j.Perf("logs_archived", len(moved)), j.Perf("logs_pruned", len(pruned))])


# --- monthly -----------------------------------------------------------------------------------

AUDIT_LEVELS = ("info", "low", "moderate", "high", "critical")


def npm_audit_item(output: str, exit_code: int) -> Item:
    """`npm audit --json` of the current release: critical fails, high or moderate warns.
    No JSON (registry unreachable) is 'unknown': the audit did not happen."""
    try:
        report = json.loads(output[output.index("{"):]) if "{" in output else None
    except json.JSONDecodeError:
        report = None
    counts = ((report or {}).get("metadata") or {}).get("vulnerabilities")
    if not isinstance(counts, Mapping):
        reason = (report or {}).get("error", {}).get("summary") if report else None
        tail = output.strip().splitlines()[-3:] if output.strip() else []
        return item("npm-audit", "unknown",
                    f"npm audit did not run (exit {exit_code}): {reason or 'no report'}", tail)
    found = {k: int(counts.get(k, 0)) for k in AUDIT_LEVELS}
    level: j.Level = ("critical" if found["critical"] else
                      "warning" if found["high"] or found["moderate"] else "ok")
    summary = ", ".join(f"{n} {k}" for k, n in found.items() if n) or "no vulnerabilities"
    names = sorted((report.get("vulnerabilities") or {}).items(),
                   key=lambda kv: -AUDIT_LEVELS.index(kv[1].get("severity", "info")))
    evidence = [f"{name}: {v.get('severity')} (fix available: {bool(v.get('fixAvailable'))})"
                for name, v in names[:15]]
    return item("npm-audit", level, f"npm audit: {summary}", evidence,
                [j.Perf(f"vulnerabilities_{k}", n) for k, n in found.items()])


def growth_item(name: str, what: str, previous: Mapping[str, Any] | None,
                now: Mapping[str, Any], warn_pct_per_30d: float) -> Item:
    """Growth of a size (bytes) since the previous run, scaled to 30 days."""
    size = int(now["bytes"])
    if not previous:
        return item(name, "ok", f"{what}: {human_bytes(size)} (first run: growth from the next "
                                "run on)", perfdata=[j.Perf(f"{name}_bytes", size, "B")])
    days = (now["time"] - previous["time"]) / 86400
    delta = size - int(previous["bytes"])
    change = (f"{what}: {human_bytes(size)}, {'+' if delta >= 0 else '-'}"
              f"{human_bytes(abs(delta))} in {days:.1f} day(s)")
    if days < MIN_GROWTH_DAYS:  # scaled to 30 days, minutes of noise would look like a flood
        return item(name, "ok", f"{change} (under {MIN_GROWTH_DAYS} day since the last run: "
                                "too short to judge growth)",
                    perfdata=[j.Perf(f"{name}_bytes", size, "B")])
    pct_30d = (delta / previous["bytes"] * 100 * 30 / days) if previous["bytes"] else 0.0
    level: j.Level = "warning" if pct_30d >= warn_pct_per_30d else "ok"
    message = f"{change} ({pct_30d:+.1f} % per 30 days)"
    return item(name, level, message, perfdata=[
        j.Perf(f"{name}_bytes", size, "B"),
        j.Perf(f"{name}_growth_pct_30d", round(pct_30d, 2), "%", warn_pct_per_30d)])


# --- quarterly ---------------------------------------------------------------------------------

def thresholds_review_item(reviewed_on: str, today: date, max_days: int,
                           thresholds: Mapping[str, Any]) -> Item:
    """The runbook's numbers are due for review every `max_days`."""
    listing = [f"{k} = {v}" for k, v in sorted(thresholds.items())]
    if not reviewed_on:
        return item("thresholds-review", "warning",
                    "thresholds were never reviewed: review them, then set "
                    "maintain_thresholds_reviewed_on", listing)
    age = (today - date.fromisoformat(reviewed_on)).days
    if age > max_days:
        return item("thresholds-review", "warning",
                    f"thresholds last reviewed {age} days ago ({reviewed_on}): due (every "
                    f"{max_days} days)", listing)
    return item("thresholds-review", "ok",
                f"thresholds reviewed {age} days ago ({reviewed_on})", listing)


def degraded(p95_ms: float, reference_ms: float, t: j.Thresholds) -> bool:
    """Slower than the reference by more than the runbook's 50 % and by at least
    `degradation_min_ms` (a few milliseconds on a fast endpoint is noise, not a regression)."""
    return (j.degradation_pct(p95_ms, reference_ms) > t.rollback_degradation_pct
            and p95_ms - reference_ms >= t.degradation_min_ms)


def trend_item(name: str, p95_now: float | None, history: Sequence[float],
               t: j.Thresholds) -> Item:
    """This run's p95 against the median of the earlier runs: the runbook's 50 % criterion
    (see `degraded`)."""
    if p95_now is None:
        return item(name, "critical", "no successful request measured", guide=j.GUIDE_BACKEND_DOWN)
    if not history:
        return item(name, "ok", f"p95 {p95_now:.0f} ms (no history yet: this run starts it)",
                    perfdata=[j.Perf("p95", round(p95_now, 1), "ms")])
    reference = j.percentile(history, 50)
    pct = j.degradation_pct(p95_now, reference)
    level: j.Level = "warning" if degraded(p95_now, reference, t) else "ok"
    return item(name, level, f"p95 {p95_now:.0f} ms vs {reference:.0f} ms median of "
                             f"{len(history)} earlier run(s) ({pct:+.0f} %)",
                perfdata=[j.Perf("p95", round(p95_now, 1), "ms"),
                          j.Perf("p95_vs_history_pct", round(pct, 1), "%",
                                 t.rollback_degradation_pct)],
                guide=j.GUIDE_HIGH_LATENCY if level != "ok" else None)


# --- reports -----------------------------------------------------------------------------------

def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def report(tier: str, when: str, hosts: Mapping[str, Sequence[Item]],
           errors: Mapping[str, str]) -> dict[str, Any]:
    every = [i.finding for items in hosts.values() for i in items]
    every += [j.Finding("connect", "unknown", f"{h}: {e}") for h, e in errors.items()]
    level = j.classify(every)
    return {
        "tier": tier, "time": when, "status": WORDS.get({"healthy": "ok"}.get(level, level)),
        "exit_code": j.exit_code(level),
        "hosts": {name: [i.to_dict() for i in items] for name, items in hosts.items()},
        "errors": dict(errors),
    }


def report_markdown(data: Mapping[str, Any]) -> str:
    lines = [f"# Maintenance ({data['tier']}): {data['status'].upper()}", "",
             f"- **When:** {data['time']}", f"- **Exit code:** {data['exit_code']}", ""]
    for host, message in data["errors"].items():
        lines += [f"## {host}", "", f"- **unknown**: could not check the host: {message}", ""]
    for host, items in data["hosts"].items():
        lines += [f"## {host}", "", "| item | status | result |", "|---|---|---|"]
        lines += [f"| {i['item']} | {i['status']} | {_cell(i['message'])} |" for i in items]
        for i in items:
            if i["evidence"]:
                lines += ["", f"### {i['item']}", "", "```",
                          *[str(e) for e in i["evidence"]], "```"]
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")
