#!/usr/bin/env python3
"""Deploy and rollback on one real test host, against the runbook's manual procedure measured
on the same host in the same run.

Ours: deploy of a code-only change, of a dependency change, and `rollback` to a kept release
(command start to verified). Reference: the runbook's rollback (`git checkout` + `npm install`
+ `npm run build` + `pm2 restart all`) in a git clone on the same host.
Needs root (systemd-nspawn): python bench/deploy_bench.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import postgres  # noqa: E402
from tests.harness.hosts import HostPool, write_inventory  # noqa: E402
from tests.harness.image import build_base_image  # noqa: E402
from tests.hosts.conftest import CHANGES, EXAMPLE_APP, IGNORE, git  # noqa: E402

MANUAL = "/home/ubuntu/manual"


def make_repo(where: Path, tags: dict[str, str] | None = None,
              changes: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """The example app as a git repository: `good`, then each tag (name -> the tag it is made
    on) with its change from `changes` (default tests/hosts/conftest.CHANGES)."""
    tags = tags or {"code-change": "good", "deps-change": "code-change"}
    changes = changes or CHANGES
    repo = where / "app"
    shutil.copytree(EXAMPLE_APP, repo, ignore=IGNORE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "good")
    git(repo, "tag", "good")
    for tag, base in tags.items():
        git(repo, "checkout", "-q", "--detach", base)
        changes[tag](repo)
        git(repo, "commit", "-qam", tag)
        git(repo, "tag", tag)
    git(repo, "checkout", "-q", "main")
    return repo


def cli(*args: str, env: dict[str, str]) -> float:
    return timed_cli(*args, env=env)[0]


def timed_cli(*args: str, env: dict[str, str]) -> tuple[float, str]:
    """`deploy.py ARGS`: (wall seconds, stdout); a failure stops the benchmark."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "deploy.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"deploy.py {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def manual_rollback(host, repo: Path, commit: str) -> float:
    """The runbook's section 5 procedure, in its own clone on the host."""
    bundle = repo.parent / "app.bundle"
    git(repo, "bundle", "create", str(bundle), "--all")
    with bundle.open("rb") as data:
        subprocess.run([*host.ssh_argv(), "cat > /tmp/app.bundle"], stdin=data, check=True)
    host.ssh(f"rm -rf {MANUAL} && git clone -q /tmp/app.bundle {MANUAL} && "
             f"cd {MANUAL} && npm install --no-audit --no-fund --loglevel=error >/dev/null && "
             "NEXT_TELEMETRY_DISABLED=1 npm run build >/dev/null", timeout=900)
    started = time.perf_counter()
    host.ssh(f"cd {MANUAL} && git checkout -q {commit} && "
             "npm install --no-audit --no-fund --loglevel=error >/dev/null && "
             "NEXT_TELEMETRY_DISABLED=1 npm run build >/dev/null && pm2 restart all >/dev/null",
             timeout=900)
    return time.perf_counter() - started


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tpe-deploy-bench-"))
    repo = make_repo(tmp)
    db = postgres.create_test_database()
    env = {**os.environ, "TPE_DB_PASSWORD": db.password}
    try:
        with HostPool(build_base_image()) as pool:
            (host,) = pool.make_hosts(1)
            inventory = str(write_inventory([host], tmp / "bench.py", {
                "deploy_environment": "test", "app_repo": str(repo), "app_source": "upload",
                "db_host": db.host, "db_name": db.name, "db_user": db.user,
                "secrets_file": str(tmp / "none.env"), "health_stabilisation_seconds": 3}))
            cli("provision", "-i", inventory, env=env)
            first = cli("deploy", "-i", inventory, "--commit", "good", env=env)
            code = cli("deploy", "-i", inventory, "--commit", "code-change", env=env)
            deps = cli("deploy", "-i", inventory, "--commit", "deps-change", env=env)
            ours = cli("rollback", "-i", inventory, "--to", "code-change", env=env)
            manual = manual_rollback(host, repo, git(repo, "rev-parse", "code-change"))
    finally:
        db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"first deploy (npm ci + build):         {first:6.1f} s")
    print(f"deploy, code-only change:              {code:6.1f} s   (dependencies reused)")
    print(f"deploy, dependency change:             {deps:6.1f} s   ratio code/deps "
          f"{code / deps:.2f}")
    print(f"rollback to a kept release (ours):     {ours:6.1f} s")
    print(f"runbook rollback (checkout+install+build+restart): {manual:6.1f} s   "
          f"ratio ours/runbook {ours / manual:.2f}")


if __name__ == "__main__":
    main()
