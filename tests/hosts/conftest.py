"""Fixtures for tests against real hosts: the example app as a git repository, inventories,
and one provisioned host shared by the deploy and rollback modules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.hosts import TestHost, write_inventory
from tests.helpers import PROJECT_ROOT, run_cli, run_json
from tests.load import STATIC_ASSET, get

EXAMPLE_APP = PROJECT_ROOT / "examples" / "tpe-app"
IGNORE = shutil.ignore_patterns("node_modules", ".next", "*.log")
DEPLOY_TO = "/home/ubuntu/The-Power100-Experience"

# The tags of `app_repo`, each one commit on top of `good` (main stays at `good`).
APP_TAGS = ("good", "code-change", "deps-change", "migration", "crash", "slow")
CODE_CHANGE_VERSION = "1.0.0+code-change"
CODE_CHANGE_TEXT = "AI concierge for contractors (code-change)."
MIGRATION = "003_add_notes"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=tpe-tests", "-c", "user.email=t@localhost",
         *args], check=True, capture_output=True, text=True,
    ).stdout.strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found (the example app changed?)"
    path.write_text(text.replace(old, new, 1))


def _code_change(repo: Path) -> None:
    """Code only: the page text and the backend's reported version (config.js, not
    package.json: the dependency fingerprint covers every package.json)."""
    _edit(repo / "tpe-front-end/app/page.js", "AI concierge for contractors.", CODE_CHANGE_TEXT)
    _edit(repo / "tpe-backend/src/config.js", "return require('../package.json').version;",
          "return `${require('../package.json').version}+code-change`;")


def _deps_change(repo: Path) -> None:
    """One small pure-JS dependency (ms@2.1.3) for the backend; lockfile regenerated."""
    package = repo / "tpe-backend/package.json"
    data = json.loads(package.read_text())
    data["dependencies"] = dict(sorted({**data["dependencies"], "ms": "2.1.3"}.items()))
    package.write_text(json.dumps(data, indent=2) + "\n")
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
         "--loglevel=error"], cwd=repo, check=True, capture_output=True, text=True, timeout=300,
    )
    assert '"ms": "2.1.3"' in (repo / "package-lock.json").read_text()


def _migration(repo: Path) -> None:
    (repo / f"tpe-backend/migrations/{MIGRATION}.sql").write_text(
        "-- 003_add_notes: free-text notes on contractors.\n\n"
        "ALTER TABLE contractors ADD COLUMN notes text;\n")


def _crash(repo: Path) -> None:
    (repo / "tpe-backend/config/boot.json").write_text('{ "crashOnBoot": true }\n')


def _slow(repo: Path) -> None:
    (repo / "tpe-backend/config/latency.json").write_text('{ "latencyMs": 400 }\n')


CHANGES: dict[str, Callable[[Path], None]] = {
    "code-change": _code_change, "deps-change": _deps_change, "migration": _migration,
    "crash": _crash, "slow": _slow,
}


@pytest.fixture(scope="session")
def app_repo(tmp_path_factory) -> Path:
    """The bundled example app committed into its own repository (branch main, at tag `good`),
    with tags `code-change`, `deps-change`, `migration`, `crash` and `slow`: one commit each,
    on top of `good`."""
    repo = tmp_path_factory.mktemp("app-repo")
    shutil.copytree(EXAMPLE_APP, repo, dirs_exist_ok=True, ignore=IGNORE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "good: the example app")
    git(repo, "tag", "good")
    for tag, change in CHANGES.items():
        git(repo, "checkout", "-q", "--detach", "good")
        change(repo)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", tag)
        git(repo, "tag", tag)
    git(repo, "checkout", "-q", "main")
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "good^{commit}")
    return repo


@pytest.fixture(scope="session")
def commit_of(app_repo) -> Callable[[str], str]:
    """Full commit id of a tag or ref of `app_repo`."""
    def resolve(ref: str) -> str:
        return git(app_repo, "rev-parse", f"{ref}^{{commit}}")
    return resolve


@pytest.fixture(scope="session")
def make_inventory(tmp_path_factory, app_repo, postgres_db):
    """Write an inventory for hosts, with the example app and the controller's PostgreSQL."""
    def make(hosts, name: str = "inventory", host_data: dict | None = None, **extra) -> Path:
        data = {
            "deploy_environment": "test",
            "app_repo": str(app_repo),
            "app_source": "upload",
            "db_host": postgres_db.host,
            "db_port": postgres_db.port,
            "db_name": postgres_db.name,
            "db_user": postgres_db.user,
            "secrets_file": str(tmp_path_factory.getbasetemp() / "no-secrets.env"),
            "health_stabilisation_seconds": 3,
            **extra,
        }
        return write_inventory(hosts, tmp_path_factory.mktemp(name) / f"{name}.py", data,
                               host_data=host_data)
    return make


class SecretEnv(dict):
    """Environment with secrets: a dict whose repr never shows the values (pytest prints
    fixture values in failure reports)."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: '***'" for k in self) + "}"


@pytest.fixture(scope="session")
def secret_env(postgres_db) -> dict[str, str]:
    return SecretEnv(TPE_DB_PASSWORD=postgres_db.password)


@dataclass
class AppHosts:
    """Two hosts provisioned together (one parallel run): `first` for test_deploy, `second`
    for test_rollback (and test_deploy's two-host test); an inventory for each and for both."""

    first: TestHost
    second: TestHost
    first_inventory: str
    second_inventory: str
    pair_inventory: str
    provision_seconds: float


@pytest.fixture(scope="session")
def app_hosts(host_factory, make_inventory, secret_env) -> AppHosts:
    first, second = host_factory(2)
    pair = str(make_inventory([first, second], "app-pair"))
    started = time.monotonic()
    done = run_cli("provision", "-i", pair, env=secret_env)
    assert done.returncode == 0, done.stdout + done.stderr
    return AppHosts(first, second, str(make_inventory([first], "app-first")),
                    str(make_inventory([second], "app-second")), pair,
                    time.monotonic() - started)


@pytest.fixture(scope="session")
def served_host(host_factory, make_inventory, secret_env, tmp_path_factory):
    """(host, inventory, env): a host provisioned and serving the good commit, with its own
    state directory (TPE_STATE_DIR), shared by the modules that operate a running app
    (health, diagnose, db, cache, logs, maintain, schedule). Each test leaves it healthy."""
    (host,) = host_factory(1)
    # Test hosts share the controller's CPUs (and /proc/stat) with the rest of the suite:
    # CPU use is the controller's, so its thresholds are out of reach here.
    inventory = str(make_inventory([host], "served", threshold_cpu_warning_pct=101,
                                   threshold_cpu_critical_pct=101))
    env = SecretEnv({**secret_env, "TPE_STATE_DIR": str(tmp_path_factory.mktemp("served-state"))})
    assert run_cli("provision", "-i", inventory, env=env).returncode == 0
    done = run_cli("deploy", "-i", inventory, "--commit", "good", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return host, inventory, env


# --- reading a host's release layout (over SSH) -------------------------------------------

@dataclass
class Layout:
    current: str | None  # release name `current` points at
    current_link: str  # `readlink current` as is
    releases: list[str]
    known_good: str | None
    lock: str | None  # the lock's owner file, if the lock dir exists ("" if no owner file)
    revisions: list[dict]  # revisions.log, parsed
    markers: dict[str, set[str]]  # release -> its marker files (complete, verified, bad)

    @property
    def complete(self) -> list[str]:
        return [r for r in self.releases if "complete" in self.markers.get(r, set())]

    @property
    def last_revision(self) -> dict:
        assert self.revisions, "revisions.log is empty"
        return self.revisions[-1]


def read_layout(host: TestHost, deploy_to: str = DEPLOY_TO) -> Layout:
    out = host.ssh(
        f"cd {deploy_to} 2>/dev/null || exit 0; echo \"link $(readlink current)\"; "
        "for r in releases/*/; do [ -d \"$r\" ] && echo \"release $(basename \"$r\")\"; "
        "for m in complete verified bad; do "
        "[ -f \"$r.$m\" ] && echo \"marker $(basename \"$r\") $m\"; done; done; "
        "echo \"good $(cat .known-good 2>/dev/null)\"; "
        "if [ -d .deploy.lock ]; then echo \"lock $(cat .deploy.lock/owner 2>/dev/null | "
        "tr -d '\\n')\"; fi; "
        "sed 's/^/rev /' revisions.log 2>/dev/null; true"
    ).stdout
    link, releases, good, lock, revisions = "", [], None, None, []
    markers: dict[str, set[str]] = {}
    for line in out.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "link":
            link = value.strip()
        elif kind == "release":
            releases.append(value.strip())
        elif kind == "good":
            good = value.strip() or None
        elif kind == "lock":
            lock = value
        elif kind == "marker":
            release, marker = value.split()
            markers.setdefault(release, set()).add(marker)
        elif kind == "rev" and value.strip():
            revisions.append(json.loads(value))
    current = link.rsplit("/", 1)[-1] if link else None
    return Layout(current, link, sorted(releases), good, lock, revisions, markers)


def http_code(host: TestHost, port: int, path: str = "/api/health") -> str:
    """Status code of a GET from the host itself ("000" if nothing answers)."""
    return host.ssh(f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' "
                    f"http://127.0.0.1:{port}{path}", check=False).stdout.strip()


def health(host: TestHost) -> dict:
    out = host.ssh(f"curl -s -m 10 http://127.0.0.1:{host.backend_port}/api/health").stdout
    return json.loads(out)


def releases_table(inventory: str, host) -> dict[str, dict]:
    """`releases --json` for one host: {release: row}."""
    code, payload, stderr = run_json("releases", "-i", inventory)
    assert code == 0, (payload, stderr)
    rows = payload["hosts"][host.name]["releases"]
    for row in rows:
        assert {"release", "commit", "status"} <= set(row), row
    return {row["release"]: row for row in rows}


def release_file(host: TestHost, release: str, rel_path: str) -> Path:
    """A file of a release, read through the host's overlay from the controller."""
    return host.root / DEPLOY_TO.lstrip("/") / "releases" / release / rel_path


def shared_static_asset(host: TestHost, releases: list[str]) -> str:
    """URL of a /_next/static asset that the page being served references and that every
    release in `releases` has (content-hashed chunks differ between builds of different
    code: an old page's chunk missing from a new build is not downtime)."""
    page = get(f"http://127.0.0.1:{host.frontend_port}/")[1].decode("utf-8", "replace")
    for path in STATIC_ASSET.findall(page):
        on_disk = "tpe-front-end/.next/" + path[len("/_next/"):]
        if all(release_file(host, r, on_disk).is_file() for r in releases):
            return f"http://127.0.0.1:{host.frontend_port}{path}"
    raise AssertionError(f"no static asset of the page is in every one of {releases}")


# --- a command in the background ---------------------------------------------------------

def start_cli(tmp_path: Path, name: str, *args: str, env: dict) -> subprocess.Popen:
    """`deploy.py ARGS` in the background (own session: signals reach it alone); its output
    goes to tmp_path/name.out and .err."""
    with (tmp_path / f"{name}.out").open("w") as out, (tmp_path / f"{name}.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "deploy.py"), *args], cwd=PROJECT_ROOT,
            env={**os.environ, **env}, stdin=subprocess.DEVNULL, start_new_session=True,
            stdout=out, stderr=err,
        )


def wait_for_build(host, before: list[str], commit: str, proc: subprocess.Popen,
                   timeout: float = 240) -> str:
    """Wait until the deploy has created its release and started the build (`.next` exists
    in it); return the release name."""
    releases = host.root / DEPLOY_TO.lstrip("/") / "releases"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the deploy ended before its build (exit {proc.returncode})"
        for path in releases.glob(f"*-{commit[:12]}"):
            if path.name not in before and (path / "tpe-front-end/.next").is_dir():
                return path.name
        time.sleep(0.2)
    raise AssertionError("the build never started")
