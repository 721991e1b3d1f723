"""Run the whole suite as four pytest processes side by side (`make test`).

The tests that share a session host build on each other's host state, so each such set runs
in order in one process; the sets run at the same time, since most of a host test's time is
spent waiting (SSH round trips, stabilisation windows, boots). pytest-xdist cannot do it here:
pyinfra's CLI package monkey-patches threading with gevent when imported, and xdist's worker
loop then blocks forever. Every test file lands in exactly one group: files not named below
go to the last group, so a new module is never left out. Exit code: the worst of the groups.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS: dict[str, list[str]] = {
    # app_hosts (tests/hosts/conftest.py): deploy, then the gates on the same host.
    "app-hosts": ["tests/hosts/test_deploy.py", "tests/hosts/test_gates.py"],
    # served_host: a running app operated by health, diagnose, db, cache, logs, maintain, ...
    # (two processes, each with its own served host: the work is long). test_rollback makes
    # its own history on an app_hosts host of its process; the rest have their own hosts.
    "served-a": ["tests/hosts/test_health.py", "tests/hosts/test_cache.py",
                 "tests/hosts/test_db.py", "tests/hosts/test_logs.py",
                 "tests/hosts/test_maintain.py", "tests/hosts/test_rollback.py",
                 "tests/hosts/test_provision.py"],
    "served-b": ["tests/hosts/test_diagnose.py", "tests/hosts/test_schedule.py",
                 "tests/hosts/test_drill.py", "tests/hosts/test_bad_input.py",
                 "tests/hosts/test_mirror.py"],
    # the three-host fleet, then everything else (unit tests, harness, EC2, ...).
    "fleet-and-rest": ["tests/hosts/test_fleet.py"],
}


def assign() -> dict[str, list[str]]:
    named = {path for paths in GROUPS.values() for path in paths}
    missing = [p for p in named if not (ROOT / p).is_file()]
    if missing:
        sys.exit(f"run_in_groups: listed but not found: {', '.join(sorted(missing))}")
    rest = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if str(p.relative_to(ROOT)) not in named and "harness" not in p.parts)
    groups = {name: list(paths) for name, paths in GROUPS.items()}
    groups[list(groups)[-1]] += rest
    return groups


def _stream(name: str, proc: subprocess.Popen, lock: threading.Lock) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with lock:
            print(f"[{name}] {line}", end="", flush=True)


def main(extra: list[str]) -> int:
    lock = threading.Lock()
    started = time.monotonic()
    procs: dict[str, subprocess.Popen] = {}
    readers = []
    for name, paths in assign().items():
        print(f"[{name}] {' '.join(paths)}", flush=True)
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", "--durations=12",
             *extra, *paths],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        reader = threading.Thread(target=_stream, args=(name, procs[name], lock), daemon=True)
        reader.start()
        readers.append(reader)
    codes = {name: proc.wait() for name, proc in procs.items()}
    for reader in readers:
        reader.join(10)
    print(f"\nrun_in_groups: {time.monotonic() - started:.0f} s; "
          + ", ".join(f"{name} exit {code}" for name, code in codes.items()), flush=True)
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
