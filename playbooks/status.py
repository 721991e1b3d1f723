"""`status`: releases, lock and PM2 processes on each host (read-only)."""

from __future__ import annotations

from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from operations.release import ReleaseState
from playbooks.common import Options
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather


def _read(host) -> dict:
    app = as_user(host, host.data.app_user)
    return {
        "releases": host.get_fact(ReleaseState, deploy_to=host.data.app_deploy_to, **app),
        "pm2": host.get_fact(Pm2Processes, **app),
    }


def describe(facts: dict) -> list[str]:
    rel = facts["releases"]
    lines = [
        f"current {rel['current'] or '-'}, known-good {rel['known_good'] or '-'}, "
        f"{len(rel['releases'])} release(s) on disk"
    ]
    if rel["lock"]:
        lines.append(f"deploy lock held: {rel['lock']}")
    for proc in facts["pm2"]:
        lines.append(
            f"pm2 {proc['name']}#{proc['pm_id']} {proc['status']} restarts={proc['restart_time']}"
            f" mem={(proc['memory'] or 0) // 1048576}MB cpu={proc['cpu']}%"
        )
    return lines


def status(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    results = {}
    for name, facts in gather(loaded, _read).items():
        result = HostResult(name)
        if isinstance(facts, Exception):
            result.error = str(facts)
        else:
            result.steps = [Step(line, "ok") for line in describe(facts)]
        for step in result.steps:
            if printer:
                printer(name, step)
        results[name] = result
    return RunResult(dry=False, hosts=results)
