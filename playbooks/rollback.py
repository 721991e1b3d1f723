"""`rollback [--to COMMIT|RELEASE] [--force]`: back to a kept release in seconds, or to any
commit by building it; guarded against code older than the applied migrations; writes an
incident record (runbook section 5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from pyinfra import host as current_host

from operations import release as rel
from operations.app import layout
from operations.privileges import as_user
from playbooks.common import Options, confirm_production, secrets_for_hosts
from playbooks.deploy import RECLAIMED, lock_error, make_archive, reclaim, resolve_commit
from playbooks.health import read_history
from playbooks.release_flow import Flow, HostPlan
from playbooks.rollout import RolloutOptions, run_rollout
from tpe_ops import judgement as j
from tpe_ops.errors import ConfigError, HostError
from tpe_ops.incident import incident_json, incident_markdown, incident_record
from tpe_ops.inventory import PROJECT_ROOT, LoadedInventory
from tpe_ops.runner import Printer, RunResult, gather
from tpe_ops.state import host_key

INCIDENTS = PROJECT_ROOT / "reports" / "incidents"
NO_HISTORY = "no health history available yet: the decision criteria were not evaluated"


def rollback_criteria(host) -> str:
    """The runbook's section 5 decision criteria over the history `health --watch` kept."""
    history = read_history(host.name)
    if not history:
        return NO_HISTORY
    decision = j.rollback_decision(history, j.Thresholds.from_data(host.data), None,
                                   time.time())
    span = (history[-1]["time"] - history[0]["time"]) / 60
    return (f"{decision['decision']} (from {len(history)} health samples over {span:.0f} min)"
            + (f": {'; '.join(decision['reasons'])}" if decision["reasons"] else ""))


def pick_target(state: dict, to: str | None, commit: str | None = None) -> str | None:
    """A release on disk: by name, by commit (`commit`: `to` resolved; else `to` as a commit
    prefix), newest first; by default the newest verified, not-bad release older than
    current."""
    meta, current = state["meta"], state["current"]
    usable = [r for r in state["releases"] if meta[r].get("complete") and r != current]
    if to is None:
        older = [r for r in usable if meta[r].get("verified") and not meta[r].get("bad")
                 and (current is None or r < current)]
        return older[-1] if older else None
    if to in state["releases"]:
        if not meta[to].get("complete"):
            raise ConfigError(f"release {to} is partial (its build was interrupted): it cannot "
                              "be switched to", "choose a release `deploy.py releases` offers")
        return to
    wanted = commit or to.lower()
    by_commit = [r for r in usable if (meta[r].get("commit") or "").startswith(wanted)]
    return by_commit[-1] if by_commit else None


def _resolved(loaded: LoadedInventory, to: str | None) -> str | None:
    """`to` as a full commit id if it names a ref (a tag, a branch); None otherwise."""
    if to is None:
        return None
    try:
        return resolve_commit(loaded, to)
    except ConfigError:
        return None


def plan_rollback(loaded: LoadedInventory, states: dict, to: str | None) -> tuple[
        dict[str, HostPlan], str | None]:
    """Plans per host; the commit to build if some host does not have the target on disk."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    plans: dict[str, HostPlan] = {}
    commit_to_build = None
    resolved = _resolved(loaded, to)
    for name, state in states.items():
        if isinstance(state, Exception):
            raise HostError(f"host {name}: {state}", "fix the inventory or the host, then retry")
        if state["lock"]:
            raise lock_error(name, state["lock"])
        target = pick_target(state, to, resolved)
        current = state["current"]
        if target:
            plans[name] = HostPlan(previous=current, release=target,
                                   commit=state["meta"][target].get("commit") or "?",
                                   build=False, rollback_to=current, meta=state["meta"],
                                   known_good=state["known_good"])
            continue
        if to is None:
            raise HostError(f"host {name}: no earlier verified release on disk to go back to",
                            "give a target: deploy.py rollback --to COMMIT")
        commit_to_build = resolved or resolve_commit(loaded, to)
        plans[name] = HostPlan(previous=current, release=rel.release_name(stamp, commit_to_build),
                               commit=commit_to_build, build=True, rollback_to=current,
                               meta=state["meta"], known_good=state["known_good"])
    return plans, commit_to_build


def _read_guard(plans: dict[str, HostPlan]):
    def read(host) -> dict:
        data, plan = host.data, plans[host.name]
        paths = layout(data.app_deploy_to)
        app = as_user(host, data.app_user)
        return {
            "target": host.get_fact(
                rel.ReleaseMigrations,
                path=f"{paths['releases']}/{plan.release}/{data.app_migrations_dir}", **app),
            "db": host.get_fact(
                rel.AppliedMigrations, shared=paths["shared"],
                backend=f"{paths['current']}/{data.app_backend_dir}",
                table=data.db_migrations_table, **app),
        }
    return read


def migration_guard(force: bool):
    """Refuse code older than the applied migrations, naming them (never roll the DB back)."""
    def guard(flow: Flow, hosts: list) -> dict[str, str]:
        if not hosts:
            return {}
        seen = gather(flow.loaded.fresh([h.name for h in hosts]), _read_guard(flow.plans))
        refused: dict[str, str] = {}
        for name, facts in seen.items():
            if isinstance(facts, Exception):
                refused[name] = f"migration guard: {facts}"
                continue
            if facts["db"]["error"]:
                refused[name] = f"migration guard: cannot read migrations: {facts['db']['error']}"
                continue
            ahead = sorted(set(facts["db"]["applied"]) - set(facts["target"]))
            flow.plans[name].meta.setdefault("_guard", {})["ahead"] = ahead
            if ahead and not force:
                refused[name] = (
                    f"refused: {flow.plans[name].release} predates applied migration(s) "
                    f"{', '.join(ahead)}; the database is never rolled back automatically "
                    "(runbook 5.4): roll forward, or pass --force"
                )
            elif ahead:
                flow.note(name, "ok", f"--force: migrations newer than the target stay applied:"
                                      f" {', '.join(ahead)}")
        return refused
    return guard


def _write_incidents(flow: Flow, reason: str, criteria: dict[str, str]) -> None:
    when = datetime.now(UTC).isoformat(timespec="seconds")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    INCIDENTS.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[str, str]] = {}
    for name, plan in flow.plans.items():
        if name not in flow.verified:
            continue
        record = incident_record(
            name, when, reason, plan.previous, plan.release, plan.commit,
            "verified, serving" if flow.verified[name]
            else f"verification failed: {flow.reasons.get(name)}",
            criteria[name], plan.meta.get("_guard", {}).get("ahead", []),
        )
        base = INCIDENTS / f"{stamp}-{host_key(name)}-{flow.token[:6]}"
        base.with_suffix(".md").write_text(incident_markdown(record))
        base.with_suffix(".json").write_text(incident_json(record))
        files[name] = (str(base.with_suffix(".md")), str(base.with_suffix(".json")))

    def upload() -> None:
        data = current_host.data
        if current_host.name not in files:
            return
        app = as_user(current_host, data.app_user)
        remote = f"{data.app_deploy_to}/incidents"
        rel.run_script(f"mkdir -p {rel.q(remote)}", name="Incident folder", **app)
        for local in files[current_host.name]:
            rel.upload(local, f"{remote}/{Path(local).name}",
                       name=f"Incident record {Path(local).name}", **app)
    flow.phase(upload, [h for h in flow.loaded.hosts if h.name in files])


def rollback(loaded: LoadedInventory, options: Options, printer: Printer | None,
             to: str | None, force: bool, reason: str | None,
             rollout: RolloutOptions | None = None) -> RunResult:
    started = time.monotonic()
    rollout = rollout or RolloutOptions()
    rollout.validate(len(loaded.hosts))
    secrets_for_hosts(loaded)
    states = gather(loaded, lambda h: h.get_fact(rel.ReleaseState,
                                                 deploy_to=h.data.app_deploy_to))
    reclaimed = set() if options.dry else reclaim(loaded, states, printer)
    plans, commit = plan_rollback(loaded, states, to)
    flow = Flow("rollback", loaded, plans, printer)
    for name in reclaimed:
        flow.note(name, "changed", RECLAIMED)
    criteria = {h.name: rollback_criteria(h) for h in loaded.hosts}
    for name, plan in plans.items():
        how = "build it, then switch" if plan.build else "on disk: switch and reload"
        flow.note(name, "would-change" if options.dry else "ok",
                  f"rollback {plan.previous or '-'} -> {plan.release} ({how})")
        flow.note(name, "ok", f"rollback criteria: {criteria[name]}")
    if options.dry:
        return RunResult(dry=True, hosts=flow.results, seconds=time.monotonic() - started)
    confirm_production(loaded, options, f"rollback to {to or 'the previous release'}")
    if commit and loaded.hosts[0].data.app_source == "upload":
        flow.archive = make_archive(loaded, commit)
    try:
        run_rollout(flow, rollout, guard=migration_guard(force))
    finally:
        if flow.archive:
            Path(flow.archive).unlink(missing_ok=True)
    result = RunResult(dry=False, hosts=flow.results)
    if flow.verified:
        _write_incidents(flow, reason or "rollback requested by an operator", criteria)
    if any(not h.ok for h in flow.results.values()) and not flow.verified:
        refused = [s.name for h in flow.results.values() for s in h.steps
                   if s.name.startswith("refused")]
        if refused:
            raise ConfigError(refused[0], "nothing was switched")
    result.seconds = time.monotonic() - started
    return result
