"""The release engine shared by `deploy` and `rollback`:

lock -> build (when the target is not on disk) -> guard -> switch -> reload -> verify ->
keep, or switch back -> record -> unlock.

Each phase is its own pyinfra run (fresh State), so the engine decides between phases. Every
host ends on the target release (verified) or on the release it had before; the lock is
released on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyinfra import host as current_host

from operations import release as rel
from operations.app import layout
from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from tpe_ops.health import health_problems, pm2_problems
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.settings import pm2_apps
from tpe_ops.state import STATE_DIR

MIGRATE_STEP = "Run pending database migrations"


@dataclass
class HostPlan:
    previous: str | None  # current release now: dependencies and build cache come from it
    release: str  # the target release
    commit: str
    build: bool  # the target is not on disk yet
    rollback_to: str | None  # where a failed verification goes back to
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    known_good: str | None = None
    skip_reason: str | None = None


@dataclass
class Flow:
    kind: str  # deploy | rollback
    loaded: LoadedInventory
    plans: dict[str, HostPlan]
    printer: Printer | None
    archive: str | None = None  # upload source: a tar.gz of the commit
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    results: dict[str, HostResult] = field(default_factory=dict)
    verified: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    # build key -> this machine's copy of its outputs (share_builds); key -> the host that
    # built it, once fetched. Shared by the batches of a rollout.
    builds: dict[str, str] = field(default_factory=dict)
    built: dict[str, str] = field(default_factory=dict)
    # (release, database) -> the host that ran the release's migrations against it, and what
    # they applied: the hosts taking its build do not run them again.
    migrated: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = {h.name: HostResult(h.name) for h in self.loaded.hosts}

    def live(self) -> list:
        """Hosts still going: planned, not skipped, not failed."""
        return [h for h in self.loaded.hosts
                if not self.plans[h.name].skip_reason and self.results[h.name].ok]

    def phase(self, func: Callable[[], None], hosts: list | None = None) -> RunResult | None:
        hosts = self.live() if hosts is None else hosts
        if not hosts:
            return None
        result = run_deploy(self.loaded.fresh([h.name for h in hosts]), func,
                            printer=self.printer)
        for name, outcome in result.hosts.items():
            self.results[name].steps.extend(outcome.steps)
            self.results[name].error = self.results[name].error or outcome.error
        return result

    def note(self, host_name: str, status: str, text: str) -> None:
        step = Step(text, status)
        self.results[host_name].steps.append(step)
        if self.printer:
            self.printer(host_name, step)

    def migrations_applied(self, host_name: str) -> list[str]:
        """The migrations this run applied for the host's release (whichever host ran them)."""
        for step in self.results[host_name].steps:
            if step.name == MIGRATE_STEP:
                return [line.split()[1] for line in step.output if line.startswith("applied ")]
        host = next(h for h in self.loaded.hosts if h.name == host_name)
        return self.migrated.get(migration_key(self, host), ("", []))[1]


# --- phases: each is a pyinfra deploy reading its host's plan -------------------------------

def _ctx(flow: Flow):
    data = current_host.data
    paths = layout(data.app_deploy_to)
    plan = flow.plans[current_host.name]
    release_dir = f"{paths['releases']}/{plan.release}"
    previous_dir = f"{paths['releases']}/{plan.previous}" if plan.previous else None
    return data, paths, plan, release_dir, previous_dir, as_user(current_host, data.app_user)


def _owner(flow: Flow) -> dict[str, str]:
    plan = flow.plans[current_host.name]
    return {"user": getpass.getuser(), "from": socket.gethostname(), "action": flow.kind,
            "commit": plan.commit, "token": flow.token,
            "since": datetime.now(UTC).isoformat(timespec="seconds")}


def in_app_root(command: str) -> str:
    """The app's npm scripts live in the monorepo root, one level above the backend."""
    return f"cd .. && {command}"


def phase_lock(flow: Flow):
    def run() -> None:
        data, *_, app = _ctx(flow)
        rel.run_script(rel.lock_command(data.app_deploy_to, _owner(flow)),
                       name="Take the deploy lock", **app)
    return run


def phase_unlock(flow: Flow):
    def run() -> None:
        data, *_, app = _ctx(flow)
        rel.run_script(rel.unlock_command(data.app_deploy_to, flow.token),
                       name="Release the deploy lock", **app)
    return run


# How a host gets its build: ("build", None) builds here; ("share", path) builds here and
# fetches the outputs to `path` on this machine for the others; ("copy", path) takes them from
# `path`; ("later", None) creates the release and its dependencies now, the build comes next.
How = tuple[str, str | None]


def build_key(flow: Flow, host) -> str:
    """Hosts with the same key would build the same thing: one build serves them all."""
    d = host.data
    return json.dumps([flow.plans[host.name].release, d.app_deploy_to, d.app_build_command,
                       d.app_build_outputs])


def migration_key(flow: Flow, host) -> str:
    d = host.data
    return f"{flow.plans[host.name].release} {d.db_host}:{d.db_port}/{d.db_name}"


def share_builds(flow: Flow, share_dir: str) -> None:
    """Every release that two or more hosts of the flow will build is built once (by the
    first of them) and copied to the others, also across the batches of a rollout."""
    keys = [build_key(flow, h) for h in flow.live() if flow.plans[h.name].build]
    for index, key in enumerate(sorted({k for k in keys if keys.count(k) > 1})):
        flow.builds.setdefault(key, f"{share_dir}/build-{index}.tar.gz")


def build_plan(flow: Flow, hosts: list, waited: bool = False) -> dict[str, How]:
    """How each building host gets its build (see How), in inventory order. `waited`: these
    hosts waited for a shared build; where it failed, each builds on its own."""
    how: dict[str, How] = {}
    building: set[str] = set()
    for h in hosts:
        key = build_key(flow, h)
        path = flow.builds.get(key)
        if key in flow.built:
            how[h.name] = ("copy", path)
        elif path is None or waited:
            how[h.name] = ("build", None)
        elif key in building:
            how[h.name] = ("later", None)
        else:
            building.add(key)
            how[h.name] = ("share", path)
    return how


def migrated_elsewhere(flow: Flow, hosts: list, how: dict[str, How]) -> dict[str, str]:
    """The hosts taking a shared build whose migrations (same release, same database) another
    host already ran: {host: that host}. They do not run them again."""
    if flow.kind != "deploy":
        return {}
    return {h.name: flow.migrated[migration_key(flow, h)][0] for h in hosts
            if how[h.name][0] == "copy" and h.data.app_migrate_command
            and migration_key(flow, h) in flow.migrated}


def phase_build(flow: Flow, how: dict[str, How], elsewhere: dict[str, str],
                create: bool = True):
    def run() -> None:
        data, paths, plan, release_dir, previous_dir, app = _ctx(flow)
        mode, archive = how[current_host.name]
        if create:
            _create_release(flow, data, paths, plan, release_dir, previous_dir, app)
        if mode == "later":
            return
        build = rel.build_script(release_dir, previous_dir, data.app_frontend_dir,
                                 data.app_build_command)
        on_host = f"{paths['releases']}/.build-{plan.release}.tar.gz"
        if mode == "copy":
            builder = flow.built[build_key(flow, current_host)]
            rel.upload(archive, on_host, name=f"Upload the build made on {builder}", **app)
            rel.run_script(rel.unpack_build_script(release_dir, on_host, builder, build),
                           name="Take that build (or build here if dependencies differ)",
                           **app)
        else:
            rel.run_script(build, name="Build the frontend inside the new release", **app)
        if mode == "share":
            rel.run_script(rel.pack_build_command(release_dir, data.app_build_outputs,
                                                  on_host),
                           name="Pack the build for the other hosts", **app)
            rel.download(on_host, archive, name="Fetch the build to share it", **app)
            rel.run_script(f"rm -f {rel.q(on_host)}", name="Remove the packed build", **app)
        if (data.app_migrate_command and flow.kind == "deploy"
                and current_host.name not in elsewhere):
            rel.run_script(
                rel.with_app_env(paths["shared"], f"{release_dir}/{data.app_backend_dir}",
                                 in_app_root(data.app_migrate_command)),
                name=MIGRATE_STEP, **app)
        rel.run_script(f"touch {rel.q(release_dir + '/.complete')}",
                       name=f"Mark {plan.release} complete", **app)
    return run


def _create_release(flow: Flow, data, paths, plan: HostPlan, release_dir: str,
                    previous_dir: str | None, app: dict) -> None:
    if flow.archive:
        upload_to = f"{paths['releases']}/.upload-{plan.release}.tar.gz"
        rel.upload(flow.archive, upload_to, name="Upload the release archive", **app)
        unpack = rel.unpack_upload(upload_to, release_dir)
    else:
        unpack = rel.unpack_mirror(data.app_repo, f"{data.app_deploy_to}/repo", plan.commit,
                                   data.app_repo_subdir, release_dir)
    script = [*unpack, f"printf '%s\\n' {plan.commit} > {rel.q(release_dir + '/REVISION')}",
              *rel.link_shared(paths["shared"], release_dir, data.app_backend_dir)]
    rel.run_script("set -e\n" + "\n".join(script), name=f"Create release {plan.release}",
                   **app)
    rel.run_script(f"set -e\n{rel.dependencies_script(release_dir, previous_dir)}",
                   name="Install dependencies (or reuse unchanged ones)", **app)


def phase_switch(flow: Flow, back: bool = False):
    def run() -> None:
        data, paths, plan, *_, app = _ctx(flow)
        target = plan.rollback_to if back else plan.release
        label = "Switch back to" if back else "Switch current to"
        rel.run_script(" && ".join(rel.switch_commands(data.app_deploy_to, target)),
                       name=f"{label} {target}", **app)
        rel.run_script(" && ".join(rel.reload_commands(paths["ecosystem"])),
                       name="Reload the PM2 apps (graceful, cluster mode)", **app)
    return run


def phase_finish(flow: Flow):
    def run() -> None:
        data, paths, plan, release_dir, _, app = _ctx(flow)
        name = current_host.name
        ok = flow.verified.get(name, False)
        if ok:
            rel.run_script(
                f"touch {rel.q(release_dir + '/.verified')} && rm -f {rel.q(release_dir + '/.bad')}"
                f" && printf '%s\\n' {plan.release} > {rel.q(data.app_deploy_to + '/.known-good')}",
                name=f"Mark {plan.release} verified and known-good", **app)
            meta = {**plan.meta, plan.release: {"complete": True}}
            keep = rel.releases_to_keep(meta, data.app_keep_releases, plan.release,
                                        plan.release)
            rel.run_script(rel.prune_command(data.app_deploy_to, keep),
                           name=f"Keep the newest {data.app_keep_releases} releases", **app)
        else:
            rel.run_script(
                f"printf '%s\\n' {rel.q(flow.reasons.get(name, 'failed'))} "
                f"> {rel.q(release_dir + '/.bad')}", name=f"Mark {plan.release} bad", **app)
        rel.run_script(
            f"printf '%s\\n' {rel.q(json.dumps(revision_record(flow, name)))} "
            f">> {rel.q(paths['revisions'])}", name="Append to the revisions log", **app)
        if ok and flow.kind == "deploy":  # a rollback goes back to code the cache serves
            warm_cache()
    return run


def revision_record(flow: Flow, name: str) -> dict[str, Any]:
    plan = flow.plans[name]
    ok = flow.verified.get(name, False)
    if ok:
        result = "verified" if flow.kind == "deploy" else "rolled-back"
    elif flow.kind == "deploy" and plan.rollback_to:
        result = "rolled-back"  # the deploy failed verification and went back
    else:
        result = "failed"
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"), "user": getpass.getuser(),
        "from": socket.gethostname(), "action": flow.kind, "commit": plan.commit,
        "release": plan.release, "previous": plan.previous, "result": result,
        "reason": None if ok else flow.reasons.get(name),
        "migrations_applied": flow.migrations_applied(name),
    }


def warm_cache() -> None:
    """The app's warm-cache script in the current release, as the app user, with the app's
    env (a deploy's last phase, and `cache warm`)."""
    data = current_host.data
    paths = layout(data.app_deploy_to)
    if data.app_warm_cache_command:
        rel.run_script(
            rel.with_app_env(paths["shared"], f"{paths['current']}/{data.app_backend_dir}",
                             in_app_root(data.app_warm_cache_command)),
            name="Warm the cache", **as_user(current_host, data.app_user))


# --- verification ------------------------------------------------------------------------

def read_health(host) -> dict[str, Any]:
    data = host.data
    url = f"http://127.0.0.1:{data.app_backend_port}{data.health_endpoint}"
    app = as_user(host, data.app_user)
    return {
        "http": host.get_fact(rel.HttpCheck, url=url, timeout=data.health_timeout_seconds, **app),
        "pm2": host.get_fact(Pm2Processes, **app),
    }


def _still_starting(sample: Any) -> bool:
    """Not healthy yet, and no app has given up (errored) either."""
    if isinstance(sample, Exception) or not health_problems(sample["http"]):
        return False
    return not any(p.get("status") == "errored" for p in sample["pm2"])


def worth_waiting(sample: Any, restarts_at_start: int, answering_since: float | None,
                  now: float, grace: float) -> bool:
    """Whether a host after a reload is still starting: not answering yet, or answering
    unhealthy for less than `grace` seconds. One whose apps keep restarting (PM2 relaunching
    a crash without giving up) is failing, not starting: judge it now."""
    if not _still_starting(sample) or _restarts(sample) > restarts_at_start:
        return False
    if not _answers(sample):
        return True
    return answering_since is None or now - answering_since < grace


def _answers(sample: Any) -> bool:
    """The app answered the health request (whatever it said): it is up."""
    return 200 <= sample["http"].get("status", 0) < 500


def _restarts(sample: Any) -> int:
    if isinstance(sample, Exception):
        return -1
    return sum(p.get("restart_time") or 0 for p in sample["pm2"])


def _failing(sample: Any) -> bool:
    return isinstance(sample, Exception) or bool(health_problems(sample["http"]))


def verify(loaded: LoadedInventory, hosts: list,
           window_setting: str = "health_stabilisation_seconds",
           wait_seconds: float = 60) -> dict[str, str]:
    """Health endpoint answers with the runbook's shape, and every app stays online with no
    restarts over the stabilisation window. Returns {host: problem} for failing hosts."""
    if not hosts:
        return {}
    subset = loaded.fresh([h.name for h in hosts])
    deadline = time.monotonic() + wait_seconds
    grace = {h.name: h.data.health_unhealthy_grace_seconds for h in hosts}
    first = gather(subset, read_health)
    started = {name: _restarts(sample) for name, sample in first.items()}
    answering: dict[str, float] = {}  # host -> when its app first answered (the grace's start)

    def waiting(name: str, sample: Any) -> bool:
        if not isinstance(sample, Exception) and _answers(sample):
            answering.setdefault(name, time.monotonic())
        return worth_waiting(sample, started[name], answering.get(name), time.monotonic(),
                             grace[name])

    while time.monotonic() < deadline and any(waiting(n, v) for n, v in first.items()):
        time.sleep(0.5)
        first = gather(subset, read_health)
    # A host already failing needs no stabilisation window to be judged: switch back sooner.
    steady = [h for h in hosts if not _failing(first[h.name])]
    if steady:
        time.sleep(max(getattr(h.data, window_setting) for h in steady))
    second = gather(subset, read_health)
    problems: dict[str, str] = {}
    for h in hosts:
        before, after = first[h.name], second[h.name]
        if isinstance(after, Exception) or isinstance(before, Exception):
            problems[h.name] = str(after if isinstance(after, Exception) else before)
            continue
        expected = [a.name for a in pm2_apps(h.data)]
        found = health_problems(after["http"]) + pm2_problems(before["pm2"], after["pm2"],
                                                              expected)
        if found:
            problems[h.name] = "; ".join(found)
    return problems


# --- the engine --------------------------------------------------------------------------

Guard = Callable[[Flow, list], dict[str, str]]


def execute(flow: Flow, guard: Guard | None = None, lock: bool = True) -> RunResult:
    """Run the flow on the live hosts. `guard` may refuse hosts after the build, before the
    switch ({host: reason}). lock=False: the caller holds the locks (a rollout holds them for
    every batch)."""
    started = time.monotonic()
    if not lock:
        _release_steps(flow, guard)
        return RunResult(dry=False, hosts=flow.results, seconds=time.monotonic() - started)
    with fleet_lock(flow) as locked:
        if locked:
            _release_steps(flow, guard)
    return RunResult(dry=False, hosts=flow.results, seconds=time.monotonic() - started)


@contextmanager
def fleet_lock(flow: Flow) -> Iterator[bool]:
    """Lock every live host, or none (yields whether all are locked): the first host
    (inventory order) first, as the fleet's mutex, so a second controller racing for the same
    fleet stops there and touches nothing else; then the others. Released on every exit path;
    a lock that could not be released (the host went away) is remembered as ours, and the next
    run releases it (`reclaim_own_locks`)."""
    hosts = flow.live()
    try:
        flow.phase(phase_lock(flow), hosts[:1])
        flow.phase(phase_lock(flow), [h for h in hosts[1:] if flow.results[hosts[0].name].ok])
        refused = [h.name for h in hosts if not flow.results[h.name].ok]
        for h in flow.live() if refused else []:
            flow.note(h.name, "failed",
                      f"not started: no deploy lock on {', '.join(refused)} (all hosts or none)")
        yield not refused
    finally:
        unlocked = flow.phase(phase_unlock(flow), hosts)
        remember_locks(flow, [h for h in hosts if unlocked and not unlocked.hosts[h.name].ok])


# --- our own locks that could not be released ----------------------------------------------

LEDGER = STATE_DIR / "locks-not-released.json"


def _ledger() -> list[dict[str, str]]:
    try:
        return json.loads(LEDGER.read_text())
    except (OSError, json.JSONDecodeError):
        return []


def remember_locks(flow: Flow, hosts: list) -> None:
    """The hosts whose lock this run took but could not release (unreachable at the end)."""
    if not hosts:
        return
    entries = _ledger() + [{"host": h.name, "deploy_to": h.data.app_deploy_to,
                            "token": flow.token} for h in hosts]
    LEDGER.parent.mkdir(parents=True, exist_ok=True)
    LEDGER.write_text(json.dumps(entries, indent=2))
    for h in hosts:
        flow.note(h.name, "failed", "deploy lock not released (host unreachable): the next "
                                    "run from this machine releases it")


def reclaim_own_locks(loaded: LoadedInventory, locks: dict[str, str | None],
                      printer: Printer | None) -> set[str]:
    """Release locks an earlier run of this machine took and could not release (its process
    has ended: it wrote them down on its way out). `locks`: {host: lock owner text}. Returns
    the hosts released. Someone else's lock is never touched."""
    entries = _ledger()
    mine = {}
    for name, lock in locks.items():
        for entry in entries:
            if entry["host"] == name and lock and entry["token"] in lock:
                mine[name] = entry
    if not mine:
        return set()

    def run() -> None:
        data = current_host.data
        rel.run_script(rel.unlock_command(data.app_deploy_to, mine[current_host.name]["token"]),
                       name="Release our own deploy lock left by an earlier run",
                       **as_user(current_host, data.app_user))
    result = run_deploy(loaded.fresh(list(mine)), run, printer=printer)
    released = {n for n, r in result.hosts.items() if r.ok}
    LEDGER.write_text(json.dumps([e for e in entries
                                  if not (e["host"] in released and e in mine.values())],
                                 indent=2))
    return released


def _release_steps(flow: Flow, guard: Guard | None) -> None:
    """Build (when needed), guard, switch, verify or switch back, record (and warm the cache
    of the verified hosts of a deploy)."""
    _build(flow, [h for h in flow.live() if flow.plans[h.name].build])
    if guard:
        for name, reason in guard(flow, flow.live()).items():
            flow.note(name, "failed", reason)
    switched = flow.live()
    flow.phase(phase_switch(flow), switched)
    _verify_or_switch_back(flow, switched)
    flow.phase(phase_finish(flow), switched)


def _build(flow: Flow, hosts: list) -> None:
    """Build where needed: a shared build on its first host, then its copies (a host waiting
    for a build that failed builds itself)."""
    how = build_plan(flow, hosts)
    _build_phase(flow, hosts, how)
    later = [h for h in hosts if how[h.name][0] == "later" and flow.results[h.name].ok]
    _build_phase(flow, later, build_plan(flow, later, waited=True), create=False)


def _build_phase(flow: Flow, hosts: list, how: dict[str, How], create: bool = True) -> None:
    elsewhere = migrated_elsewhere(flow, hosts, how)
    flow.phase(phase_build(flow, how, elsewhere, create), hosts)
    _record_shared(flow, hosts, how, elsewhere)


def _record_shared(flow: Flow, hosts: list, how: dict[str, How],
                   elsewhere: dict[str, str]) -> None:
    """After a build phase: which builds can be copied now, and which hosts did not run the
    migrations because another host had (said in their report)."""
    for h in hosts:
        mode, archive = how[h.name]
        ok = flow.results[h.name].ok
        if mode == "share" and ok and archive and os.path.isfile(archive):
            flow.built[build_key(flow, h)] = h.name
            if h.data.app_migrate_command and flow.kind == "deploy":
                flow.migrated.setdefault(migration_key(flow, h),
                                         (h.name, flow.migrations_applied(h.name)))
        elif ok and h.name in elsewhere:
            flow.note(h.name, "ok", "database migrations: run once for this release, on "
                                    f"{elsewhere[h.name]}")


def _verify_or_switch_back(flow: Flow, switched: list) -> None:
    window = ("health_stabilisation_seconds" if flow.kind == "deploy"
              else "health_rollback_stabilisation_seconds")
    problems = verify(flow.loaded, [h for h in switched if flow.results[h.name].ok], window)
    for h in switched:
        if not flow.results[h.name].ok and h.name not in problems:
            problems[h.name] = "switch or reload failed"
    flow.reasons.update(problems)
    flow.verified.update({h.name: h.name not in problems for h in switched})
    failed = [h for h in switched if h.name in problems]
    for h in failed:
        flow.note(h.name, "failed", f"verification: {problems[h.name]}")
    back = [h for h in failed if flow.plans[h.name].rollback_to]
    flow.phase(phase_switch(flow, back=True), back)
    after = verify(flow.loaded, back, "health_rollback_stabilisation_seconds")
    for h in back:
        target = flow.plans[h.name].rollback_to
        state = after.get(h.name) or "verified"
        flow.note(h.name, "changed", f"switched back to {target}: {state}")
