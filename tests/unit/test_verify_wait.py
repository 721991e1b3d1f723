"""How long verification waits after a reload (release_flow.worth_waiting): an app not
answering yet is starting; one answering unhealthy gets a grace; a restart loop is judged."""

from __future__ import annotations

import json

from playbooks.release_flow import worth_waiting

HEALTHY = {"status": "healthy", "timestamp": "2026-12-05T03:00:00Z", "environment": "test",
           "version": "1.0.0", "redis": "ok", "database": "ok"}


def sample(status: int, body: dict | None = None, restarts: int = 0, pm2: str = "online"):
    return {"http": {"status": status, "seconds": 0.01, "body": json.dumps(body or {})},
            "pm2": [{"name": "tpe-backend", "status": pm2, "restart_time": restarts}]}


def test_not_answering_yet_is_starting():
    assert worth_waiting(sample(0), 0, None, now=100, grace=10)


def test_healthy_needs_no_wait():
    assert not worth_waiting(sample(200, HEALTHY), 0, None, now=100, grace=10)


def test_answering_unhealthy_gets_a_grace_then_is_judged():
    redis_down = sample(200, {**HEALTHY, "redis": "error"})
    assert worth_waiting(redis_down, 0, None, now=100, grace=10)  # first answer
    assert worth_waiting(redis_down, 0, answering_since=100, now=109, grace=10)
    assert not worth_waiting(redis_down, 0, answering_since=100, now=110, grace=10)
    missing = sample(404)
    assert not worth_waiting(missing, 0, answering_since=100, now=111, grace=10)


def test_restarting_or_errored_apps_are_judged_at_once():
    assert not worth_waiting(sample(0, restarts=3), 1, None, now=100, grace=10)
    assert not worth_waiting(sample(0, pm2="errored"), 0, None, now=100, grace=10)
