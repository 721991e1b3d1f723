#!/usr/bin/env python3
"""Wall time of `provision` on a real test host: from zero, and as a no-op.

References measured in the same run: from zero, the same packages installed by hand over SSH
on a second fresh host; no-op, a hand-written pyinfra deploy (bench/reference_deploy.py) run
by the pyinfra CLI on the same host, interleaved. Prints medians and ratios (ours / reference).
Needs root (systemd-nspawn test hosts): python bench/provision_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import postgres  # noqa: E402
from tests.harness.hosts import HostPool, write_inventory  # noqa: E402
from tests.harness.image import build_base_image  # noqa: E402

BY_HAND = (
    "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
    "nodejs npm redis-server >/dev/null && sudo npm install -g --no-fund --no-audit "
    "--loglevel=error pm2@7.0.4 >/dev/null"
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    db = postgres.create_test_database()
    env = {**os.environ, "TPE_DB_PASSWORD": db.password}
    python = sys.executable
    try:
        with HostPool(build_base_image()) as pool:
            ours_host, hand_host = pool.make_hosts(2)
            tmp = Path(tempfile.mkdtemp(prefix="tpe-bench-"))
            data = {"deploy_environment": "test", "db_host": db.host, "db_user": db.user,
                    "db_name": db.name, "secrets_file": str(tmp / "none.env")}
            inventory = str(write_inventory([ours_host], tmp / "bench.py", data))
            provision = [python, "deploy.py", "provision", "-i", inventory]
            zero = timed(provision, env)
            started = time.perf_counter()
            hand_host.ssh(BY_HAND, timeout=900)
            by_hand = time.perf_counter() - started
            reference = [str(Path(python).parent / "pyinfra"), "-y", inventory,
                         "bench/reference_deploy.py"]
            ours_noop, ref_noop = [], []
            for _ in range(runs):
                ours_noop.append(timed(provision, env))
                ref_noop.append(timed(reference, env))
    finally:
        db.drop()
    ours, ref = statistics.median(ours_noop), statistics.median(ref_noop)
    print(f"provision from zero:        {zero:6.1f} s   by hand over SSH (packages only): "
          f"{by_hand:6.1f} s   ratio {zero / by_hand:.2f}")
    print(f"no-op provision (median/{runs}): {ours:6.2f} s   hand-written pyinfra deploy: "
          f"{ref:6.2f} s   ratio {ours / ref:.2f}")
    print(f"no-op runs: ours {[round(t, 2) for t in ours_noop]}, "
          f"reference {[round(t, 2) for t in ref_noop]}")


if __name__ == "__main__":
    main()
