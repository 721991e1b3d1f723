"""The database work of `db` (runbook section 4 guide 4, section 7): SQL and shell builders,
facts, and the PostgreSQL client on app hosts.

Every builder is pure. Scripts expect libpq's PG* variables in their environment and nothing
on their command line that is secret: `through_app_env` takes them (password included) from
the app's 0600 env file on the app host, the runbook's way in; with `db_access = "direct"`
the controller runs the same scripts with the variables in that one child's environment.
The password is never in argv (ps, sudo's journal), output, logs or any file but the env file.

Results come back as one line `__json__ <document>` that PostgreSQL builds itself (jsonb is
printed on one line), so no tabular output is parsed.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import apt

from operations.postgres import _sql_literal as sql_literal
from operations.privileges import as_root
from operations.release import with_app_env

q = shlex.quote

JSON_MARK = "__json__ "
NO_CLIENT = "__no_psql__"
PSQL = "psql -X -q -A -t -v ON_ERROR_STOP=1"
# libpq's variables from the app's env file (names as the app reads them, see
# operations/app.py backend_settings); `export` is a shell builtin: no value reaches an argv.
PG_FROM_APP_ENV = ('export PGHOST="$DB_HOST" PGPORT="$DB_PORT" PGDATABASE="$DB_NAME" '
                   'PGUSER="$DB_USER" PGPASSWORD="$DB_PASSWORD"')
# Our sessions are named (pg_stat_activity) and give up on an unreachable server.
CLIENT_SETTINGS = {"PGAPPNAME": "tpe-ops", "PGCONNECT_TIMEOUT": "10"}
# The manifest format written next to every dump.
MANIFEST_FORMAT = "tpe-ops-backup/1"
# A restore list line of an extension (or its comment): restored separately (see restore).
EXTENSION_ENTRY = r"^[0-9]+; [0-9]+ [0-9]+ (EXTENSION|COMMENT - EXTENSION) "


def sql_ident(name: str) -> str:
    """A possibly schema-qualified name ("schema.table") as quoted SQL identifiers."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def safe_name(text: str) -> str:
    """Lower-case letters, digits and _ only: file names and scratch database names."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "db"


# --- installing the client ------------------------------------------------------------------

def install_client() -> None:
    """psql, pg_dump and pg_restore on the app host (`db_client_install`). pg_dump refuses a
    server of a newer major version: set `db_client_package` to match the server's."""
    data = host.data
    if not data.db_client_install:
        return
    apt.packages(
        name=f"PostgreSQL client ({data.db_client_package}) for `db`",
        packages=[data.db_client_package],
        no_recommends=True,
        **as_root(host),
    )


# --- SQL (each builder returns one SQL expression of type jsonb) ----------------------------

# The app's tables: ordinary tables outside the system schemas, not owned by an extension.
APP_TABLES = (
    "c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname !~ '^pg_(toast|temp_)' AND NOT EXISTS (SELECT 1 FROM pg_depend d "
    "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"
)
FROM_APP_TABLES = (
    f"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {APP_TABLES}")
TABLE_NAME = "n.nspname || '.' || c.relname"


def dynamic_json(query: str) -> str:
    """The jsonb value of `query` (one row, one column), planned only when evaluated: inside
    a CASE, a table that does not exist is not an error. Through hex, so no XML escaping."""
    inner = f"SELECT encode(convert_to(({query})::text, 'UTF8'), 'hex') AS v"
    return (f"convert_from(decode((xpath('/row/v/text()', query_to_xml({sql_literal(inner)}, "
            "false, true, '')))[1]::text, 'hex'), 'UTF8')::jsonb")


def exact_counts_sql() -> str:
    """{"schema.table": count(*)} of every app table: exact, in the caller's snapshot
    (n_live_tup is an estimate; a backup's manifest and a restore check need exact counts)."""
    count = ("(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', "
             "n.nspname, c.relname), false, true, '')))[1]::text::bigint")
    return (f"(SELECT coalesce(jsonb_object_agg({TABLE_NAME}, {count}), '{{}}'::jsonb) "
            f"{FROM_APP_TABLES})")


def applied_migrations_sql(table: str) -> str:
    """The versions in the app's migrations table, sorted; JSON null if there is no table."""
    versions = ("SELECT coalesce(jsonb_agg(version::text ORDER BY version), '[]') "
                f"FROM {sql_ident(table)}")
    return (f"CASE WHEN to_regclass({sql_literal(sql_ident(table))}) IS NULL THEN 'null'::jsonb "
            f"ELSE {dynamic_json(versions)} END")


def latest_migration_sql(table: str) -> str:
    """The latest applied version (the migrator applies files in name order): text or null."""
    return f"(({applied_migrations_sql(table)}) -> -1)"


CONNECTIONS_SQL = (
    "jsonb_build_object('max_connections', current_setting('max_connections')::int, "
    "'server_connections', (SELECT count(*) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), "
    "'groups', (SELECT coalesce(jsonb_agg(to_jsonb(g) ORDER BY g.connections DESC, g.state), "
    "'[]') FROM (SELECT coalesce(state, 'unknown') AS state, "
    "coalesce(nullif(application_name, ''), '(none)') AS application, "
    "coalesce(usename::text, '') AS role, count(*) AS connections FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND datname = current_database() "
    "AND pid <> pg_backend_pid() GROUP BY 1, 2, 3) g))"
)

STATEMENTS_EXTENSION_SQL = (
    "(SELECT jsonb_build_object('schema', extnamespace::regnamespace::text, 'version', "
    "extversion) FROM pg_extension WHERE extname = 'pg_stat_statements')"
)


def slow_queries_sql(schema: str, threshold_ms: float, top: int) -> str:
    """pg_stat_statements of this database with a mean time above `threshold_ms`, slowest
    first; with how many statements are tracked and since when."""
    view = f"{sql_ident(schema)}.pg_stat_statements"
    info = f"{sql_ident(schema)}.pg_stat_statements_info"
    this_db = "s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    rows = (
        "SELECT s.queryid::text AS queryid, r.rolname AS role, s.calls, "
        "round(s.mean_exec_time::numeric, 2) AS mean_ms, "
        "round(s.total_exec_time::numeric, 2) AS total_ms, "
        "round(s.max_exec_time::numeric, 2) AS max_ms, s.rows, "
        "left(regexp_replace(s.query, '\\s+', ' ', 'g'), 500) AS query "
        f"FROM {view} s LEFT JOIN pg_roles r ON r.oid = s.userid WHERE {this_db} "
        f"AND s.mean_exec_time > {float(threshold_ms)} "
        f"ORDER BY s.mean_exec_time DESC LIMIT {int(top)}"
    )
    return (
        "jsonb_build_object("
        f"'queries', (SELECT coalesce(jsonb_agg(to_jsonb(q)), '[]') FROM ({rows}) q), "
        f"'tracked', (SELECT count(*) FROM {view} s WHERE {this_db}), "
        f"'since', CASE WHEN to_regclass({sql_literal(info)}) IS NULL THEN NULL "  # < PG 14
        f"ELSE {dynamic_json(f'SELECT to_jsonb(stats_reset) FROM {info}')} END)"
    )


SIZES_SQL = (
    "jsonb_build_object('database', current_database(), "
    "'database_bytes', pg_database_size(current_database()), "
    "'tables', (SELECT coalesce(jsonb_agg(jsonb_build_object("
    f"'table', {TABLE_NAME}, 'total_bytes', pg_total_relation_size(c.oid), "
    "'table_bytes', pg_table_size(c.oid), 'index_bytes', pg_indexes_size(c.oid), "
    # reltuples is the planner's estimate (-1: never analyzed; then the statistics' one).
    "'row_estimate', CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint "
    "ELSE coalesce(s.n_live_tup, 0) END) "
    "ORDER BY pg_total_relation_size(c.oid) DESC), '[]') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE {APP_TABLES}))"
)

INDEX_USAGE_SQL = (
    "jsonb_build_object('stats_reset', (SELECT stats_reset FROM pg_stat_database "
    "WHERE datname = current_database()), "
    "'indexes', (SELECT coalesce(jsonb_agg(jsonb_build_object("
    "'index', s.schemaname || '.' || s.indexrelname, 'table', s.schemaname || '.' || s.relname, "
    "'scans', s.idx_scan, 'bytes', pg_relation_size(s.indexrelid), "
    "'primary', i.indisprimary, 'unique', i.indisunique, "
    # An index backing a primary key, unique or exclusion constraint enforces it.
    "'constraint', (SELECT k.contype::text FROM pg_constraint k WHERE k.conindid = s.indexrelid "
    "AND k.conrelid = s.relid AND k.contype IN ('p', 'u', 'x') LIMIT 1), "
    "'definition', pg_get_indexdef(s.indexrelid)) "
    "ORDER BY s.idx_scan, pg_relation_size(s.indexrelid) DESC), '[]') "
    "FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid))"
)

TABLE_MAINTENANCE_SQL = (
    "(SELECT coalesce(jsonb_agg(jsonb_build_object("
    f"'table', {TABLE_NAME}, 'schema', n.nspname, 'name', c.relname, "
    "'owner', pg_get_userbyid(c.relowner), 'can_vacuum', pg_has_role(c.relowner, 'USAGE'), "
    "'last_vacuum', s.last_vacuum, 'last_autovacuum', s.last_autovacuum, "
    "'last_analyze', s.last_analyze, 'last_autoanalyze', s.last_autoanalyze, "
    "'dead_rows', s.n_dead_tup, 'live_rows', s.n_live_tup) ORDER BY n.nspname, c.relname), "
    "'[]') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE {APP_TABLES})"
)


def vacuum_sql(tables: list[tuple[str, str]]) -> str:
    """One VACUUM (ANALYZE) of the given (schema, name) tables (PostgreSQL 11+)."""
    names = ", ".join(sql_ident(schema) + "." + sql_ident(name) for schema, name in tables)
    return f"VACUUM (ANALYZE) {names}"


# --- commands --------------------------------------------------------------------------------

def psql_json(sql: str) -> str:
    """psql printing `__json__ <document>` for one jsonb expression; errors on stdout too."""
    query = f"SELECT {sql_literal(JSON_MARK)} || coalesce(({sql})::text, 'null')"
    return f"{PSQL} -c {q(query)} 2>&1"


def through_app_env(shared: str, command: str) -> str:
    """`command` with libpq's variables from the app's env file, in this process only."""
    settings = " ".join(f"{k}={v}" for k, v in CLIENT_SETTINGS.items())
    return with_app_env(shared, shared, f"{PG_FROM_APP_ENV} {settings} && {command}")


def client_check(*tools: str) -> str:
    """Fail with the fix when the PostgreSQL client is missing."""
    names = " ".join(tools)
    return (f"for t in {names}; do command -v $t >/dev/null 2>&1 || {{ echo \"$t not found: "
            "install the PostgreSQL client (provision with db_client_install = True, or "
            "apt-get install postgresql-client)\" >&2; exit 127; }; done")


def parse_json_output(lines: list[str]) -> dict[str, Any]:
    """{"value": document} from psql_json's output, or {"error": what psql said}."""
    for line in lines:
        if line.startswith(JSON_MARK):
            return {"value": json.loads(line[len(JSON_MARK):]), "error": None}
    if any(line.strip() == NO_CLIENT for line in lines):
        return {"value": None, "error": "psql not found on the app host: provision it "
                                        "(db_client_install = True) or set db_access = \"direct\""}
    text = " ".join(line.strip() for line in lines if line.strip())
    return {"value": None, "error": (text or "no answer from psql")[:400]}


class DbJson(FactBase):
    """One jsonb expression evaluated in the app's database through the app host (psql, with
    the app's env file): {"value": document} or {"error": text}."""

    def command(self, shared: str, sql: str) -> str:
        return (f"{{ command -v psql >/dev/null 2>&1 || {{ echo {NO_CLIENT}; exit 0; }}; "
                f"{through_app_env(shared, psql_json(sql))}; }} 2>&1 || true")

    @staticmethod
    def default() -> dict[str, Any]:
        return {"value": None, "error": "no answer from the database check"}

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_json_output(output)


class FileDigest(FactBase):
    """sha256 of a file on the host, or None if there is no such file."""

    def command(self, path: str) -> str:
        return f"sha256sum {q(path)} 2>/dev/null | cut -c1-64 || true"

    def process(self, output: list[str]) -> str | None:
        digest = output[0].strip() if output else ""
        return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


SHA256 = '{ sha256sum "$1" 2>/dev/null || shasum -a 256 "$1"; } | cut -c1-64'


def backup_script(directory: str, stem: str, migrations_table: str) -> str:
    """`pg_dump -Fc` into DIR/STEM.dump and its manifest DIR/STEM.json, consistent with it:
    one REPEATABLE READ transaction exports its snapshot, pg_dump dumps that snapshot, and
    the same transaction then counts every table exactly. The last line of output is the
    manifest (`__json__ {...}`). A failed run leaves no file behind."""
    counts, latest = exact_counts_sql(), latest_migration_sql(migrations_table)
    return f"""set -eu
umask 077
{client_check("psql", "pg_dump")}
sha256() {{ {SHA256}; }}
dir={q(directory)}
stem={q(stem)}
mkdir -p "$dir"
if [ -e "$dir/$stem.dump" ] || [ -e "$dir/$stem.dump.partial" ]; then
  echo "$dir/$stem.dump already exists: another backup started in the same second" >&2
  exit 1
fi
work=$(mktemp -d)
holder=""
cleanup() {{
  status=$?
  exec 3>&- 2>/dev/null || true
  if [ -n "$holder" ]; then wait "$holder" 2>/dev/null || true; fi
  rm -rf "$work" "$dir/$stem.dump.partial" "$dir/$stem.json.partial"
  exit $status
}}
trap cleanup EXIT
trap 'exit 130' HUP INT TERM
# Writing to a holder that died must fail (and be reported), not kill us silently.
trap '' PIPE
mkfifo "$work/sql"
{PSQL} <"$work/sql" >"$work/out" 2>"$work/err" &
holder=$!
exec 3>"$work/sql"
printf '%s\\n' "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;" \\
  "SELECT 'snapshot ' || pg_export_snapshot();" >&3 || true
tries=0
until grep -q '^snapshot ' "$work/out"; do
  if ! kill -0 "$holder" 2>/dev/null || [ "$tries" -ge 300 ]; then
    echo "cannot open the snapshot transaction: $(tail -n 2 "$work/err" | tr '\\n' ' ')" >&2
    exit 1
  fi
  tries=$((tries + 1))
  sleep 0.1
done
snapshot=$(sed -n 's/^snapshot //p' "$work/out")
echo "snapshot $snapshot exported"
pg_dump -Fc --snapshot="$snapshot" -f "$dir/$stem.dump.partial"
bytes=$(wc -c <"$dir/$stem.dump.partial" | tr -d ' ')
sha=$(sha256 "$dir/$stem.dump.partial")
client=$(pg_dump --version | tr -cd 'A-Za-z0-9 ._()+~-')
echo "dumped $bytes bytes, sha256 $sha"
if cat >&3 <<SQL
SELECT '{JSON_MARK}' || jsonb_build_object('format', '{MANIFEST_FORMAT}', 'file', '$stem.dump',
  'bytes', $bytes, 'sha256', '$sha', 'database', current_database(),
  'time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
  'server_version', current_setting('server_version'), 'pg_dump', '$client',
  'snapshot', '$snapshot', 'migrations_table', {sql_literal(migrations_table)},
  'migration', {latest}, 'row_counts', {counts})::text;
COMMIT;
SQL
then :; else echo "the snapshot transaction ended early" >&2; fi
exec 3>&-
if ! wait "$holder"; then
  holder=""
  echo "row counts failed: $(tail -n 2 "$work/err" | tr '\\n' ' ')" >&2
  exit 1
fi
holder=""
sed -n 's/^{JSON_MARK}//p' "$work/out" >"$dir/$stem.json.partial"
if [ ! -s "$dir/$stem.json.partial" ]; then
  echo "no manifest came back from the database" >&2
  exit 1
fi
mv "$dir/$stem.dump.partial" "$dir/$stem.dump"
mv "$dir/$stem.json.partial" "$dir/$stem.json"
echo "{JSON_MARK}$(cat "$dir/$stem.json")"
echo "$stem.dump: $bytes bytes"
"""


def restore_script(dump: str, sha256: str, scratch: str, migrations_table: str,
                   keep: bool = False, remove_dump: bool = False) -> str:
    """Restore DUMP into a new database SCRATCH and print its exact row counts and latest
    migration (`__json__ {...}`, the last JSON line). The dump's sha256 is checked first;
    a truncated or corrupted dump fails with pg_restore's reason. SCRATCH is dropped on every
    exit path unless `keep`. Extensions are created first where the role may (a monitoring
    extension such as pg_stat_statements needs a superuser: it is skipped, with a note)."""
    db = sql_ident(scratch)
    counts, latest = exact_counts_sql(), latest_migration_sql(migrations_table)
    drop = q(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    result = (f"SELECT '{JSON_MARK}' || jsonb_build_object('row_counts', {counts}, "
              f"'migration', {latest})::text")
    return f"""set -eu
umask 077
{client_check("psql", "pg_restore")}
sha256() {{ {SHA256}; }}
dump={q(dump)}
scratch={q(scratch)}
work=$(mktemp -d)
created=""
cleanup() {{
  status=$?
  if [ -n "$created" ] && [ {int(keep)} = 0 ]; then
    if {PSQL} -c {drop} >/dev/null 2>"$work/drop"; then echo "dropped scratch database $scratch"
    else echo "could not drop $scratch: $(head -n 1 "$work/drop")" >&2; status=1; fi
  fi
  if [ {int(remove_dump)} = 1 ]; then rm -f "$dump"; fi
  rm -rf "$work"
  exit $status
}}
trap cleanup EXIT
trap 'exit 130' HUP INT TERM
actual=$(sha256 "$dump" 2>/dev/null || true)
if [ "$actual" != {q(sha256)} ]; then
  echo "$dump does not match its manifest (sha256 ${{actual:-none}}): truncated or corrupted" >&2
  exit 1
fi
if ! pg_restore -l "$dump" >"$work/list" 2>"$work/err"; then
  echo "cannot read the dump (truncated or corrupted): $(grep -m 1 . "$work/err")" >&2
  exit 1
fi
{PSQL} -c {q(f"CREATE DATABASE {db}")} >/dev/null
created=1
echo "created scratch database $scratch"
extensions=$(sed -n 's/^[0-9]*; [0-9]* [0-9]* EXTENSION - \\([A-Za-z0-9_-]*\\).*/\\1/p' \\
  "$work/list")
for ext in $extensions; do
  if {PSQL} -d "$scratch" -c "CREATE EXTENSION IF NOT EXISTS \\"$ext\\"" >/dev/null 2>&1; then
    echo "extension $ext created"
  else
    echo "extension $ext not created (it needs a superuser): its objects are not restored"
  fi
done
grep -Ev {q(EXTENSION_ENTRY)} "$work/list" >"$work/restore.list" || true
started=$(date +%s)
if ! pg_restore --exit-on-error --no-owner --no-privileges -L "$work/restore.list" \\
    -d "$scratch" "$dump" 2>"$work/err"; then
  echo "restore failed (truncated or corrupted dump?): $(grep -m 1 . "$work/err")" >&2
  exit 1
fi
echo "restored in $(( $(date +%s) - started )) s"
{PSQL} -d "$scratch" -c {q(result)}
echo "rows counted in $scratch"
"""


def prune_backups_command(directory: str, prefix: str, keep: int) -> str:
    """Keep the newest `keep` backups (dump + manifest) of `prefix` in `directory`; remove
    partial files a crash left more than a day ago."""
    pattern = q(prefix) + "-*.json"
    return (
        f"cd {q(directory)} 2>/dev/null || exit 0; "
        f"ls -1 -- {pattern} 2>/dev/null | sort | head -n -{int(keep)} | "
        "while read -r m; do rm -f -- \"$m\" \"${m%.json}.dump\"; "
        "echo \"removed ${m%.json}.dump\"; done; "
        "find . -maxdepth 1 -name '*.partial' -mmin +1440 -delete"
    )


# --- pure judgement of what came back ---------------------------------------------------------

def migration_status(applied: list[str] | None, known: list[str]) -> dict[str, list[str]]:
    """Applied versions vs the release's migration files: applied, pending (files not
    applied) and unknown (applied, not in this release: a newer release applied them)."""
    done = set(applied or [])
    return {"applied": sorted(done), "pending": sorted(set(known) - done),
            "unknown": sorted(done - set(known))}


def compare_restore(manifest: dict[str, Any], restored: dict[str, Any]) -> list[str]:
    """What differs between a backup's manifest and its restore (empty: it is verified)."""
    problems = []
    expected, got = manifest.get("row_counts") or {}, restored.get("row_counts") or {}
    for table in sorted(set(expected) | set(got)):
        if table not in got:
            problems.append(f"table {table} missing from the restore")
        elif table not in expected:
            problems.append(f"table {table} restored but not in the manifest")
        elif expected[table] != got[table]:
            problems.append(f"{table}: {got[table]} rows restored, {expected[table]} in the "
                            "manifest")
    if manifest.get("migration") != restored.get("migration"):
        problems.append(f"migration version {restored.get('migration')!r} restored, "
                        f"{manifest.get('migration')!r} in the manifest")
    return problems


def index_advice(index: dict[str, Any], rarely_used_scans: int) -> tuple[str, str]:
    """(level, advice) for one index: unused (0 scans) or rarely used ones are removal
    candidates, except those enforcing a primary key / unique / exclusion constraint."""
    scans = index["scans"]
    enforces = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint"}.get(
        index.get("constraint") or "", "unique index" if index.get("unique") else "")
    if scans >= rarely_used_scans:
        return "ok", "used"
    usage = "unused" if scans == 0 else "rarely used"
    if enforces:
        return "ok", f"{usage}, keep: it enforces a {enforces}"
    return "warning", f"{usage}: candidate for removal"


def size_growth(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any] | None:
    """Growth between two size samples ({"time", "database_bytes", "tables": {name: bytes}})."""
    if not previous:
        return None
    days = max((current["time"] - previous["time"]) / 86400, 0.0)
    before, after = previous["database_bytes"], current["database_bytes"]
    tables = {name: size - previous["tables"].get(name, 0)
              for name, size in current["tables"].items()
              if size != previous["tables"].get(name, 0)}
    return {
        "since": previous["time"], "days": round(days, 4), "bytes": after - before,
        "pct": round((after - before) / before * 100, 2) if before else None,
        "bytes_per_day": round((after - before) / days) if days >= 1 / 24 else None,
        "tables": dict(sorted(tables.items(), key=lambda item: -abs(item[1]))),
        "new_tables": sorted(set(current["tables"]) - set(previous["tables"])),
        "dropped_tables": sorted(set(previous["tables"]) - set(current["tables"])),
    }


def human_bytes(count: float, signed: bool = False) -> str:
    sign = "-" if count < 0 else "+" if signed and count > 0 else ""
    value = abs(float(count))
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
