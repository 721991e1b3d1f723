"""`drill` and `drill rollback` against real hosts and the real PostgreSQL.

The source ("production") is the served host with its database (seeded here, as the app's
role); the drill gets a fresh bare host and a scratch database on the same server. The drill
provisions the fresh host from zero, restores a real backup, deploys the source's known-good
release on it, measures, and tears everything down. `drill rollback` deploys a failing build
to the served host and lets the release engine roll it back (the host ends where it was).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json
from tests.hosts.conftest import DEPLOY_TO, SecretEnv, http_code, read_layout, release_file

pytestmark = pytest.mark.hosts
SEEDED = 400
SEED = "drill seed"
OUTPUTS: list[str] = []  # everything the commands printed, checked for the password


class SecretWatch:
    """`ps -eo args` on the controller (it sees the test hosts' processes too) while a
    command runs: was the secret ever on a command line?"""

    def __init__(self, secret: str) -> None:
        self.secret, self.samples, self.seen = secret, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
            self.samples += 1
            self.seen = self.seen or self.secret in ps.stdout
            time.sleep(0.1)

    def __enter__(self) -> SecretWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def as_app(postgres_db, sql: str) -> str:
    return postgres_db.psql(f'SET ROLE "{postgres_db.user}";\n{sql}')


def counts(postgres_db) -> dict[str, int]:
    return {t: int(postgres_db.psql(f"SELECT count(*) FROM {t};").strip())
            for t in ("contractors", "ai_concierge_sessions", "events", "schema_migrations")}


def databases_like(postgres_db, prefix: str) -> list[str]:
    return postgres_db.psql(f"SELECT datname FROM pg_database WHERE datname LIKE "
                            f"'{prefix}%';").split()


@pytest.fixture(scope="module")
def source(served_host, postgres_db, make_inventory, tmp_path_factory):
    """The served host as production: its own inventory (marked production, backups kept in a
    test folder), rows seeded in its database."""
    host, _, env = served_host
    as_app(postgres_db, f"""
        INSERT INTO contractors (name, email)
            SELECT '{SEED} ' || g, 'drill' || g || '@example.test'
            FROM generate_series(1, {SEEDED}) g;
        INSERT INTO ai_concierge_sessions (contractor_id, state)
            SELECT id, 'drill-seeded' FROM contractors WHERE name LIKE '{SEED} %';
    """)
    backups = tmp_path_factory.mktemp("drill-backups")
    inventory = str(make_inventory([host], "drill-source", deploy_environment="production",
                                   db_backup_local_dir=str(backups)))
    try:
        yield host, inventory, backups
    finally:
        as_app(postgres_db, f"""
            DELETE FROM ai_concierge_sessions WHERE state = 'drill-seeded';
            DELETE FROM contractors WHERE name LIKE '{SEED} %';
        """)


@pytest.fixture(scope="module")
def env(served_host, tmp_path_factory) -> SecretEnv:
    return SecretEnv({**served_host[2], "TPE_STATE_DIR": str(tmp_path_factory.mktemp("drill"))})


@pytest.fixture(scope="module")
def fresh(host_factory):
    """A bare host: provisioning it from zero is the drill's step 2."""
    (host,) = host_factory(1)
    return host


@pytest.fixture(scope="module")
def scratch(postgres_db) -> str:
    return f"{postgres_db.name}_drill"


@pytest.fixture(scope="module")
def drill_inventory(fresh, make_inventory, scratch) -> str:
    # Shared CPUs (see served_host); a generous RTO goal: this 2-core machine runs other test
    # sessions at the same time (the measured RTO is printed, and asserted below the goal).
    return str(make_inventory([fresh], "drill", deploy_environment="staging", db_name=scratch,
                              threshold_cpu_warning_pct=101, threshold_cpu_critical_pct=101,
                              drill_rto_goal_seconds=900, drill_benchmark_requests=20))


def drill(*args: str, env: dict) -> tuple[int, dict, str]:
    code, payload, stderr = run_json("drill", *args, env=env)
    OUTPUTS.extend([json.dumps(payload), stderr])
    return code, payload, stderr


def untouched(fresh) -> bool:
    app = fresh.root / DEPLOY_TO.lstrip("/")
    return not app.exists() and not (fresh.root / "usr/bin/node").exists()


def test_refused_against_the_production_database_or_hosts(source, fresh, env, scratch,
                                                          make_inventory, postgres_db,
                                                          drill_inventory):
    host, production, backups = source
    before = read_layout(host)
    cases = {
        "production database": (make_inventory([fresh], "drill-prod-db",
                                                deploy_environment="staging"),
                                "is the source's database"),
        "production hosts": (make_inventory([host], "drill-prod-hosts",
                                            deploy_environment="staging", db_name=scratch),
                             f"drill host {host.name} is a host of the source inventory"),
        "marked production": (make_inventory([fresh], "drill-marked", db_name=scratch,
                                             deploy_environment="production"),
                              "is marked production"),
    }
    for case, (inventory, reason) in cases.items():
        done = run_cli("drill", "-i", str(inventory), "--source", production, env=env)
        OUTPUTS.extend([done.stdout, done.stderr])
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert "drill refused, nothing was done" in done.stderr and reason in done.stderr, case
        assert "hint:" in done.stderr and "Traceback" not in done.stderr
    rollback = run_cli("drill", "rollback", "-i", production, env=env)
    assert rollback.returncode == 2 and "marked production" in rollback.stderr
    # --dry: the checks pass and the plan is shown; nothing is done either.
    dry = run_cli("drill", "-i", drill_inventory, "--source", production, "--dry", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"2 provision {fresh.name} (bare)" in dry.stdout and "nothing was done" in dry.stdout
    # Nothing happened: no scratch database, the drill host still bare, no backup taken, the
    # production host as it was.
    assert databases_like(postgres_db, scratch) == []
    assert untouched(fresh)
    assert list(backups.rglob("*")) == []
    after = read_layout(host)
    assert (after.current, after.releases, after.revisions) == (
        before.current, before.releases, before.revisions)


def test_drill_passes_end_to_end_from_a_bare_host(source, fresh, env, drill_inventory,
                                                  scratch, postgres_db):
    host, production, backups = source
    assert untouched(fresh)
    expected = counts(postgres_db)
    good = read_layout(host)
    with SecretWatch(postgres_db.password) as watch:
        code, payload, stderr = drill("-i", drill_inventory, "--source", production, env=env)
    report = payload.get("drill")
    assert code == 0, (stderr, json.dumps(report, indent=2))
    assert report["status"] == "pass" and report["fix"] == [], report["fix"]
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["number"] for s in report["steps"]] == [1, 2, 3, 4, 5, 7]
    assert all(s["status"] == "pass" and s["seconds"] > 0 for s in steps.values()), steps
    print("\nRTO breakdown:", {n: s["seconds"] for n, s in steps.items()},
          "RTO", report["rto_seconds"], "RPO", report["rpo_seconds"])

    # 1: a new backup of the source, its age the RPO.
    backup = report["backup"]
    assert Path(backup["file"]).parent.parent == backups
    assert backup["database"] == postgres_db.name and backup["migration"] == "002_events"
    assert 0 <= report["rpo_seconds"] < steps["backup"]["seconds"] + 60
    # 2: from a bare host.
    assert "bare: no Node.js, no app" in " ".join(steps["provision"]["evidence"])
    # 3: a real restore, verified by exact counts equal to the source's.
    restore = " ".join(steps["restore"]["evidence"])
    assert "exact row counts equal the backup's" in restore
    for table, rows in expected.items():
        assert f"public.{table} {rows}" in restore, (table, rows, restore)
    assert "schema_migrations version 002_events equals" in restore
    # 4: the source's known-good release, on the restored database (nothing to migrate).
    assert report["release"]["release"] == good.known_good
    commit = release_file(host, good.known_good, "REVISION").read_text().strip()
    assert report["release"]["commit"] == commit
    assert "none (it was up to date)" in " ".join(steps["deploy"]["evidence"])
    # 5: healthy, benchmark within the targets; RTO from the start to healthy.
    assert report["health"]["classification"] in ("healthy", "warning")
    assert {b["url"].split("/", 3)[-1] for b in report["benchmark"]} == {
        "api/health", "api/state-machine/diagram", "api/state-machine/metadata"}
    assert all(b["comparison"]["within_target"] for b in report["benchmark"])
    before_healthy = sum(steps[n]["seconds"] for n in ("backup", "provision", "restore",
                                                       "deploy"))
    assert before_healthy < report["rto_seconds"] <= report["seconds"]
    assert report["rto_seconds"] < report["rto_goal_seconds"]
    # 6: the report, saved as Markdown and JSON (0600).
    md, js = (Path(p) for p in report["reports"])
    assert md.read_text().startswith("# Disaster-recovery drill: PASS")
    assert json.loads(js.read_text())["rto_seconds"] == report["rto_seconds"]
    assert stat.S_IMODE(md.stat().st_mode) == 0o600
    assert payload["status_line"].startswith("DRILL: PASS; RTO ")
    # 7: torn down: no scratch database, no app on the drill host.
    assert databases_like(postgres_db, scratch) == []
    assert not (fresh.root / DEPLOY_TO.lstrip("/")).exists()
    processes = fresh.ssh("pm2 jlist 2>/dev/null || true").stdout
    assert "tpe-backend" not in processes and "tpe-frontend" not in processes
    # The database password: never on a command line, in output, reports or the journal.
    assert watch.samples > 10 and not watch.seen
    password = postgres_db.password
    assert password not in "".join(OUTPUTS) + md.read_text() + js.read_text()
    assert password not in fresh.ssh("sudo journalctl --no-pager -q -o cat",
                                     check=False).stdout


def truncated_copy(dump: Path, directory: Path) -> Path:
    """60 % of a real dump with a manifest that matches the truncated file (as if pg_dump
    had been cut short): only a real restore can tell."""
    copy = directory / "cut-short.dump"
    data = dump.read_bytes()
    copy.write_bytes(data[: len(data) * 6 // 10])
    manifest = json.loads(dump.with_suffix(".json").read_text())
    manifest.update(sha256=hashlib.sha256(copy.read_bytes()).hexdigest(),
                    bytes=copy.stat().st_size)
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    return copy


def test_truncated_backup_fails_at_step_3_and_leaves_nothing(source, fresh, env, scratch,
                                                             drill_inventory, postgres_db,
                                                             tmp_path):
    _, production, backups = source
    dumps = sorted(backups.rglob("*.dump"))
    assert dumps, "the end-to-end drill left its backup copy here"
    bad = truncated_copy(dumps[-1], tmp_path)
    code, payload, stderr = drill("-i", drill_inventory, "--source", production,
                                  "--backup", str(bad), env=env)
    report = payload.get("drill")
    assert code == 1, (stderr, report)
    steps = {s["name"]: s for s in report["steps"]}
    assert report["status"] == "fail"
    assert payload["status_line"].startswith("DRILL: FAIL at step 3 (restore)")
    assert [steps[n]["status"] for n in ("backup", "provision", "restore", "deploy", "verify",
                                         "teardown")] == [
        "pass", "pass", "fail", "skipped", "skipped", "pass"]
    problem = " ".join(steps["restore"]["problems"])
    assert "truncated or corrupted" in problem and "pg_restore: error" in problem
    assert report["fix"][0].startswith("step 3 (restore)")
    assert report["rto_seconds"] is None
    assert Path(report["reports"][0]).read_text().startswith("# Disaster-recovery drill: FAIL")
    # Nothing left behind: no scratch database, no app (nor the uploaded dump) on the host.
    assert databases_like(postgres_db, scratch) == []
    assert not (fresh.root / DEPLOY_TO.lstrip("/")).exists()
    assert bad.is_file()  # the operator's file is theirs


def test_drill_rollback_recovers_and_reports_the_time(served_host, env, postgres_db):
    host, inventory, _ = served_host
    before = read_layout(host)
    assert before.current == before.known_good
    try:
        code, payload, stderr = drill("rollback", "-i", inventory, env=env)
        report = payload.get("drill_rollback")
        assert code == 0, (stderr, json.dumps(payload, indent=2))
        outcome = report["hosts"][host.name]
        recovery = outcome["recovery"]
        print("\ndrill rollback:", recovery)
        assert outcome["problems"] == [] and report["status"] == "pass"
        assert all(value is not None and value >= 0 for value in recovery.values()), recovery
        parts = sum(v for k, v in recovery.items() if k != "time_to_recover_seconds")
        assert abs(parts - recovery["time_to_recover_seconds"]) < 0.5
        assert 0 < recovery["time_to_recover_seconds"] < report["goal_seconds"]
        assert payload["status_line"].startswith("DRILL ROLLBACK: PASS; time to recover ")
        failing = outcome["failing"]
        evidence = " ".join(outcome["evidence"])
        assert "the failing release is marked bad: yes" in evidence
        assert f"serving {before.current} after the drill" in evidence
        after = read_layout(host)
        assert (after.current, after.known_good) == (before.current, before.known_good)
        last = after.last_revision
        assert (last["release"], last["result"]) == (failing, "rolled-back") and last["reason"]
        assert failing not in after.releases  # removed: never a rollback target
        assert http_code(host, host.backend_port) == "200"
        assert Path(report["reports"][0]).read_text().startswith("# Rollback drill: PASS")
    finally:
        now = read_layout(host)
        if now.current != before.current:
            run_cli("rollback", "-i", inventory, "--to", before.current, env=env)
        for release in set(now.releases) - set(before.releases):
            host.ssh(f"rm -rf {DEPLOY_TO}/releases/{release}")
    assert postgres_db.password not in "".join(OUTPUTS)


def test_quarterly_maintenance_runs_the_drill_and_reports_it(served_host, make_inventory, env,
                                                             postgres_db, fresh, scratch):
    """maintain quarterly with maintain_drill_inventory set: the drill runs with the maintained
    inventory as its source, and its outcome is the dr-drill item (here a drill inventory
    pointed at the source's database: refused, so the item fails and nothing is done)."""
    host = served_host[0]
    wrong = make_inventory([fresh], "drill-wrong-db", deploy_environment="staging")
    maintained = make_inventory([host], "drill-maintained", maintain_audit_requests=5,
                                maintain_drill_inventory=str(wrong),
                                threshold_cpu_warning_pct=101, threshold_cpu_critical_pct=101)
    code, payload, stderr = run_json("maintain", "quarterly", "-i", str(maintained), env=env)
    OUTPUTS.extend([json.dumps(payload), stderr])
    items = {i["item"]: i for i in payload["hosts"][host.name]["items"]}
    assert code == 2 and items["dr-drill"]["status"] == "fail", items
    assert "drill refused, nothing was done" in items["dr-drill"]["message"]
    assert "is the source's database" in items["dr-drill"]["message"]
    assert databases_like(postgres_db, scratch) == []
    assert not (fresh.root / DEPLOY_TO.lstrip("/")).exists()


def test_scratch_database_scripts_on_the_real_server(postgres_db, tmp_path):
    """The drill's own SQL against the real PostgreSQL, as the app's role: a left-over of an
    earlier `--keep` drill (marked) is dropped, any other database of that name is refused
    and kept; the teardown's drop says whether there was anything to drop."""
    from playbooks.drill import drop_script, mark_script, scratch_check_script

    passfile = tmp_path / "pgpass"  # any database: the scripts connect to "postgres"
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{postgres_db.host}:{postgres_db.port}:*:{postgres_db.user}:"
                  f"{postgres_db.password}\n")
    env = {**os.environ, **postgres_db.libpq_env(passfile)}

    def sh(script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)

    name = f"{postgres_db.name}_drill_sql"
    try:
        first = sh(scratch_check_script(name, "postgres"))
        assert first.returncode == 0 and "does not exist yet" in first.stdout, first.stderr
        assert "no scratch database" in sh(drop_script(name, "postgres")).stdout
        sh(f"psql -X -q -d postgres -c 'CREATE DATABASE {name}'")
        assert sh(mark_script(name, "postgres")).returncode == 0
        left = sh(scratch_check_script(name, "postgres"))
        assert left.returncode == 0 and "left by an earlier drill" in left.stdout, left.stderr
        assert databases_like(postgres_db, name) == []
        sh(f"psql -X -q -d postgres -c 'CREATE DATABASE {name}'")  # not marked: not ours
        other = sh(scratch_check_script(name, "postgres"))
        assert other.returncode == 1 and "is not a drill's scratch database" in other.stderr
        assert databases_like(postgres_db, name) == [name]
        dropped = sh(drop_script(name, "postgres"))
        assert dropped.returncode == 0 and f"dropped the scratch database {name}" in dropped.stdout
        assert databases_like(postgres_db, name) == []
    finally:
        postgres_db.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')
