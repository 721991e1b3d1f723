"""`rollback` and `releases` against a real host: back to a kept release in seconds (zero failed
requests), to any commit by building it, the migration guard, incident records, and the
release table with each release's status.

The tests share the second host of `app_hosts` and run in order; the module fixture `history`
starts from `good` then deploys `code-change` (two verified releases on disk).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, run_cli, run_json
from tests.hosts.conftest import (
    CODE_CHANGE_VERSION,
    DEPLOY_TO,
    MIGRATION,
    health,
    http_code,
    read_layout,
    releases_table,
    shared_static_asset,
    start_cli,
    wait_for_build,
)
from tests.load import RequestLoop

pytestmark = pytest.mark.hosts
INCIDENTS = PROJECT_ROOT / "reports" / "incidents"

OUTPUTS: list[str] = []


@pytest.fixture(scope="module")
def host(app_hosts):
    return app_hosts.second


@pytest.fixture(scope="module")
def inventory(app_hosts):
    return app_hosts.second_inventory


def local_incidents() -> set[Path]:
    return set(INCIDENTS.glob("*")) if INCIDENTS.is_dir() else set()


@pytest.fixture(scope="module", autouse=True)
def remove_local_incidents():
    """Incident files this module writes under reports/incidents/ are removed at the end."""
    before = local_incidents()
    yield
    for path in local_incidents() - before:
        path.unlink()


@pytest.fixture(scope="module")
def history(host, inventory, secret_env, commit_of) -> dict[str, str]:
    """`good` then `code-change` deployed and verified: {tag: release}."""
    releases = {}
    for ref in ("good", "code-change"):
        code, payload, stderr = run_json("deploy", "-i", inventory, "--commit", ref,
                                         env=secret_env)
        assert code == 0, (payload, stderr)
        layout = read_layout(host)
        assert layout.current.endswith(commit_of(ref)[:12])
        releases[ref] = layout.current
    assert health(host)["version"] == CODE_CHANGE_VERSION
    return releases


def cli(*args: str, env: dict | None = None):
    done = run_cli(*args, env=env)
    OUTPUTS.extend([done.stdout, done.stderr])
    return done


def rollback(inventory: str, env: dict, *args: str) -> tuple[int, dict, str, float]:
    started = time.monotonic()
    code, payload, stderr = run_json("rollback", "-i", inventory, *args, env=env)
    seconds = time.monotonic() - started
    OUTPUTS.extend([json.dumps(payload), stderr])
    print(f"rollback {' '.join(args) or '(default)'}: exit {code} in {seconds:.1f} s")
    return code, payload, stderr, seconds


def host_incidents(host) -> set[str]:
    out = host.ssh(f"ls -1 {DEPLOY_TO}/incidents 2>/dev/null || true").stdout
    return set(out.split())


def assert_incident(host, local_before: set[Path], host_before: set[str],
                    from_release: str, to_release: str) -> None:
    """A new incident record (Markdown + JSON) locally and on the host, naming both releases."""
    new_local = local_incidents() - local_before
    assert {p.suffix for p in new_local} >= {".md", ".json"}, new_local
    for path in new_local:
        text = path.read_text()
        assert from_release in text and to_release in text, text
        if path.suffix == ".json":
            json.loads(text)
    new_remote = host_incidents(host) - host_before
    assert {Path(n).suffix for n in new_remote} >= {".md", ".json"}, new_remote


def assert_serving(host, version: str) -> None:
    assert http_code(host, host.frontend_port, "/") == "200"
    assert health(host)["version"] == version


def test_releases_lists_each_release_with_its_status(host, inventory, history, commit_of):
    table = releases_table(inventory, host)
    assert set(history.values()) <= set(table)
    current, good = table[history["code-change"]], table[history["good"]]
    assert current["status"] == "current"
    assert good["status"] == "known-good"
    assert commit_of("code-change").startswith(current["commit"])
    assert commit_of("good").startswith(good["commit"])


def test_rollback_default_target_is_the_previous_release_fast_and_without_errors(
        host, inventory, secret_env, history):
    """From `code-change`: back to `good` (on disk) in seconds, every request answering."""
    before_local, before_remote = local_incidents(), host_incidents(host)
    asset = shared_static_asset(host, [history["good"], history["code-change"]])
    urls = [f"http://127.0.0.1:{host.backend_port}/api/health",
            f"http://127.0.0.1:{host.frontend_port}/", asset]
    releases_before = read_layout(host).releases
    with RequestLoop(urls, rate=20, max_seconds=120) as loop:
        code, payload, stderr, seconds = rollback(inventory, secret_env)
    print(loop.summary())
    assert code == 0, (payload, stderr)
    layout = read_layout(host)
    assert layout.current == history["good"]
    assert layout.releases == releases_before  # nothing built
    assert_serving(host, "1.0.0")
    assert loop.failures == 0, loop.summary()
    assert loop.requests >= 3 * 10 * seconds, loop.summary()
    assert layout.last_revision["release"] == history["good"]
    assert_incident(host, before_local, before_remote, history["code-change"], history["good"])


def test_rollback_to_a_kept_commit(host, inventory, secret_env, history, commit_of):
    """From `good`: `--to <commit of code-change>`, still on disk: a switch, no build."""
    before = read_layout(host)
    code, payload, stderr, seconds = rollback(inventory, secret_env, "--to",
                                              commit_of("code-change"))
    assert code == 0, (payload, stderr)
    after = read_layout(host)
    assert after.current == history["code-change"] and after.releases == before.releases
    assert_serving(host, CODE_CHANGE_VERSION)


def test_rollback_to_a_kept_release_by_name(host, inventory, secret_env, history):
    """From `code-change`: `--to <release name of good>`."""
    before = read_layout(host)
    code, payload, stderr, seconds = rollback(inventory, secret_env, "--to", history["good"])
    assert code == 0, (payload, stderr)
    after = read_layout(host)
    assert after.current == history["good"] and after.releases == before.releases
    assert_serving(host, "1.0.0")


def test_rollback_to_a_commit_not_on_disk_builds_it(host, inventory, secret_env, history,
                                                    commit_of):
    """From `good`: `--to <commit of slow>`, never deployed here: built like a deploy, then
    switched to (its backend answers 400 ms late)."""
    before = read_layout(host)
    sha = commit_of("slow")
    code, payload, stderr, _ = rollback(inventory, secret_env, "--to", sha)
    assert code == 0, (payload, stderr)
    after = read_layout(host)
    (new,) = set(after.releases) - set(before.releases)
    assert new.endswith(sha[:12]) and after.current == new
    assert (host.root / DEPLOY_TO.lstrip("/") / "releases" / new / "REVISION"
            ).read_text().strip() == sha
    assert_serving(host, "1.0.0")
    took = host.ssh(f"curl -s -o /dev/null -w '%{{time_total}}' "
                    f"http://127.0.0.1:{host.backend_port}/api/health").stdout
    assert float(took) >= 0.35


def test_migration_guard_refuses_then_force_allows(host, inventory, secret_env, history,
                                                   commit_of, postgres_db):
    """From `slow`: deploy `migration` (003 applied), then roll back to `good`: refused,
    naming the migration, nothing switched; with `--force` it goes, and the database keeps
    the migration. The migration is undone by hand afterwards (for later tests)."""
    try:
        code, payload, stderr = run_json("deploy", "-i", inventory, "--commit", "migration",
                                         env=secret_env)
        assert code == 0, (payload, stderr)
        migrated = read_layout(host).current
        assert migrated.endswith(commit_of("migration")[:12])
        assert MIGRATION in postgres_db.psql("SELECT version FROM schema_migrations;").split()

        done = cli("rollback", "-i", inventory, "--to", history["good"], env=secret_env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert MIGRATION in done.stderr and "Traceback" not in done.stderr
        layout = read_layout(host)
        assert layout.current == migrated and layout.lock is None
        assert http_code(host, host.backend_port) == "200"

        before_local, before_remote = local_incidents(), host_incidents(host)
        code, payload, stderr, seconds = rollback(inventory, secret_env, "--to",
                                                  history["good"], "--force")
        assert code == 0, (payload, stderr)
        assert read_layout(host).current == history["good"]
        assert_serving(host, "1.0.0")
        assert MIGRATION in postgres_db.psql("SELECT version FROM schema_migrations;").split()
        assert_incident(host, before_local, before_remote, migrated, history["good"])
        records = [p.read_text() for p in local_incidents() - before_local
                   if p.suffix == ".json"]
        assert any(MIGRATION in text for text in records), records
    finally:
        postgres_db.psql("ALTER TABLE IF EXISTS contractors DROP COLUMN IF EXISTS notes;\n"
                         "DELETE FROM schema_migrations WHERE version = '003_add_notes';")


def test_rollback_to_a_partial_release_is_refused(host, inventory, secret_env, history,
                                                  commit_of, tmp_path):
    """From `good`: a deploy killed during its build leaves a partial release (and a stale
    lock, which stops a rollback too). A rollback to the partial release by name is refused
    before anything is switched: it has no complete build (`releases` does not offer it)."""
    before = read_layout(host)
    proc = start_cli(tmp_path, "killed", "deploy", "-i", inventory, "--commit", "code-change",
                     env=secret_env)
    try:
        partial = wait_for_build(host, before.releases, commit_of("code-change"), proc)
    finally:
        proc.kill()
        proc.wait(30)
    done = cli("rollback", "-i", inventory, "--to", history["code-change"], env=secret_env)
    assert done.returncode == 2 and "lock" in done.stderr, done.stdout + done.stderr
    assert cli("unlock", "-i", inventory, "--force").returncode == 0
    assert releases_table(inventory, host)[partial]["instant_rollback"] is False
    urls = [f"http://127.0.0.1:{host.backend_port}/api/health",
            f"http://127.0.0.1:{host.frontend_port}/"]
    with RequestLoop(urls, rate=20, max_seconds=120) as loop:
        done = cli("rollback", "-i", inventory, "--to", partial, env=secret_env)
    print(loop.summary())
    assert done.returncode == 2, done.stdout + done.stderr
    assert partial in done.stderr
    after = read_layout(host)
    assert after.current == before.current and after.revisions == before.revisions
    assert loop.failures == 0, loop.summary()


def test_no_secret_in_output(host, postgres_db):
    assert OUTPUTS and not any(postgres_db.password in text for text in OUTPUTS)
    found = host.ssh(f"grep -rlF -f /dev/stdin {DEPLOY_TO}/incidents || true",
                     input_text=postgres_db.password + "\n").stdout.split()
    assert found == []
