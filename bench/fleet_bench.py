#!/usr/bin/env python3
"""Deploy wall time for 1, 3 and 6 real test hosts in one run (issue 7's goal: 6 hosts at most
1.5 times 1 host, when the hosts of a batch deploy in parallel).

Six hosts are provisioned and deployed `good` together (warm-up, not measured). Then a
code-only change (dependencies reused, frontend rebuilt) is deployed to 1 host, to 3 other
hosts, and another code-only change to all 6, all at once (one batch); then the 6 again in
rolling batches of 2 for comparison. Reference: the 1-host deploy of the same run.
Needs root (systemd-nspawn): python bench/fleet_bench.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import json  # noqa: E402

from bench.deploy_bench import cli, make_repo, timed_cli  # noqa: E402
from tests.harness import postgres  # noqa: E402
from tests.harness.hosts import HostPool, write_inventory  # noqa: E402
from tests.harness.image import build_base_image  # noqa: E402
from tests.hosts.conftest import CHANGES, CODE_CHANGE_TEXT, _edit  # noqa: E402


def _second_code_change(repo: Path) -> None:
    """Another code-only change, as heavy as `code-change` (the page text again): the 6-host
    deploy must not carry more work than the 1-host reference (`slow` adds 400 ms to every
    /api request, health checks and cache warm-up included)."""
    _edit(repo / "tpe-front-end/app/page.js", CODE_CHANGE_TEXT, "AI concierge (second change).")


def deploy_steps(*args: str, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """A deploy's wall time, and per step the longest any host spent in it."""
    seconds, stdout = timed_cli(*args, "--json", env=env)
    longest: dict[str, float] = {}
    for host in json.loads(stdout)["hosts"].values():
        for step in host["steps"]:
            name = step["name"].split(" 2026")[0].split(" 20")[0]  # release names vary
            longest[name] = max(longest.get(name, 0.0), step.get("seconds") or 0.0)
    return seconds, longest


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tpe-fleet-bench-"))
    repo = make_repo(tmp, {"code-change": "good", "code-change-2": "code-change"},
                     {**CHANGES, "code-change-2": _second_code_change})
    db = postgres.create_test_database()
    env = {**os.environ, "TPE_DB_PASSWORD": db.password, "TPE_STATE_DIR": str(tmp / "state")}
    data = {"deploy_environment": "test", "app_repo": str(repo), "app_source": "upload",
            "db_host": db.host, "db_name": db.name, "db_user": db.user,
            "secrets_file": str(tmp / "none.env"), "health_stabilisation_seconds": 3}
    try:
        with HostPool(build_base_image()) as pool:
            hosts = pool.make_hosts(6)

            def inventory(name: str, chosen: list) -> str:
                return str(write_inventory(chosen, tmp / f"{name}.py", data))

            every = inventory("six", hosts)
            cli("provision", "-i", every, env=env)
            cli("deploy", "-i", every, "--commit", "good", env=env)
            one, one_steps = deploy_steps("deploy", "-i", inventory("one", hosts[:1]),
                                          "--commit", "code-change", env=env)
            three = cli("deploy", "-i", inventory("three", hosts[1:4]), "--commit",
                        "code-change", env=env)
            six, six_steps = deploy_steps("deploy", "-i", every, "--commit", "code-change-2",
                                          env=env)
            rolling = cli("deploy", "-i", every, "--commit", "good", "--batch-size", "2",
                          env=env)
    finally:
        db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"code-only deploy, 1 host:                {one:6.1f} s   (reference)")
    print(f"code-only deploy, 3 hosts at once:       {three:6.1f} s   ratio {three / one:.2f}")
    print(f"code-only deploy, 6 hosts at once:       {six:6.1f} s   ratio {six / one:.2f} "
          "(goal <= 1.5)")
    print(f"code-only deploy, 6 hosts, batches of 2: {rolling:6.1f} s   ratio "
          f"{rolling / one:.2f}")
    print(f"(on {os.cpu_count()} CPUs shared by the controller and every host)")
    print("\nlongest host per step (s): 1 host / 6 hosts")
    for name in sorted(set(one_steps) | set(six_steps), key=lambda n: -six_steps.get(n, 0)):
        print(f"  {one_steps.get(name, 0):6.1f} {six_steps.get(name, 0):6.1f}  {name}")


if __name__ == "__main__":
    main()
