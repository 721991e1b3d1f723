"""The disaster-recovery drill's judgement (issue 6): pure functions, no I/O.

What is refused before anything happens (a drill pointed at the source's hosts or database),
the steps with their times, RTO and RPO, pass or fail with evidence, what to fix, and the
report (Markdown and JSON). `drill rollback`'s recovery time is measured here too, from the
times at which the release engine reported its steps.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REPORT_FORMAT = "tpe-ops-drill/1"
ROLLBACK_FORMAT = "tpe-ops-drill-rollback/1"
# The comment that marks a database as a drill's scratch database: only such a database is
# ever dropped by a later drill (a left-over of `--keep`), never one the drill did not make.
SCRATCH_MARK = "tpe-ops drill scratch database"
LOOPBACK = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}

# The procedure. Step 6 is the report itself: written last, so it holds step 7.
STEPS: tuple[tuple[int, str, str], ...] = (
    (1, "backup", "database backup (its age is the RPO)"),
    (2, "provision", "provision the drill host(s) from zero"),
    (3, "restore", "restore into the scratch database and verify it"),
    (4, "deploy", "deploy the source's last known-good release on the restored database"),
    (5, "verify", "warm the cache, health and benchmark against the targets"),
    (7, "teardown", "tear down the scratch database and the drill host(s)"),
)
STATUS_WORDS = ("pending", "pass", "fail", "skipped")


# --- refusals: before anything happens --------------------------------------------------------

@dataclass(frozen=True)
class Side:
    """What the refusal checks need of one inventory (the drill's or the source's)."""

    inventory: str  # resolved path
    hosts: Mapping[str, tuple[str, int]]  # name -> (SSH address, port)
    environments: Mapping[str, str]  # name -> deploy_environment
    databases: Sequence[tuple[str, int, str]]  # (server, port, database name)


def host_address(name: str, data: Mapping[str, Any]) -> tuple[str, int]:
    """Where SSH really goes: the address (ssh_hostname, else the name) and the port."""
    address = str(data.get("ssh_hostname") or name).strip().lower()
    return ("loopback" if address in LOOPBACK else address, int(data.get("ssh_port") or 22))


def _server(host: str) -> str:
    host = host.strip().lower()
    return "loopback" if host in LOOPBACK else host


def refusals(drill: Side, source: Side) -> list[str]:
    """Why the drill must not run against these inventories (empty: it may). The drill
    restores into its database and drops it, and tears its hosts down: neither may be the
    source's (production's), nor marked production."""
    found: list[str] = []
    if drill.inventory == source.inventory:
        found.append(f"the drill inventory is the source inventory ({drill.inventory})")
    for name, environment in drill.environments.items():
        if environment == "production":
            found.append(f"drill host {name} is marked production (deploy_environment): a "
                         "drill tears its hosts down")
    by_address = {address: name for name, address in source.hosts.items()}
    for name, address in drill.hosts.items():
        if name.startswith("@local"):
            found.append(f"drill host {name} is this machine: a drill tears its hosts down")
        elif name in source.hosts:
            found.append(f"drill host {name} is a host of the source inventory")
        elif address in by_address:
            found.append(f"drill host {name} ({address[0]}:{address[1]}) is source host "
                         f"{by_address[address]}")
    source_names = {db_name for _, _, db_name in source.databases}
    source_dbs = {(_server(h), p, n) for h, p, n in source.databases}
    for server, port, db_name in sorted(set(drill.databases)):
        if (_server(server), port, db_name) in source_dbs:
            found.append(f"the drill's database {db_name} on {server}:{port} is the source's "
                         "database: the drill restores into it and drops it")
        elif db_name in source_names:
            found.append(f"the drill's database is named {db_name}, as the source's database: "
                         "give the drill its own name (it restores into it and drops it)")
    if len(set(drill.databases)) > 1:
        found.append(f"the drill hosts use {len(set(drill.databases))} databases: a drill "
                     "restores into one")
    if len(set(source.databases)) > 1:
        found.append(f"the source hosts use {len(set(source.databases))} databases: choose "
                     "one with the source's own inventory")
    return found


# --- steps and their times ---------------------------------------------------------------------

@dataclass
class DrillStep:
    number: int
    name: str
    title: str
    status: str = "pending"  # pending | pass | fail | skipped
    started: float | None = None  # epoch seconds
    ended: float | None = None
    evidence: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return round(self.ended - self.started, 3)

    def begin(self, now: float) -> None:
        self.started, self.status = now, "pending"

    def finish(self, now: float, problems: Sequence[str] = ()) -> None:
        self.ended = now
        self.problems.extend(problems)
        self.status = "fail" if self.problems else "pass"

    def skip(self, why: str) -> None:
        self.status = "skipped"
        self.evidence.append(why)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "name": self.name, "title": self.title,
                "status": self.status, "started": iso(self.started), "ended": iso(self.ended),
                "seconds": self.seconds, "evidence": list(self.evidence),
                "problems": list(self.problems)}


def new_steps() -> list[DrillStep]:
    return [DrillStep(number, name, title) for number, name, title in STEPS]


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def parse_utc(text: str) -> float:
    """An ISO time as a backup manifest writes it (`2026-01-02T03:04:05Z`): epoch seconds."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def rpo_seconds(backup_time: str, now: float) -> float:
    """The backup's age when the drill picked it: the data a disaster now would lose."""
    return round(max(0.0, now - parse_utc(backup_time)), 1)


def rto_seconds(started: float, healthy_at: float | None) -> float | None:
    """From the start of the drill to the restored service judged healthy (None: never)."""
    return None if healthy_at is None else round(healthy_at - started, 1)


def duration(seconds: float | None) -> str:
    """`4 min 05 s`, `42.3 s`, `3 h 02 min`, `-`."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


# --- judging the evidence ---------------------------------------------------------------------

def health_problems(classification: str, findings: Sequence[Mapping[str, Any]]
                    ) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a `health` run on the drill hosts. Serving with warnings
    passes (the warnings go to "what to fix"); critical or unknown fails."""
    bad = [f"{f['check']}: {f['message']}" for f in findings
           if f.get("level") in ("critical", "unknown")]
    warned = [f"{f['check']}: {f['message']}" for f in findings if f.get("level") == "warning"]
    if classification in ("critical", "unknown") and not bad:
        bad = [f"health is {classification}"]
    return bad, warned


def benchmark_problems(reports: Sequence[Mapping[str, Any]], error_rate_limit_pct: float
                       ) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the benchmark: every endpoint answers, its p95 is within the
    target and its error rate at most the limit; slower than the baseline only warns."""
    problems: list[str] = []
    warned: list[str] = []
    if not reports:
        return ["the benchmark measured no endpoint"], []
    for report in reports:
        url = report.get("url", "?")
        if not report.get("count"):
            problems.append(f"{url}: no successful request")
            continue
        cmp = report.get("comparison") or {}
        if not cmp.get("within_target", False):
            problems.append(f"{url}: p95 {report['p95_ms']:.0f} ms, target "
                            f"{cmp.get('target_ms', 0):.0f} ms")
        errors = report.get("error_rate_pct") or 0.0
        if errors > error_rate_limit_pct:
            problems.append(f"{url}: error rate {errors:.1f} % > {error_rate_limit_pct:g} %")
        if cmp.get("crosses_rollback"):
            warned.append(f"{url}: p95 {report['p95_ms']:.0f} ms is "
                          f"{cmp['degradation_pct']:+.0f} % vs the baseline "
                          f"{cmp['baseline_ms']:.0f} ms")
    return problems, warned


FIX_BY_STEP = {
    "backup": "the backup could not be taken or read: run `deploy.py db backup -i SOURCE` and "
              "fix what it reports (PostgreSQL client version, disk space, permissions)",
    "provision": "provisioning a bare host failed: a lost host cannot be replaced until "
                 "`deploy.py provision` works from zero; fix the failed operation",
    "restore": "the backup does not restore: it cannot be relied on. Take a new backup, "
               "check that copies reach the controller whole (sha256), then re-run the drill",
    "deploy": "the known-good release does not deploy on a fresh host (build, dependencies, "
              "migrations on the restored database): fix it before it is needed",
    "verify": "the restored service is not healthy or misses its targets: see the health "
              "and benchmark evidence",
    "teardown": "the drill left something behind: remove it by hand (see the evidence) and "
                "fix the teardown",
}


def fixes(steps: Sequence[DrillStep], rto: float | None, rto_goal: float,
          rpo: float | None, rpo_goal: float, warnings: Sequence[str]) -> list[str]:
    """What to fix, most urgent first: failed steps, then missed goals, then warnings."""
    found: list[str] = []
    for step in steps:
        if step.status == "fail":
            found.append(f"step {step.number} ({step.name}): {'; '.join(step.problems)}. "
                         f"{FIX_BY_STEP[step.name]}")
    if rto is not None and rto > rto_goal:
        slowest = max((s for s in steps if s.seconds is not None and s.name != "teardown"),
                      key=lambda s: s.seconds or 0.0, default=None)
        where = (f"; slowest step: {slowest.number} {slowest.name} "
                 f"({duration(slowest.seconds)})" if slowest else "")
        found.append(f"RTO {duration(rto)} exceeds the goal {duration(rto_goal)}"
                     f" (drill_rto_goal_seconds){where}")
    if rpo is not None and rpo > rpo_goal:
        found.append(f"RPO {duration(rpo)} exceeds the goal {duration(rpo_goal)} "
                     "(drill_rpo_goal_seconds): back up more often (deploy.py schedule, "
                     "db backup)")
    found.extend(f"warning: {text}" for text in warnings)
    return found


def verdict(steps: Sequence[DrillStep], rto: float | None, rto_goal: float,
            rpo: float | None, rpo_goal: float) -> str:
    """pass: every step passed, service restored within the RTO goal from a backup within
    the RPO goal; anything else fails."""
    if any(s.status != "pass" for s in steps):
        return "fail"
    if rto is None or rto > rto_goal or rpo is None or rpo > rpo_goal:
        return "fail"
    return "pass"


# --- the report --------------------------------------------------------------------------------

def drill_report(*, drill_inventory: str, source_inventory: str, hosts: Sequence[str],
                 database: str, started: float, ended: float, steps: Sequence[DrillStep],
                 rto: float | None, rto_goal: float, rpo: float | None, rpo_goal: float,
                 backup: Mapping[str, Any], release: Mapping[str, Any],
                 health: Mapping[str, Any], benchmark: Sequence[Mapping[str, Any]],
                 warnings: Sequence[str], kept: bool) -> dict[str, Any]:
    status = verdict(steps, rto, rto_goal, rpo, rpo_goal)
    return {
        "format": REPORT_FORMAT, "status": status, "exit_code": 0 if status == "pass" else 1,
        "drill_inventory": drill_inventory, "source_inventory": source_inventory,
        "hosts": list(hosts), "database": database,
        "started": iso(started), "ended": iso(ended), "seconds": round(ended - started, 1),
        "rto_seconds": rto, "rto_goal_seconds": rto_goal,
        "rpo_seconds": rpo, "rpo_goal_seconds": rpo_goal,
        "steps": [s.to_dict() for s in steps], "backup": dict(backup), "release": dict(release),
        "health": dict(health), "benchmark": [dict(r) for r in benchmark],
        "fix": fixes(steps, rto, rto_goal, rpo, rpo_goal, warnings), "kept": kept,
    }


def headline(report: Mapping[str, Any], saved: str | None = None) -> str:
    rto, rpo = report["rto_seconds"], report["rpo_seconds"]
    failed = next((s for s in report["steps"] if s["status"] == "fail"), None)
    text = (f"DRILL: {report['status'].upper()}"
            + (f" at step {failed['number']} ({failed['name']})" if failed else "")
            + f"; RTO {duration(rto)} (goal {duration(report['rto_goal_seconds'])}), "
            f"RPO {duration(rpo)} (goal {duration(report['rpo_goal_seconds'])})")
    return text + (f"; report {saved}" if saved else "")


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def report_markdown(report: Mapping[str, Any]) -> str:
    backup, release = report["backup"], report["release"]
    lines = [
        f"# Disaster-recovery drill: {report['status'].upper()}", "",
        f"- **Drill:** {report['started']} to {report['ended']} "
        f"({duration(report['seconds'])}), exit code {report['exit_code']}",
        f"- **RTO** (start to healthy): {duration(report['rto_seconds'])}, goal "
        f"{duration(report['rto_goal_seconds'])}",
        f"- **RPO** (age of the backup): {duration(report['rpo_seconds'])}, goal "
        f"{duration(report['rpo_goal_seconds'])}",
        f"- **Source:** {report['source_inventory']}",
        f"- **Drill inventory:** {report['drill_inventory']} (hosts "
        f"{', '.join(report['hosts'])}; scratch database {report['database']})",
        f"- **Backup:** {backup.get('file', '-')} ({backup.get('time', '?')}, "
        f"{backup.get('tables', '?')} tables, {backup.get('rows', '?')} rows, migration "
        f"{backup.get('migration', '?')})",
        f"- **Release:** {release.get('release', '-')} (commit "
        f"{str(release.get('commit') or '-')[:12]}), the source's last known-good",
        f"- **Kept after the drill:** {'yes (--keep)' if report['kept'] else 'no'}", "",
        "## Steps", "",
        "| # | step | status | start | end | duration |", "|---|---|---|---|---|---|",
    ]
    for step in report["steps"]:
        lines.append(f"| {step['number']} | {_cell(step['title'])} | {step['status']} | "
                     f"{step['started'] or '-'} | {step['ended'] or '-'} | "
                     f"{duration(step['seconds'])} |")
    lines.append("| 6 | this report | written | | | |")
    lines += ["", "## What to fix", ""]
    lines += [f"- {_cell(text)}" for text in report["fix"]] or ["- nothing"]
    lines += ["", "## Evidence", ""]
    for step in report["steps"]:
        lines += [f"### {step['number']}. {step['title']}: {step['status']}", ""]
        lines += [f"- problem: {_cell(p)}" for p in step["problems"]]
        lines += [f"- {_cell(e)}" for e in step["evidence"]] or ["- (none)"]
        lines.append("")
    return "\n".join(lines)


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


# --- drill rollback ----------------------------------------------------------------------------

def failing_release_script(current_dir: str, release_dir: str, entry: str) -> str:
    """A new release that copies the current one and whose backend entry script exits 1 at
    start. Hard links make the copy instant; the entry script is unlinked first and written
    anew, so the file the current release serves is never touched. No `.complete` marker:
    the drill's release is never offered as a rollback target and is pruned like a partial
    build."""
    q = shlex.quote
    target = f"{release_dir}/{entry}"
    failing = ("// TPE Ops `drill rollback`: a deliberately failing build.\n"
               "console.error('tpe-ops drill rollback: this build fails at start on purpose');\n"
               "process.exit(1);\n")
    return "\n".join([
        "set -e",
        f"[ ! -e {q(release_dir)} ] || {{ echo 'release {release_dir} exists' >&2; exit 1; }}",
        f"cp -al {q(current_dir)} {q(release_dir)}",
        f"rm -f {q(release_dir)}/.complete {q(release_dir)}/.verified {q(release_dir)}/.bad",
        f"[ -f {q(target)} ] || {{ echo 'no backend entry script {entry}' >&2; exit 1; }}",
        f"rm -f {q(target)}",
        f"printf '%s' {q(failing)} > {q(target)}",
        f"echo 'failing release {release_dir.rsplit('/', 1)[-1]}: {entry} exits 1 at start'",
    ])


@dataclass
class Marks:
    """When (epoch seconds) the release engine reported each moment of one host's drill."""

    switched: float | None = None  # `current` points at the failing release
    reloaded: float | None = None  # the PM2 reload onto it ended
    detected: float | None = None  # its verification failed
    switched_back: float | None = None  # `current` points at the previous release again
    healthy: float | None = None  # the previous release verified healthy again


def recovery(marks: Marks) -> dict[str, float | None]:
    """Time to recover (from the switch to healthy again) and its parts, in order: reload
    onto the failing build, verification until it failed, switch back, healthy again."""
    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 1)
    return {"reload_seconds": span(marks.switched, marks.reloaded),
            "verify_seconds": span(marks.reloaded, marks.detected),
            "switch_back_seconds": span(marks.detected, marks.switched_back),
            "healthy_seconds": span(marks.switched_back, marks.healthy),
            "time_to_recover_seconds": span(marks.switched, marks.healthy)}


def rollback_problems(previous: str, failing: str, after: Mapping[str, Any],
                      verified: bool | None, marks: Marks) -> list[str]:
    """What went wrong in a rollback drill on one host (empty: automatic rollback worked):
    the failing build was caught, the host is back on its previous release, and the
    failing release is marked bad."""
    found = []
    if verified:
        found.append(f"the failing release {failing} PASSED verification: the release "
                     "engine did not catch a backend that cannot start")
    elif verified is None:
        found.append("the failing release never went live (see the steps)")
    if after.get("current") != previous:
        found.append(f"the host serves {after.get('current') or 'nothing'}, not its previous "
                     f"release {previous}")
    if failing not in after.get("bad", []):
        found.append(f"the failing release {failing} is not marked bad")
    if verified is False and marks.healthy is None:
        found.append("service was not verified healthy after the automatic rollback")
    return found


def rollback_report(*, inventory: str, started: float, ended: float,
                    hosts: Mapping[str, Mapping[str, Any]], goal: float) -> dict[str, Any]:
    """hosts: name -> {previous, failing, problems, recovery, evidence}."""
    slow = {name: h["recovery"]["time_to_recover_seconds"] for name, h in hosts.items()
            if (h["recovery"]["time_to_recover_seconds"] or 0) > goal}
    ok = all(not h["problems"] for h in hosts.values()) and not slow
    fix = [f"{name}: {p}" for name, h in hosts.items() for p in h["problems"]]
    fix += [f"{name}: time to recover {duration(s)} exceeds the goal {duration(goal)} "
            "(drill_rollback_goal_seconds)" for name, s in slow.items()]
    return {"format": ROLLBACK_FORMAT, "status": "pass" if ok else "fail",
            "exit_code": 0 if ok else 1, "inventory": inventory, "started": iso(started),
            "ended": iso(ended), "seconds": round(ended - started, 1),
            "goal_seconds": goal, "hosts": {k: dict(v) for k, v in hosts.items()}, "fix": fix}


def rollback_headline(report: Mapping[str, Any], saved: str | None = None) -> str:
    times = [h["recovery"]["time_to_recover_seconds"] for h in report["hosts"].values()]
    known = [t for t in times if t is not None]
    worst = duration(max(known)) if known and len(known) == len(times) else "-"
    text = (f"DRILL ROLLBACK: {report['status'].upper()}; time to recover {worst} "
            f"(goal {duration(report['goal_seconds'])})")
    return text + (f"; report {saved}" if saved else "")


def rollback_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# Rollback drill: {report['status'].upper()}", "",
             f"- **When:** {report['started']} to {report['ended']} "
             f"({duration(report['seconds'])}), exit code {report['exit_code']}",
             f"- **Inventory:** {report['inventory']}",
             f"- **Goal:** service back within {duration(report['goal_seconds'])} of the "
             "switch to a failing build", "",
             "| host | from | failing build | reload | verification failed | switched back "
             "| healthy again | time to recover |", "|---|---|---|---|---|---|---|---|"]
    for name, h in report["hosts"].items():
        r = h["recovery"]
        lines.append(f"| {name} | {h['previous']} | {h['failing']} | "
                     + " | ".join(duration(r[k]) for k in (
                         "reload_seconds", "verify_seconds", "switch_back_seconds",
                         "healthy_seconds", "time_to_recover_seconds")) + " |")
    lines += ["", "## What to fix", ""]
    lines += [f"- {_cell(text)}" for text in report["fix"]] or ["- nothing"]
    for name, h in report["hosts"].items():
        lines += ["", f"## {name}", ""]
        lines += [f"- {_cell(e)}" for e in h["evidence"]] or ["- (none)"]
    return "\n".join(lines) + "\n"
