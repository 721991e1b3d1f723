#!/usr/bin/env python3
"""Wall time of `health` for one host and for three hosts at once, against the reference of
checking the same three hosts one after the other (--limit), in the same run.
Needs root (systemd-nspawn): python bench/health_bench.py [--runs N]"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.deploy_bench import make_repo  # noqa: E402
from tests.harness import postgres  # noqa: E402
from tests.harness.hosts import HostPool, write_inventory  # noqa: E402
from tests.harness.image import build_base_image  # noqa: E402


def run(args: list[str], env: dict[str, str], ok=(0, 1)) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "deploy.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode not in ok:
        sys.exit(f"{args} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-1000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    tmp = Path(tempfile.mkdtemp(prefix="tpe-health-bench-"))
    repo = make_repo(tmp)
    db = postgres.create_test_database()
    env = {**os.environ, "TPE_DB_PASSWORD": db.password, "TPE_STATE_DIR": str(tmp / "state")}
    try:
        with HostPool(build_base_image()) as pool:
            hosts = pool.make_hosts(3)
            inventory = str(write_inventory(hosts, tmp / "bench.py", {
                "deploy_environment": "test", "app_repo": str(repo), "app_source": "upload",
                "db_host": db.host, "db_name": db.name, "db_user": db.user,
                "secrets_file": str(tmp / "none.env"), "health_stabilisation_seconds": 3,
                "threshold_cpu_warning_pct": 101, "threshold_cpu_critical_pct": 101}))
            run(["provision", "-i", inventory], env, ok=(0,))
            run(["deploy", "-i", inventory, "--commit", "good"], env, ok=(0,))
            one, three, serial = [], [], []
            for _ in range(runs):
                one.append(run(["health", "-i", inventory, "--limit", hosts[0].name], env))
                three.append(run(["health", "-i", inventory], env))
                serial.append(sum(run(["health", "-i", inventory, "--limit", h.name], env)
                                  for h in hosts))
    finally:
        db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    m1, m3, ms = (statistics.median(x) for x in (one, three, serial))
    print(f"health, one host (median of {runs}):     {m1:5.2f} s")
    print(f"health, three hosts at once:          {m3:5.2f} s")
    print(f"three hosts one after the other:      {ms:5.2f} s   ratio at-once/serial "
          f"{m3 / ms:.2f}")


if __name__ == "__main__":
    main()
