"""`diagnose [--fix [--flush]]`: the runbook's five troubleshooting guides (section 4) on each
host.

1. Measure: health's own reading (playbooks/health.py: PM2, health endpoint, sample, endpoints,
   database through the app host, Redis, resources) plus each guide's investigation (error-log
   tails, the frontend answering, Redis ping/service/keys, connections by state), judged by
   health's `judge` (its samples are kept as health keeps them).
2. Judge: tpe_ops.diagnosis says which guide matches, with its evidence, the safe fix and what a
   human must do.
3. With --fix: the safe fixes as pyinfra operations (idempotent, --dry), after confirmation on
   production; then re-check until the fixed guides stop matching (or diagnose_recheck_seconds)
   and report each matched guide fixed or not fixed.

Exit 0: no guide matches (or, with --fix, every matched guide was fixed); 1: a guide matches
(or a host could not be diagnosed, or a fix failed).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from pyinfra import host as current_host

from operations.app import layout
from operations.cache import RedisKeyCount, flushed
from operations.diagnose import DbActivity, Pm2AppEvents, RedisState, pm2_app_online
from operations.logs import read_error_tails
from operations.privileges import as_root, as_user
from operations.redis import REDIS_UNIT
from operations.release import HttpCheck, run_script
from operations.system import service
from playbooks.common import Options, confirm_production
from playbooks.health import judge, load_samples, public_check, save_samples
from playbooks.health import read_facts as read_health_facts
from playbooks.release_flow import warm_cache
from tpe_ops import diagnosis as dx
from tpe_ops.errors import ConfigError, SecretError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.secrets import load_secrets
from tpe_ops.settings import pm2_apps

RECHECK_INTERVAL_SECONDS = 2

Diagnoses = dict[str, list[dx.GuideResult] | Exception]


# --- measure and judge -----------------------------------------------------------------------

def _read(host) -> dict[str, Any]:
    """Health's facts, then what the guides' investigations add."""
    facts = read_health_facts(host)
    data = host.data
    app = as_user(host, data.app_user)
    paths = layout(data.app_deploy_to)
    apps = pm2_apps(data)
    facts["error_logs"] = read_error_tails(host, data.diagnose_log_lines)
    facts["pm2_events"] = {a.name: host.get_fact(Pm2AppEvents, app=a.name,
                                                 lines=data.diagnose_log_lines, **app)
                           for a in apps}
    if any(a.role == "frontend" for a in apps):
        facts["frontend"] = host.get_fact(HttpCheck, url=_frontend_url(data),
                                          timeout=data.health_timeout_seconds)
    facts["redis_state"] = {**host.get_fact(RedisState, port=data.redis_port, unit=REDIS_UNIT),
                            "keys": host.get_fact(RedisKeyCount, port=data.redis_port)}
    facts["db_activity"] = host.get_fact(DbActivity, shared=paths["shared"],
                                         backend=f"{paths['current']}/{data.app_backend_dir}",
                                         **app)
    return facts


def _backend_url(data: Any) -> str:
    return f"http://127.0.0.1:{data.app_backend_port}{data.health_endpoint}"


def _frontend_url(data: Any) -> str:
    return f"http://127.0.0.1:{data.app_frontend_port}/"


def _public_url(data: Any) -> str:
    return data.health_public_url.rstrip("/") + data.health_endpoint if data.health_public_url \
        else ""


def evidence(facts: dict[str, Any], data: Any, findings: list, flush: bool) -> dx.Evidence:
    return dx.Evidence(
        findings=findings,
        apps=[(a.name, a.role) for a in pm2_apps(data)],
        local_health=facts["health"],
        backend_url=_backend_url(data),
        public_url=_public_url(data),
        frontend=facts.get("frontend"),
        frontend_url=_frontend_url(data),
        endpoints=facts["endpoints"],
        sample=facts["sample"],
        db=facts["db"],
        db_activity=facts["db_activity"],
        redis_info=facts["redis"],
        redis_state=facts["redis_state"],
        redis_unit=REDIS_UNIT,
        redis_port=data.redis_port,
        error_logs={app: [line for line in lines if line.strip()]
                    for app, lines in facts["error_logs"].items()},
        pm2_events=facts["pm2_events"],
        warm_cache=bool(data.app_warm_cache_command),
        flush=flush,
    )


def examine(loaded: LoadedInventory, flush: bool) -> Diagnoses:
    """{host: the five guides' results, or why the host could not be examined}."""
    measured = gather(loaded, _read)
    now = time.time()
    diagnoses: Diagnoses = {}
    for host in loaded.hosts:
        facts = measured[host.name]
        if isinstance(facts, Exception):
            diagnoses[host.name] = facts
            continue
        data = host.data
        public_url = _public_url(data)
        public = public_check(public_url, data.health_timeout_seconds) if public_url else None
        samples = load_samples(host.name)
        findings, sample = judge(facts, data, samples, now, public)
        save_samples(host.name, [*samples, sample], now)
        diagnoses[host.name] = dx.diagnose(evidence(facts, data, findings, flush))
    return diagnoses


# --- report --------------------------------------------------------------------------------

def guide_steps(result: dx.GuideResult, fixing: bool) -> list[Step]:
    """A line per guide; for a matched guide, its evidence, fixes and what a human must do."""
    head = f"guide {result.guide} ({result.title}): "
    if not result.matched:
        return [Step(head + "not matched", "ok", "; ".join(result.evidence))]
    steps = [Step(head + "MATCHED", result.level, "; ".join(result.reasons))]
    steps += [Step(f"  evidence: {line}", "ok") for line in result.evidence]
    if not fixing:
        steps += [Step(f"  safe fix: {fix.label} (run with --fix)", "warning")
                  for fix in result.fixes]
    steps += [Step(f"  for a human: {text}", "warning") for text in result.human]
    if not result.fixes and not result.human:
        steps.append(Step("  no automatic fix", "warning"))
    return steps


class Report:
    """Per-host results, printed as they come."""

    def __init__(self, loaded: LoadedInventory, printer: Printer | None) -> None:
        self.results = {h.name: HostResult(h.name) for h in loaded.hosts}
        self.printer = printer

    def add(self, name: str, steps: list[Step]) -> None:
        self.results[name].steps.extend(steps)
        if self.printer:
            for step in steps:
                self.printer(name, step)

    def merge(self, run: RunResult) -> None:
        """Steps of a pyinfra run (already printed live by run_deploy)."""
        for name, outcome in run.hosts.items():
            self.results[name].steps.extend(outcome.steps)
            self.results[name].error = self.results[name].error or outcome.error


# --- fix -----------------------------------------------------------------------------------

def _apply(fixes: list[dx.Fix]) -> Callable[[], None]:
    """A pyinfra deploy running `fixes` in order on the current host."""
    def run() -> None:
        data = current_host.data
        app = as_user(current_host, data.app_user)
        for fix in fixes:
            if fix.kind == "start_redis":
                service(name=fix.label, unit=fix.target, running=True, enabled=True,
                        **as_root(current_host))
            elif fix.kind == "flush_cache":
                flushed(name=fix.label, port=data.redis_port)
            elif fix.kind == "restart_app":
                pm2_app_online(name=fix.label, app=fix.target,
                               ecosystem=layout(data.app_deploy_to)["ecosystem"], **app)
            elif fix.kind == "reload_app":
                run_script(f"pm2 reload {shlex.quote(fix.target)}", name=fix.label, **app)
            elif fix.kind == "warm_cache":
                warm_cache()
    return run


def _fix(loaded: LoadedInventory, plans: dict[str, list[dx.Fix]], options: Options,
         report: Report) -> None:
    """Hosts with the same plan in one pyinfra run (pyinfra's API names an operation by its
    position, so different plans on different hosts would mix their step names)."""
    groups: dict[tuple[dx.Fix, ...], list[str]] = {}
    for name, fixes in plans.items():
        groups.setdefault(tuple(fixes), []).append(name)
    for fixes, names in groups.items():
        report.merge(run_deploy(loaded.fresh(names), _apply(list(fixes)), dry=options.dry,
                                printer=report.printer))


def recheck(loaded: LoadedInventory, before: Diagnoses) -> Diagnoses:
    """Examine again until no guide that had an automatic fix still matches, or the longest
    diagnose_recheck_seconds of these hosts has passed."""
    deadline = time.monotonic() + max(h.data.diagnose_recheck_seconds for h in loaded.hosts)
    while True:
        after = examine(loaded, flush=False)
        waiting = [name for name, results in before.items() if name in after
                   and not isinstance(results, Exception)
                   and (isinstance(after[name], Exception)
                        or set(dx.fixable(results)) & set(dx.matched(after[name])))]
        if not waiting or time.monotonic() >= deadline:
            return after
        time.sleep(RECHECK_INTERVAL_SECONDS)


def _outcome_steps(before: list[dx.GuideResult], after: list[dx.GuideResult] | Exception
                   ) -> list[Step]:
    if isinstance(after, Exception):
        return [Step(f"re-check failed: {after}", "failed")]
    now = {r.guide: r for r in after}
    steps = []
    for guide, fixed in dx.outcome(before, after).items():
        title = f"guide {guide} ({now[guide].title})"
        if fixed:
            steps.append(Step(f"re-check: {title} fixed", "ok"))
        else:
            steps.append(Step(f"re-check: {title} NOT fixed", now[guide].level,
                              "; ".join(now[guide].reasons)))
    return steps


# --- the command ---------------------------------------------------------------------------

def _register_secrets(loaded: LoadedInventory) -> None:
    """Load the secrets where they are available, only so that output is redacted of them:
    diagnosing needs none (the app's env file on the host has them), and a missing one must
    not stop a diagnosis at 3 a.m."""
    for host in loaded.hosts:
        try:
            load_secrets(sorted(set(host.data.app_backend_secrets.values())),
                         host.data.secrets_file, False)
        except SecretError:
            continue


def diagnose(loaded: LoadedInventory, options: Options, printer: Printer | None,
             fix: bool = False, flush: bool = False) -> RunResult:
    if flush and not fix:
        raise ConfigError("--flush clears the cache only as part of --fix",
                          "run: deploy.py diagnose --fix --flush")
    _register_secrets(loaded)
    started = time.monotonic()
    report = Report(loaded, printer)
    before = examine(loaded, flush)
    for name, results in before.items():
        if isinstance(results, Exception):
            report.results[name].error = f"cannot diagnose: {results}"
            report.add(name, [Step(f"cannot diagnose: {results}", "failed")])
        else:
            report.add(name, [s for r in results for s in guide_steps(r, fix)])
    final = before
    plans = {name: fixes for name, results in before.items()
             if not isinstance(results, Exception) and (fixes := dx.plan(results))}
    if fix and plans:
        actions = "; ".join(f"{name}: {', '.join(f.label for f in fixes)}"
                            for name, fixes in plans.items())
        confirm_production(loaded.fresh(list(plans)), options, f"diagnose --fix ({actions})")
        _fix(loaded, plans, options, report)
        if not options.dry:
            fixed_hosts = loaded.fresh(list(plans))
            after = recheck(fixed_hosts, {n: before[n] for n in plans})
            final = {**before, **after}
            for name in plans:
                report.add(name, _outcome_steps(before[name], after[name]))
    return _finish(report, before, final, fix and not options.dry, fix and options.dry,
                   time.monotonic() - started)


def _finish(report: Report, before: Diagnoses, final: Diagnoses, fixing: bool, dry: bool,
            seconds: float) -> RunResult:
    """Per host: the guides as first found, and after --fix which were fixed; the verdict."""
    summary: dict[str, Any] = {}
    for name, result in report.results.items():
        first, last = before[name], final[name]
        if isinstance(first, Exception):
            continue
        still = first if isinstance(last, Exception) else last
        result.data = {"guides": [r.to_dict() for r in first], "matched": dx.matched(first),
                       "plan": [f.label for f in dx.plan(first)]}
        if fixing:  # a host with nothing safe to fix was not re-checked: nothing was fixed
            outcome = dx.outcome(first, still)
            result.data["fixed"] = [g for g, ok in outcome.items() if ok]
            result.data["not_fixed"] = [g for g, ok in outcome.items() if not ok]
            result.data["after"] = [r.to_dict() for r in still if r.matched]
        if dx.matched(still):
            result.error = result.error or dx.verdict(still)
        now = f"; now {dx.verdict(still)}" if still is not first else ""
        report.add(name, [Step(f"diagnosis: {dx.verdict(first)}{now}",
                               dx.worst_level(still))])
        summary[name] = {k: result.data[k] for k in ("matched", "fixed", "not_fixed")
                         if k in result.data}
    return RunResult(dry=dry, hosts=report.results, seconds=seconds,
                     extra={"diagnosis": summary})
