"""`deploy` against a real host: release directories, dependency reuse, migrations, automatic
rollback, zero failed requests, the lock, retention, an interrupted controller, two hosts.

The tests share one provisioned host (`app_hosts.first`) and run in order: each starts from
the state the previous one left (noted in each docstring). The two-host test adds the second
host of `app_hosts`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import changed_steps, eventually, run_cli, run_json
from tests.hosts.conftest import (
    CODE_CHANGE_TEXT,
    CODE_CHANGE_VERSION,
    DEPLOY_TO,
    MIGRATION,
    health,
    http_code,
    read_layout,
    release_file,
    releases_table,
    shared_static_asset,
    start_cli,
    wait_for_build,
)
from tests.load import RequestLoop, get

pytestmark = pytest.mark.hosts
LOCK_DIR = f"{DEPLOY_TO}/.deploy.lock"
# A file every install has, hoisted to the monorepo's root node_modules.
DEP_FILE = "node_modules/express/package.json"
TIMES: dict[str, float] = {}  # deploy wall times, seconds
LOOPS: dict[str, tuple] = {}  # request loops run during a deploy, checked by a later test
OUTPUTS: list[str] = []  # everything the tool printed here, checked for the DB password


@pytest.fixture(scope="module")
def host(app_hosts):
    return app_hosts.first


@pytest.fixture(scope="module")
def inventory(app_hosts):
    return app_hosts.first_inventory


def deploy(inventory: str, ref: str, env: dict, *extra: str, timed: str | None = None
           ) -> tuple[int, dict, str]:
    """`deploy --commit REF --json`; with `timed`, its wall time goes to TIMES[timed]."""
    started = time.monotonic()
    code, payload, stderr = run_json("deploy", "-i", inventory, "--commit", ref, *extra, env=env)
    seconds = time.monotonic() - started
    if timed:
        TIMES[timed] = seconds
    print(f"deploy {ref}: exit {code} in {seconds:.1f} s")
    OUTPUTS.extend([json.dumps(payload), stderr])
    return code, payload, stderr


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    done = run_cli(*args, env=env)
    OUTPUTS.extend([done.stdout, done.stderr])
    return done


def output_of(tmp_path: Path, name: str) -> tuple[str, str]:
    out, err = (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()
    OUTPUTS.extend([out, err])
    return out, err


def release_of(host, commit: str, exclude: list[str]) -> str:
    """The one release of `commit` not in `exclude`."""
    found = [r for r in read_layout(host).releases
             if r.endswith("-" + commit[:12]) and r not in exclude]
    assert len(found) == 1, found
    return found[0]


def install_step(payload: dict, host_name: str, timed: str | None = None) -> str:
    """What the dependency step said (its output); with `timed`, its seconds go to
    TIMES[timed] (the step alone: the whole deploy's time depends on what else runs)."""
    (step,) = [s for s in payload["hosts"][host_name]["steps"]
               if s["name"] == "Install dependencies (or reuse unchanged ones)"]
    assert step["status"] == "changed", step
    if timed:
        TIMES[timed] = step["seconds"]
    return " ".join([step.get("detail") or "", *step.get("output", [])])


def inode_links(host, release: str, path: str) -> tuple[int, int]:
    out = host.ssh(f"stat -c '%i %h' {DEPLOY_TO}/releases/{release}/{path}").stdout.split()
    return int(out[0]), int(out[1])


def assert_serving(host, version: str | None = None) -> None:
    assert http_code(host, host.backend_port) == "200"
    assert http_code(host, host.frontend_port, "/") == "200"
    if version:
        assert health(host)["version"] == version


# --- deploying -------------------------------------------------------------------------------

def test_deploy_good_serves_that_commit(host, inventory, secret_env, commit_of):
    """From a provisioned host with no release."""
    assert read_layout(host).current is None
    code, payload, stderr = deploy(inventory, "good", secret_env)
    assert code == 0, (payload, stderr)
    assert payload["ok"] and payload["hosts"][host.name]["ok"]
    sha = commit_of("good")
    layout = read_layout(host)
    assert re.fullmatch(rf"releases/\d{{14}}-{sha[:12]}", layout.current_link), layout
    assert layout.known_good == layout.current
    assert release_file(host, layout.current, "REVISION").read_text().strip() == sha
    last = layout.last_revision
    assert (last["result"], last["commit"], last["release"]) == ("verified", sha, layout.current)
    assert_serving(host, "1.0.0")
    body = host.ssh(f"curl -s http://127.0.0.1:{host.frontend_port}/").stdout
    assert "AI concierge for contractors." in body


def test_deploy_same_commit_again_changes_nothing(host, inventory, secret_env):
    """`good` is current and verified."""
    before = read_layout(host)
    code, payload, _ = deploy(inventory, "good", secret_env)
    assert code == 0
    assert changed_steps(payload, host.name) == []
    assert payload["hosts"][host.name]["changed"] == 0
    steps = " ".join(s["name"] for s in payload["hosts"][host.name]["steps"])
    assert "already current" in steps
    after = read_layout(host)
    assert (after.current, after.releases, after.revisions) == (
        before.current, before.releases, before.revisions)


def test_code_only_change_reuses_dependencies(host, inventory, secret_env, commit_of):
    """From `good`: new release, node_modules hard-linked from the previous release."""
    previous = read_layout(host).current
    code, payload, stderr = deploy(inventory, "code-change", secret_env)
    assert code == 0, (payload, stderr)
    layout = read_layout(host)
    release = layout.current
    assert release.endswith(commit_of("code-change")[:12]) and release != previous
    assert "reused" in install_step(payload, host.name, timed="code-only install")
    new_inode, links = inode_links(host, release, DEP_FILE)
    old_inode, _ = inode_links(host, previous, DEP_FILE)
    assert new_inode == old_inode and links > 1, "node_modules was not reused by hard links"
    assert not release_file(host, release, "node_modules/.cache").exists()
    assert_serving(host, CODE_CHANGE_VERSION)
    assert CODE_CHANGE_TEXT in get(f"http://127.0.0.1:{host.frontend_port}/")[1].decode()
    # Same ecosystem file as the last deploy, which saved it: no second `pm2 save`, and the
    # dump `pm2 resurrect` starts at boot still holds both apps, run through `current`.
    (reload_step,) = [s for s in payload["hosts"][host.name]["steps"]
                      if s["name"].startswith("Reload the PM2 apps")]
    assert "already saved" in " ".join(reload_step.get("output", [])), reload_step
    dump = json.loads(host.ssh("cat ~/.pm2/dump.pm2").stdout)
    cwds = {p["name"]: p["pm_cwd"] for p in dump if p["name"].startswith("tpe-")}
    assert cwds == {"tpe-backend": f"{DEPLOY_TO}/current/tpe-backend",
                    "tpe-frontend": f"{DEPLOY_TO}/current/tpe-front-end"}


def test_dependency_change_installs_and_keeps_the_lockfile(host, inventory, secret_env,
                                                          app_repo, commit_of):
    """From `code-change`: `npm ci` runs (fresh files, not links), the lockfile is the commit's
    byte for byte, and the dependency step takes longer than the code-only deploy's (the
    wall times of whole deploys are in bench/deploy_bench.py)."""
    previous = read_layout(host).current
    code, payload, stderr = deploy(inventory, "deps-change", secret_env)
    assert code == 0, (payload, stderr)
    release = read_layout(host).current
    assert release.endswith(commit_of("deps-change")[:12])
    assert "npm ci" in install_step(payload, host.name, timed="deps install")
    new_inode, links = inode_links(host, release, DEP_FILE)
    assert new_inode != inode_links(host, previous, DEP_FILE)[0] and links == 1
    ms = json.loads(release_file(host, release, "tpe-backend/node_modules/ms/package.json")
                    .read_text())
    assert ms["version"] == "2.1.3"
    committed = subprocess.run(
        ["git", "-C", str(app_repo), "show", "deps-change:package-lock.json"],
        capture_output=True, check=True).stdout
    assert release_file(host, release, "package-lock.json").read_bytes() == committed
    assert_serving(host, "1.0.0")
    assert TIMES["deps install"] > TIMES["code-only install"], TIMES


def test_migration_is_applied_before_the_switch(host, inventory, secret_env, commit_of,
                                                postgres_db):
    """From `deps-change`, with a request loop running (checked by the next test but one).
    Afterwards the migration is undone in the database by hand, so the database matches
    `good` again for later tests (the tool never rolls a database back)."""
    before = read_layout(host)
    good = release_of(host, commit_of("good"), [])  # same frontend code as `migration`
    asset = shared_static_asset(host, [before.current, good])
    urls = [f"http://127.0.0.1:{host.backend_port}/api/health",
            f"http://127.0.0.1:{host.frontend_port}/", asset]
    pids_before = {health(host)["pid"] for _ in range(6)}
    try:
        with RequestLoop(urls, rate=20, max_seconds=300) as loop:
            code, payload, stderr = deploy(inventory, "migration", secret_env,
                                           timed="under-load")
        LOOPS["deploy"] = (loop, pids_before, {health(host)["pid"] for _ in range(6)}, asset)
        assert code == 0, (payload, stderr)
        assert read_layout(host).current.endswith(commit_of("migration")[:12])
        versions = postgres_db.psql("SELECT version FROM schema_migrations ORDER BY 1;").split()
        assert versions == ["001_init", "002_events", MIGRATION]
        columns = postgres_db.psql("SELECT column_name FROM information_schema.columns "
                                   "WHERE table_name = 'contractors';").split()
        assert "notes" in columns
        assert_serving(host)
    finally:
        postgres_db.psql("ALTER TABLE IF EXISTS contractors DROP COLUMN IF EXISTS notes;\n"
                         "DELETE FROM schema_migrations WHERE version = '003_add_notes';")


def test_crashing_release_is_rolled_back(host, inventory, secret_env, commit_of):
    """From `migration` (current, known-good): the crashing commit never goes live for good."""
    before = read_layout(host)
    urls = [f"http://127.0.0.1:{host.backend_port}/api/health",
            f"http://127.0.0.1:{host.frontend_port}/"]
    with RequestLoop(urls, rate=10, max_seconds=300) as loop:
        code, payload, stderr = deploy(inventory, "crash", secret_env, timed="crash")
    print("requests during the crashing deploy (not asserted):", loop.summary())
    assert code == 1, (payload, stderr)
    assert not payload["ok"]
    layout = read_layout(host)
    assert layout.current == before.current and layout.known_good == before.current
    assert_serving(host)
    crashed = release_of(host, commit_of("crash"), before.releases)
    last = layout.last_revision
    assert (last["result"], last["release"]) == ("rolled-back", crashed), last
    assert last["reason"]
    assert release_file(host, crashed, ".bad").is_file()
    table = releases_table(inventory, host)
    assert table[crashed]["status"] == "bad" and table[crashed]["instant_rollback"] is False
    assert table[before.current]["status"] == "current"


def test_zero_failed_requests_during_a_deploy(host):
    """During the `deps-change` -> `migration` deploy (install, build, migrate, switch, reload):
    every request to the backend, the frontend page and a static asset answered 2xx."""
    loop, pids_before, pids_after, asset = LOOPS["deploy"]
    print(loop.summary())
    assert not pids_before & pids_after, "the backend was not reloaded during the loop"
    on_disk = "tpe-front-end/.next/" + asset.split("/_next/", 1)[1]
    assert release_file(host, read_layout(host).current, on_disk).is_file()
    assert loop.failures == 0, loop.summary()
    assert loop.requests >= 3 * 10 * TIMES["under-load"], loop.summary()
    assert not loop.hit_time_limit


def test_unknown_commit_is_a_clear_error_and_changes_nothing(host, inventory, secret_env):
    """From `migration`."""
    before = read_layout(host)
    done = cli("deploy", "-i", inventory, "--commit", "nope-does-not-exist", env=secret_env)
    assert done.returncode == 2
    assert "nope-does-not-exist" in done.stderr and "Traceback" not in done.stderr
    after = read_layout(host)
    assert (after.current, after.releases, after.revisions, after.lock) == (
        before.current, before.releases, before.revisions, None)


# --- the deploy lock -------------------------------------------------------------------------

def test_lock_held_by_someone_else(host, inventory, secret_env):
    """From `migration`: a lock taken by hand stops the deploy; plain `unlock` refuses
    someone else's lock; `unlock --force` clears it and the deploy can go (a dry run here:
    the next test deploys for real)."""
    owner = {"user": "someone", "from": "elsewhere", "since": "2026-01-01T00:00:00+00:00"}
    host.ssh(f"mkdir {LOCK_DIR} && cat > {LOCK_DIR}/owner", input_text=json.dumps(owner))
    before = read_layout(host)
    done = cli("deploy", "-i", inventory, "--commit", "good", env=secret_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "someone" in done.stderr and "elsewhere" in done.stderr
    after = read_layout(host)
    assert (after.current, after.releases, after.lock) == (before.current, before.releases,
                                                           before.lock)
    done = cli("unlock", "-i", inventory)
    assert done.returncode != 0 and "someone" in done.stderr
    assert read_layout(host).lock is not None
    done = cli("unlock", "-i", inventory, "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_layout(host).lock is None
    code, payload, stderr = run_json("deploy", "-i", inventory, "--commit", "good", "--dry",
                                     env=secret_env)
    assert code == 0 and payload["dry"], (payload, stderr)
    assert read_layout(host).releases == before.releases


def test_two_deploys_at_once_one_proceeds(host, inventory, secret_env, tmp_path, commit_of):
    """From `migration`: `good` and `slow` at the same moment."""
    procs = {ref: start_cli(tmp_path, ref, "deploy", "-i", inventory, "--commit", ref,
                            env=secret_env) for ref in ("good", "slow")}
    codes = {ref: proc.wait(600) for ref, proc in procs.items()}
    outputs = {ref: "\n".join(output_of(tmp_path, ref)) for ref in procs}
    winners = [ref for ref, code in codes.items() if code == 0]
    assert len(winners) == 1, (codes, outputs)
    (loser,) = set(procs) - set(winners)
    assert "lock" in outputs[loser].lower(), outputs[loser]
    layout = read_layout(host)
    assert layout.lock is None
    assert layout.current.endswith(commit_of(winners[0])[:12])
    assert layout.last_revision["result"] == "verified"
    assert_serving(host, "1.0.0")


# --- an interrupted controller ---------------------------------------------------------------

def test_controller_killed_during_build(host, inventory, secret_env, tmp_path, commit_of):
    """From `good` or `slow`: SIGKILL during the build of `code-change`. The previous release
    keeps serving; the next deploy reports the stale lock; `unlock --force` clears it."""
    before = read_layout(host)
    proc = start_cli(tmp_path, "killed", "deploy", "-i", inventory, "--commit", "code-change",
                     env=secret_env)
    try:
        partial = wait_for_build(host, before.releases, commit_of("code-change"), proc)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    table = releases_table(inventory, host)  # read-only: works while the lock is held
    assert table[partial]["status"] == "partial" and table[partial]["instant_rollback"] is False
    layout = read_layout(host)
    assert layout.current == before.current
    assert_serving(host, "1.0.0")
    assert layout.lock is not None and '"token"' in layout.lock
    done = cli("deploy", "-i", inventory, "--commit", "code-change", env=secret_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lock" in done.stderr and "unlock --force" in done.stderr
    assert read_layout(host).releases == layout.releases
    done = cli("unlock", "-i", inventory, "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_layout(host).lock is None


def test_controller_interrupted_during_build(host, inventory, secret_env, tmp_path, commit_of):
    """From `good` or `slow` (plus a partial `code-change` release): Ctrl-C (SIGINT) during the
    build. The command exits non-zero and its `finally` releases the lock."""
    before = read_layout(host)
    proc = start_cli(tmp_path, "interrupted", "deploy", "-i", inventory, "--commit",
                     "code-change", env=secret_env)
    try:
        wait_for_build(host, before.releases, commit_of("code-change"), proc)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    out, err = output_of(tmp_path, "interrupted")
    assert code != 0, out + err
    layout = read_layout(host)
    assert layout.lock is None, f"lock left behind: {layout.lock}\n{out}\n{err}"
    assert layout.current == before.current
    assert_serving(host, "1.0.0")


def test_controller_killed_during_dependency_install(host, inventory, secret_env, tmp_path,
                                                     commit_of):
    """From `good` or `slow` (plus two partial `code-change` releases): SIGKILL while `npm ci`
    installs the dependencies of `deps-change`. The previous release keeps serving; the lock
    is reported and cleared like after any dead deploy."""
    before = read_layout(host)
    releases = host.root / DEPLOY_TO.lstrip("/") / "releases"
    proc = start_cli(tmp_path, "killed-install", "deploy", "-i", inventory, "--commit",
                     "deps-change", env=secret_env)
    commit = commit_of("deps-change")
    try:
        deadline = time.monotonic() + 240
        installing = None
        while installing is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"the deploy ended before its install ({proc.returncode})"
            for path in releases.glob(f"*-{commit[:12]}"):
                # npm ci is filling node_modules; the fingerprint is written when it is done
                if (path.name not in before.releases and (path / "node_modules").is_dir()
                        and not (path / ".deps-fingerprint").exists()):
                    installing = path
            time.sleep(0.05)
        assert installing is not None, "npm ci never started"
    finally:
        proc.kill()
        proc.wait(30)
    assert not (installing / ".deps-fingerprint").exists(), "killed after the install ended"
    layout = read_layout(host)
    assert layout.current == before.current
    assert_serving(host, "1.0.0")
    assert layout.lock is not None and commit in layout.lock
    done = cli("unlock", "-i", inventory, "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_layout(host).lock is None


def test_deploy_after_interruptions_with_retention(host, make_inventory, secret_env, commit_of):
    """From `good` or `slow` plus three partial releases (two `code-change`, one
    `deps-change`), with an inventory keeping
    2 releases: `code-change` deploys; the releases left are the newest 2 complete ones plus
    current and known-good (never removed)."""
    keep = 2
    inventory = str(make_inventory([host], "keep2", app_keep_releases=keep))
    before = read_layout(host)
    assert len(before.releases) > keep + 2  # something to prune
    code, payload, stderr = deploy(inventory, "code-change", secret_env)
    assert code == 0, (payload, stderr)
    after = read_layout(host)
    assert after.current not in before.releases
    assert after.last_revision["result"] == "verified"
    assert_serving(host, CODE_CHANGE_VERSION)
    assert after.current in after.releases and after.known_good in after.releases
    protected = {after.current, after.known_good}
    newest = set(sorted(before.complete + [after.current])[-keep:])
    assert set(after.releases) <= newest | protected, after.releases
    assert len(after.releases) <= keep + len(protected - newest), after.releases
    partials = set(before.releases) - set(before.complete)
    assert len(partials) == 3 and not partials & set(after.releases), partials


def test_partial_releases_are_cleaned_by_the_next_deploy(host):
    """The partial releases of the interrupted deploys (never switched to, never verified or
    marked bad) are gone after the next successful deploy (issue 3: "once cleared, cleans
    the partial release")."""
    layout = read_layout(host)
    recorded = {r["release"] for r in layout.revisions}
    partial = [r for r in layout.releases if r not in recorded and r != layout.current]
    assert partial == [], f"partial releases left on disk: {partial}"


def test_controller_killed_right_after_the_switch(host, inventory, secret_env, tmp_path,
                                                   commit_of):
    """From `code-change` (verified): SIGKILL the moment `current` points at the new `good`
    release, before its reload and verification are done. The host serves one release or
    the other, healthy, never nothing; after `unlock --force` the same deploy succeeds."""
    before = read_layout(host)
    current = host.root / DEPLOY_TO.lstrip("/") / "current"
    proc = start_cli(tmp_path, "killed-switch", "deploy", "-i", inventory,
                     "--commit", "good", env=secret_env)
    try:
        deadline = time.monotonic() + 300
        while Path(os.readlink(current)).name == before.current:
            assert proc.poll() is None, f"the deploy ended before its switch ({proc.returncode})"
            assert time.monotonic() < deadline, "the switch never happened"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait(30)
    switched_to = read_layout(host).current
    assert switched_to.endswith(commit_of("good")[:12])
    assert wait_until_serving(host, 60), "nothing serving after the controller died"
    assert health(host)["version"] in ("1.0.0", CODE_CHANGE_VERSION)
    assert read_layout(host).lock is not None
    done = cli("unlock", "-i", inventory, "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    code, payload, stderr = deploy(inventory, "good", secret_env)
    assert code == 0, (payload, stderr)
    after = read_layout(host)
    assert after.current.endswith(commit_of("good")[:12])
    assert after.last_revision["result"] == "verified" and after.lock is None
    assert_serving(host, "1.0.0")


def wait_until_serving(host, seconds: float) -> bool:
    return eventually(lambda: http_code(host, host.backend_port) == "200"
                      and http_code(host, host.frontend_port, "/") == "200", seconds)


# --- two hosts -------------------------------------------------------------------------------

def test_two_hosts_in_parallel(app_hosts, secret_env, commit_of):
    """Host 1 already on `good` (verified: nothing to do), host 2 (provisioned, no release yet):
    deploy `good` to both at once; each host ends on `good`, verified."""
    hosts = [app_hosts.first, app_hosts.second]
    code, payload, stderr = deploy(app_hosts.pair_inventory, "good", secret_env)
    assert code == 0, (payload, stderr)
    assert payload["ok"]
    assert {name: result["ok"] for name, result in payload["hosts"].items()} == {
        h.name: True for h in hosts}
    for h in hosts:
        layout = read_layout(h)
        assert layout.current.endswith(commit_of("good")[:12])
        assert layout.last_revision["result"] == "verified"
        assert_serving(h, "1.0.0")


def test_no_secret_in_output(app_hosts, postgres_db):
    assert OUTPUTS and not any(postgres_db.password in text for text in OUTPUTS)
    for h in (app_hosts.first, app_hosts.second):
        assert postgres_db.password not in h.ssh(f"cat {DEPLOY_TO}/revisions.log").stdout
