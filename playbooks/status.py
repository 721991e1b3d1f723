"""`status`: releases, lock and PM2 processes on each host (read-only)."""

from __future__ import annotations

import time

from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from operations.release import HttpCheck, ReleaseState
from playbooks.common import Options
from tpe_ops.health import health_problems
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather


def _read(host) -> dict:
    app = as_user(host, host.data.app_user)
    return {
        "releases": host.get_fact(ReleaseState, deploy_to=host.data.app_deploy_to, **app),
        "pm2": host.get_fact(Pm2Processes, **app),
        "health": host.get_fact(
            HttpCheck,
            url=f"http://127.0.0.1:{host.data.app_backend_port}{host.data.health_endpoint}",
            timeout=host.data.health_timeout_seconds,
        ),
    }


def describe(facts: dict) -> list[str]:
    rel = facts["releases"]
    lines = [
        f"current {rel['current'] or '-'}, known-good {rel['known_good'] or '-'}, "
        f"{len(rel['releases'])} release(s) on disk"
    ]
    health = facts["health"]
    verdict = "; ".join(health_problems(health)) or "healthy"
    lines.append(f"health {health['status']} in {health['seconds'] * 1000:.0f} ms: {verdict}"
                 + (f" {health['body']}" if health["status"] == 200 else ""))
    if rel["lock"]:
        lines.append(f"deploy lock held: {rel['lock']}")
    for proc in facts["pm2"]:
        lines.append(
            f"pm2 {proc['name']}#{proc['pm_id']} {proc['status']} restarts={proc['restart_time']}"
            f" mem={(proc['memory'] or 0) // 1048576}MB cpu={proc['cpu']}%"
        )
    return lines


def status(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    started = time.monotonic()
    results = {}
    for name, facts in gather(loaded, _read).items():
        result = HostResult(name)
        if isinstance(facts, Exception):
            result.error = str(facts)
        else:
            healthy = not health_problems(facts["health"])
            result.steps = [Step(line, "ok") for line in describe(facts)]
            if not healthy:
                result.steps[1].status = "failed"
        for step in result.steps:
            if printer:
                printer(name, step)
        results[name] = result
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - started)
