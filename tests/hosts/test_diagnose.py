"""`diagnose [--fix] [--flush]` against a real host serving the example app: each of the five
troubleshooting guides induced for real, named, and repaired where a safe fix exists.

Every test leaves the host serving again (in a `finally`), with PM2's restart counters reset:
the restarts a test causes on purpose must not count as "restarts in the last hour" for the
next module sharing the host (a counter lower than the last sample counts as a reset).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli
from tests.hosts.conftest import http_code

pytestmark = pytest.mark.hosts
DEPLOY_TO = "/home/ubuntu/The-Power100-Experience"
BACKEND, FRONTEND = "tpe-backend", "tpe-frontend"
# The served inventory's CPU thresholds (the controller's CPUs are shared with the suite).
SERVED = {"threshold_cpu_warning_pct": 101, "threshold_cpu_critical_pct": 101}


class Served:
    def __init__(self, host, inventory: str, env: dict) -> None:
        self.host, self.inventory, self.env = host, inventory, env


@pytest.fixture
def served(served_host, tmp_path):
    """The shared host, with health samples of this test's own: the restarts and cache
    lookups another test caused on purpose are not judged again here."""
    host, inventory, env = served_host
    return Served(host, inventory, type(env)({**env, "TPE_STATE_DIR": str(tmp_path / "state")}))


def diagnose(served: Served, *extra: str, inventory: str | None = None
             ) -> tuple[int, dict, str]:
    done = run_cli("diagnose", "-i", inventory or served.inventory, "--json", *extra,
                   env=served.env)
    try:
        payload = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}") from error
    (host,) = payload["hosts"].values()
    return done.returncode, host, done.stdout + done.stderr


def guides(host: dict) -> dict[int, dict]:
    return {g["guide"]: g for g in host["guides"]}


def steps(host: dict, status: str) -> list[str]:
    return [s["name"] for s in host["steps"] if s["status"] == status]


def health_exit(served: Served) -> int:
    done = run_cli("health", "-i", served.inventory, env=served.env)
    return done.returncode


def reset_counters(served: Served) -> None:
    served.host.ssh(f"pm2 reset {BACKEND} >/dev/null; pm2 reset {FRONTEND} >/dev/null")


def back_online(served: Served, app: str, port: int, path: str) -> None:
    """Start `app` if it is not serving (retrying: PM2 may be in a crash-restart cycle)."""
    served.host.ssh(
        f"for i in 1 2 3 4 5; do curl -sf -o /dev/null -m 5 http://127.0.0.1:{port}{path} "
        f"&& break; pm2 restart {app} >/dev/null 2>&1; sleep 2; done", check=False)
    reset_counters(served)


@pytest.fixture
def make_served_inventory(served, make_inventory):
    def make(name: str, **settings) -> str:
        return str(make_inventory([served.host], name, **SERVED, **settings))
    return make


def test_healthy_host_matches_no_guide_and_fix_changes_nothing(served, postgres_db):
    done = run_cli("diagnose", "-i", served.inventory, env=served.env)
    assert done.returncode == 0, done.stdout + done.stderr
    for number, title in ((1, "backend process down"), (2, "high latency"),
                          (3, "health endpoint returns 404 (proxy)"),
                          (4, "database connection errors"), (5, "Redis cache not working")):
        assert f"guide {number} ({title}): not matched" in done.stdout
    assert "diagnosis: no troubleshooting guide matches" in done.stdout
    assert "redis-cli ping" in done.stdout and "connection test through the app host: ok" \
        in done.stdout
    code, host, text = diagnose(served, "--fix")
    assert code == 0, text
    assert host["matched"] == [] and host["changed"] == 0 and host["plan"] == []
    assert postgres_db.password not in done.stdout + done.stderr + text


def test_backend_stopped_guide_1_confirmed_dry_then_fixed(served, make_served_inventory):
    host = served.host
    production = make_served_inventory("diagnose-production", deploy_environment="production")
    host.ssh(f"pm2 stop {BACKEND} >/dev/null")
    try:
        code, found, text = diagnose(served)
        assert code == 1 and found["matched"] == [1], text
        backend = guides(found)[1]
        assert backend["level"] == "critical"
        assert any(r.startswith(f"{BACKEND}: stopped") for r in backend["reasons"])
        assert any(e.startswith(f"{BACKEND} error log") for e in backend["evidence"])
        assert found["plan"] == [f"Restart {BACKEND} (PM2)"]
        # Production asks first: no terminal, no --yes -> exit 3, nothing changed.
        done = run_cli("diagnose", "-i", production, "--fix", env=served.env)
        assert done.returncode == 3 and "production" in done.stderr, done.stderr
        assert http_code(served.host, host.backend_port) == "000"
        # --dry: what would change, nothing changed.
        code, dry, text = diagnose(served, "--fix", "--dry")
        assert code == 1 and steps(dry, "would-change") == [f"Restart {BACKEND} (PM2)"], text
        assert http_code(served.host, host.backend_port) == "000"
        code, fixed, text = diagnose(served, "--fix")
        assert code == 0, text
        assert steps(fixed, "changed") == [f"Restart {BACKEND} (PM2)"]
        assert fixed["fixed"] == [1] and fixed["not_fixed"] == []
        assert health_exit(served) == 0
    finally:
        back_online(served, BACKEND, host.backend_port, "/api/health")


def test_backend_crash_loop_is_guide_1_not_fixed_by_a_restart(served, make_served_inventory):
    """The runbook's "if restart fails, check logs and fix code issue": a backend that throws
    at boot. PM2's record of the loop is in the evidence, --fix does not pretend to have
    fixed it, and a human is told what to do."""
    host = served.host
    quick = make_served_inventory("diagnose-quick", diagnose_recheck_seconds=3)
    boot = f"{DEPLOY_TO}/current/{BACKEND}/config/boot.json"
    host.ssh(f"printf '{{\"crashOnBoot\": true}}\\n' > {boot} && "
             f"pm2 restart {BACKEND} >/dev/null 2>&1 || true")
    try:
        code, found, text = diagnose(served, inventory=quick)
        assert code == 1 and 1 in found["matched"], text
        backend = guides(found)[1]
        # Cluster mode: the exception at boot reaches no app log; PM2's own log shows the loop.
        assert f"{BACKEND} PM2 daemon log" in " ".join(backend["evidence"])
        assert any("exited with code" in e for e in backend["evidence"]), backend["evidence"]
        code, tried, text = diagnose(served, "--fix", inventory=quick)
        assert code == 1 and tried["not_fixed"] == [1], text
        assert any("re-check: guide 1 (backend process down) NOT fixed" in s
                   for s in steps(tried, "critical"))
        assert any("rollback" in h for h in guides(tried)[1]["human"])
    finally:
        host.ssh(f"printf '{{\"crashOnBoot\": false}}\\n' > {boot}")
        back_online(served, BACKEND, host.backend_port, "/api/health")


def test_frontend_stopped_guide_1_fixed(served):
    host = served.host
    host.ssh(f"pm2 stop {FRONTEND} >/dev/null")
    try:
        code, fixed, text = diagnose(served, "--fix")
        assert code == 0, text
        assert guides(fixed)[1]["matched"]
        assert steps(fixed, "changed") == [f"Restart {FRONTEND} (PM2)"]
        assert fixed["fixed"] == [1]
        assert http_code(served.host, host.frontend_port, "/") == "200"
        assert health_exit(served) == 0
    finally:
        back_online(served, FRONTEND, host.frontend_port, "/")


def test_redis_stopped_guide_5_started_and_warmed_then_nothing_to_do(served):
    host = served.host
    host.ssh("sudo systemctl stop redis-server")
    try:
        code, found, text = diagnose(served)
        assert code == 1 and found["matched"] == [5], text
        redis = guides(found)[5]
        assert redis["level"] == "critical"
        assert "service redis-server: inactive" in redis["evidence"]
        assert found["plan"] == ["Start Redis (redis-server)", "Warm the cache"]
        code, dry, _ = diagnose(served, "--fix", "--dry")
        assert code == 1 and steps(dry, "would-change") == found["plan"]
        assert host.ssh("systemctl is-active redis-server", check=False).stdout.strip() \
            == "inactive"
        code, fixed, text = diagnose(served, "--fix")
        assert code == 0, text
        assert steps(fixed, "changed") == found["plan"] and fixed["fixed"] == [5]
        keys = host.ssh(f"redis-cli -p {host.redis_port} dbsize").stdout.strip()
        assert int(keys) > 0  # warmed
        assert health_exit(served) == 0
        code, again, text = diagnose(served, "--fix")
        assert code == 0 and again["changed"] == 0 and again["matched"] == [], text
    finally:
        host.ssh("sudo systemctl start redis-server")


def test_low_hit_rate_is_guide_5_and_flush_needs_its_flag(served):
    """Clearing the cache is destructive: only with --fix --flush (production also asks, as
    for any fix: see the backend test)."""
    host = served.host
    redis = f"redis-cli -p {host.redis_port}"
    done = run_cli("diagnose", "-i", served.inventory, "--flush", env=served.env)
    assert done.returncode == 2 and "--fix" in done.stderr, done.stderr

    def marker() -> str:  # SCAN, not EXISTS: a lookup would count in the hit rate
        return host.ssh(f"{redis} --scan --pattern diagnose:marker").stdout.strip()

    host.ssh(f"{redis} set diagnose:marker 1 >/dev/null")
    try:
        code, found, _ = diagnose(served)  # a first sample of Redis's counters
        assert code == 0 and marker() == "diagnose:marker"
        host.ssh(f"for i in $(seq 40); do {redis} get diagnose:missing:$i; done >/dev/null")
        code, fixed, text = diagnose(served, "--fix", "--flush")
        assert code == 0, text
        redis_guide = guides(fixed)[5]
        assert redis_guide["level"] == "warning"
        assert any(r.startswith("Redis hit rate 0%") for r in redis_guide["reasons"])
        assert steps(fixed, "changed") == ["Clear the Redis cache (FLUSHDB)", "Warm the cache"]
        assert fixed["fixed"] == [5]
        assert marker() == ""  # flushed
        assert int(host.ssh(f"{redis} dbsize").stdout.strip()) > 0  # and warmed again
    finally:
        host.ssh(f"{redis} del diagnose:marker >/dev/null")


def test_public_url_answering_404_is_guide_3_for_a_human(served, make_served_inventory):
    """The public URL pointed at the frontend, which has no /api proxy: the backend answers
    directly, the public URL 404s. No safe automatic fix: --fix changes nothing."""
    host = served.host
    public = make_served_inventory(
        "diagnose-public", health_public_url=f"http://127.0.0.1:{host.frontend_port}")
    code, found, text = diagnose(served, inventory=public)
    assert code == 1 and found["matched"] == [3], text
    proxy = guides(found)[3]
    assert any(e.startswith("backend directly") and "answered 200" in e
               for e in proxy["evidence"])
    assert any(e.startswith("public ") and "answered 404" in e for e in proxy["evidence"])
    assert any("next.config.js" in h for h in proxy["human"])
    code, tried, text = diagnose(served, "--fix", inventory=public)
    assert code == 1 and tried["changed"] == 0 and tried["plan"] == [], text


def test_database_refusing_the_app_is_guide_4_for_a_human(served, postgres_db):
    postgres_db.psql(f'ALTER ROLE "{postgres_db.user}" NOLOGIN;')
    try:
        code, found, text = diagnose(served, "--fix")
    finally:
        postgres_db.psql(f'ALTER ROLE "{postgres_db.user}" LOGIN;')
    assert code == 1 and 4 in found["matched"], text
    database = guides(found)[4]
    assert database["level"] == "critical" and database["fixes"] == []
    assert any("not permitted to log in" in e for e in database["evidence"])
    assert any("no automatic fix is safe" in h for h in database["human"])
    assert found["changed"] == 0
    assert postgres_db.password not in text


def test_high_latency_is_guide_2_with_the_slowest_endpoints(served):
    host = served.host
    knob = f"{DEPLOY_TO}/current/{BACKEND}/config/latency.json"
    host.ssh(f"printf '{{\"latencyMs\": 400}}\\n' > {knob} && pm2 reload {BACKEND} >/dev/null")
    try:
        code, found, text = diagnose(served)
    finally:
        host.ssh(f"printf '{{\"latencyMs\": 0}}\\n' > {knob} && pm2 reload {BACKEND} >/dev/null")
        reset_counters(served)
    assert code == 1 and 2 in found["matched"], text
    latency = guides(found)[2]
    # 400 ms a request: at least the warning (300 ms); a loaded machine may add the rest.
    assert latency["level"] in ("warning", "critical"), latency
    assert latency["reasons"][0].startswith("p95 latency")
    slowest = next(e for e in latency["evidence"] if e.startswith("slowest endpoints: "))
    assert int(slowest.split(" ms")[0].rsplit(" ", 1)[1]) >= 400, slowest
    assert any(e.startswith("database: ") for e in latency["evidence"])
    assert any(e.startswith("Redis: ") for e in latency["evidence"])
    assert any("slow queries" in h for h in latency["human"])
