"""Pure functions: pm2 jlist parsing, health judgement, release bookkeeping, SCRAM verifiers."""

import json

from operations.pm2 import Pm2Modules, Pm2Version, parse_jlist
from operations.postgres import scram_verifier, verifier_matches
from operations.release import (
    HttpCheck,
    ReleaseState,
    release_name,
    releases_to_keep,
    switch_commands,
)
from tpe_ops.health import health_problems, pm2_problems

JLIST = [
    {
        "pid": 10, "name": "tpe-backend", "pm_id": 0, "monit": {"memory": 50_000_000, "cpu": 3},
        "pm2_env": {"status": "online", "restart_time": 2, "exec_mode": "cluster_mode",
                    "pm_uptime": 1, "DB_PASSWORD": "s3cret-value", "env": {"X": "s3cret-value"}},
    }
]


def test_jlist_after_banner_keeps_no_environment():
    text = ">>>> In-memory PM2 is out-of-date\n" + json.dumps(JLIST)
    procs = parse_jlist(text)
    assert procs[0]["name"] == "tpe-backend" and procs[0]["status"] == "online"
    assert procs[0]["restart_time"] == 2 and procs[0]["memory"] == 50_000_000
    assert "s3cret-value" not in json.dumps(procs)


def test_jlist_garbage_is_empty():
    assert parse_jlist("command not found") == []
    assert parse_jlist("[{broken") == []


def test_pm2_version_and_modules_facts():
    assert Pm2Version().process(['{"name": "pm2",', '"version": "7.0.4"}']) == "7.0.4"
    assert Pm2Version().process([]) is None
    facts = Pm2Modules().process([
        'module {"name":"pm2-logrotate","version":"3.0.0"}',
        'conf {"pm2-logrotate":{"max_size":"10M","retain":"14"}}',
    ])
    assert facts["modules"] == {"pm2-logrotate": "3.0.0"}
    assert facts["conf"]["pm2-logrotate"]["retain"] == "14"


def _http(code, body):
    return {"status": code, "seconds": 0.01, "body": json.dumps(body) if body else ""}


def test_health_shape():
    good = {"status": "healthy", "timestamp": "t", "environment": "production", "version": "1"}
    assert health_problems(_http(200, good)) == []
    assert "guide 3" in health_problems(_http(404, None))[0]
    assert "unreachable" in health_problems(_http(0, None))[0]
    assert "lacks version" in health_problems(_http(200, {k: v for k, v in good.items()
                                                          if k != "version"}))[0]


def test_health_dependencies_reported_by_the_app_must_be_up():
    good = {"status": "healthy", "timestamp": "t", "environment": "production", "version": "1"}
    assert health_problems(_http(200, {**good, "redis": "ok", "database": "ok"})) == []
    assert health_problems(_http(200, {**good, "redis": "error", "database": "ok"})) == [
        "health reports redis: 'error'"]
    assert health_problems(_http(200, {**good, "database": "down"})) == [
        "health reports database: 'down'"]


def test_pm2_problems_detect_missing_errored_and_restarts():
    online = [{"name": "a", "status": "online", "restart_time": 0}]
    assert pm2_problems(online, online, ["a"]) == []
    assert "not running" in pm2_problems(online, online, ["a", "b"])[0]
    errored = [{"name": "a", "status": "errored", "restart_time": 0}]
    assert "errored" in pm2_problems(online, errored, ["a"])[0]
    restarted = [{"name": "a", "status": "online", "restart_time": 3}]
    assert "restarted 3 time(s)" in pm2_problems(online, restarted, ["a"])[0]


def test_release_state_fact_parsing():
    state = ReleaseState().process([
        "current 20260101000000-abc", "release 20260101000000-abc abc123 ,complete,verified",
        "release 20250101000000-old old456 ,complete,bad", "release 20240101000000-x - ,",
        "good 20260101000000-abc", 'lock {"user": "ann"}',
    ])
    assert state["meta"]["20260101000000-abc"] == {
        "commit": "abc123", "complete": True, "verified": True, "bad": False}
    assert state["meta"]["20240101000000-x"]["commit"] is None
    assert state["current"] == "20260101000000-abc"
    assert state["releases"] == ["20240101000000-x", "20250101000000-old", "20260101000000-abc"]
    assert state["bad"] == ["20250101000000-old"] and state["lock"] == '{"user": "ann"}'
    assert ReleaseState().process(["current ", "good "])["current"] is None


def test_http_check_fact_parsing():
    result = HttpCheck().process(['{"status":"healthy"}', "__http__ 200 0.004"])
    assert result == {"status": 200, "seconds": 0.004, "body": '{"status":"healthy"}'}


def test_keep_releases_never_drops_current_or_known_good():
    releases = [f"2026010{i}000000-c{i}" for i in range(1, 8)]
    meta = {name: {"complete": True} for name in releases}
    meta[releases[-1]] = {"complete": False}  # an interrupted build: not kept
    keep = releases_to_keep(meta, 3, current=releases[0], known_good=releases[1])
    assert keep == sorted([releases[0], releases[1], *releases[-4:-1]])
    assert release_name("20260101000000", "a" * 40) == "20260101000000-aaaaaaaaaaaa"


def test_switch_is_one_rename():
    (command,) = switch_commands("/srv/app", "r1")
    assert "ln -sfn releases/r1 current.tmp" in command and "mv -T current.tmp current" in command


def test_scram_verifier_round_trip():
    verifier = scram_verifier("pa$$word'with\"quotes")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert verifier_matches(verifier, "pa$$word'with\"quotes")
    assert not verifier_matches(verifier, "other")
    assert not verifier_matches(None, "x") and not verifier_matches("md5abc", "x")


def test_rollback_target_and_release_rows():
    from playbooks.releases import release_rows
    from playbooks.rollback import pick_target

    state = ReleaseState().process([
        "current 20260103000000-ccc",
        "release 20260101000000-aaa aaa111 ,complete,verified",
        "release 20260102000000-bbb bbb222 ,complete,bad",
        "release 20260103000000-ccc ccc333 ,complete,verified",
        "release 20260104000000-ddd - ,",
        "good 20260103000000-ccc",
    ])
    assert pick_target(state, None) == "20260101000000-aaa"  # skips the bad one
    assert pick_target(state, "bbb2") == "20260102000000-bbb"  # explicit: allowed
    assert pick_target(state, "20260101000000-aaa") == "20260101000000-aaa"
    assert pick_target(state, "eee") is None  # not on disk: build it
    rows = {r["release"]: r for r in release_rows(state, [
        {"release": "20260101000000-aaa", "user": "ann", "from": "laptop"}])}
    assert rows["20260103000000-ccc"]["status"] == "current"
    assert rows["20260102000000-bbb"]["status"] == "bad"
    assert rows["20260104000000-ddd"]["status"] == "partial"
    assert rows["20260101000000-aaa"]["by"] == "ann@laptop"
    assert rows["20260101000000-aaa"]["instant_rollback"] is True
    assert rows["20260103000000-ccc"]["instant_rollback"] is False


def test_incident_record_says_what_when_from_to():
    from tpe_ops.incident import incident_markdown, incident_record

    record = incident_record("web1", "2026-01-01T00:00:00+00:00", "error rate 7%", "r2", "r1",
                             "a" * 40, "verified, serving", "none", ["003_add_notes"])
    text = incident_markdown(record)
    assert "error rate 7%" in text and "r2" in text and "r1" in text
    assert "003_add_notes" in text and "not rolled back" in text
