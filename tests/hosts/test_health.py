"""`health` against a real host running the example app, with faults induced for real."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from operations.pm2 import SAFE_ENV_FIELDS, jlist_reader, parse_jlist
from tests.helpers import run_cli

pytestmark = pytest.mark.hosts
DEPLOY_TO = "/home/ubuntu/The-Power100-Experience"


@pytest.fixture(scope="module")
def served(served_host):
    return served_host


def health(served, *extra: str) -> tuple[int, dict, str]:
    _, inventory, env = served
    done = run_cli("health", "-i", inventory, "--json", *extra, env=env)
    return done.returncode, json.loads(done.stdout), done.stdout + done.stderr


def findings(payload: dict) -> dict[str, dict]:
    (host,) = payload["hosts"].values()
    return {f["check"]: f for f in host["findings"]}


def test_healthy_host_exits_0_with_a_status_line(served):
    _, inventory, env = served
    done = run_cli("health", "-i", inventory, env=env)
    assert done.returncode == 0, done.stdout
    first = done.stdout.splitlines()[0]
    assert first.startswith("OK: ") and " | " in first and "p95=" in first


def test_no_secret_in_health_output(served, postgres_db):
    code, payload, text = health(served)
    assert code == 0 and payload["classification"] == "healthy"
    assert postgres_db.password not in text


def test_pm2_reader_answers_as_pm2_jlist_without_the_environment(served):
    """The Pm2Processes fact asks the PM2 daemon directly (not through the pm2 CLI): the
    same processes, counters and states as `pm2 jlist`, and only the safe fields."""
    host = served[0]
    fast = host.ssh(jlist_reader()).stdout
    slow = host.ssh("pm2 jlist").stdout

    def key(text: str) -> list[tuple]:
        return sorted((p["name"], p["pm_id"], p["pid"], p["status"], p["restart_time"],
                       p["pm_cwd"]) for p in parse_jlist(text))

    assert len(key(fast)) >= 4 and key(fast) == key(slow)  # 2 backend, frontend, logrotate
    envs = [set(p["pm2_env"]) for p in json.loads(fast)]
    assert all(env <= set(SAFE_ENV_FIELDS) for env in envs)
    assert "NODE_ENV" in slow and "NODE_ENV" not in fast


def test_backend_stopped_is_critical_p0_guide_1(served):
    host = served[0]
    host.ssh("pm2 stop tpe-backend >/dev/null")
    try:
        code, payload, _ = health(served)
    finally:
        host.ssh("pm2 restart tpe-backend >/dev/null")
    assert code == 2 and payload["classification"] == "critical"
    assert payload["severity"] == "P0"
    assert findings(payload)["pm2:tpe-backend"]["guide"] == 1
    assert payload["status_line"].startswith("CRITICAL: ")


def test_redis_stopped_is_critical_guide_5(served):
    host = served[0]
    host.ssh("sudo systemctl stop redis-server")
    try:
        code, payload, _ = health(served)
    finally:
        host.ssh("sudo systemctl start redis-server")
    assert code == 2
    redis = findings(payload)["redis"]
    assert redis["level"] == "critical" and redis["guide"] == 5


def test_low_hit_rate_is_a_warning(served):
    host = served[0]
    health(served)  # a first sample of the counters
    host.ssh(f"for i in $(seq 40); do redis-cli -p {host.redis_port} get missing:$i; done "
             ">/dev/null")
    code, payload, _ = health(served)
    hit_rate = findings(payload)["redis:hit_rate"]
    assert hit_rate["level"] == "warning" and hit_rate["guide"] == 5
    assert code == 1


def test_connections_above_80_percent_of_the_pool_warn(served, postgres_db, tmp_path):
    passfile = postgres_db.write_pgpass(tmp_path / "pgpass")
    env = postgres_db.libpq_env(passfile)
    holders = [subprocess.Popen(["psql", "-Xqc", "SELECT pg_sleep(25)"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(16)]
    try:
        time.sleep(2)
        code, payload, _ = health(served)
    finally:
        for proc in holders:
            proc.kill()
    db = findings(payload)["db:connections"]
    assert db["level"] in ("warning", "critical") and db["guide"] == 4, db
    assert code in (1, 2)


def test_latency_knob_warning_then_critical(served):
    host = served[0]
    knob = f"{DEPLOY_TO}/current/tpe-backend/config/latency.json"
    try:
        for latency, level, code in ((350, "warning", 1), (600, "critical", 2)):
            host.ssh(f"printf '{{\"latencyMs\": {latency}}}\\n' > {knob} && "
                     f"pm2 reload tpe-backend >/dev/null")
            time.sleep(2)
            got, payload, _ = health(served)
            latency_finding = findings(payload)["latency"]
            assert latency_finding["level"] == level, latency_finding
            assert latency_finding["guide"] == 2 and got == code
    finally:
        host.ssh(f"printf '{{\"latencyMs\": 0}}\\n' > {knob} && pm2 reload tpe-backend >/dev/null")


def test_watch_across_an_induced_failure_notifies_and_keeps_history(served, tmp_path):
    """A real --watch run: serving, then the backend stops: the status change is posted to a
    webhook, the history is kept, and the Prometheus textfile is written."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    host, inventory, env = served
    prom = tmp_path / "tpe.prom"
    from tests.hosts.conftest import start_cli

    proc = start_cli(tmp_path, "watch", "health", "-i", inventory, "--watch", "4", "--count",
                     "3", "--notify", f"http://127.0.0.1:{hook.server_address[1]}/hook",
                     "--prometheus", str(prom), env=env)
    history = Path(env["TPE_STATE_DIR"]) / "health" / f"{host.name}-history.jsonl"
    before = history.read_text().count("\n") if history.exists() else 0
    try:
        deadline = time.monotonic() + 120
        while (history.read_text().count("\n") if history.exists() else 0) == before:
            assert time.monotonic() < deadline and proc.poll() is None, "no first sample"
            time.sleep(0.2)  # the first sample (healthy) is taken: now break the backend
        host.ssh("pm2 stop tpe-backend >/dev/null")
        assert proc.wait(timeout=120) == 2
    finally:
        host.ssh("pm2 restart tpe-backend >/dev/null")
        hook.shutdown()
    out = (tmp_path / "watch.out").read_text()
    assert "rollback decision: none" in out  # minutes of history are needed, not seconds
    # Earlier tests restarted the backend on purpose: the first sample may already warn.
    assert posts and "-> critical" in posts[0]["text"]
    assert 'tpe_health_status{host="' in prom.read_text()
    assert "tpe_health_last_success_timestamp_seconds" in prom.read_text()


def test_restart_loop_is_critical(served):
    """The backend crashing on boot over and over (PM2 restarting it): critical, guide 1."""
    host = served[0]
    boot = f"{DEPLOY_TO}/current/tpe-backend/config/boot.json"
    host.ssh(f"printf '{{\"crashOnBoot\": true}}\\n' > {boot} && "
             "pm2 restart tpe-backend >/dev/null 2>&1 || true")
    try:
        deadline = time.monotonic() + 45  # PM2 needs a few crash-restarts to give up
        while True:
            time.sleep(3)
            code, payload, _ = health(served)
            backend = findings(payload)["pm2:tpe-backend"]
            if backend["level"] == "critical" or time.monotonic() > deadline:
                break
    finally:
        # PM2 may still be in its crash-restart cycle: retry until the backend answers again.
        host.ssh(f"printf '{{\"crashOnBoot\": false}}\\n' > {boot}; for i in 1 2 3 4 5; do "
                 "pm2 restart tpe-backend >/dev/null 2>&1; sleep 2; "
                 f"curl -sf -o /dev/null http://127.0.0.1:{host.backend_port}/api/health "
                 "&& break; done")
    assert backend["level"] == "critical" and backend["guide"] == 1, backend
    assert code == 2


def test_benchmark_on_the_host_and_from_the_controller(served):
    host, inventory, env = served
    done = run_cli("benchmark", "-i", inventory, "--requests", "10", "--save-baseline",
                   "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)["hosts"].values()
    endpoints = {e["url"].split(":", 2)[2].split("/", 1)[1]: e for e in result["endpoints"]}
    health_endpoint = endpoints["api/health"]
    assert health_endpoint["total"] == 10 and health_endpoint["success_rate_pct"] == 100
    assert health_endpoint["percentile_definition"] == "nearest-rank"
    assert health_endpoint["min_ms"] <= health_endpoint["p95_ms"] <= health_endpoint["max_ms"]
    assert health_endpoint["rating"] == "EXCELLENT"
    state = Path(env["TPE_STATE_DIR"]) / "benchmark"
    assert (state / f"{Path(inventory).stem}-baseline.json").is_file()
    url = f"http://127.0.0.1:{host.backend_port}/api/health"
    done = run_cli("benchmark", "-i", inventory, "--url", url, "--requests", "20", "--rate",
                   "40", "--json", env=env)
    assert done.returncode == 0
    (report,) = json.loads(done.stdout)["hosts"]["controller"]["endpoints"]
    assert report["total"] == 20 and report["comparison"]["baseline_ms"] > 0
    history = (state / f"{Path(inventory).stem}-history.jsonl").read_text().splitlines()
    assert len(history) == 2
