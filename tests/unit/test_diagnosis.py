"""The troubleshooting guides (tpe_ops.diagnosis): evidence -> which guide matches, why, the
safe fix, what a human must do. Findings come from health's real judgement (playbooks.health
`judge`, pure) over measurements shaped like the facts."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from playbooks.diagnose import evidence
from playbooks.health import judge
from tpe_ops import diagnosis as dx
from tpe_ops.diagnosis import Fix

ROOT = Path(__file__).resolve().parents[2]
DATA = SimpleNamespace(**{k: v for k, v in runpy.run_path(str(ROOT / "group_data/all.py")).items()
                          if not k.startswith("_")})
NOW = 1_800_000_000.0
HEALTHY_BODY = {"status": "healthy", "timestamp": "t", "environment": "production",
                "version": "1.0.0", "redis": "ok", "database": "ok",
                "pool": {"max": 20, "total": 2, "idle": 2, "waiting": 0}}


def proc(name: str, status: str = "online", **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "restart_time": 0, "unstable_restarts": 0,
            "memory": 50_000_000, "cpu": 1, "pm_uptime": (NOW - 600) * 1000, **extra}


def http(status: int = 200, body: dict | None = None, seconds: float = 0.004) -> dict:
    return {"status": status, "seconds": seconds,
            "body": json.dumps(HEALTHY_BODY if body is None else body) if status else ""}


def facts(**changes: Any) -> dict[str, Any]:
    """A healthy host's facts, with `changes`."""
    base = {
        "resources_before": {"disk_pct": 40.0, "mem_pct": 30.0, "cpu": (1000, 900)},
        "resources_after": {"disk_pct": 40.0, "mem_pct": 30.0, "cpu": (1100, 990)},
        "pm2": [proc("tpe-backend"), proc("tpe-backend"), proc("tpe-frontend")],
        "health": http(),
        "sample": [(200, 4.0 + i % 3) for i in range(20)],
        "endpoints": {"/api/state-machine/diagram": [(200, 6.0)],
                      "/api/state-machine/metadata": [(200, 5.0)]},
        "db": {"connections": 3, "error": None},
        "redis": {"keyspace_hits": "90", "keyspace_misses": "10",
                  "used_memory": "1000000", "used_memory_human": "976.56K"},
        "frontend": http(200, {}),
        "redis_state": {"ping": "PONG", "service": "active", "keys": 12},
        "db_activity": {"states": {"idle": 3}, "max_connections": 100, "error": None},
        "error_logs": {"tpe-backend": [], "tpe-frontend": []},
        "pm2_events": {"tpe-backend": [], "tpe-frontend": []},
    }
    return base | changes


def examine(f: dict[str, Any], public: dict | None = None, flush: bool = False,
            samples: list | None = None, **data: Any) -> list[dx.GuideResult]:
    """Health's judgement, then the guides, over the evidence the playbook assembles."""
    host_data = SimpleNamespace(**(vars(DATA) | data))
    findings, _ = judge(f, host_data, samples or [], NOW, public)
    return dx.diagnose(evidence(f, host_data, findings, flush))


def guide(results: list[dx.GuideResult], number: int) -> dx.GuideResult:
    return next(r for r in results if r.guide == number)


def test_a_healthy_host_matches_no_guide():
    results = examine(facts())
    assert [r.guide for r in results] == [1, 2, 3, 4, 5]
    assert dx.matched(results) == [] and dx.plan(results) == []
    assert dx.verdict(results) == "no troubleshooting guide matches"
    assert dx.worst_level(results) == "ok"
    # Every guide still shows what it looked at.
    assert all(r.evidence for r in results)
    assert "p95 latency" in guide(results, 2).evidence[0]
    assert "public URL not configured" in guide(results, 3).evidence[1]
    json.dumps([r.to_dict() for r in results])


def test_backend_stopped_matches_guide_1_restart_and_shows_the_error_log():
    down = facts(pm2=[proc("tpe-backend", "stopped"), proc("tpe-backend", "stopped"),
                      proc("tpe-frontend")],
                 health=http(0), sample=[(0, 0.0)] * 20,
                 endpoints={"/api/state-machine/diagram": [(0, 0.0)]},
                 error_logs={"tpe-backend": ["2026-12-04T10:00:00: Error: boom"],
                             "tpe-frontend": []})
    results = examine(down)
    assert dx.matched(results) == [1]  # no latency measured is not "high latency"
    backend = guide(results, 1)
    assert backend.level == "critical"
    assert any("tpe-backend: stopped" in r for r in backend.reasons)
    assert "  2026-12-04T10:00:00: Error: boom" in backend.evidence
    assert dx.plan(results) == [Fix("restart_app", "tpe-backend")]
    assert any("pm2 logs tpe-backend" in h and "rollback" in h for h in backend.human)


def test_too_many_restarts_is_guide_1_with_the_logs_and_no_restart():
    previous = [{"time": NOW - 600, "restarts": {"tpe-backend": 0, "tpe-frontend": 0},
                 "redis": None}]
    looping = facts(pm2=[proc("tpe-backend", restart_time=4), proc("tpe-backend", restart_time=4),
                         proc("tpe-frontend")],
                    pm2_events={"tpe-backend": ["PM2 log: App [tpe-backend:1] exited with "
                                                "code [1] via signal [SIGINT]"],
                                "tpe-frontend": []})
    results = examine(looping, samples=previous)
    backend = guide(results, 1)
    assert backend.matched and backend.level == "warning"
    assert "tpe-backend: 8 restarts in the last hour (> 5)" in backend.reasons
    assert "tpe-backend PM2 daemon log, last 1 line(s):" in backend.evidence
    assert dx.plan(results) == []  # it is online: nothing to start
    assert any("restarts too often" in h for h in backend.human)


def test_frontend_stopped_matches_guide_1_and_restarts_only_the_frontend():
    results = examine(facts(pm2=[proc("tpe-backend"), proc("tpe-backend"),
                                 proc("tpe-frontend", "stopped")], frontend=http(0)))
    assert dx.matched(results) == [1]
    assert dx.plan(results) == [Fix("restart_app", "tpe-frontend")]
    assert any("frontend http://127.0.0.1:3000/" in e for e in guide(results, 1).evidence)


def test_a_backend_online_in_pm2_but_not_answering_needs_a_human():
    results = examine(facts(health=http(0), sample=[(0, 0.0)] * 20))
    backend = guide(results, 1)
    assert backend.matched and backend.fixes == []
    assert any("PORT" in h for h in backend.human)


def test_redis_down_with_its_service_stopped_starts_it_then_warms():
    results = examine(facts(redis=None, redis_state={"ping": "Could not connect",
                                                     "service": "inactive", "keys": None},
                            health=http(200, HEALTHY_BODY | {"redis": "error"})))
    assert dx.matched(results) == [5]
    redis = guide(results, 5)
    assert redis.level == "critical"
    assert "service redis-server: inactive" in redis.evidence
    assert dx.plan(results) == [Fix("start_redis", "redis-server"), Fix("warm_cache")]


def test_redis_down_but_its_service_running_is_not_started_again():
    results = examine(facts(redis=None, redis_state={"ping": None, "service": "active",
                                                     "keys": None}))
    redis = guide(results, 5)
    assert redis.matched and redis.fixes == []
    assert any("port and bind" in h for h in redis.human)


def test_redis_down_and_database_down_does_not_warm():
    results = examine(facts(redis=None, db={"connections": None, "error": "ECONNREFUSED"},
                            redis_state={"ping": None, "service": "failed", "keys": None}))
    assert dx.matched(results) == [4, 5]
    assert dx.plan(results) == [Fix("start_redis", "redis-server")]
    assert guide(results, 4).fixes == []


def test_low_hit_rate_warms_and_flushes_only_with_flush():
    previous = [{"time": NOW - 60, "restarts": {"tpe-backend": 0, "tpe-frontend": 0},
                 "redis": {"keyspace_hits": "90", "keyspace_misses": "10"}}]
    low = facts(redis={"keyspace_hits": "91", "keyspace_misses": "50", "used_memory": "1"})
    results = examine(low, samples=previous)
    redis = guide(results, 5)
    assert redis.matched and redis.level == "warning"
    assert dx.plan(results) == [Fix("warm_cache")]
    assert any("--flush" in h for h in redis.human)
    flushed = examine(low, samples=previous, flush=True)
    assert dx.plan(flushed) == [Fix("flush_cache"), Fix("warm_cache")]


def test_flush_is_never_planned_when_guide_5_does_not_match():
    assert dx.plan(examine(facts(), flush=True)) == []


def test_the_app_unable_to_reach_a_running_redis_matches_guide_5():
    results = examine(facts(health=http(200, HEALTHY_BODY | {"redis": "error"})))
    redis = guide(results, 5)
    assert redis.matched and any("REDIS_PORT" in h for h in redis.human)


def test_public_404_while_the_backend_answers_is_guide_3_for_a_human():
    public = {"status": 404, "seconds": 0.01, "body": "<html>404</html>"}
    results = examine(facts(), public=public, health_public_url="http://127.0.0.1:3000")
    assert dx.matched(results) == [3]
    proxy = guide(results, 3)
    assert proxy.fixes == [] and dx.plan(results) == []
    assert "public http://127.0.0.1:3000/api/health: answered 404" \
        in proxy.evidence
    assert any("next.config.js" in h for h in proxy.human)


def test_public_failing_because_the_frontend_is_down_restarts_it_once():
    public = {"status": 502, "seconds": 0.01, "body": ""}
    results = examine(facts(pm2=[proc("tpe-backend"), proc("tpe-frontend", "stopped")],
                            frontend=http(0)),
                      public=public, health_public_url="https://tpx.example")
    assert dx.matched(results) == [1, 3]
    assert dx.plan(results) == [Fix("restart_app", "tpe-frontend")]  # once, not twice


def test_backend_404_on_its_own_health_route_is_guide_3_not_guide_1():
    results = examine(facts(health=http(404, {"error": "not found"}),
                            sample=[(404, 3.0)] * 20))
    assert 3 in dx.matched(results) and 1 not in dx.matched(results)
    assert any("route is missing" in h for h in guide(results, 3).human)


def test_database_refusing_is_guide_4_with_no_automatic_fix():
    refused = facts(db={"connections": None,
                        "error": "28000 role \"tpe\" is not permitted to log in"},
                    db_activity={"states": {}, "max_connections": None, "error": "28000"})
    results = examine(refused)
    assert dx.matched(results) == [4]
    db = guide(results, 4)
    assert db.level == "critical" and db.fixes == []
    assert any("not permitted to log in" in e for e in db.evidence)
    assert any("no automatic fix is safe" in h for h in db.human)


def test_pool_near_its_limit_reloads_the_backend_gracefully():
    results = examine(facts(db={"connections": 17, "error": None},
                            db_activity={"states": {"idle": 15, "active": 2},
                                         "max_connections": 100}))
    db = guide(results, 4)
    assert db.matched and db.level == "warning"
    assert "connections to this database by state: active 2, idle 15; max_connections 100" \
        in db.evidence
    assert dx.plan(results) == [Fix("reload_app", "tpe-backend")]


def test_a_reload_is_dropped_when_the_same_app_is_restarted():
    results = examine(facts(pm2=[proc("tpe-backend", "errored"), proc("tpe-frontend")],
                            health=http(200, HEALTHY_BODY | {"database": "error"})))
    assert {1, 4} <= set(dx.matched(results))
    assert dx.plan(results) == [Fix("restart_app", "tpe-backend")]


@pytest.mark.parametrize(("ms", "level"), [(350.0, "warning"), (650.0, "critical")])
def test_high_latency_is_guide_2_with_the_slowest_endpoints(ms, level):
    slow = facts(sample=[(200, ms)] * 20,
                 endpoints={"/api/state-machine/diagram": [(200, ms + 20)],
                            "/api/state-machine/metadata": [(200, ms + 10)]})
    results = examine(slow)
    assert dx.matched(results) == [2]
    latency = guide(results, 2)
    assert latency.level == level
    assert latency.evidence[1].startswith(
        f"slowest endpoints: /api/state-machine/diagram {ms + 20:.0f} ms (200)")
    assert any(e.startswith("database: ") for e in latency.evidence)
    assert dx.plan(results) == []  # Redis up, cache warm: nothing safe to do automatically
    assert any("slow queries" in h for h in latency.human)


def test_high_latency_with_an_empty_cache_warms_it():
    slow = facts(sample=[(200, 600.0)] * 20,
                 redis_state={"ping": "PONG", "service": "active", "keys": 0})
    assert dx.plan(examine(slow)) == [Fix("warm_cache")]
    assert dx.plan(examine(slow, app_warm_cache_command="")) == []


def test_outcome_and_fixable():
    before = examine(facts(pm2=[proc("tpe-backend", "stopped"), proc("tpe-frontend")],
                           health=http(0), sample=[(0, 0.0)] * 20))
    after = examine(facts())
    assert dx.fixable(before) == [1]
    assert dx.outcome(before, after) == {1: True}
    assert dx.outcome(before, before) == {1: False}
    assert dx.verdict(before) == "matches guide 1 (backend process down)"


def test_fix_labels():
    assert Fix("restart_app", "tpe-backend").label == "Restart tpe-backend (PM2)"
    assert Fix("start_redis", "redis-server").label == "Start Redis (redis-server)"
    assert Fix("flush_cache").label == "Clear the Redis cache (FLUSHDB)"


# --- the facts' parsing (operations/diagnose.py) ------------------------------------------


def test_redis_state_parsing():
    from operations.diagnose import RedisState

    up = RedisState().process(["ping PONG", "service active"])
    assert up == {"ping": "PONG", "service": "active"}
    down = RedisState().process(
        ["ping Could not connect to Redis at 127.0.0.1:6379: Connection refused",
         "service inactive"])
    assert down["ping"].startswith("Could not connect") and down["service"] == "inactive"
    assert RedisState().process(["ping", "service"]) == {"ping": None, "service": "unknown"}
    assert "timeout 5 redis-cli -p 6379 ping" in RedisState().command(6379, "redis-server")


def test_db_activity_parsing():
    from operations.diagnose import DbActivity

    found = DbActivity().process(["state idle 3", "state idle_in_transaction 1",
                                  "max_connections 100"])
    assert found == {"states": {"idle": 3, "idle in transaction": 1}, "max_connections": 100,
                     "error": None}
    refused = DbActivity().process(['error 28000 role "x" is not permitted to log in'])
    assert refused["error"] == '28000 role "x" is not permitted to log in'
    command = DbActivity().command("/srv/shared", "/srv/current/tpe-backend")
    assert ". /srv/shared/backend.env" in command and "PASSWORD=" not in command


def test_pm2_app_events_reads_the_daemon_log_of_one_app():
    from operations.diagnose import Pm2AppEvents

    command = Pm2AppEvents().command("tpe-backend", 5)
    assert "grep -F '[tpe-backend:'" in command and "tail -n 5" in command
    assert Pm2AppEvents().process(["a", "", "b  "]) == ["a", "b"]
