"""`db`: the runbook's database work (section 4 guide 4, section 7) against the real database,
without the runbook's `psql -h HOST -U tpeadmin -d tpedb` and its password on every line.

The way in is `db_access`: "app_host" (default) runs psql / pg_dump / pg_restore on the app
host with the app's own 0600 env file, as the runbook does from the EC2 host; "direct" runs
them here, the password in that one child process's environment. Several selected hosts that
share one database are served once, through the first of them.

Reusable by the disaster-recovery drill: `backup` (dump + manifest with exact row counts of
the dump's own snapshot, copied here), `latest_backup`, `read_manifest`, `verify_backup`
(restore into a scratch database, compare with the manifest, drop it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pyinfra import host as current_host
from pyinfra.api.host import Host

from operations import db
from operations.app import layout
from operations.privileges import as_user
from operations.provision import db_password
from operations.release import ReleaseMigrations, run_script, upload
from playbooks.common import Options, confirm_production, secrets_for_hosts
from tpe_ops import judgement as j
from tpe_ops.errors import ConfigError, HostError, OpsError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.secrets import PROJECT_ROOT, redact
from tpe_ops.state import STATE_DIR

ACTIONS: dict[str, str] = {
    "connections": "connections by state and application vs the pool (guide 4)",
    "slow-queries": "pg_stat_statements: mean time above db_slow_query_ms, slowest first",
    "sizes": "database and table sizes, row estimates, growth since the last run",
    "index-usage": "unused and rarely used indexes with their sizes",
    "vacuum": "VACUUM (ANALYZE) the app's tables; last vacuum/analyze before and after",
    "backup": "pg_dump -Fc on the host + manifest (exact row counts), copied here",
    "verify-backup": "restore a backup (default: the latest) into a scratch database and "
                     "compare row counts and migration version with its manifest",
    "migrations": "applied migrations vs the current release's files",
}
SIZES_KEPT = 1000  # samples of the size history kept per database
SIZES_SHOWN = 20  # tables listed by `sizes` (all of them are in --json)
STATEMENTS_FIX = (
    "add pg_stat_statements to shared_preload_libraries (RDS: the DB parameter group, then "
    "reboot the instance) and run CREATE EXTENSION pg_stat_statements; in the app's database "
    "as a superuser (rds_superuser on RDS)"
)
VERSION_FIX = ("install a PostgreSQL client of the server's major version or newer: set "
               "db_client_package (e.g. postgresql-client-16 from the PGDG apt repository)")


@dataclass
class DbRequest:
    action: str
    file: str | None = None  # verify-backup: the dump (default: the latest)
    top: int | None = None  # slow-queries, sizes: rows shown
    threshold_ms: float | None = None  # slow-queries: instead of db_slow_query_ms
    keep: bool = False  # verify-backup: keep the scratch database


@dataclass
class Target:
    """One database, and the host whose settings (and, for app_host access, SSH) reach it."""

    host: Host
    shared_with: list[str]  # other selected hosts on the same database
    password: str = field(repr=False)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def data(self) -> Any:
        return self.host.data

    @property
    def direct(self) -> bool:
        return self.data.db_access == "direct"


# --- validation (exit 2, nothing touched) ----------------------------------------------------

OPTION_ACTIONS = {"file": {"verify-backup"}, "keep": {"verify-backup"},
                  "top": {"slow-queries", "sizes"}, "threshold_ms": {"slow-queries"}}


def validate_request(request: DbRequest) -> None:
    if request.action not in ACTIONS:
        raise ConfigError(f"db: unknown action {request.action!r}",
                          f"choose one of: {', '.join(ACTIONS)}")
    for option, actions in OPTION_ACTIONS.items():
        if getattr(request, option) not in (None, False) and request.action not in actions:
            shown = "FILE" if option == "file" else "--" + option.replace("_", "-")
            raise ConfigError(f"db {request.action}: {shown} only applies to "
                              f"{' and '.join(sorted(actions))}",
                              f"drop {shown}, or run: deploy.py db {sorted(actions)[0]} ...")
    if request.top is not None and request.top < 1:
        raise ConfigError(f"--top {request.top}: must be at least 1", "pass --top 10")
    if request.threshold_ms is not None and request.threshold_ms < 0:
        raise ConfigError(f"--threshold-ms {request.threshold_ms}: must be 0 or more",
                          "pass --threshold-ms 100")


def local_backup_dir(data: Any) -> Path:
    """The controller's folder for this database's backups (never inside the repository)."""
    base = Path(data.db_backup_local_dir).expanduser().resolve()
    if base.is_relative_to(PROJECT_ROOT):
        raise ConfigError(f"db_backup_local_dir {data.db_backup_local_dir} is inside the "
                          "repository", "keep backups outside it, e.g. "
                          "~/.local/share/tpe-ops/backups")
    return base / f"{data.db_name}@{data.db_host}_{data.db_port}".replace("/", "_")


def _validate_settings(data: Any, host_name: str) -> None:
    where = f"host {host_name}"
    for key in ("db_backup_keep", "db_backup_local_keep", "db_slow_query_top",
                "db_index_rarely_used_scans"):
        if data.get(key) < 1:
            raise ConfigError(f"{where}: {key} = {data.get(key)} must be at least 1",
                              f"set {key} in the inventory or group data")
    folder = PurePosixPath(data.db_backup_dir)
    if folder.is_absolute() or ".." in folder.parts or not folder.parts:
        raise ConfigError(f"{where}: db_backup_dir {data.db_backup_dir!r} must be a folder "
                          "under shared/", "set e.g. db_backup_dir = \"backups\"")
    local_backup_dir(data)
    if data.db_access == "direct":
        missing = [t for t in ("psql", "pg_dump", "pg_restore") if not shutil.which(t)]
        if missing:
            raise ConfigError(f"{where}: db_access = \"direct\" needs {', '.join(missing)} on "
                              "this machine", "install postgresql-client here, or set "
                              "db_access = \"app_host\"")


def targets(loaded: LoadedInventory) -> list[Target]:
    """One target per database (access, server, port, name): the first selected host on it.
    Secrets come first (a missing one stops the run before anything happens) and are
    registered with the redactor."""
    secrets = secrets_for_hosts(loaded)
    chosen: dict[tuple, Target] = {}
    for host in loaded.hosts:
        data = host.data
        _validate_settings(data, host.name)
        key = (data.db_access, data.db_host, data.db_port, data.db_name)
        if key in chosen:
            chosen[key].shared_with.append(host.name)
        else:
            chosen[key] = Target(host, [], db_password(data, secrets[host.name]) or "")
    return list(chosen.values())


# --- the way in: queries and scripts, on the app host or here --------------------------------

def client_env(target: Target) -> dict[str, str]:
    """libpq's variables for one child process here (db_access = "direct")."""
    data = target.data
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=data.db_host, PGPORT=str(data.db_port), PGDATABASE=data.db_name,
               PGUSER=data.db_user, PGPASSWORD=target.password, **db.CLIENT_SETTINGS)
    return env


def _run_here(target: Target, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], env=client_env(target), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


def _shared(host: Host) -> str:
    return layout(host.data.app_deploy_to)["shared"]


class Db:
    """Queries of one target's database, from inside a `gather` read (or here)."""

    def __init__(self, host: Host, target: Target) -> None:
        self.host, self.target = host, target

    def answer(self, sql: str) -> dict[str, Any]:
        if self.target.direct:
            done = _run_here(self.target, db.psql_json(sql))
            return db.parse_json_output(done.stdout.splitlines())
        return self.host.get_fact(db.DbJson, shared=_shared(self.host), sql=sql,
                                  **as_user(self.host, self.host.data.app_user))

    def json(self, sql: str) -> Any:
        answer = self.answer(sql)
        if answer["error"]:
            raise HostError(redact(f"database {self.host.data.db_name}: {answer['error']}"))
        return answer["value"]


Reader = Callable[[Host, Db], Any]


def read(loaded: LoadedInventory, chosen: list[Target], reader: Reader,
         needs_host: bool = False) -> dict[str, Any]:
    """{target name: reader's value, or the Exception that stopped it}. Targets reached
    through their app host (or needing it) are read in parallel with `gather`."""
    by_name = {t.name: t for t in chosen}

    def safe(host: Host, target: Target) -> Any:
        try:
            return reader(host, Db(host, target))
        except OpsError as error:
            return error

    remote = [t.name for t in chosen if needs_host or not t.direct]
    values: dict[str, Any] = {}
    if remote:
        values = gather(loaded.fresh(remote), lambda h: safe(h, by_name[h.name]))
    for target in chosen:
        if target.name not in values:
            values[target.name] = safe(target.host, target)
    return values


@dataclass
class Script:
    name: str
    script: str


@dataclass
class Upload:
    name: str
    src: str
    dest: str


def execute(loaded: LoadedInventory, target: Target, actions: list[Script | Upload],
            options: Options, printer: Printer | None) -> HostResult:
    """Run scripts (and uploads) that change something: pyinfra operations on the app host,
    or child processes here. Stops at the first failure."""
    if target.direct:
        return _execute_here(target, actions, options.dry, printer)

    def deploy() -> None:
        host = current_host
        app = as_user(host, host.data.app_user)
        for action in actions:
            if isinstance(action, Upload):
                upload(action.src, action.dest, name=action.name, **app)
            else:
                command = db.through_app_env(_shared(host), f"sh -c {shlex.quote(action.script)}")
                run_script(command, name=action.name, **app)

    result = run_deploy(loaded.fresh([target.name]), deploy, dry=options.dry, printer=printer)
    return result.hosts[target.name]


def _execute_here(target: Target, actions: list[Script | Upload], dry: bool,
                  printer: Printer | None) -> HostResult:
    result = HostResult(target.name)
    for action in actions:
        assert isinstance(action, Script), "direct access has nothing to upload"
        started = time.monotonic()
        if dry:
            step = Step(action.name, "would-change")
        else:
            done = _run_here(target, action.script)
            out = [redact(line) for line in done.stdout.splitlines() if line.strip()]
            if done.returncode:
                problem = [redact(line) for line in done.stderr.splitlines() if line.strip()]
                step = Step(action.name, "failed", "; ".join((problem or out)[-3:]), out[-20:])
            else:
                step = Step(action.name, "changed", out[-1] if out else "", out[-20:])
        step.seconds = round(time.monotonic() - started, 3)
        result.steps.append(step)
        if printer:
            printer(target.name, step)
        if step.status == "failed":
            break
    return result


def json_line(step: Step) -> dict[str, Any] | None:
    """The `__json__ {...}` document a script printed."""
    for line in reversed(step.output):
        if line.startswith(db.JSON_MARK):
            return json.loads(line[len(db.JSON_MARK):])
    return None


# --- results ---------------------------------------------------------------------------------

STATUS = {"ok": "ok", "warning": "warning", "critical": "critical", "unknown": "unknown"}


def note(result: HostResult, printer: Printer | None, text: str, status: str = "ok") -> Step:
    step = Step(text, status)
    result.steps.append(step)
    if printer:
        printer(result.name, step)
    return step


def _result(results: dict[str, HostResult], started: float, dry: bool = False) -> RunResult:
    return RunResult(dry=dry, hosts=results, seconds=time.monotonic() - started)


def _report(loaded: LoadedInventory, chosen: list[Target], values: dict[str, Any],
            describe: Callable[[Target, Any, HostResult], None], printer: Printer | None,
            started: float) -> RunResult:
    """Results of a read-only action: a line per finding per database."""
    results: dict[str, HostResult] = {}
    for target in chosen:
        result = HostResult(target.name, data={"database": target.data.db_name,
                                               "access": target.data.db_access})
        value = values[target.name]
        if isinstance(value, Exception):
            result.error = redact(str(value))
        else:
            describe(target, value, result)
        for other in target.shared_with:
            note(result, printer, f"{other} uses the same database: not repeated")
        results[target.name] = result
    return _result(results, started)


# --- connections -----------------------------------------------------------------------------

def connections(loaded: LoadedInventory, options: Options, printer: Printer | None,
                request: DbRequest) -> RunResult:
    started, chosen = time.monotonic(), targets(loaded)
    values = read(loaded, chosen, lambda host, d: d.json(db.CONNECTIONS_SQL))

    def describe(target: Target, value: dict[str, Any], result: HostResult) -> None:
        data = target.data
        total = sum(g["connections"] for g in value["groups"])
        finding = j.db_connections_finding(total, data.db_pool_size, j.Thresholds.from_data(data))
        guide = f" (troubleshooting guide {finding.guide})" if finding.guide else ""
        note(result, printer, f"connections: {finding.message}{guide}", STATUS[finding.level])
        if finding.level == "critical":  # the pool is exhausted: a failure for a scheduler
            result.error = f"critical: {finding.message}"
        for group in value["groups"]:
            note(result, printer, f"{group['connections']} {group['state']}: "
                                  f"{group['application']} (role {group['role'] or '?'})")
        server, most = value["server_connections"], value["max_connections"]
        note(result, printer, f"server: {server} of {most} max_connections "
                              f"({server / most * 100:.0f}%)")
        result.data.update(value, connections=total, pool_size=data.db_pool_size,
                           finding=finding.to_dict())

    return _report(loaded, chosen, values, describe, printer, started)


# --- slow-queries ----------------------------------------------------------------------------

def _slow_reader(request: DbRequest) -> Reader:
    def reader(host: Host, d: Db) -> dict[str, Any]:
        data = host.data
        extension = d.json(db.STATEMENTS_EXTENSION_SQL)
        if not extension:
            raise HostError(f"pg_stat_statements is not installed in database {data.db_name}",
                            STATEMENTS_FIX)
        threshold = (request.threshold_ms if request.threshold_ms is not None
                     else data.db_slow_query_ms)
        top = request.top or data.db_slow_query_top
        answer = d.answer(db.slow_queries_sql(extension["schema"], threshold, top))
        if answer["error"] and "shared_preload_libraries" in answer["error"]:
            raise HostError("pg_stat_statements is installed but not loaded by the server",
                            STATEMENTS_FIX)
        if answer["error"]:
            raise HostError(redact(f"database {data.db_name}: {answer['error']}"))
        return {**answer["value"], "threshold_ms": threshold, "top": top}
    return reader


def slow_queries(loaded: LoadedInventory, options: Options, printer: Printer | None,
                 request: DbRequest) -> RunResult:
    started, chosen = time.monotonic(), targets(loaded)
    values = read(loaded, chosen, _slow_reader(request))

    def describe(target: Target, value: dict[str, Any], result: HostResult) -> None:
        queries, limit = value["queries"], value["threshold_ms"]
        since = f" since {value['since']}" if value.get("since") else ""
        note(result, printer, f"slow queries: {len(queries)} with a mean above {limit:g} ms "
                              f"(top {value['top']}; {value['tracked']} statements tracked"
                              f"{since})", "warning" if queries else "ok")
        for query in queries:
            text = query["query"] if len(query["query"]) <= 160 else query["query"][:157] + "..."
            note(result, printer,
                 f"{query['mean_ms']:.1f} ms mean, {query['calls']} calls, "
                 f"{query['total_ms']:.0f} ms total, max {query['max_ms']:.0f} ms "
                 f"[{query['role']}]: {text}", "warning")
        result.data.update(value)

    return _report(loaded, chosen, values, describe, printer, started)


# --- sizes (with a history for the monthly capacity review) -----------------------------------

def sizes_history_path(data: Any) -> Path:
    key = f"{data.db_name}@{data.db_host}_{data.db_port}".replace("/", "_")
    return STATE_DIR / "db" / f"{key}-sizes.jsonl"


def load_size_history(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    history = []
    for line in lines:
        try:
            history.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return history


def record_sizes(path: Path, sample: dict[str, Any]) -> dict[str, Any] | None:
    """Append a sample to the history; return the growth since the previous one."""
    history = load_size_history(path)
    growth = db.size_growth(history[-1] if history else None, sample)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [*history, sample][-SIZES_KEPT:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in kept))
    tmp.replace(path)
    return growth


def sizes(loaded: LoadedInventory, options: Options, printer: Printer | None,
          request: DbRequest) -> RunResult:
    started, chosen = time.monotonic(), targets(loaded)
    values = read(loaded, chosen, lambda host, d: d.json(db.SIZES_SQL))
    shown = request.top or SIZES_SHOWN

    def describe(target: Target, value: dict[str, Any], result: HostResult) -> None:
        sample = {"time": time.time(), "database_bytes": value["database_bytes"],
                  "tables": {t["table"]: t["total_bytes"] for t in value["tables"]}}
        growth = record_sizes(sizes_history_path(target.data), sample)
        note(result, printer, f"database {value['database']}: "
                              f"{db.human_bytes(value['database_bytes'])}, "
                              f"{len(value['tables'])} tables")
        if growth is None:
            note(result, printer, "growth: first sample (growth is reported from the next run)")
        else:
            when = datetime.fromtimestamp(growth["since"], UTC).isoformat(timespec="seconds")
            pct = f" ({growth['pct']:+.1f}%)" if growth["pct"] is not None else ""
            rate = (f", {db.human_bytes(growth['bytes_per_day'], True)}/day"
                    if growth["bytes_per_day"] is not None else "")
            note(result, printer, f"growth since {when} ({growth['days']:.2f} days): "
                                  f"{db.human_bytes(growth['bytes'], True)}{pct}{rate}")
        for table in value["tables"][:shown]:
            delta = (growth or {}).get("tables", {}).get(table["table"])
            change = f", {db.human_bytes(delta, True)} since last run" if delta else ""
            note(result, printer,
                 f"{table['table']}: {db.human_bytes(table['total_bytes'])} "
                 f"(table {db.human_bytes(table['table_bytes'])}, indexes "
                 f"{db.human_bytes(table['index_bytes'])}), ~{table['row_estimate']:,} rows"
                 f"{change}")
        result.data.update(value, growth=growth, history=str(sizes_history_path(target.data)))

    return _report(loaded, chosen, values, describe, printer, started)


# --- index-usage -----------------------------------------------------------------------------

def index_usage(loaded: LoadedInventory, options: Options, printer: Printer | None,
                request: DbRequest) -> RunResult:
    started, chosen = time.monotonic(), targets(loaded)
    values = read(loaded, chosen, lambda host, d: d.json(db.INDEX_USAGE_SQL))

    def describe(target: Target, value: dict[str, Any], result: HostResult) -> None:
        rare = target.data.db_index_rarely_used_scans
        indexes = value["indexes"]
        for index in indexes:
            index["level"], index["advice"] = db.index_advice(index, rare)
        listed = [i for i in indexes if i["advice"] != "used"]
        candidates = [i for i in listed if i["level"] == "warning"]
        since = (f"since {value['stats_reset']}" if value.get("stats_reset")
                 else "(statistics never reset)")
        note(result, printer,
             f"indexes: {len(indexes)}, {sum(i['scans'] == 0 for i in indexes)} unused, "
             f"{sum(0 < i['scans'] < rare for i in indexes)} rarely used (< {rare} scans) "
             f"{since}; {len(candidates)} removal candidate(s), "
             f"{db.human_bytes(sum(i['bytes'] for i in candidates))}",
             "warning" if candidates else "ok")
        for index in listed:
            note(result, printer, f"{index['index']} on {index['table']}: {index['scans']} scans,"
                                  f" {db.human_bytes(index['bytes'])}: {index['advice']}",
                 index["level"])
        result.data.update(value, rarely_used_scans=rare)

    return _report(loaded, chosen, values, describe, printer, started)


# --- vacuum ----------------------------------------------------------------------------------

def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "never"


def vacuum(loaded: LoadedInventory, options: Options, printer: Printer | None,
           request: DbRequest) -> RunResult:
    started, chosen = time.monotonic(), targets(loaded)
    confirm_production(loaded, options, "VACUUM (ANALYZE) the database")
    before = read(loaded, chosen, lambda host, d: d.json(db.TABLE_MAINTENANCE_SQL))
    results: dict[str, HostResult] = {}
    for target in chosen:
        tables = before[target.name]
        if isinstance(tables, Exception):
            results[target.name] = HostResult(target.name, error=redact(str(tables)))
            continue
        mine = [(t["schema"], t["name"]) for t in tables if t["can_vacuum"]]
        result = HostResult(target.name)
        if mine:
            result = execute(loaded, target, [Script(
                f"VACUUM (ANALYZE) {len(mine)} table(s) of {target.data.db_name}",
                f"{db.client_check('psql')}\n{db.PSQL} -c {shlex.quote(db.vacuum_sql(mine))}",
            )], options, printer)
        result.data = {"database": target.data.db_name, "before": tables}
        for table in tables:
            if not table["can_vacuum"]:
                note(result, printer, f"{table['table']}: skipped, owned by {table['owner']} "
                                      "(only its owner or a superuser may vacuum it)", "warning")
        results[target.name] = result
    done = [t for t in chosen if results[t.name].ok and not options.dry
            and not isinstance(before[t.name], Exception)]
    after = read(loaded, done, lambda host, d: d.json(db.TABLE_MAINTENANCE_SQL)) if done else {}
    for target in done:
        result, now = results[target.name], after[target.name]
        if isinstance(now, Exception):
            result.error = redact(str(now))
            continue
        result.data["after"] = now
        old = {t["table"]: t for t in before[target.name]}
        for table in now:
            was = old.get(table["table"], {})
            if not table["can_vacuum"]:
                continue
            vacuumed = table["last_vacuum"] and table["last_vacuum"] != was.get("last_vacuum")
            note(result, printer,
                 f"{table['table']}: last vacuum {_when(was.get('last_vacuum'))} -> "
                 f"{_when(table['last_vacuum'])}, last analyze {_when(was.get('last_analyze'))} "
                 f"-> {_when(table['last_analyze'])}, dead rows {was.get('dead_rows')} -> "
                 f"{table['dead_rows']}", "ok" if vacuumed else "warning")
    return _result(results, started, options.dry)


# --- backup ----------------------------------------------------------------------------------

def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def prune_local(directory: Path, prefix: str, keep: int) -> list[str]:
    """Keep the newest `keep` backups of `prefix` here (names sort by time)."""
    removed = []
    for manifest in sorted(directory.glob(f"{prefix}-*.json"))[:-keep]:
        dump = manifest.with_suffix(".dump")
        dump.unlink(missing_ok=True)
        manifest.unlink(missing_ok=True)
        removed.append(dump.name)
    return removed


def _download(loaded: LoadedInventory, target: Target, remote: str, local: Path) -> None:
    """Copy a host file here (0600, through a partial file)."""
    partial = local.with_name(local.name + ".partial")

    def fetch(host: Host) -> bool:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            return host.get_file(remote, handle, **as_user(host, host.data.app_user))

    got = gather(loaded.fresh([target.name]), fetch)[target.name]
    if got is not True:
        partial.unlink(missing_ok=True)
        raise HostError(f"could not copy {remote} from {target.name}: {got}")
    partial.replace(local)


def backup(loaded: LoadedInventory, options: Options, printer: Printer | None,
           request: DbRequest | None = None) -> RunResult:
    """`pg_dump -Fc` of each selected database with its manifest (time, database, size,
    sha256, latest migration, exact row counts of the dump's snapshot), kept on the host
    (db_backup_keep) and copied here (db_backup_local_dir, db_backup_local_keep)."""
    started, chosen = time.monotonic(), targets(loaded)
    results: dict[str, HostResult] = {}
    for target in chosen:
        results[target.name] = _backup_one(loaded, target, options, printer)
    return _result(results, started, options.dry)


def _backup_one(loaded: LoadedInventory, target: Target, options: Options,
                printer: Printer | None) -> HostResult:
    data = target.data
    local_dir = local_backup_dir(data)
    prefix = db.safe_name(data.db_name)
    name = f"{prefix}-{stamp()}"
    where = str(local_dir) if target.direct else f"{_shared(target.host)}/{data.db_backup_dir}"
    actions: list[Script | Upload] = [Script(
        f"pg_dump -Fc {data.db_name} -> {where}/{name}.dump (+ manifest, exact row counts)",
        db.backup_script(where, name, data.db_migrations_table))]
    if not target.direct:
        actions.append(Script(f"keep the newest {data.db_backup_keep} backups on the host",
                              db.prune_backups_command(where, prefix, data.db_backup_keep)))
    if not options.dry:
        local_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    result = execute(loaded, target, actions, options, printer)
    result.data = {"database": data.db_name, "access": data.db_access}
    if options.dry or not result.ok:
        return result
    manifest = json_line(result.steps[0])
    if manifest is None:
        result.error = "the backup printed no manifest"
        return result
    local = local_dir / f"{name}.dump"
    try:
        if not target.direct:
            _download(loaded, target, f"{where}/{name}.dump", local)
            copy = {"host": target.name, "path": f"{where}/{name}.dump"}
            write_private(local.with_suffix(".json"), json.dumps({**manifest, "copied_from":
                                                                   copy}, indent=2) + "\n")
    except OpsError as error:
        result.error = redact(str(error))
        return result
    digest = file_sha256(local)
    if digest != manifest["sha256"]:
        note(result, printer, f"copy {local}: sha256 {digest} differs from the manifest's",
             "failed")
        return result
    total = sum(manifest["row_counts"].values())
    note(result, printer, f"backup {local} ({db.human_bytes(manifest['bytes'])}, sha256 "
                          f"verified): {len(manifest['row_counts'])} tables, {total} rows, "
                          f"migration {manifest['migration']}")
    for removed in prune_local(local_dir, prefix, data.db_backup_local_keep):
        note(result, printer, f"removed {removed} (db_backup_local_keep = "
                              f"{data.db_backup_local_keep})")
    result.data.update(manifest=manifest, file=str(local),
                       host_file=None if target.direct else f"{where}/{name}.dump")
    return result


# --- verify-backup ---------------------------------------------------------------------------

def latest_backup(directory: Path) -> Path:
    """The newest dump in `directory` that has its manifest."""
    dumps = sorted(m.with_suffix(".dump") for m in directory.glob("*.json")
                   if m.with_suffix(".dump").is_file())
    if not dumps:
        raise ConfigError(f"no backup in {directory}", "make one: deploy.py db backup")
    return dumps[-1]


def read_manifest(dump: Path) -> dict[str, Any]:
    """The manifest written next to a dump by `backup` (DUMP with .json)."""
    if not dump.is_file():
        raise ConfigError(f"no such backup file: {dump}", "give the path of a .dump made by "
                                                          "deploy.py db backup")
    path = dump.with_suffix(".json")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"no readable manifest {path} next to {dump}: {error}",
                          "verify-backup compares the restore with the manifest that "
                          "deploy.py db backup writes next to the dump") from None
    if manifest.get("format") != db.MANIFEST_FORMAT or "row_counts" not in manifest:
        raise ConfigError(f"{path} is not a backup manifest ({db.MANIFEST_FORMAT})",
                          "use a dump made by deploy.py db backup")
    return manifest


def scratch_name(database: str, when: str) -> str:
    """`<db>_verify_<stamp>` within PostgreSQL's 63-byte limit."""
    return f"{db.safe_name(database)[:38]}_verify_{when.lower()}"


def verify_backup(loaded: LoadedInventory, options: Options, printer: Printer | None,
                  request: DbRequest) -> RunResult:
    """Restore a dump into a scratch database on the same server, compare exact row counts
    and the migration version with its manifest, drop the scratch database (unless keep)."""
    started, chosen = time.monotonic(), targets(loaded)
    if len(chosen) > 1:
        raise ConfigError(f"verify-backup: the selection reaches {len(chosen)} databases",
                          "choose one with --limit HOST")
    target = chosen[0]
    dump = (Path(request.file).expanduser().resolve() if request.file
            else latest_backup(local_backup_dir(target.data)))
    manifest = read_manifest(dump)
    result = HostResult(target.name, data={"database": target.data.db_name, "file": str(dump)})
    digest = file_sha256(dump)
    if digest != manifest["sha256"]:
        note(result, printer, f"{dump} does not match its manifest: sha256 {digest}, "
                              f"{dump.stat().st_size} bytes; manifest {manifest['sha256']}, "
                              f"{manifest['bytes']} bytes: the copy is truncated or corrupted",
             "failed")
        result.data["verify"] = {"ok": False, "problems": ["sha256 mismatch"]}
        return _result({target.name: result}, started)
    note(result, printer, f"{dump.name}: sha256 matches its manifest "
                          f"({db.human_bytes(manifest['bytes'])}, {manifest['time']})")
    scratch = scratch_name(target.data.db_name, stamp())
    confirm_production(loaded, options, f"restore {dump.name} into a scratch database "
                                        f"{scratch} on the database server")
    actions, source = restore_source(loaded, target, dump, manifest)
    uploaded = any(isinstance(action, Upload) for action in actions)
    actions.append(Script(f"restore into scratch database {scratch} and count rows",
                          db.restore_script(source, manifest["sha256"], scratch,
                                            target.data.db_migrations_table, request.keep,
                                            remove_dump=uploaded)))
    ran = execute(loaded, target, actions, options, printer)
    result.steps += ran.steps
    result.error = ran.error
    if options.dry or not ran.ok:
        return _result({target.name: result}, started, options.dry)
    restored = json_line(ran.steps[-1]) or {}
    problems = db.compare_restore(manifest, restored)
    for problem in problems:
        note(result, printer, problem, "failed")
    if not problems:
        counts = manifest["row_counts"]
        note(result, printer, f"verified: {len(counts)} tables, {sum(counts.values())} rows "
                              f"and migration {manifest['migration']} match the manifest")
    if request.keep:
        note(result, printer, f"kept scratch database {scratch} (drop it with: DROP DATABASE "
                              f"\"{scratch}\";)")
    result.data["verify"] = {"ok": not problems, "problems": problems, "scratch": scratch,
                             "kept": request.keep, "restored": restored,
                             "manifest": manifest}
    return _result({target.name: result}, started)


def restore_source(loaded: LoadedInventory, target: Target, dump: Path,
                    manifest: dict[str, Any]) -> tuple[list[Script | Upload], str]:
    """Where the restore reads the dump: here (direct), the host's own copy when it is the
    same file (sha256), else an upload removed after the restore."""
    if target.direct:
        return [], str(dump)
    folder = f"{_shared(target.host)}/{target.data.db_backup_dir}"
    on_host = f"{folder}/{dump.name}"
    seen = gather(loaded.fresh([target.name]), lambda h: h.get_fact(
        db.FileDigest, path=on_host, **as_user(h, h.data.app_user)))[target.name]
    if seen == manifest["sha256"]:
        return [], on_host
    copy = f"{folder}/.verify-{stamp()}-{dump.name}"
    return [Script("backup folder on the host", f"umask 077 && mkdir -p {shlex.quote(folder)}"),
            Upload(f"upload {dump.name} to the host", str(dump), copy)], copy


# --- migrations ------------------------------------------------------------------------------

def _migrations_reader(host: Host, d: Db) -> dict[str, Any]:
    data = host.data
    known = host.get_fact(ReleaseMigrations,
                          path=f"{layout(data.app_deploy_to)['current']}/{data.app_migrations_dir}",
                          **as_user(host, data.app_user))
    applied = d.json(db.applied_migrations_sql(data.db_migrations_table))
    return {"table_exists": applied is not None, "release_files": known,
            **db.migration_status(applied, known)}


def migrations(loaded: LoadedInventory, options: Options, printer: Printer | None,
               request: DbRequest) -> RunResult:
    started, chosen = time.monotonic(), targets(loaded)
    values = read(loaded, chosen, _migrations_reader, needs_host=True)

    def describe(target: Target, value: dict[str, Any], result: HostResult) -> None:
        data = target.data
        table = data.db_migrations_table
        applied, pending, unknown = value["applied"], value["pending"], value["unknown"]
        if not value["release_files"]:
            note(result, printer, f"no migration files in current/{data.app_migrations_dir} "
                                  "(is a release deployed?)", "warning")
        if not value["table_exists"]:
            note(result, printer, f"no table {table}: no migration applied yet", "warning")
        else:
            latest = f" (latest {applied[-1]})" if applied else ""
            note(result, printer, f"applied: {len(applied)}{latest}")
        note(result, printer, "pending: " + (", ".join(pending) + " (deploy.py deploy applies "
                                             "them)" if pending else "none"),
             "warning" if pending else "ok")
        note(result, printer, "unknown to this release: " + (
            ", ".join(unknown) + " (applied by a newer release; rollback guard)" if unknown
            else "none"), "warning" if unknown else "ok")
        result.data.update(value)

    return _report(loaded, chosen, values, describe, printer, started)


RUNNERS: dict[str, Callable[..., RunResult]] = {
    "connections": connections,
    "slow-queries": slow_queries,
    "sizes": sizes,
    "index-usage": index_usage,
    "vacuum": vacuum,
    "backup": backup,
    "verify-backup": verify_backup,
    "migrations": migrations,
}


def run(loaded: LoadedInventory, options: Options, printer: Printer | None,
        request: DbRequest) -> RunResult:
    validate_request(request)
    result = RUNNERS[request.action](loaded, options, printer, request)
    result.extra["action"] = request.action
    return result
