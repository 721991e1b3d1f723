"""`deploy [--commit REF]`: resolve the ref, check the gates, then run the release engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from operations import release as rel
from playbooks.common import Options, confirm_production, secrets_for_hosts
from playbooks.release_flow import Flow, HostPlan, read_health, reclaim_own_locks
from playbooks.rollout import RolloutOptions, run_rollout
from tpe_ops.errors import AbortedError, ConfigError, HostError, OpsError
from tpe_ops.health import health_problems
from tpe_ops.inventory import LoadedInventory, load_inventory
from tpe_ops.runner import Printer, RunResult, gather

# --- resolving the commit ----------------------------------------------------------------


def _git(repo: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)


def resolve_commit(loaded: LoadedInventory, ref: str | None) -> str:
    """The full commit id of `ref`; an unknown one stops before any host changes."""
    data = loaded.hosts[0].data
    ref = ref or data.app_branch
    if data.app_source == "upload":
        out = _git(data.app_repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if out.returncode != 0:
            raise ConfigError(f"unknown commit or branch '{ref}' in {data.app_repo}",
                              "check the ref (git log --oneline) or fetch it first")
        return out.stdout.strip()
    out = subprocess.run(["git", "ls-remote", data.app_repo, ref], capture_output=True,
                         text=True)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.split()[0]
    if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref.lower()):
        return ref  # a full commit id: the host's mirror checks that it exists
    raise ConfigError(f"unknown branch '{ref}' in {data.app_repo}",
                      "give a branch name or a full commit id")


def make_archive(loaded: LoadedInventory, commit: str) -> str | None:
    """For app_source=upload: the commit's app folder as a tar.gz on the controller."""
    data = loaded.hosts[0].data
    if data.app_source != "upload":
        return None
    tree = f"{commit}:{data.app_repo_subdir}" if data.app_repo_subdir else commit
    fd, path = tempfile.mkstemp(prefix="tpe-release-", suffix=".tar.gz")
    os.close(fd)
    out = _git(data.app_repo, "archive", "--format=tar.gz", "-o", path, tree)
    if out.returncode != 0:
        raise ConfigError(f"cannot archive {tree}: {out.stderr.strip()}",
                          "check app_repo_subdir")
    return path


# --- planning and gates -------------------------------------------------------------------


def lock_error(name: str, lock: str) -> HostError:
    return HostError(
        f"host {name}: deploy lock held by {describe_lock(lock)}",
        "wait for that deploy to finish; if it died: deploy.py unlock --force",
    )


def describe_lock(lock: str) -> str:
    try:
        owner = json.loads(lock)
        since = datetime.fromisoformat(owner["since"])
        age = int((datetime.now(UTC) - since).total_seconds())
        return (f"{owner.get('user')}@{owner.get('from')} ({owner.get('action', 'deploy')} "
                f"{str(owner.get('commit', ''))[:12]}) since {owner['since']}, {age} s ago")
    except (ValueError, KeyError, TypeError):
        return lock


def read_state(host) -> dict:
    return {"release": host.get_fact(rel.ReleaseState, deploy_to=host.data.app_deploy_to),
            **read_health(host)}


RECLAIMED = ("released our own deploy lock left by an earlier run from this machine (the host "
             "went away before that run could release it)")


def reclaim(loaded: LoadedInventory, releases: dict, printer: Printer | None) -> set[str]:
    """Release our own locks left by an earlier run whose host went away (the ReleaseState
    facts `releases` are updated in place); returns those hosts."""
    locks = {n: r["lock"] for n, r in releases.items() if not isinstance(r, Exception)}
    released = reclaim_own_locks(loaded, locks, printer)
    for name in released:
        releases[name]["lock"] = None
    return released


def plan_deploy(states: dict, commit: str) -> dict[str, HostPlan]:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    plans = {}
    for name, state in states.items():
        if isinstance(state, Exception):
            raise HostError(f"host {name}: {state}", "fix the inventory or the host, then retry")
        release = state["release"]
        if release["lock"]:
            raise lock_error(name, release["lock"])
        current = release["current"]
        plan = HostPlan(previous=current, release=rel.release_name(stamp, commit),
                        commit=commit, build=True, rollback_to=release["known_good"],
                        meta=release["meta"], known_good=release["known_good"])
        current_meta = release["meta"].get(current or "", {})
        if current_meta.get("commit") == commit and current == release["known_good"]:
            plan.skip_reason = f"{commit[:12]} is already current and verified: nothing to do"
        plans[name] = plan
    return plans


def _ask(question: str, flag: str, message: str) -> None:
    if not sys.stdin.isatty():
        raise AbortedError(message, f"pass {flag} to go ahead")
    if input(f"{message}\n{question} Type 'yes' to continue: ").strip().lower() != "yes":
        raise AbortedError("not confirmed: nothing was changed")


def gate_verified_elsewhere(loaded: LoadedInventory, commit: str, options: Options) -> None:
    """Production takes commits that passed verification on the verify inventory (staging)."""
    if not loaded.is_production or options.unverified_ok or options.dry:
        return
    where = loaded.hosts[0].data.deploy_verify_inventory
    try:
        other = load_inventory(where)
        logs = gather(other, lambda h: h.get_fact(rel.RevisionsLog,
                                                  path=f"{h.data.app_deploy_to}/revisions.log"))
    except OpsError:
        logs = {}
    verified = any(
        not isinstance(entries, Exception)
        and any(e.get("commit") == commit and e.get("result") == "verified" for e in entries)
        for entries in logs.values()
    )
    if not verified:
        _ask("Deploy it to production anyway?", "--unverified-ok",
             f"{commit[:12]} has not been verified on {where}")


def gate_unhealthy_before(states: dict, plans: dict[str, HostPlan], options: Options) -> None:
    """A host already unhealthy before the deploy is said so, and needs a confirmation: a
    failed verification afterwards is then not blamed on the new release alone."""
    sick = {name: "; ".join(health_problems(s["http"])) for name, s in states.items()
            if plans[name].previous and not plans[name].skip_reason
            and health_problems(s["http"])}
    if sick and not options.unhealthy_ok:
        listing = ", ".join(f"{n} ({p})" for n, p in sick.items())
        _ask("Deploy anyway (a fix is often what is being deployed)?", "--unhealthy-ok",
             f"unhealthy before the deploy: {listing}")


# --- the command --------------------------------------------------------------------------


def deploy(loaded: LoadedInventory, options: Options, printer: Printer | None,
           ref: str | None, rollout: RolloutOptions | None = None) -> RunResult:
    started = time.monotonic()
    rollout = rollout or RolloutOptions()
    rollout.validate(len(loaded.hosts))  # bad batch options stop here, before any change
    secrets_for_hosts(loaded)  # a missing secret stops here, before any change
    commit = resolve_commit(loaded, ref)
    states = gather(loaded, read_state)
    reclaimed = set() if options.dry else reclaim(
        loaded, {n: s["release"] for n, s in states.items() if not isinstance(s, Exception)},
        printer)
    plans = plan_deploy(states, commit)
    flow = Flow("deploy", loaded, plans, printer)
    for name in reclaimed:
        flow.note(name, "changed", RECLAIMED)
    for name, plan in plans.items():
        if plan.skip_reason:
            flow.note(name, "ok", plan.skip_reason)
        elif options.dry:
            flow.note(name, "would-change", f"deploy {commit[:12]} as {plan.release} "
                                            f"(current: {plan.previous or 'none'})")
    if options.dry or not flow.live():
        return RunResult(dry=options.dry, hosts=flow.results,
                         seconds=time.monotonic() - started)
    gate_verified_elsewhere(loaded, commit, options)
    gate_unhealthy_before(states, plans, options)
    confirm_production(loaded, options, f"deploy {commit[:12]}")
    flow.archive = make_archive(loaded, commit)
    try:
        run_rollout(flow, rollout)
    finally:
        if flow.archive:
            Path(flow.archive).unlink(missing_ok=True)
    return RunResult(dry=False, hosts=flow.results, seconds=time.monotonic() - started)

