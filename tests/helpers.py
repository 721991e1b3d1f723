"""Helpers for tests that drive the real command line against real hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900
            ) -> subprocess.CompletedProcess:
    """Run `deploy.py ARGS` as a user would; returns the completed process (text)."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "deploy.py"), *args],
        cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def run_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """Run with --json: (exit code, parsed payload, stderr)."""
    done = run_cli(*args, "--json", env=env)
    try:
        payload = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
                             ) from error
    return done.returncode, payload, done.stderr


def changed_steps(payload: dict, host: str) -> list[str]:
    return [s["name"] for s in payload["hosts"][host]["steps"] if s["status"] == "changed"]


def eventually(check: Callable[[], bool], seconds: float, interval: float = 0.5) -> bool:
    """Whether `check()` comes true within `seconds` (an exception counts as not yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 (not up yet)
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
