"""`db` against the real database (the controller's PostgreSQL 15 with pg_stat_statements)
through a real app host (`served_host`), and directly from the controller.

Test data is created as the app's role (as the app would), and removed at the end: the
served host is shared with other modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.harness.postgres import psql
from tests.helpers import run_cli

pytestmark = pytest.mark.hosts
DEPLOY_TO = "/home/ubuntu/The-Power100-Experience"
SEEDED = 3000
UNUSED_INDEX = "tpe_test_unused_idx"
HOLDER, WRITER = "tpe-test-holder", "tpe-test-writer"
WRITES = "tpe_test_writes"


def as_app(postgres_db, sql: str) -> str:
    """SQL as the app's role (objects it creates belong to the app, as in production)."""
    return postgres_db.psql(f'SET ROLE "{postgres_db.user}";\n{sql}')


def count(postgres_db, table: str) -> int:
    return int(postgres_db.psql(f"SELECT count(*) FROM {table};").strip())


@pytest.fixture(scope="module")
def seeded(served_host, postgres_db):
    """Rows in the app's tables, an index nothing uses, a table for concurrent writes."""
    as_app(postgres_db, f"""
        INSERT INTO contractors (name, email)
            SELECT 'seed ' || g, 'seed' || g || '@example.test' FROM generate_series(1, {SEEDED}) g;
        INSERT INTO ai_concierge_sessions (contractor_id, state)
            SELECT id, 'seeded' FROM contractors WHERE name LIKE 'seed %';
        CREATE INDEX {UNUSED_INDEX} ON contractors (email);
        CREATE TABLE {WRITES} (id serial PRIMARY KEY, at timestamptz DEFAULT now());
        -- The vacuum test counts dead rows: autovacuum must not remove them first.
        ALTER TABLE contractors SET (autovacuum_enabled = false);
        ANALYZE;
    """)
    try:
        yield served_host
    finally:
        as_app(postgres_db, f"""
            DELETE FROM ai_concierge_sessions WHERE state = 'seeded';
            DELETE FROM contractors WHERE name LIKE 'seed %';
            DROP INDEX IF EXISTS {UNUSED_INDEX};
            DROP TABLE IF EXISTS {WRITES};
            ALTER TABLE contractors RESET (autovacuum_enabled);
        """)


@pytest.fixture(scope="module")
def backups(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("db-backups")


@pytest.fixture(scope="module")
def inventory(seeded, make_inventory, backups) -> str:
    host = seeded[0]
    return str(make_inventory([host], "db", db_backup_local_dir=str(backups)))


@pytest.fixture(scope="module")
def env(seeded) -> dict:
    return seeded[2]


def db_cli(inventory: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_cli("db", *args, "-i", inventory, env=env)


def db_json(inventory: str, env: dict, *args: str) -> tuple[int, dict, str]:
    done = db_cli(inventory, env, *args, "--json")
    try:
        payload = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"no JSON (exit {done.returncode}):\n{done.stdout}\n"
                             f"{done.stderr}") from error
    return done.returncode, payload, done.stdout + done.stderr


def only_host(payload: dict) -> dict:
    (host,) = payload["hosts"].values()
    return host


def scratch_databases(postgres_db) -> list[str]:
    return postgres_db.psql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{postgres_db.name}\\_verify\\_%';"
    ).split()


def end_sessions(postgres_db, application: str, procs: list[subprocess.Popen]) -> None:
    """End test sessions on the server too: a backend in pg_sleep or a DO loop runs on after
    its client is gone, holding back what VACUUM may remove."""
    postgres_db.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE application_name = '{application}';")
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


class ProcessWatch:
    """`ps -eo args` polled on the controller (which also sees the hosts' processes) and on
    the host over SSH, while a command runs."""

    def __init__(self, host=None) -> None:
        self.host = host
        self.samples: list[str] = []
        self.host_samples: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _poll_here(self) -> None:
        while not self._stop.is_set():
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            self.samples.append(ps.stdout)
            time.sleep(0.02)

    def _poll_host(self) -> None:
        while not self._stop.is_set():
            self.host_samples.append(self.host.ssh("ps -eo args", check=False).stdout)

    def __enter__(self) -> ProcessWatch:
        targets = [self._poll_here] + ([self._poll_host] if self.host else [])
        self._threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def saw(self, text: str) -> bool:
        return any(text in sample for sample in self.samples)

    def leaked(self, secret: str) -> bool:
        return any(secret in sample for sample in self.samples + self.host_samples)


# --- read-only reports ------------------------------------------------------------------------

def test_slow_queries_show_a_slow_query_run_on_purpose(inventory, env, postgres_db, tmp_path):
    passfile = postgres_db.write_pgpass(tmp_path / "pgpass")
    subprocess.run(["psql", "-Xqc", "SELECT pg_sleep(0.2)"], check=True,
                   env={**os.environ, **postgres_db.libpq_env(passfile)},
                   stdout=subprocess.DEVNULL)
    code, payload, text = db_json(inventory, env, "slow-queries")
    assert code == 0, text
    host = only_host(payload)
    slow = [q for q in host["queries"] if "pg_sleep" in q["query"]]
    assert slow and slow[0]["mean_ms"] >= 200 and slow[0]["calls"] >= 1, host["queries"]
    assert slow[0]["role"] == postgres_db.user and host["threshold_ms"] == 100
    assert all(q["mean_ms"] > 100 for q in host["queries"])
    done = db_cli(inventory, env, "slow-queries", "--threshold-ms", "150", "--top", "3")
    assert done.returncode == 0 and "pg_sleep" in done.stdout, done.stdout + done.stderr
    assert postgres_db.password not in text + done.stdout + done.stderr


def test_slow_queries_without_the_extension_say_how_to_fix_it(inventory, env, postgres_db):
    postgres_db.psql("DROP EXTENSION pg_stat_statements;")
    try:
        done = db_cli(inventory, env, "slow-queries")
    finally:
        postgres_db.psql("CREATE EXTENSION pg_stat_statements;")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pg_stat_statements is not installed" in done.stdout
    assert "shared_preload_libraries" in done.stdout and "CREATE EXTENSION" in done.stdout


def test_connections_by_state_and_application_against_the_pool(inventory, env, postgres_db,
                                                                tmp_path):
    passfile = postgres_db.write_pgpass(tmp_path / "pgpass")
    holder_env = {**os.environ, **postgres_db.libpq_env(passfile), "PGAPPNAME": HOLDER}
    holders = [subprocess.Popen(["psql", "-Xqc", "SELECT pg_sleep(30)"], env=holder_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        time.sleep(1)
        code, payload, text = db_json(inventory, env, "connections")
    finally:
        end_sessions(postgres_db, HOLDER, holders)
    assert code == 0, text
    host = only_host(payload)
    held = [g for g in host["groups"] if g["application"] == HOLDER]
    assert held == [{"state": "active", "application": HOLDER,
                     "role": postgres_db.user, "connections": 2}], host["groups"]
    assert all(g["application"] != "tpe-ops" for g in host["groups"])  # ours is not counted
    assert host["connections"] == sum(g["connections"] for g in host["groups"]) >= 2
    assert host["pool_size"] == 20 and host["finding"]["check"] == "db:connections"
    assert host["max_connections"] >= host["server_connections"] >= host["connections"]


def test_sizes_report_real_figures_and_growth_since_the_last_run(inventory, env, postgres_db):
    code, first, text = db_json(inventory, env, "sizes")
    assert code == 0, text
    tables = {t["table"]: t for t in only_host(first)["tables"]}
    contractors = tables["public.contractors"]
    assert contractors["row_estimate"] >= SEEDED
    assert contractors["total_bytes"] == contractors["table_bytes"] + contractors["index_bytes"]
    assert contractors["index_bytes"] > 0 and only_host(first)["database_bytes"] > 0
    as_app(postgres_db, "INSERT INTO contractors (name, email) SELECT 'seed more ' || g, "
                        "repeat('x', 200) FROM generate_series(1, 2000) g;")
    code, second, text = db_json(inventory, env, "sizes")
    assert code == 0, text
    growth = only_host(second)["growth"]
    assert growth["bytes"] > 0 and growth["tables"]["public.contractors"] > 100_000, growth
    history = Path(only_host(second)["history"])
    assert history.is_relative_to(Path(env["TPE_STATE_DIR"]))
    assert len(history.read_text().splitlines()) >= 2
    done = db_cli(inventory, env, "sizes")
    assert "growth since" in done.stdout and "public.contractors:" in done.stdout


def test_index_usage_names_the_unused_index_and_keeps_primary_keys(inventory, env):
    code, payload, text = db_json(inventory, env, "index-usage")
    assert code == 0, text
    indexes = {i["index"]: i for i in only_host(payload)["indexes"]}
    unused = indexes[f"public.{UNUSED_INDEX}"]
    assert unused["scans"] == 0 and unused["bytes"] > 0
    assert unused["level"] == "warning" and "candidate for removal" in unused["advice"]
    keys = [i for i in indexes.values() if i["constraint"] == "p"]
    assert {"public.contractors_pkey", "public.events_pkey"} <= {i["index"] for i in keys}
    assert all(i["level"] == "ok" for i in keys)
    assert any("keep: it enforces a primary key" in i["advice"] for i in keys)


def test_migrations_applied_pending_and_unknown(inventory, env, postgres_db):
    code, payload, text = db_json(inventory, env, "migrations")
    assert code == 0, text
    host = only_host(payload)
    assert host["applied"] == ["001_init", "002_events"] == host["release_files"]
    assert host["pending"] == [] and host["unknown"] == []
    as_app(postgres_db, "INSERT INTO schema_migrations (version) VALUES ('999_from_the_future');"
                        "DELETE FROM schema_migrations WHERE version = '002_events';")
    try:
        code, payload, text = db_json(inventory, env, "migrations")
    finally:
        as_app(postgres_db, "DELETE FROM schema_migrations WHERE version = '999_from_the_future';"
                            "INSERT INTO schema_migrations (version) VALUES ('002_events');")
    assert code == 0, text
    host = only_host(payload)
    assert host["pending"] == ["002_events"] and host["unknown"] == ["999_from_the_future"]
    levels = {s["name"].split(":")[0]: s["status"] for s in host["steps"]}
    assert levels["pending"] == "warning" and levels["unknown to this release"] == "warning"


# --- vacuum ----------------------------------------------------------------------------------

def test_vacuum_reports_last_vacuum_before_and_after(inventory, env, postgres_db):
    as_app(postgres_db, "DELETE FROM contractors WHERE name LIKE 'seed more %';")
    code, payload, text = db_json(inventory, env, "vacuum")
    assert code == 0, text
    host = only_host(payload)
    before = {t["table"]: t for t in host["before"]}
    after = {t["table"]: t for t in host["after"]}
    assert before["public.contractors"]["dead_rows"] >= 2000
    assert after["public.contractors"]["dead_rows"] == 0
    assert after["public.contractors"]["last_vacuum"] != before["public.contractors"]["last_vacuum"]
    assert all(t["last_vacuum"] and t["last_analyze"] for t in after.values() if t["can_vacuum"])
    assert any(s["name"].startswith("VACUUM (ANALYZE)") and s["status"] == "changed"
               for s in host["steps"])
    assert any(s["name"].startswith("public.contractors: last vacuum") for s in host["steps"])


def test_vacuum_on_production_asks_first(seeded, make_inventory, env):
    production = str(make_inventory([seeded[0]], "db-production",
                                    deploy_environment="production"))
    done = db_cli(production, env, "vacuum")
    assert done.returncode == 3 and "pass --yes" in done.stderr, done.stdout + done.stderr
    dry = db_cli(production, env, "vacuum", "--dry")
    assert dry.returncode == 0 and "would-change" in dry.stdout, dry.stdout + dry.stderr


# --- backup and verify-backup ------------------------------------------------------------------

def start_writer(postgres_db, tmp_path: Path) -> subprocess.Popen:
    """Commits an insert every few ms (as the app) until stop_writer; returns once it writes."""
    passfile = postgres_db.write_pgpass(tmp_path / "writer-pgpass")
    sql = (f"DO $$ BEGIN FOR i IN 1..1000000 LOOP INSERT INTO {WRITES} DEFAULT VALUES; COMMIT; "
           "PERFORM pg_sleep(0.003); END LOOP; END $$;")
    proc = subprocess.Popen(["psql", "-Xqc", sql], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, **postgres_db.libpq_env(passfile),
                                 "PGAPPNAME": WRITER})
    deadline = time.monotonic() + 30
    while count(postgres_db, WRITES) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc




def restore_counts(postgres_db, dump: Path, tables: list[str]) -> dict[str, int]:
    """An independent restore (pg_restore as the superuser) into a scratch database."""
    scratch = f"{postgres_db.name}_check"
    postgres_db.psql(f'CREATE DATABASE "{scratch}";')
    try:
        with dump.open("rb") as stdin:
            subprocess.run(["runuser", "-u", "postgres", "--", "pg_restore", "--exit-on-error",
                            "--no-owner", "-d", scratch], stdin=stdin, check=True,
                           capture_output=True)
        return {t: int(psql(f"SELECT count(*) FROM {t};", db=scratch).strip()) for t in tables}
    finally:
        postgres_db.psql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE);')


def truncated_copy(dump: Path, directory: Path, name: str, consistent: bool) -> Path:
    """60 % of a dump with its manifest; `consistent`: the manifest describes the truncated
    file (as if pg_dump had been cut short), so only a real restore can tell."""
    copy = directory / f"{name}.dump"
    data = dump.read_bytes()
    copy.write_bytes(data[: len(data) * 6 // 10])
    manifest = json.loads(dump.with_suffix(".json").read_text())
    if consistent:
        manifest.update(sha256=hashlib.sha256(copy.read_bytes()).hexdigest(),
                        bytes=copy.stat().st_size)
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    return copy


def test_backup_is_consistent_restores_with_equal_counts_and_verifies(
        inventory, env, seeded, postgres_db, backups, tmp_path):
    host = seeded[0]
    password = postgres_db.password
    writer = start_writer(postgres_db, tmp_path)
    try:
        with ProcessWatch(host) as watch:
            code, payload, text = db_json(inventory, env, "backup")
        time.sleep(0.3)  # more writes after the dump
    finally:
        end_sessions(postgres_db, WRITER, [writer])
    assert code == 0, text
    assert watch.saw("pg_dump -Fc --snapshot") and watch.host_samples
    assert not watch.leaked(password)
    assert password not in text
    data = only_host(payload)
    manifest, local = data["manifest"], Path(data["file"])

    # Saved on the host (0700 folder) and copied here (0600), with the manifest next to it.
    on_host = host.root / data["host_file"].lstrip("/")
    assert on_host.is_file() and on_host.with_suffix(".json").is_file()
    assert oct(on_host.parent.stat().st_mode & 0o777) == "0o700"
    assert local.parent.parent == backups and oct(local.stat().st_mode & 0o777) == "0o600"
    saved = json.loads(local.with_suffix(".json").read_text())
    assert saved["sha256"] == manifest["sha256"] == json.loads(
        on_host.with_suffix(".json").read_text())["sha256"]
    assert local.stat().st_size == manifest["bytes"] == on_host.stat().st_size
    assert manifest["database"] == postgres_db.name and manifest["migration"] == "002_events"

    # Exact counts of the dump's own snapshot: writes went on during the dump, yet the
    # manifest and an independent restore agree table by table.
    counts = manifest["row_counts"]
    assert 0 < counts[f"public.{WRITES}"] < count(postgres_db, WRITES)
    assert counts["public.contractors"] == count(postgres_db, "contractors")
    assert restore_counts(postgres_db, local, list(counts)) == counts

    with ProcessWatch(host) as watch:
        code, payload, text = db_json(inventory, env, "verify-backup")
    assert code == 0, text
    verify = only_host(payload)["verify"]
    assert verify["ok"] and verify["problems"] == [] and not verify["kept"]
    assert verify["restored"]["row_counts"] == counts
    assert watch.saw("pg_restore") and not watch.leaked(password) and password not in text
    assert scratch_databases(postgres_db) == []

    # A truncated copy: its sha256 no longer matches the manifest.
    bad = truncated_copy(local, tmp_path, "truncated", consistent=False)
    done = db_cli(inventory, env, "verify-backup", str(bad))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not match its manifest" in done.stdout and "truncated" in done.stdout

    # Truncated with a manifest that matches it: the restore itself must fail, clearly.
    bad = truncated_copy(local, tmp_path, "cut-short", consistent=True)
    done = db_cli(inventory, env, "verify-backup", str(bad))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "truncated or corrupted" in done.stdout
    assert "pg_restore: error" in done.stdout
    assert scratch_databases(postgres_db) == []
    assert not list(on_host.parent.glob(".verify-*"))  # the uploaded copy is removed
    assert password not in done.stdout + done.stderr

    journal = host.ssh("sudo journalctl --no-pager -q -o cat", check=False).stdout
    assert journal and password not in journal


def test_backup_retention_on_the_host(inventory, env, seeded, make_inventory, backups):
    host = seeded[0]
    keep_one = str(make_inventory([host], "db-keep-one", db_backup_local_dir=str(backups),
                                  db_backup_keep=1, db_backup_local_keep=1))
    code, payload, text = db_json(keep_one, env, "backup")
    assert code == 0, text
    folder = host.root / f"{DEPLOY_TO}/shared/backups".lstrip("/")
    assert len(list(folder.glob("*.dump"))) == 1 and len(list(folder.glob("*.json"))) == 1
    local = Path(only_host(payload)["file"])
    assert sorted(p.name for p in local.parent.iterdir()) == [local.name,
                                                             local.with_suffix(".json").name]


def test_direct_access_from_the_controller(seeded, make_inventory, env, postgres_db, tmp_path):
    direct = str(make_inventory([seeded[0]], "db-direct", db_access="direct",
                                db_backup_local_dir=str(tmp_path / "direct-backups")))
    code, payload, text = db_json(direct, env, "connections")
    assert code == 0 and only_host(payload)["access"] == "direct", text
    with ProcessWatch() as watch:
        code, payload, text = db_json(direct, env, "backup")
        assert code == 0, text
        local = Path(only_host(payload)["file"])
        done = db_cli(direct, env, "verify-backup", str(local))
    assert done.returncode == 0 and "match the manifest" in done.stdout, done.stdout + done.stderr
    assert local.is_relative_to(tmp_path) and only_host(payload)["host_file"] is None
    assert watch.saw("pg_dump -Fc --snapshot") and not watch.leaked(postgres_db.password)
    assert postgres_db.password not in text + done.stdout + done.stderr
    assert scratch_databases(postgres_db) == []


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_exits_2_and_changes_nothing(inventory, env, backups):
    before = sorted(backups.rglob("*"))
    unknown = db_cli(inventory, env, "sizes", "--bogus")
    assert unknown.returncode == 2 and "unrecognized arguments: --bogus" in unknown.stderr
    action = db_cli(inventory, env, "explode")
    assert action.returncode == 2 and "invalid choice: 'explode'" in action.stderr
    misplaced = db_cli(inventory, env, "sizes", "some.dump")
    assert misplaced.returncode == 2 and "FILE only applies to verify-backup" in misplaced.stderr
    missing = db_cli(inventory, env, "verify-backup", "/nonexistent/x.dump")
    assert missing.returncode == 2 and "no such backup file" in missing.stderr
    no_secret = {k: v for k, v in env.items() if k != "TPE_DB_PASSWORD"}
    secret = run_cli("db", "backup", "-i", inventory, env=no_secret)
    assert secret.returncode == 2, secret.stdout + secret.stderr
    assert "missing secret(s): TPE_DB_PASSWORD" in secret.stderr and "hint:" in secret.stderr
    assert sorted(backups.rglob("*")) == before
