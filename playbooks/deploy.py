"""`deploy`: lock, build a release, migrate, switch, reload, verify, keep or roll back.

Each phase is its own pyinfra run (fresh State), so the playbook decides between phases. Every
host ends on the new verified release or on its previous one; the lock is released on every
exit path.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyinfra import host as current_host

from operations import release as rel
from operations.app import layout
from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from playbooks.common import Options, confirm_production, secrets_for_hosts
from tpe_ops.errors import ConfigError, HostError
from tpe_ops.health import health_problems, pm2_problems
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.settings import pm2_apps


@dataclass
class HostPlan:
    previous: str | None  # the current release: dependencies and build cache come from it
    release: str
    known_good: str | None
    releases: list[str] = field(default_factory=list)
    skip_reason: str | None = None

    @property
    def rollback_to(self) -> str | None:
        """Where a failed deploy goes back to: the last release that passed verification."""
        return self.known_good


@dataclass
class Deployment:
    loaded: LoadedInventory
    commit: str
    archive: str | None
    token: str
    plans: dict[str, HostPlan]
    printer: Printer | None
    results: dict[str, HostResult]

    def live(self) -> list:
        """Hosts still deploying: planned, not skipped, not failed."""
        return [
            h for h in self.loaded.hosts
            if not self.plans[h.name].skip_reason and self.results[h.name].ok
        ]

    def phase(self, func, hosts=None) -> None:
        hosts = self.live() if hosts is None else hosts
        if not hosts:
            return
        subset = self.loaded.fresh([h.name for h in hosts])
        result = run_deploy(subset, func, printer=self.printer)
        for name, outcome in result.hosts.items():
            self.results[name].steps.extend(outcome.steps)
            self.results[name].error = self.results[name].error or outcome.error

    def note(self, host_name: str, status: str, text: str) -> None:
        step = Step(text, status)
        self.results[host_name].steps.append(step)
        if self.printer:
            self.printer(host_name, step)


# --- resolving the commit ----------------------------------------------------------------

def _git(repo: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)


def resolve_commit(loaded: LoadedInventory, ref: str | None) -> str:
    """The full commit id of `ref`; an unknown one stops the deploy before any host changes."""
    data = loaded.hosts[0].data
    ref = ref or data.app_branch
    if data.app_source == "upload":
        out = _git(data.app_repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if out.returncode != 0:
            raise ConfigError(
                f"unknown commit or branch '{ref}' in {data.app_repo}",
                "check the ref (git log --oneline) or fetch it first",
            )
        return out.stdout.strip()
    out = subprocess.run(["git", "ls-remote", data.app_repo, ref], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.split()[0]
    if all(c in "0123456789abcdef" for c in ref.lower()) and len(ref) == 40:
        return ref  # a full commit id: the host's mirror checks it exists
    raise ConfigError(
        f"unknown branch '{ref}' in {data.app_repo}", "give a branch name or a full commit id"
    )


def make_archive(loaded: LoadedInventory, commit: str) -> str | None:
    data = loaded.hosts[0].data
    if data.app_source != "upload":
        return None
    tree = f"{commit}:{data.app_repo_subdir}" if data.app_repo_subdir else commit
    fd, path = tempfile.mkstemp(prefix="tpe-release-", suffix=".tar.gz")
    os.close(fd)
    out = _git(data.app_repo, "archive", "--format=tar.gz", "-o", path, tree)
    if out.returncode != 0:
        raise ConfigError(f"cannot archive {tree}: {out.stderr.strip()}", "check app_repo_subdir")
    return path


# --- planning ------------------------------------------------------------------------------

def plan_hosts(loaded: LoadedInventory, commit: str) -> dict[str, HostPlan]:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    states = gather(loaded, lambda h: h.get_fact(rel.ReleaseState, deploy_to=h.data.app_deploy_to))
    plans = {}
    for name, state in states.items():
        if isinstance(state, Exception):
            raise HostError(f"host {name}: {state}", "fix the inventory or the host, then retry")
        current = state["current"]
        plan = HostPlan(current, rel.release_name(stamp, commit), state["known_good"],
                        state["releases"])
        if current and current.endswith(commit[:12]) and current == state["known_good"]:
            plan.skip_reason = f"{commit[:12]} is already current and verified: nothing to do"
        if state["lock"]:
            raise HostError(
                f"host {name}: deploy lock held: {state['lock']}",
                "wait for that deploy, or clear a stale lock with: deploy.py unlock --force",
            )
        plans[name] = plan
    return plans


# --- phases (pyinfra deploys; each reads its host's plan) --------------------------------

def _ctx(d: Deployment):
    data = current_host.data
    paths = layout(data.app_deploy_to)
    plan = d.plans[current_host.name]
    release_dir = f"{paths['releases']}/{plan.release}"
    previous_dir = f"{paths['releases']}/{plan.previous}" if plan.previous else None
    return data, paths, plan, release_dir, previous_dir, as_user(current_host, data.app_user)


def _owner(d: Deployment) -> dict:
    return {"user": getpass.getuser(), "from": socket.gethostname(), "commit": d.commit,
            "token": d.token, "since": datetime.now(UTC).isoformat(timespec="seconds")}


def phase_lock(d: Deployment):
    def run() -> None:
        data, *_ , app = _ctx(d)
        rel.run_script(rel.lock_command(data.app_deploy_to, _owner(d)),
                       name="Take the deploy lock", **app)
    return run


def phase_unlock(d: Deployment):
    def run() -> None:
        data, *_ , app = _ctx(d)
        rel.run_script(rel.unlock_command(data.app_deploy_to, d.token),
                       name="Release the deploy lock", **app)
    return run


def phase_build(d: Deployment):
    def run() -> None:
        data, paths, plan, release_dir, previous_dir, app = _ctx(d)
        if d.archive:
            upload_to = f"{paths['releases']}/.upload-{plan.release}.tar.gz"
            rel.upload(d.archive, upload_to, name="Upload the release archive", **app)
            script = "\n".join(rel.unpack_upload(upload_to, release_dir))
        else:
            mirror = f"{data.app_deploy_to}/repo"
            script = "\n".join(rel.unpack_mirror(
                data.app_repo, mirror, d.commit, data.app_repo_subdir, release_dir))
        script += f"\nprintf '%s\\n' {d.commit} > {release_dir}/REVISION\n"
        script += "\n".join(rel.link_shared(paths["shared"], release_dir, data.app_backend_dir))
        rel.run_script(f"set -e\n{script}", name=f"Create release {plan.release}", **app)
        rel.run_script(f"set -e\n{rel.dependencies_script(release_dir, previous_dir)}",
                       name="Install dependencies (or reuse unchanged ones)", **app)
        rel.run_script(
            rel.build_script(release_dir, previous_dir, data.app_frontend_dir,
                             data.app_build_command),
            name="Build the frontend inside the new release", **app)
        if data.app_migrate_command:
            rel.run_script(
                rel.with_app_env(paths["shared"], f"{release_dir}/{data.app_backend_dir}",
                                 _in_root(data.app_migrate_command)),
                name="Run pending database migrations", **app)
    return run


def _in_root(command: str) -> str:
    # The app's npm scripts live in the monorepo root.
    return f"cd .. && {command}"


def phase_switch(d: Deployment, to_previous: bool = False):
    def run() -> None:
        data, paths, plan, *_ , app = _ctx(d)
        target = plan.rollback_to if to_previous else plan.release
        label = "Switch back to" if to_previous else "Switch current to"
        rel.run_script(" && ".join(rel.switch_commands(data.app_deploy_to, target)),
                       name=f"{label} {target}", **app)
        rel.run_script(" && ".join(rel.reload_commands(paths["ecosystem"])),
                       name="Reload the PM2 apps (graceful, cluster mode)", **app)
    return run


def phase_finish(d: Deployment, verified: dict[str, bool], reasons: dict[str, str]):
    def run() -> None:
        data, paths, plan, release_dir, _, app = _ctx(d)
        ok = verified.get(current_host.name, False)
        if ok:
            rel.run_script(f"printf '%s\\n' {plan.release} > {data.app_deploy_to}/.known-good",
                           name=f"Mark {plan.release} known-good", **app)
            keep = rel.releases_to_keep(plan.releases + [plan.release], data.app_keep_releases,
                                        plan.release, plan.release)
            rel.run_script(rel.prune_command(data.app_deploy_to, keep),
                           name=f"Keep the newest {data.app_keep_releases} releases", **app)
        else:
            reason = reasons.get(current_host.name, "verification failed")
            rel.run_script(f"printf '%s\\n' {rel.q(reason)} > {release_dir}/.bad",
                           name=f"Mark {plan.release} bad", **app)
        record = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"), "user": getpass.getuser(),
            "from": socket.gethostname(), "commit": d.commit, "release": plan.release,
            "previous": plan.previous,
            "result": "verified" if ok else ("rolled-back" if plan.rollback_to else "failed"),
            "reason": None if ok else reasons.get(current_host.name),
        }
        rel.run_script(f"printf '%s\\n' {rel.q(json.dumps(record))} >> {paths['revisions']}",
                       name="Append to the revisions log", **app)
    return run


def phase_warm_cache(d: Deployment):
    def run() -> None:
        data, paths, _, _, _, app = _ctx(d)
        rel.run_script(
            rel.with_app_env(paths["shared"], f"{paths['current']}/{data.app_backend_dir}",
                             _in_root(data.app_warm_cache_command)),
            name="Warm the cache", **app)
    return run


# --- verification --------------------------------------------------------------------------

def _read_health(host) -> dict:
    data = host.data
    url = f"http://127.0.0.1:{data.app_backend_port}{data.health_endpoint}"
    app = as_user(host, data.app_user)
    return {
        "http": host.get_fact(rel.HttpCheck, url=url, timeout=data.health_timeout_seconds, **app),
        "pm2": host.get_fact(Pm2Processes, **app),
    }


def _still_starting(sample) -> bool:
    """Not healthy yet, and no app has given up (errored) either."""
    if isinstance(sample, Exception) or not health_problems(sample["http"]):
        return False
    return not any(p.get("status") == "errored" for p in sample["pm2"])


def verify(d: Deployment, hosts) -> dict[str, str | None]:
    """Health endpoint answers with the runbook's shape and every app stays online without
    restarts over the stabilisation window. Returns {host: problem or None}."""
    if not hosts:
        return {}
    subset = d.loaded.fresh([h.name for h in hosts])
    deadline = time.monotonic() + 60
    first = gather(subset, _read_health)
    while time.monotonic() < deadline and any(_still_starting(v) for v in first.values()):
        time.sleep(1)
        first = gather(subset, _read_health)
    window = max(h.data.health_stabilisation_seconds for h in hosts)
    time.sleep(window)
    second = gather(subset, _read_health)
    problems: dict[str, str | None] = {}
    for h in hosts:
        before, after = first[h.name], second[h.name]
        if isinstance(after, Exception):
            problems[h.name] = str(after)
            continue
        expected = [a.name for a in pm2_apps(h.data)]
        found = health_problems(after["http"]) + pm2_problems(before["pm2"], after["pm2"], expected)
        problems[h.name] = "; ".join(found) or None
    return problems


# --- the playbook --------------------------------------------------------------------------

def deploy(loaded: LoadedInventory, options: Options, printer: Printer | None,
           ref: str | None) -> RunResult:
    started = time.monotonic()
    secrets_for_hosts(loaded)  # a missing secret stops here (provision renders them)
    commit = resolve_commit(loaded, ref)
    plans = plan_hosts(loaded, commit)
    results = {h.name: HostResult(h.name) for h in loaded.hosts}
    d = Deployment(loaded, commit, None, uuid.uuid4().hex, plans, printer, results)
    for name, plan in plans.items():
        if plan.skip_reason:
            d.note(name, "ok", plan.skip_reason)
        elif options.dry:
            d.note(name, "would-change",
                   f"deploy {commit[:12]} as {plan.release} (current: {plan.previous or 'none'})")
    if options.dry or not d.live():
        return RunResult(dry=options.dry, hosts=results, seconds=time.monotonic() - started)
    confirm_production(loaded, options, f"deploy {commit[:12]}")
    d.archive = make_archive(loaded, commit)
    locked = d.live()
    try:
        d.phase(phase_lock(d))
        d.phase(phase_build(d))
        switched = d.live()
        d.phase(phase_switch(d), switched)
        problems = verify(d, [h for h in switched if results[h.name].ok])
        for h in switched:
            if not results[h.name].ok and h.name not in problems:
                problems[h.name] = "switch or reload failed"
        failed = [h for h in switched if problems.get(h.name)]
        for h in failed:
            d.note(h.name, "failed", f"verification: {problems[h.name]}")
        back = [h for h in failed if d.plans[h.name].rollback_to]
        d.phase(phase_switch(d, to_previous=True), back)
        if back:
            back_problems = verify(d, back)
            for h in back:
                state = back_problems.get(h.name) or "previous release verified"
                d.note(h.name, "changed", f"rolled back to {d.plans[h.name].rollback_to}: {state}")
        verified = {h.name: not problems.get(h.name) for h in switched}
        reasons = {name: problem for name, problem in problems.items() if problem}
        d.phase(phase_finish(d, verified, reasons), switched)
        d.phase(phase_warm_cache(d), [h for h in switched if verified[h.name]])
    finally:
        d.phase(phase_unlock(d), locked)
        if d.archive:
            Path(d.archive).unlink(missing_ok=True)
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - started)
