"""`cache warm|clear|stats` (runbook section 7): the app's Redis on each host.

warm: the app's warm-cache script, as a deploy's last phase runs it
(playbooks.release_flow.warm_cache), with the key count before and after.
clear: FLUSHDB, only once confirmed (--yes, or "yes" typed at a terminal); --dry says how many
keys would go. stats: keys by prefix, memory, policy, hit rate (overall, and since the previous
`cache stats` run: Redis's counters are cumulative, so our own sample is kept under
$TPE_STATE_DIR/cache), evicted and expired keys, judged with the runbook's hit-rate thresholds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyinfra import host as current_host

from operations.cache import NO_PREFIX, RedisKeyCount, RedisKeyPrefixes, flushed
from operations.health import RedisInfo
from playbooks.common import Options, confirm_production, secrets_for_hosts
from playbooks.release_flow import warm_cache
from tpe_ops import judgement as j
from tpe_ops.errors import AbortedError, ConfigError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.state import STATE_DIR, host_key

ACTIONS = ("warm", "clear", "stats")


def cache(loaded: LoadedInventory, options: Options, printer: Printer | None,
          action: str) -> RunResult:
    runners: dict[str, Callable[..., RunResult]] = {"warm": warm, "clear": clear,
                                                    "stats": stats}
    started = time.monotonic()
    result = runners[action](loaded, options, printer)
    result.seconds = time.monotonic() - started
    result.extra["action"] = action
    return result


# --- shared pieces ---------------------------------------------------------------------------

def _key_counts(loaded: LoadedInventory) -> dict[str, Any]:
    """{host: keys in the app's Redis (int), None (Redis does not answer) or an Exception}."""
    return gather(loaded, lambda h: h.get_fact(RedisKeyCount, port=h.data.redis_port))


def keys_text(count: Any) -> str:
    if isinstance(count, Exception):
        return str(count)
    return "Redis does not answer" if count is None else f"{count} keys"


def _note(results: dict[str, HostResult], printer: Printer | None, name: str,
          step: Step) -> None:
    results[name].steps.append(step)
    if printer:
        printer(name, step)


def _count_step(label: str, count: Any, before: Any = None) -> Step:
    if isinstance(count, Exception) or count is None:
        return Step(f"{label}: {keys_text(count)} (troubleshooting guide {j.GUIDE_REDIS})",
                    "failed")
    delta = f" ({count - before:+d})" if isinstance(before, int) else ""
    return Step(f"{label}: {count}{delta}", "ok")


def _merge(results: dict[str, HostResult], run: RunResult) -> None:
    for name, outcome in run.hosts.items():
        results[name].steps.extend(outcome.steps)
        results[name].error = results[name].error or outcome.error


def _answering(loaded: LoadedInventory, counts: dict[str, Any]) -> list[str]:
    return [h.name for h in loaded.hosts if not isinstance(counts[h.name], Exception)]


def _with_counts(loaded: LoadedInventory, options: Options, printer: Printer | None,
                 change: Callable[..., Any], *args: Any) -> RunResult:
    """Keys before, the change (a pyinfra deploy) on the hosts that answered, keys after."""
    results = {h.name: HostResult(h.name) for h in loaded.hosts}
    before = _key_counts(loaded)
    for name, count in before.items():
        _note(results, printer, name, _count_step("keys before", count))
    reachable = _answering(loaded, before)
    if reachable:
        _merge(results, run_deploy(loaded.fresh(reachable), change, *args, dry=options.dry,
                                   printer=printer))
    after: dict[str, Any] = {}
    if not options.dry and reachable:
        after = _key_counts(loaded.fresh(reachable))
        for name, count in after.items():
            _note(results, printer, name, _count_step("keys after", count, before[name]))
    for name, result in results.items():
        result.data = {"keys_before": _plain(before.get(name)),
                       "keys_after": _plain(after.get(name))}
    return RunResult(dry=options.dry, hosts=results)


def _plain(count: Any) -> int | None:
    return count if isinstance(count, int) else None


# --- warm ------------------------------------------------------------------------------------

def warm(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    missing = [h.name for h in loaded.hosts if not h.data.app_warm_cache_command]
    if missing:
        raise ConfigError(
            f"app_warm_cache_command is empty for {', '.join(missing)}: "
            "there is no script to warm the cache with",
            'set app_warm_cache_command (e.g. "npm run warm-cache") in the inventory or '
            "group data",
        )
    secrets_for_hosts(loaded)  # registered for redaction: the script runs with the app's env
    confirm_production(loaded, options, "warm the cache")
    return _with_counts(loaded, options, printer, warm_cache)


# --- clear -----------------------------------------------------------------------------------

def confirm_clear(counts: dict[str, Any], options: Options) -> None:
    """FLUSHDB loses every cached value: always asked (any inventory), unless --yes."""
    if options.dry or options.yes:
        return
    what = ", ".join(f"{name} ({keys_text(count)})" for name, count in counts.items())
    if not sys.stdin.isatty():
        raise AbortedError(
            f"not confirmed: clearing the cache of {what} needs a confirmation and no terminal "
            "is attached; nothing was cleared",
            "pass --yes to confirm (--dry shows what would be cleared)",
        )
    answer = input(f"Clear the cache (FLUSHDB) of {what}? Type 'yes' to continue: ")
    if answer.strip().lower() != "yes":
        raise AbortedError("not confirmed: nothing was cleared")


def _flush(counts: dict[str, Any]) -> None:
    port = current_host.data.redis_port
    flushed(port=port, name=f"Clear the cache: FLUSHDB of Redis :{port} "
                            f"({keys_text(counts.get(current_host.name))})")


def clear(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    counts = _key_counts(loaded)
    if all(count == 0 for count in counts.values()):
        # Nothing to clear: no question, and no flush of keys written after this count.
        results = {name: HostResult(name, steps=[Step("the cache holds no keys", "ok")],
                                    data={"keys_before": 0, "keys_after": 0})
                   for name in counts}
        for name, result in results.items():
            if printer:
                printer(name, result.steps[0])
        return RunResult(dry=options.dry, hosts=results)
    confirm_clear(counts, options)
    return _with_counts(loaded, options, printer, _flush, counts)


# --- stats -----------------------------------------------------------------------------------

def _sample_path(host_name: str) -> Path:
    return STATE_DIR / "cache" / f"{host_key(host_name)}.json"


def load_sample(host_name: str) -> dict[str, Any] | None:
    try:
        sample = json.loads(_sample_path(host_name).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    keys = ("time", "keyspace_hits", "keyspace_misses")
    return sample if isinstance(sample, dict) and all(k in sample for k in keys) else None


def save_sample(host_name: str, sample: dict[str, Any]) -> None:
    path = _sample_path(host_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sample))
    tmp.replace(path)


def _read_stats(host) -> dict[str, Any]:
    port = host.data.redis_port
    return {"info": host.get_fact(RedisInfo, port=port),
            "keys": host.get_fact(RedisKeyPrefixes, port=port)}


def _int(info: dict[str, str], key: str) -> int | None:
    value = info.get(key, "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def stats_figures(info: dict[str, str], keys: dict[str, Any] | None,
                  previous: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The figures of `cache stats` from INFO, the prefix counts and our previous sample."""
    hits, misses = _int(info, "keyspace_hits") or 0, _int(info, "keyspace_misses") or 0
    zero = {"keyspace_hits": 0, "keyspace_misses": 0}
    used, limit = _int(info, "used_memory"), _int(info, "maxmemory")
    figures: dict[str, Any] = {
        "keys": keys["total"] if keys else None,
        "prefixes": keys["prefixes"] if keys else {},
        "memory": {
            "used_bytes": used, "used_human": info.get("used_memory_human"),
            "maxmemory_bytes": limit, "maxmemory_human": info.get("maxmemory_human"),
            "used_pct": used / limit * 100 if used is not None and limit else None,
            "policy": info.get("maxmemory_policy"),
        },
        "hits": hits, "misses": misses,
        "hit_rate_pct": j.redis_hit_rate(zero, info),
        "evicted_keys": _int(info, "evicted_keys"),
        "expired_keys": _int(info, "expired_keys"),
        "since_last": None,
    }
    if previous:
        went_down = hits < previous["keyspace_hits"] or misses < previous["keyspace_misses"]
        base = zero if went_down else previous  # Redis restarted: its counters began again
        figures["since_last"] = {
            "seconds": now - previous["time"],
            "hits": hits - base["keyspace_hits"],
            "misses": misses - base["keyspace_misses"],
            "hit_rate_pct": j.redis_hit_rate(previous, info),
        }
    return figures


def judged_rate(figures: dict[str, Any]) -> tuple[str, float | None]:
    """The rate the runbook's thresholds judge: since the last run when there is one (what
    the cache does now; no lookup since then is no rate to judge, not the all-time rate),
    else since Redis started."""
    since = figures["since_last"]
    if since:
        return "since the last stats run", since["hit_rate_pct"]
    return "since Redis started", figures["hit_rate_pct"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def stats_steps(figures: dict[str, Any], finding: j.Finding) -> list[Step]:
    prefixes = ", ".join(f"{p if p != NO_PREFIX else '(no prefix)'} {n}"
                         for p, n in figures["prefixes"].items())
    keys = f"keys: {figures['keys']}" + (f" ({prefixes})" if prefixes else "")
    mem = figures["memory"]
    limit = (f"of {mem['maxmemory_human']} maxmemory ({_pct(mem['used_pct'])})"
             if mem["maxmemory_bytes"] else "(no maxmemory limit)")
    steps = [Step(keys, "ok"),
             Step(f"memory: {mem['used_human']} used {limit}, policy {mem['policy']}", "ok"),
             Step(f"hit rate since Redis started: {_pct(figures['hit_rate_pct'])} "
                  f"({figures['hits']} hits, {figures['misses']} misses)", "ok")]
    since = figures["since_last"]
    if since:
        steps.append(Step(f"hit rate since the last stats run ({_ago(since['seconds'])}): "
                          f"{_pct(since['hit_rate_pct'])} ({since['hits']} hits, "
                          f"{since['misses']} misses)", "ok"))
    else:
        steps.append(Step("hit rate since the last stats run: no earlier sample (the next "
                          "run shows it)", "ok"))
    steps.append(Step(f"evicted keys {figures['evicted_keys']}, expired keys "
                      f"{figures['expired_keys']} (since Redis started)", "ok"))
    which, rate = judged_rate(figures)
    guide = f" (troubleshooting guide {finding.guide})" if finding.guide else ""
    message = finding.message if rate is not None else "no cache lookups yet"
    steps.append(Step(f"hit rate judged {which}: {message}{guide}", finding.level))
    return steps


def stats(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    now = time.time()
    results = {h.name: HostResult(h.name) for h in loaded.hosts}
    measured = gather(loaded, _read_stats)
    for host in loaded.hosts:
        result = results[host.name]
        facts = measured[host.name]
        if isinstance(facts, Exception):
            result.error = str(facts)
            continue
        if facts["info"] is None or facts["keys"] is None:
            finding = j.redis_finding(False)
            result.steps = [Step(f"{finding.message} on port {host.data.redis_port} "
                                 f"(troubleshooting guide {finding.guide})", "failed")]
        else:
            info = facts["info"]
            figures = stats_figures(info, facts["keys"], load_sample(host.name), now)
            _, rate = judged_rate(figures)
            finding = j.redis_hit_rate_finding(rate, j.Thresholds.from_data(host.data))
            figures["finding"] = finding.to_dict()
            result.data = figures
            result.steps = stats_steps(figures, finding)
            save_sample(host.name, {"time": now, "keyspace_hits": figures["hits"],
                                    "keyspace_misses": figures["misses"]})
        for step in result.steps:
            if printer:
                printer(host.name, step)
    return RunResult(dry=False, hosts=results)
