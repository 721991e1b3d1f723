"""`releases`: per host, each release with its commit, when and by whom it was deployed, its
status, and whether a rollback to it is instant (on disk, complete, not bad)."""

from __future__ import annotations

import time
from datetime import datetime

from operations import release as rel
from operations.privileges import as_user
from playbooks.common import Options
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather


def _read(host) -> dict:
    app = as_user(host, host.data.app_user)
    deploy_to = host.data.app_deploy_to
    return {"state": host.get_fact(rel.ReleaseState, deploy_to=deploy_to, **app),
            "log": host.get_fact(rel.RevisionsLog, path=f"{deploy_to}/revisions.log", **app)}


def release_rows(state: dict, log: list[dict]) -> list[dict]:
    """One row per release on disk, newest first (pure: from the facts)."""
    who = {entry.get("release"): entry for entry in log}
    rows = []
    for name in reversed(state["releases"]):
        flags = state["meta"][name]
        if name == state["current"]:
            status = "current"
        elif flags["bad"]:
            status = "bad"
        elif not flags["complete"]:
            status = "partial"
        elif name == state["known_good"] or flags["verified"]:
            status = "known-good"
        else:
            status = "built"
        try:
            deployed = datetime.strptime(name[:14], "%Y%m%d%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            deployed = "?"
        entry = who.get(name, {})
        rows.append({
            "release": name, "commit": (flags["commit"] or "?")[:12], "deployed_at": deployed,
            "by": f"{entry.get('user', '?')}@{entry.get('from', '?')}" if entry else "?",
            "status": status,
            "instant_rollback": flags["complete"] and not flags["bad"]
            and name != state["current"],
        })
    return rows


def releases(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    started = time.monotonic()
    results: dict[str, HostResult] = {}
    for name, facts in gather(loaded, _read).items():
        result = HostResult(name)
        if isinstance(facts, Exception):
            result.error = str(facts)
        else:
            result.data["releases"] = release_rows(facts["state"], facts["log"])
            for row in result.data["releases"]:
                instant = "instant rollback" if row["instant_rollback"] else ""
                line = (f"{row['release']}  {row['commit']}  {row['deployed_at']}  {row['by']}"
                        f"  {row['status']}  {instant}").rstrip()
                result.steps.append(Step(line, "ok"))
        for step in result.steps:
            if printer:
                printer(name, step)
        results[name] = result
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - started)
