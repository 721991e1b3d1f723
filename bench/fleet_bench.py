#!/usr/bin/env python3
"""Deploy wall time for 1, 3 and 6 real test hosts in one run (issue 7's goal: 6 hosts at most
1.5 times 1 host, when the hosts of a batch deploy in parallel).

Six hosts are provisioned and deployed `good` together (warm-up, not measured). Then a
code-only change (dependencies reused, frontend rebuilt) is deployed to 3 hosts at once; then,
in 5 rounds, another code-only change to 1 host (the reference) and one more to all 6 at once
(one batch); then the 6 again in rolling batches of 2 for comparison. The ratios are against
the median 1-host deploy of the same run: on a shared machine one deploy can be 15 % off.
Needs root (systemd-nspawn): python bench/fleet_bench.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.deploy_bench import cli, make_repo, timed_cli  # noqa: E402
from tests.harness import postgres  # noqa: E402
from tests.harness.hosts import HostPool, write_inventory  # noqa: E402
from tests.harness.image import build_base_image  # noqa: E402
from tests.hosts.conftest import CHANGES  # noqa: E402

ROUNDS = 5  # 1-host and 6-host deploys alternate; the ratio is of their medians


def _page_change(text: str) -> Callable[[Path], None]:
    """A code-only change as heavy as `code-change` (the page text, so the frontend is built
    again). Not `slow`: it adds 400 ms to every /api request, health checks included."""
    def change(repo: Path) -> None:
        page = repo / "tpe-front-end/app/page.js"
        page.write_text(re.sub(r"AI concierge[^<]*", f"AI concierge ({text}).", page.read_text(),
                               count=1))
    return change


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
    tags, changes, base = {"code-change": "good"}, dict(CHANGES), "code-change"
    for r in range(ROUNDS):
        for size in ("one", "six"):
            tag = f"round-{r}-{size}"
            tags[tag], changes[tag], base = base, _page_change(tag), tag
    repo = make_repo(tmp, tags, changes)
    db = postgres.create_test_database()
    env = {**os.environ, "TPE_DB_PASSWORD": db.password, "TPE_STATE_DIR": str(tmp / "state")}
    data = {"deploy_environment": "test", "app_repo": str(repo), "app_source": "upload",
            "db_host": db.host, "db_name": db.name, "db_user": db.user,
            "secrets_file": str(tmp / "none.env"), "health_stabilisation_seconds": 3}
    ones: list[tuple[float, dict[str, float]]] = []
    sixes: list[tuple[float, dict[str, float]]] = []
    try:
        with HostPool(build_base_image()) as pool:
            hosts = pool.make_hosts(6)

            def inventory(name: str, chosen: list) -> str:
                return str(write_inventory(chosen, tmp / f"{name}.py", data))

            every, single = inventory("six", hosts), inventory("one", hosts[:1])
            cli("provision", "-i", every, env=env)
            cli("deploy", "-i", every, "--commit", "good", env=env)
            three = cli("deploy", "-i", inventory("three", hosts[1:4]), "--commit",
                        "code-change", env=env)
            for r in range(ROUNDS):
                ones.append(deploy_steps("deploy", "-i", single, "--commit", f"round-{r}-one",
                                         env=env))
                sixes.append(deploy_steps("deploy", "-i", every, "--commit", f"round-{r}-six",
                                          env=env))
                print(f"round {r + 1}: 1 host {ones[-1][0]:.1f} s, 6 hosts {sixes[-1][0]:.1f} s"
                      f" (ratio {sixes[-1][0] / ones[-1][0]:.2f})", flush=True)
            rolling = cli("deploy", "-i", every, "--commit", "good", "--batch-size", "2",
                          env=env)
    finally:
        db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    one, six = median(t for t, _ in ones), median(t for t, _ in sixes)
    print(f"\nmedians of {ROUNDS} rounds, the 1-host deploy as reference:")
    print(f"code-only deploy, 1 host:                {one:6.1f} s   (reference)")
    print(f"code-only deploy, 3 hosts at once:       {three:6.1f} s   ratio {three / one:.2f}"
          " (once)")
    print(f"code-only deploy, 6 hosts at once:       {six:6.1f} s   ratio {six / one:.2f} "
          "(goal <= 1.5)")
    print(f"code-only deploy, 6 hosts, batches of 2: {rolling:6.1f} s   ratio "
          f"{rolling / one:.2f} (once)")
    print(f"(on {os.cpu_count()} CPUs shared by the controller and every host)")
    print("\nlongest host per step (s), median of the rounds: 1 host / 6 hosts")
    one_steps, six_steps = _median_steps(ones), _median_steps(sixes)
    for name in sorted(set(one_steps) | set(six_steps), key=lambda n: -six_steps.get(n, 0)):
        print(f"  {one_steps.get(name, 0):6.1f} {six_steps.get(name, 0):6.1f}  {name}")


def _median_steps(runs: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    names = {name for _, steps in runs for name in steps}
    return {n: median(steps.get(n, 0.0) for _, steps in runs) for n in names}


if __name__ == "__main__":
    main()
