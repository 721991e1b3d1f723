"""`benchmark`: the runbook's section 3 performance baseline, per endpoint.

N requests per endpoint (default 50, as the runbook's script), optional concurrency, or a
fixed rate measured from each request's intended send time (no coordinated omission). From the
controller against URLs (`--url`), or on each host against its own localhost. Compared with the
stored baseline and the target; results appended to a history file.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from operations.health import HttpSample
from playbooks.common import Options
from tpe_ops import judgement as j
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather
from tpe_ops.state import STATE_DIR

STATE = STATE_DIR / "benchmark"


@dataclass
class BenchOptions:
    requests: int = 50
    concurrency: int = 1
    rate: float | None = None  # requests per second, fixed-rate mode
    urls: list[str] | None = None  # from the controller; else on each host
    save_baseline: bool = False


def _get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0


def measure_url(url: str, opts: BenchOptions, timeout: float) -> list[tuple[int, float]]:
    """(status, ms) per request. Fixed rate: latency counts from the intended send time."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def one(index: int) -> None:
        intended = start + index / opts.rate if opts.rate else None
        if intended is not None:
            time.sleep(max(0.0, intended - time.perf_counter()))
        began = intended if intended is not None else time.perf_counter()
        code = _get(url, timeout)
        with lock:
            results.append((code, (time.perf_counter() - began) * 1000))

    workers = max(opts.concurrency, 1) if not opts.rate else min(opts.requests, 64)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(opts.requests)))
    return results


def endpoint_report(url: str, sample: list[tuple[int, float]], t: j.Thresholds,
                    baseline: float | None) -> dict[str, Any]:
    ok_ms = [ms for code, ms in sample if 200 <= code < 400]
    report = {"url": url, **j.summarize(ok_ms, len(ok_ms), len(sample))}
    if ok_ms:
        report["comparison"] = j.compare_to_baseline(
            report["p95_ms"], baseline or t.baseline_p95_ms, t.target_p95_ms,
            t.rollback_degradation_pct)
    return report


def _baselines(scope: str) -> dict[str, float]:
    try:
        return json.loads((STATE / f"{scope}-baseline.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _store(scope: str, reports: list[dict], save_baseline: bool) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / f"{scope}-history.jsonl").open("a") as history:
        history.write(json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "endpoints": reports}) + "\n")
    if save_baseline:
        baseline = {r["url"]: r["p95_ms"] for r in reports if r.get("p95_ms") is not None}
        (STATE / f"{scope}-baseline.json").write_text(json.dumps(baseline, indent=2))


def _line(report: dict[str, Any]) -> str:
    if not report.get("count"):
        return f"{report['url']}: no successful request ({report['success_rate_pct']:.0f}% ok)"
    cmp = report.get("comparison", {})
    return (f"{report['url']}: {report['success_rate_pct']:.1f}% ok, min {report['min_ms']:.1f}"
            f" / median {report['median_ms']:.1f} / avg {report['avg_ms']:.1f} / p95 "
            f"{report['p95_ms']:.1f} / p99 {report['p99_ms']:.1f} / max {report['max_ms']:.1f} ms"
            f" ({report['percentile_definition']}), {report['rating']}; vs baseline "
            f"{cmp.get('degradation_pct', 0):+.0f}%"
            + (" CROSSES the rollback criterion" if cmp.get("crosses_rollback") else ""))


def benchmark(loaded: LoadedInventory, options: Options, printer: Printer | None,
              opts: BenchOptions) -> RunResult:
    started = time.monotonic()
    scope = loaded.path.stem
    baselines = _baselines(scope)
    results: dict[str, HostResult] = {}
    if opts.urls:
        t = j.Thresholds.from_data(loaded.hosts[0].data)
        timeout = loaded.hosts[0].data.health_timeout_seconds
        samples = {"controller": {url: measure_url(url, opts, timeout) for url in opts.urls}}
        thresholds = {"controller": t}
    else:
        def read(host) -> dict:
            base = f"http://127.0.0.1:{host.data.app_backend_port}"
            return {base + path: host.get_fact(HttpSample, url=base + path, count=opts.requests,
                                               timeout=host.data.health_timeout_seconds)
                    for path in host.data.health_public_endpoints}
        samples = gather(loaded, read)
        thresholds = {h.name: j.Thresholds.from_data(h.data) for h in loaded.hosts}
    all_reports = []
    for name, per_url in samples.items():
        result = HostResult(name)
        if isinstance(per_url, Exception):
            result.error = str(per_url)
        else:
            reports = [endpoint_report(url, sample, thresholds[name], baselines.get(url))
                       for url, sample in per_url.items()]
            result.data["endpoints"] = reports
            all_reports.extend(reports)
            for report in reports:
                bad = report.get("comparison", {}).get("crosses_rollback") or not report["count"]
                step = Step(_line(report), "warning" if bad else "ok")
                result.steps.append(step)
                if printer:
                    printer(name, step)
        results[name] = result
    _store(scope, all_reports, opts.save_baseline)
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - started)
