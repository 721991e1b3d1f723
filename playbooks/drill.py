"""`drill` and `drill rollback` (issue 6): the quarterly disaster-recovery drill as one command
with a report, and a rehearsal of the release engine's automatic rollback.

`drill -i DRILL --source production`: against spare hosts and a scratch database (the drill
inventory's db_name), never the source's, (1) back up the source database (or take the latest
backup, or a file) and record its age, the RPO; (2) provision the drill hosts from zero;
(3) restore the backup into the scratch database and verify it (exact row counts per table
and the migration version against the backup's manifest: a real restore, not
`pg_restore --list`); (4) deploy the source's last known-good release on the drill hosts,
pointed at the restored database; (5) warm the cache, run health and the benchmark against
the targets; (6) write the report (Markdown and JSON: each step's start, end and duration,
RTO from the start to healthy, RPO, pass or fail with evidence, what to fix); (7) tear the
scratch database and the drill hosts' app down unless --keep. A drill pointed at the source's
hosts or database, or at hosts marked production, is refused before anything happens.

Everything is reused: `db` (backup, manifest, restore script, compare), `provision`,
`deploy`, `cache warm`, `health`, `benchmark`; the release engine for `drill rollback`.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyinfra import host as current_host
from pyinfra.facts.files import Directory
from pyinfra.facts.server import Which
from pyinfra.operations import files

from operations import db as dbo
from operations import release as rel
from operations.app import layout
from operations.cache import flush_command
from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from playbooks import db as dbp
from playbooks.benchmark import BenchOptions, benchmark
from playbooks.cache import warm
from playbooks.common import Options, secrets_for_hosts
from playbooks.deploy import deploy, lock_error, read_state
from playbooks.health import health
from playbooks.provision import provision
from playbooks.release_flow import MIGRATE_STEP, Flow, HostPlan, execute, fleet_lock
from tpe_ops import drill as d
from tpe_ops import judgement as j
from tpe_ops import maintenance as m
from tpe_ops.errors import ConfigError, HostError, OpsError
from tpe_ops.health import health_problems
from tpe_ops.inventory import LoadedInventory, load_inventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.secrets import redact
from tpe_ops.settings import pm2_apps
from tpe_ops.state import STATE_DIR

REPORTS = STATE_DIR / "reports" / "drill"
DEFAULT_SOURCE = "production"
DRILL = "drill"  # the name the drill's own lines are printed under
STEP_STATUS = {"pass": "ok", "fail": "failed", "skipped": "ok", "pending": "ok"}


@dataclass
class DrillRequest:
    action: str | None = None  # None: the drill; "rollback": the rollback drill
    source: str | None = None  # the inventory whose database and release are recovered
    backup: str | None = None  # None: take a new backup; "latest"; or a .dump file
    keep: bool = False  # keep the scratch database and the drill hosts' app afterwards


def validate_request(request: DrillRequest) -> None:
    if request.action not in (None, "rollback"):
        raise ConfigError(f"drill: unknown action {request.action!r}",
                          "run `deploy.py drill` or `deploy.py drill rollback`")
    if request.action == "rollback" and (request.source or request.backup):
        raise ConfigError("drill rollback: --source and --backup belong to the recovery drill",
                          "drop them: `drill rollback` works on the -i inventory's hosts")


def run(loaded: LoadedInventory, options: Options, printer: Printer | None,
        request: DrillRequest) -> RunResult:
    validate_request(request)
    if request.action == "rollback":
        return rollback_drill(loaded, options, printer, request.keep)
    return drill(loaded, options, printer, request)


# --- SQL scripts of the scratch database (through the drill host's env file, or direct) -----

def _admin(database: str) -> str:
    """Creating and dropping a database needs a connection to another one: PGDATABASE is
    switched for this script only (the app's env file names the scratch database)."""
    return f"export PGDATABASE={shlex.quote(database)}\n"


def scratch_check_script(scratch: str, admin_db: str) -> str:
    """The scratch database must not exist, unless an earlier drill made it (its comment
    says so): then it is a left-over of `--keep` and is dropped. Anything else is refused."""
    state_sql = (f"SELECT coalesce((SELECT CASE WHEN shobj_description(oid, 'pg_database') = "
                 f"{dbo.sql_literal(d.SCRATCH_MARK)} THEN 'drill' ELSE 'other' END "
                 f"FROM pg_database WHERE datname = {dbo.sql_literal(scratch)}), 'absent')")
    drop = f"DROP DATABASE {dbo.sql_ident(scratch)} WITH (FORCE)"
    name = shlex.quote(scratch)
    return f"""{_admin(admin_db)}set -eu
{dbo.client_check("psql")}
state=$({dbo.PSQL} -c {shlex.quote(state_sql)})
case "$state" in
  absent) echo "database "{name}" does not exist yet: the drill creates it" ;;
  drill) {dbo.PSQL} -c {shlex.quote(drop)} >/dev/null
         echo "dropped "{name}", left by an earlier drill (--keep)" ;;
  *) echo "database "{name}" exists and is not a drill's scratch database: the drill does \
not touch it (drop it yourself, or give the drill another db_name)" >&2; exit 1 ;;
esac"""


def mark_script(scratch: str, admin_db: str) -> str:
    comment = f"COMMENT ON DATABASE {dbo.sql_ident(scratch)} IS {dbo.sql_literal(d.SCRATCH_MARK)}"
    return f"{_admin(admin_db)}set -eu\n{dbo.PSQL} -c {shlex.quote(comment)} >/dev/null\n" \
           f"echo {shlex.quote(f'{scratch}: marked as the drill scratch database')}"


def drop_script(scratch: str, admin_db: str) -> str:
    drop = f"DROP DATABASE IF EXISTS {dbo.sql_ident(scratch)} WITH (FORCE)"
    left = f"SELECT count(*) FROM pg_database WHERE datname = {dbo.sql_literal(scratch)}"
    name = shlex.quote(scratch)
    return f"""{_admin(admin_db)}set -eu
if [ "$({dbo.PSQL} -c {shlex.quote(left)})" = 0 ]; then
  echo "no scratch database "{name}" to drop (the restore never created it)"; exit 0
fi
{dbo.PSQL} -c {shlex.quote(drop)} >/dev/null
[ "$({dbo.PSQL} -c {shlex.quote(left)})" = 0 ] || {{ echo {name}" still exists" >&2; exit 1; }}
echo "dropped the scratch database "{name}"""""


# --- the recovery drill ------------------------------------------------------------------------

@dataclass
class _Drill:
    """One drill run: its inputs, what it found, what it changed (for the teardown)."""

    loaded: LoadedInventory
    source: LoadedInventory
    options: Options
    printer: Printer | None
    request: DrillRequest
    target: dbp.Target  # the scratch database, reached through the first drill host
    source_target: dbp.Target
    release: dict[str, Any]  # the source's known-good release: {release, commit, hosts}
    steps: dict[str, d.DrillStep] = field(default_factory=dict)
    dump: Path | None = None
    manifest: dict[str, Any] | None = None
    rpo: float | None = None
    started: float = 0.0
    healthy_at: float | None = None
    created: bool = False  # this run created the scratch database: teardown drops it
    touched: bool = False  # provisioning started on the drill hosts: teardown cleans them
    health: dict[str, Any] = field(default_factory=dict)
    bench: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return self.target.data

    @property
    def scratch(self) -> str:
        return self.data.db_name

    def say(self, text: str, status: str = "ok") -> None:
        if self.printer:
            self.printer(DRILL, Step(text, status))


def _side(loaded: LoadedInventory, hosts: list | None = None) -> d.Side:
    chosen = loaded.hosts if hosts is None else hosts
    return d.Side(inventory=str(loaded.path),
                  hosts={h.name: d.host_address(h.name, h.data.dict()) for h in chosen},
                  environments={h.name: h.data.deploy_environment for h in chosen},
                  databases=[(h.data.db_host, h.data.db_port, h.data.db_name) for h in chosen])


def _refuse(loaded: LoadedInventory, source: LoadedInventory) -> None:
    found = d.refusals(_side(loaded), _side(source, list(source.inventory)))
    if found:
        raise ConfigError("drill refused, nothing was done: " + "; ".join(found),
                          "point -i at spare drill hosts with their own db_name (e.g. "
                          f"{source.hosts[0].data.db_name}_drill), never at the source's")


def _known_good(source: LoadedInventory) -> dict[str, Any]:
    """The source's last known-good release and its commit (read-only)."""
    states = gather(source, lambda h: h.get_fact(rel.ReleaseState,
                                                 deploy_to=h.data.app_deploy_to))
    found: dict[str, list[str]] = {}
    commits: dict[str, str] = {}
    for name, state in states.items():
        if isinstance(state, Exception) or not state["known_good"]:
            continue
        good = state["known_good"]
        commit = state["meta"].get(good, {}).get("commit")
        if commit:
            found.setdefault(good, []).append(name)
            commits[good] = commit
    if not found:
        problems = "; ".join(f"{n}: {s}" for n, s in states.items() if isinstance(s, Exception))
        raise ConfigError(f"no known-good release on the source {source.path.name}"
                          + (f" ({problems})" if problems else "")
                          + ": there is nothing to recover to",
                          "deploy and verify a release there first (deploy.py deploy)")
    # Hosts of a fleet normally agree; otherwise the newest known-good release wins.
    good = max(found, key=lambda r: (len(found[r]), r))
    return {"release": good, "commit": commits[good], "hosts": found[good]}


def _chosen_backup(request: DrillRequest, source_target: dbp.Target
                   ) -> tuple[Path | None, dict[str, Any] | None]:
    """--backup latest / FILE: found and its manifest read now (bad input stops here)."""
    if request.backup is None:
        return None, None
    if request.backup == "latest":
        dump = dbp.latest_backup(dbp.local_backup_dir(source_target.data))
    else:
        dump = Path(request.backup).expanduser().resolve()
    return dump, dbp.read_manifest(dump)


def _bare(loaded: LoadedInventory) -> dict[str, Any]:
    """Per drill host: is Node.js there, is the app's folder there (evidence of 'from zero')."""
    return gather(loaded, lambda h: {
        "node": bool(h.get_fact(Which, command="node")),
        "app": bool(h.get_fact(Directory, path=h.data.app_deploy_to)),
    })


def drill(loaded: LoadedInventory, options: Options, printer: Printer | None,
          request: DrillRequest) -> RunResult:
    began = time.monotonic()
    source = load_inventory(request.source or DEFAULT_SOURCE)
    _refuse(loaded, source)
    (target,) = dbp.targets(loaded)  # secrets of both first: a missing one stops here
    (source_target,) = dbp.targets(source)
    _validate_settings(target.data)
    dump, manifest = _chosen_backup(request, source_target)
    release = _known_good(source)
    before = _bare(loaded)
    run_ = _Drill(loaded, source, options, printer, request, target, source_target, release,
                  steps={s.name: s for s in d.new_steps()}, dump=dump, manifest=manifest)
    if options.dry:
        return _plan(run_, before)
    run_.started = time.time()
    interrupted = False
    try:
        for name, func in (("backup", _step_backup), ("provision", _step_provision),
                           ("restore", _step_restore), ("deploy", _step_deploy),
                           ("verify", _step_verify)):
            if not _run_step(run_, name, lambda step, f=func: f(run_, step, before)):
                break
    except KeyboardInterrupt:  # Ctrl-C: the teardown and the report still come
        interrupted = True
    finally:
        _teardown(run_)
    result = _finish(run_, began)
    if interrupted:
        raise KeyboardInterrupt
    return result


def _validate_settings(data: Any) -> None:
    for key in ("drill_rto_goal_seconds", "drill_rpo_goal_seconds",
                "drill_rollback_goal_seconds", "drill_benchmark_requests"):
        if data.get(key) <= 0:
            raise ConfigError(f"{key} = {data.get(key)} must be more than 0",
                              f"set {key} in the drill inventory or group data")
    if not data.drill_admin_database or data.drill_admin_database == data.db_name:
        raise ConfigError(f"drill_admin_database {data.drill_admin_database!r} must name "
                          "another database of the server (the drill connects to it to "
                          "create and drop its scratch database)",
                          'set drill_admin_database = "postgres"')


def _plan(run_: _Drill, before: dict[str, Any]) -> RunResult:
    """--dry: the checks passed; what the drill would do, nothing done."""
    backup = (f"use {run_.dump} ({run_.manifest['time']})" if run_.dump and run_.manifest
              else f"back up {run_.source_target.data.db_name} on {run_.source_target.name}")
    hosts = ", ".join(f"{n} ({'bare' if not (v.get('node') or v.get('app')) else 'not bare'})"
                      if isinstance(v, dict) else f"{n} (unreachable: {v})"
                      for n, v in before.items())
    lines = [f"1 {backup}", f"2 provision {hosts}",
             f"3 restore into {run_.scratch} on {run_.data.db_host}:{run_.data.db_port} "
             "and verify it",
             f"4 deploy {run_.release['release']} ({run_.release['commit'][:12]})",
             "5 warm the cache, health, benchmark",
             "7 tear down" + (" (skipped: --keep)" if run_.request.keep else "")]
    steps = [Step(line, "would-change") for line in lines]
    for step in steps:
        run_.say(step.name, step.status)
    return RunResult(dry=True, hosts={DRILL: HostResult(DRILL, steps=steps)},
                     headline="DRILL (dry run): the drill would run; nothing was done")


def _run_step(run_: _Drill, name: str, func: Callable[[d.DrillStep], list[str]]) -> bool:
    """Time one step; an error in it fails the step (the teardown and report still come)."""
    step = run_.steps[name]
    step.begin(time.time())
    run_.say(f"step {step.number}: {step.title}: started {d.iso(step.started)}")
    try:
        problems = func(step)
    except OpsError as error:
        problems = [redact(str(error))]
    except Exception as error:  # noqa: BLE001 (an unexpected error still gets a report)
        problems = [redact(f"{type(error).__name__}: {error}")]
    except KeyboardInterrupt:
        step.finish(time.time(), ["interrupted (Ctrl-C)"])
        raise
    step.finish(time.time(), [redact(p) for p in problems or []])
    run_.say(f"step {step.number}: {step.name} {step.status} in {d.duration(step.seconds)}"
             + (f": {'; '.join(step.problems)}" if step.problems else ""),
             "failed" if step.problems else "ok")
    return not step.problems


def _failures(result: RunResult) -> list[str]:
    """What failed in a playbook's result, one line per host."""
    found = []
    for name, host in result.hosts.items():
        if host.ok:
            continue
        failed = [s for s in host.steps if s.status == "failed"]
        why = host.error or "; ".join(f"{s.name}: {s.detail}" if s.detail else s.name
                                      for s in failed[:2])
        found.append(f"{name}: {why}")
    return found


# --- the steps ---------------------------------------------------------------------------------

def _step_backup(run_: _Drill, step: d.DrillStep, _before: Any) -> list[str]:
    if run_.dump is None:
        result = dbp.backup(run_.source, run_.options, run_.printer)
        outcome = result.hosts[run_.source_target.name]
        if not result.ok or "manifest" not in outcome.data:
            return _failures(result) or ["the backup produced no manifest"]
        run_.dump, run_.manifest = Path(outcome.data["file"]), outcome.data["manifest"]
        step.evidence.append(f"new backup of {run_.source_target.data.db_name} through "
                             f"{run_.source_target.name}")
    else:
        step.evidence.append(f"given backup ({run_.request.backup})")
    manifest = run_.manifest or {}
    run_.rpo = d.rpo_seconds(manifest["time"], time.time())
    counts = manifest["row_counts"]
    step.evidence += [
        f"{run_.dump}: {dbo.human_bytes(manifest['bytes'])}, sha256 {manifest['sha256']}",
        f"taken {manifest['time']} from database {manifest['database']}: {len(counts)} "
        f"tables, {sum(counts.values())} rows, migration {manifest['migration']}",
        f"RPO {d.duration(run_.rpo)}: the age of the backup when the drill took it up",
    ]
    if manifest["database"] != run_.source_target.data.db_name:
        run_.warnings.append(f"the backup is of database {manifest['database']}, not the "
                             f"source's {run_.source_target.data.db_name}")
    return []


def _step_provision(run_: _Drill, step: d.DrillStep, before: dict[str, Any]) -> list[str]:
    run_.touched = True
    result = provision(run_.loaded, run_.options, run_.printer)
    for name, host in result.hosts.items():
        was = before.get(name)
        state = ("bare: no Node.js, no app" if isinstance(was, dict) and not any(was.values())
                 else f"not bare before the drill: {was}")
        step.evidence.append(f"{name}: {host.changed} of {len(host.steps)} operations "
                             f"changed ({state})")
        if isinstance(was, dict) and any(was.values()):
            run_.warnings.append(f"{name} was not a bare host: the RTO does not include a "
                                 "full provisioning")
    return _failures(result)


def _step_restore(run_: _Drill, step: d.DrillStep, _before: Any) -> list[str]:
    dump, manifest = run_.dump, run_.manifest
    assert dump is not None and manifest is not None
    digest = dbp.file_sha256(dump)
    if digest != manifest["sha256"]:
        return [f"{dump} does not match its manifest: sha256 {digest}, {dump.stat().st_size} "
                f"bytes; manifest {manifest['sha256']}, {manifest['bytes']} bytes: the copy is "
                "truncated or corrupted"]
    step.evidence.append(f"{dump.name}: sha256 matches its manifest")
    admin = run_.data.drill_admin_database
    check = dbp.execute(run_.loaded, run_.target, [dbp.Script(
        f"scratch database {run_.scratch}: absent (or a drill's left-over)",
        scratch_check_script(run_.scratch, admin))], run_.options, run_.printer)
    if not check.ok:
        return _host_problems(check)
    step.evidence += check.steps[-1].output[-1:]
    run_.created = True  # from here on the scratch database is this drill's
    actions, path = dbp.restore_source(run_.loaded, run_.target, dump, manifest)
    uploaded = any(isinstance(a, dbp.Upload) for a in actions)
    restore = f"restore {dump.name} into {run_.scratch} and count rows"
    actions += [
        dbp.Script(restore, _admin(admin) + dbo.restore_script(
            path, manifest["sha256"], run_.scratch, run_.data.db_migrations_table, keep=True,
            remove_dump=uploaded)),
        dbp.Script(f"mark {run_.scratch} as the drill's scratch database",
                   mark_script(run_.scratch, admin)),
    ]
    ran = dbp.execute(run_.loaded, run_.target, actions, run_.options, run_.printer)
    if not ran.ok:
        return _host_problems(ran)
    done = next(s for s in ran.steps if s.name == restore)
    restored = dbp.json_line(done) or {}
    problems = dbo.compare_restore(manifest, restored)
    counts = restored.get("row_counts") or {}
    step.evidence += [line for line in done.output if line.startswith(("restored in",
                                                                       "extension"))]
    if not problems:
        step.evidence += [
            f"exact row counts equal the backup's, table by table: {len(counts)} tables, "
            f"{sum(counts.values())} rows ("
            + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) + ")",
            f"{run_.data.db_migrations_table} version {restored.get('migration')} equals "
            "the backup's"]
    return problems


def _host_problems(result: HostResult) -> list[str]:
    failed = [s for s in result.steps if s.status == "failed"]
    if result.error:
        return [result.error]
    return [f"{s.name}: {s.detail}" if s.detail else s.name for s in failed] or ["failed"]


def _step_deploy(run_: _Drill, step: d.DrillStep, _before: Any) -> list[str]:
    release = run_.release
    step.evidence.append(f"the source's known-good release {release['release']} (commit "
                         f"{release['commit']}) on {', '.join(release['hosts'])}")
    # The drill hosts serve nobody: a host left unhealthy by an earlier kept drill needs no
    # confirmation before the deploy.
    options = dataclasses.replace(run_.options, unhealthy_ok=True, unverified_ok=True)
    result = deploy(run_.loaded, options, run_.printer, release["commit"])
    for name, host in result.hosts.items():
        serving = host.data.get("serving") or {}
        migrate = next((s for s in host.steps if s.name == MIGRATE_STEP), None)
        applied = [line.split()[1] for line in (migrate.output if migrate else [])
                   if line.startswith("applied ")]
        step.evidence.append(
            f"{name}: serving {serving.get('release', '?')}; migrations applied on the "
            f"restored database: {', '.join(applied) or 'none (it was up to date)'}")
        if applied:
            run_.warnings.append(f"{name}: the release applied migrations {applied} to the "
                                 "restored database: the backup predates the release")
    return _failures(result)


def _step_verify(run_: _Drill, step: d.DrillStep, _before: Any) -> list[str]:
    problems: list[str] = []
    if run_.data.app_warm_cache_command:
        warmed = warm(run_.loaded, run_.options, run_.printer)
        problems += _failures(warmed)
        step.evidence += [f"{n}: cache keys {h.data.get('keys_before')} -> "
                          f"{h.data.get('keys_after')} (warm)" for n, h in warmed.hosts.items()]
    else:
        step.evidence.append("no app_warm_cache_command: the cache was not warmed")
    checked = health(run_.loaded, run_.options, run_.printer)
    run_.health = {"classification": checked.extra.get("classification"),
                   "severity": checked.extra.get("severity"), "status_line": checked.headline,
                   "hosts": {n: h.data for n, h in checked.hosts.items()}}
    step.evidence.append(f"health: {checked.headline}")
    for name, host in checked.hosts.items():
        bad, warned = d.health_problems(host.data.get("classification", "unknown"),
                                        host.data.get("findings", []))
        problems += [f"{name}: {p}" for p in bad]
        run_.warnings += [f"{name}: {w}" for w in warned]
    if problems:
        return problems
    run_.healthy_at = time.time()
    step.evidence.append(f"healthy at {d.iso(run_.healthy_at)}: RTO "
                         f"{d.duration(d.rto_seconds(run_.started, run_.healthy_at))}")
    measured = benchmark(run_.loaded, run_.options, run_.printer,
                         BenchOptions(requests=run_.data.drill_benchmark_requests))
    problems += _failures(measured)
    limit = j.Thresholds.from_data(run_.data).error_rate_critical_pct
    for name, host in measured.hosts.items():
        reports = host.data.get("endpoints", [])
        run_.bench += [{"host": name, **r} for r in reports]
        bad, warned = d.benchmark_problems(reports, limit)
        problems += [f"{name}: {p}" for p in bad]
        run_.warnings += [f"{name}: {w}" for w in warned]
        step.evidence += [f"{name}: {r['url']}: {r['success_rate_pct']:.0f} % ok, p95 "
                          f"{r['p95_ms']:.1f} ms (target {r['comparison']['target_ms']:.0f} ms)"
                          for r in reports if r.get("count")]
    return problems


# --- step 7: teardown, and the report ----------------------------------------------------------

def _decommission() -> None:
    """The drill's app off a drill host: PM2 apps deleted (and the saved list emptied), the
    cache emptied (it holds copies of production data), the app's folder removed (releases,
    env files with the database password, backups). Packages stay: the host is a spare."""
    data = current_host.data
    app = as_user(current_host, data.app_user)
    ecosystem = layout(data.app_deploy_to)["ecosystem"]
    names = " ".join(shlex.quote(a.name) for a in pm2_apps(data))
    rel.run_script(
        f"command -v pm2 >/dev/null || {{ echo 'no PM2'; exit 0; }}; "
        f"[ -f {shlex.quote(ecosystem)} ] && pm2 delete {names} >/dev/null 2>&1; "
        "pm2 save --force >/dev/null && echo 'PM2 apps deleted, saved list emptied'",
        name="Delete the drill's PM2 apps", **app)
    rel.run_script(
        "command -v redis-cli >/dev/null || { echo 'no Redis'; exit 0; }; "
        + flush_command(data.redis_port), name="Empty the drill's cache (FLUSHDB)", **app)
    files.directory(name=f"Remove {data.app_deploy_to} (releases, env files, backups)",
                    path=data.app_deploy_to, present=False, **app)


def _left_behind(host) -> dict[str, Any]:
    """The app's folder and PM2 apps still there (PM2 modules such as pm2-logrotate are
    provisioning's, not the app's)."""
    data = host.data
    apps = {a.name for a in pm2_apps(data)}
    running = host.get_fact(Pm2Processes, **as_user(host, data.app_user))
    return {"app": bool(host.get_fact(Directory, path=data.app_deploy_to)),
            "pm2": sorted({p["name"] for p in running if p["name"] in apps})}


def _teardown(run_: _Drill) -> None:
    step = run_.steps["teardown"]
    if run_.request.keep:
        step.skip(f"kept (--keep): scratch database {run_.scratch}, the app on "
                  f"{', '.join(h.name for h in run_.loaded.hosts)}; the next drill drops the "
                  "database (it is marked as the drill's) and converges the hosts")
        return
    if not run_.created and not run_.touched:
        step.skip("nothing to tear down: the drill changed nothing")
        return

    def work(step: d.DrillStep) -> list[str]:
        problems: list[str] = []
        if run_.created:
            dropped = dbp.execute(run_.loaded, run_.target, [dbp.Script(
                f"drop the scratch database {run_.scratch}",
                drop_script(run_.scratch, run_.data.drill_admin_database))],
                run_.options, run_.printer)
            problems += [] if dropped.ok else _host_problems(dropped)
            step.evidence += [line for s in dropped.steps for line in s.output[-1:]]
        if run_.touched:
            result = run_deploy(run_.loaded, _decommission, printer=run_.printer)
            problems += _failures(result)
            for name, left in gather(run_.loaded, _left_behind).items():
                if isinstance(left, Exception) or left["app"] or left["pm2"]:
                    problems.append(f"{name}: left behind: {left}")
                else:
                    step.evidence.append(f"{name}: no app folder, no PM2 app left (packages "
                                         "stay: terminate the spare instance to remove them)")
        return problems

    _run_step(run_, "teardown", work)


def _finish(run_: _Drill, began: float) -> RunResult:
    ended = time.time()
    data = run_.data
    for step in run_.steps.values():
        if step.status == "pending":
            step.skip("not run: an earlier step failed")
    manifest = run_.manifest or {}
    counts = manifest.get("row_counts") or {}
    backup = {"file": str(run_.dump) if run_.dump else None, "time": manifest.get("time"),
              "database": manifest.get("database"), "bytes": manifest.get("bytes"),
              "sha256": manifest.get("sha256"), "migration": manifest.get("migration"),
              "tables": len(counts), "rows": sum(counts.values())}
    report = d.drill_report(
        drill_inventory=str(run_.loaded.path), source_inventory=str(run_.source.path),
        hosts=[h.name for h in run_.loaded.hosts], database=run_.scratch,
        started=run_.started, ended=ended, steps=list(run_.steps.values()),
        rto=d.rto_seconds(run_.started, run_.healthy_at),
        rto_goal=data.drill_rto_goal_seconds, rpo=run_.rpo,
        rpo_goal=data.drill_rpo_goal_seconds, backup=backup, release=run_.release,
        health=run_.health, benchmark=run_.bench, warnings=run_.warnings,
        kept=run_.request.keep)
    saved = save_report("drill", report, d.report_markdown(report))
    report["reports"] = [str(p) for p in saved]
    steps = [Step(f"step {s.number} {s.title}: {s.status} ({d.duration(s.seconds)})"
                  + (f": {'; '.join(s.problems)}" if s.problems else ""),
                  STEP_STATUS[s.status]) for s in run_.steps.values()]
    steps += [Step(f"fix: {text}", "warning") for text in report["fix"]]
    return RunResult(dry=False, hosts={DRILL: HostResult(DRILL, steps=steps)},
                     seconds=time.monotonic() - began,
                     headline=d.headline(report, str(saved[0])),
                     exit_code=report["exit_code"], extra={"drill": report})


def save_report(kind: str, report: dict[str, Any], markdown: str) -> list[Path]:
    """reports/drill/<kind>-<time>.md and .json, and <kind>-latest.json (redacted, 0600:
    they name hosts and databases)."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = REPORTS / f"{kind}-{stamp}"
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    text = redact(d.report_json(report))
    for path, content in ((md, redact(markdown)), (js, text),
                          (REPORTS / f"{kind}-latest.json", text)):
        dbp.write_private(path, content)
    return [md, js]


# --- drill rollback ----------------------------------------------------------------------------

class _Clock:
    """A printer that notes when the release engine reported the moments of the drill."""

    def __init__(self, plans: dict[str, HostPlan], printer: Printer | None) -> None:
        self.plans, self.printer = plans, printer
        self.marks = {name: d.Marks() for name in plans}

    def __call__(self, host: str, step: Step) -> None:
        now, plan, marks = time.time(), self.plans.get(host), self.marks.get(host)
        if (marks and marks.switched and not marks.reloaded
                and step.name.startswith("Reload the PM2 apps")):
            marks.reloaded = now  # ended, well or not: the failing build is live
        elif plan and marks and step.status != "failed":
            if step.name == f"Switch current to {plan.release}":
                marks.switched = now
            elif step.name == f"Switch back to {plan.rollback_to}":
                marks.switched_back = now
            elif step.name == f"switched back to {plan.rollback_to}: verified":
                marks.healthy = now
        elif marks and step.name.startswith("verification: "):
            marks.detected = now
        if self.printer:
            self.printer(host, step)


def _plan_failing(loaded: LoadedInventory, states: dict[str, Any]) -> dict[str, HostPlan]:
    """A failing release per host, on top of a healthy, verified current release (else the
    drill could not prove that service comes back): refused before anything changes."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    plans = {}
    for name, state in states.items():
        if isinstance(state, Exception):
            raise HostError(f"host {name}: {state}", "fix the inventory or the host, then retry")
        release = state["release"]
        current, good = release["current"], release["known_good"]
        if release["lock"]:
            raise lock_error(name, release["lock"])
        if not current or current != good:
            raise ConfigError(f"host {name}: current release {current or 'none'} is not its "
                              f"known-good release ({good or 'none'}): the automatic rollback "
                              "would not return to it", "deploy a release that verifies first "
                              "(deploy.py deploy)")
        sick = health_problems(state["http"])
        if sick:
            raise ConfigError(f"host {name} is unhealthy before the drill: {'; '.join(sick)}",
                              "fix it first (deploy.py diagnose)")
        commit = release["meta"].get(current, {}).get("commit") or "unknown"
        plans[name] = HostPlan(previous=current, release=rel.release_name(stamp, commit),
                               commit=commit, build=False, rollback_to=current,
                               meta=release["meta"], known_good=good)
    return plans


def _failing_build(flow: Flow):
    def run() -> None:
        data = current_host.data
        plan = flow.plans[current_host.name]
        releases = layout(data.app_deploy_to)["releases"]
        backend = next(a for a in pm2_apps(data) if a.role == "backend")
        entry = f"{data.app_backend_dir}/{backend.script}"
        rel.run_script(
            d.failing_release_script(f"{releases}/{plan.previous}",
                                     f"{releases}/{plan.release}", entry),
            name=f"Create failing release {plan.release} (copy of {plan.previous}; {entry} "
                 "exits 1 at start)", **as_user(current_host, data.app_user))
    return run


def _remove_release(names: dict[str, str]):
    def run() -> None:
        data = current_host.data
        path = f"{layout(data.app_deploy_to)['releases']}/{names[current_host.name]}"
        files.directory(name=f"Remove the failing release {names[current_host.name]}",
                        path=path, present=False, **as_user(current_host, data.app_user))
    return run


def rollback_drill(loaded: LoadedInventory, options: Options, printer: Printer | None,
                   keep: bool) -> RunResult:
    began, started = time.monotonic(), time.time()
    if loaded.is_production:
        raise ConfigError(f"drill rollback deploys a failing build: {loaded.path.name} is "
                          "marked production", "run it against staging: deploy.py drill "
                          "rollback -i staging")
    secrets_for_hosts(loaded)
    plans = _plan_failing(loaded, gather(loaded, read_state))
    if options.dry:
        steps = {n: [Step(f"would deploy failing release {p.release} (copy of {p.previous}) "
                          "and expect the automatic rollback", "would-change")]
                 for n, p in plans.items()}
        return RunResult(dry=True, hosts={n: HostResult(n, steps=s) for n, s in steps.items()},
                         headline="DRILL ROLLBACK (dry run): nothing was done")
    clock = _Clock(plans, printer)
    flow = Flow("deploy", loaded, plans, clock)
    with fleet_lock(flow) as locked:
        if locked:
            flow.phase(_failing_build(flow))
            execute(flow, lock=False)
    after = gather(loaded, _after)
    missed = [n for n, ok in flow.verified.items() if ok]
    if missed:  # the engine let a broken build through: put the previous release back
        _restore_previous(loaded, plans, missed, printer)
        after = gather(loaded, _after)
    hosts = {}
    for name, plan in plans.items():
        state = after[name]
        release = {} if isinstance(state, Exception) else state["release"]
        problems = d.rollback_problems(plan.previous or "", plan.release, release,
                                       flow.verified.get(name), clock.marks[name])
        if not isinstance(state, Exception) and health_problems(state["http"]):
            problems.append("unhealthy after the drill: "
                            + "; ".join(health_problems(state["http"])))
        elif isinstance(state, Exception):
            problems.append(f"cannot read the host after the drill: {state}")
        hosts[name] = {"previous": plan.previous, "failing": plan.release,
                       "problems": [redact(p) for p in problems],
                       "recovery": d.recovery(clock.marks[name]),
                       "evidence": _rollback_evidence(flow, name, plan,
                                                      {} if isinstance(state, Exception)
                                                      else state)}
    removable = {n: p.release for n, p in plans.items()
                 if not isinstance(after[n], Exception)
                 and after[n]["release"]["current"] != p.release
                 and p.release in after[n]["release"]["releases"]}
    if removable and not keep:
        removed = run_deploy(loaded.fresh(list(removable)), _remove_release(removable),
                             printer=printer)
        for name, outcome in removed.hosts.items():
            hosts[name]["evidence"].append(
                f"removed the failing release {removable[name]} (its record stays in the "
                "revisions log)" if outcome.ok else f"could not remove {removable[name]}")
    elif removable:
        for name, release in removable.items():
            hosts[name]["evidence"].append(f"kept the failing release {release} (--keep)")
    data = loaded.hosts[0].data
    report = d.rollback_report(inventory=str(loaded.path), started=started, ended=time.time(),
                               hosts=hosts, goal=data.drill_rollback_goal_seconds)
    saved = save_report("rollback", report, d.rollback_markdown(report))
    report["reports"] = [str(p) for p in saved]
    results = {}
    for name, h in hosts.items():
        r = h["recovery"]
        steps = [Step(f"time to recover {d.duration(r['time_to_recover_seconds'])}: reload "
                      f"{d.duration(r['reload_seconds'])}, verification failed after "
                      f"{d.duration(r['verify_seconds'])}, switched back in "
                      f"{d.duration(r['switch_back_seconds'])}, healthy again in "
                      f"{d.duration(r['healthy_seconds'])}",
                      "failed" if h["problems"] else "ok")]
        steps += [Step(e, "ok") for e in h["evidence"]]
        steps += [Step(p, "failed") for p in h["problems"]]
        results[name] = HostResult(name, steps=steps)
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - began,
                     headline=d.rollback_headline(report, str(saved[0])),
                     exit_code=report["exit_code"], extra={"drill_rollback": report})


def _after(host) -> dict[str, Any]:
    """What a host serves after the drill, its health, and its last revisions."""
    return {**read_state(host), "revisions": host.get_fact(
        rel.RevisionsLog, path=layout(host.data.app_deploy_to)["revisions"], lines=5)}


def _rollback_evidence(flow: Flow, name: str, plan: HostPlan, state: dict[str, Any]
                       ) -> list[str]:
    evidence = [f"failing release {plan.release}: a copy of {plan.previous} whose backend "
                "entry script exits 1 at start"]
    if flow.verified.get(name) is False:
        evidence.append(f"verification failed: {flow.reasons.get(name)}")
    release = state.get("release") or {}
    if release:
        marked = "yes" if plan.release in release.get("bad", []) else "NO"
        evidence.append(f"serving {release.get('current')} after the drill; the failing "
                        f"release is marked bad: {marked}")
    record = next((r for r in reversed(state.get("revisions", []))
                   if r.get("release") == plan.release), None)
    if record:
        evidence.append(f"revisions log: {record.get('action')} {plan.release} "
                        f"{record.get('result')} ({record.get('reason')})")
    return evidence


def _restore_previous(loaded: LoadedInventory, plans: dict[str, HostPlan], names: list[str],
                      printer: Printer | None) -> None:
    """The failing build passed verification (it must not): back to the previous release,
    and the failing one marked bad by hand."""
    back = {n: HostPlan(previous=plans[n].release, release=plans[n].previous or "",
                        commit=plans[n].commit, build=False, rollback_to=None,
                        meta=plans[n].meta, known_good=plans[n].previous) for n in names}
    execute(Flow("rollback", loaded.fresh(names), back, printer))

    def mark() -> None:
        data = current_host.data
        bad = f"{layout(data.app_deploy_to)['releases']}/{plans[current_host.name].release}/.bad"
        rel.run_script(f"echo 'drill rollback: a deliberately failing build' > "
                       f"{shlex.quote(bad)}", name="Mark the failing release bad",
                       **as_user(current_host, data.app_user))
    run_deploy(loaded.fresh(names), mark, printer=printer)


# --- the quarterly maintenance item ------------------------------------------------------------

def maintenance_item(source: LoadedInventory, options: Options, drill_inventory: str) -> m.Item:
    """`maintain quarterly`: the drill against `drill_inventory`, the maintained inventory as
    its source, as one checklist item (pass / fail with the report's figures)."""
    try:
        result = drill(load_inventory(drill_inventory), options, None,
                       DrillRequest(source=str(source.path)))
    except OpsError as error:
        return m.item("dr-drill", "critical", redact(f"drill did not run: {error.message}"),
                      [error.hint] if error.hint else [])
    if result.dry:
        return m.item("dr-drill", "ok", f"would run the drill against {drill_inventory}")
    report = result.extra["drill"]
    level: j.Level = "ok" if report["status"] == "pass" else "critical"
    return m.item("dr-drill", level, result.headline or report["status"],
                  [*report["fix"], *report["reports"]],
                  [j.Perf("rto", report["rto_seconds"] or 0, "s", None,
                          report["rto_goal_seconds"]),
                   j.Perf("rpo", report["rpo_seconds"] or 0, "s", None,
                          report["rpo_goal_seconds"])])
