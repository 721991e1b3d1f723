"""The disaster-recovery drill's judgement (tpe_ops.drill): pure, no hosts."""

from __future__ import annotations

import json
import subprocess

from tpe_ops import drill as d


def side(inventory="drill.py", hosts=None, environments=None, databases=None) -> d.Side:
    hosts = hosts or {"spare-1": ("10.0.9.1", 22)}
    return d.Side(inventory, hosts, environments or dict.fromkeys(hosts, "staging"),
                  databases or [("db.internal", 5432, "tpedb_drill")])


PRODUCTION = d.Side("production.py", {"app-1": ("10.0.1.5", 22), "app-2": ("10.0.1.6", 22)},
                    {"app-1": "production", "app-2": "production"},
                    [("db.internal", 5432, "tpedb"), ("db.internal", 5432, "tpedb")])


def test_a_separate_drill_is_allowed():
    assert d.refusals(side(), PRODUCTION) == []


def test_refused_against_the_sources_database():
    same = side(databases=[("DB.internal", 5432, "tpedb")])
    assert any("is the source's database" in r for r in d.refusals(same, PRODUCTION))
    # The same name on another server is refused too: one wrong db_host away from production.
    named = side(databases=[("scratch.internal", 5432, "tpedb")])
    assert any("named tpedb, as the source's" in r for r in d.refusals(named, PRODUCTION))
    # localhost and 127.0.0.1 are one server.
    local = d.Side("p.py", {"a": ("x", 22)}, {"a": "staging"}, [("localhost", 5432, "app")])
    assert any("is the source's database" in r
               for r in d.refusals(side(databases=[("127.0.0.1", 5432, "app")]), local))


def test_refused_against_the_sources_hosts_by_name_or_address():
    by_name = side(hosts={"app-1": ("10.9.9.9", 22)})
    assert "drill host app-1 is a host of the source inventory" in d.refusals(by_name,
                                                                              PRODUCTION)
    by_address = side(hosts={"spare": ("10.0.1.6", 22)})
    assert any("is source host app-2" in r for r in d.refusals(by_address, PRODUCTION))
    other_port = side(hosts={"spare": ("10.0.1.6", 2222)})
    assert d.refusals(other_port, PRODUCTION) == []
    assert d.host_address("h", {"ssh_hostname": "LOCALHOST", "ssh_port": 2201}) == (
        "loopback", 2201)
    assert d.host_address("10.0.0.1", {}) == ("10.0.0.1", 22)


def test_refused_when_marked_production_or_same_inventory_or_this_machine():
    marked = side(environments={"spare-1": "production"})
    assert any("marked production" in r for r in d.refusals(marked, PRODUCTION))
    same = side(inventory="production.py")
    assert any("is the source inventory" in r for r in d.refusals(same, PRODUCTION))
    local = side(hosts={"@local": ("@local", 22)})
    assert any("is this machine" in r for r in d.refusals(local, PRODUCTION))


def test_refused_with_several_databases():
    two = side(hosts={"a": ("1.1.1.1", 22), "b": ("1.1.1.2", 22)},
               databases=[("db", 5432, "x_drill"), ("db", 5432, "y_drill")])
    assert any("use 2 databases" in r for r in d.refusals(two, PRODUCTION))


def test_rpo_rto_and_durations():
    assert d.parse_utc("2026-01-02T03:04:05Z") == 1767323045.0
    assert d.rpo_seconds("2026-01-02T03:04:05Z", 1767323045.0 + 90) == 90.0
    assert d.rpo_seconds("2026-01-02T03:04:05Z", 1767323045.0 - 5) == 0.0  # clock skew
    assert d.rto_seconds(100.0, 345.5) == 245.5
    assert d.rto_seconds(100.0, None) is None
    assert d.duration(None) == "-"
    assert d.duration(42.34) == "42.3 s"
    assert d.duration(245) == "4 min 05 s"
    assert d.duration(86400) == "24 h 00 min"
    assert d.duration(3 * 86400 + 7200) == "3 d 2 h"
    assert d.iso(1767323045.0) == "2026-01-02T03:04:05Z"


def passed(number_times: dict[int, tuple[float, float]]) -> list[d.DrillStep]:
    steps = d.new_steps()
    for step in steps:
        start, end = number_times.get(step.number, (0.0, 1.0))
        step.begin(start)
        step.finish(end)
    return steps


def test_steps_timing_and_verdict():
    steps = passed({1: (0, 3), 2: (3, 93), 3: (93, 100), 4: (100, 220), 5: (220, 240),
                    7: (240, 250)})
    assert [s.number for s in steps] == [1, 2, 3, 4, 5, 7]
    assert steps[1].seconds == 90 and steps[1].status == "pass"
    assert steps[1].to_dict()["started"] == "1970-01-01T00:00:03Z"
    assert d.verdict(steps, 235, 300, 3, 86400) == "pass"
    assert d.verdict(steps, 301, 300, 3, 86400) == "fail"  # RTO goal missed
    assert d.verdict(steps, 235, 300, 90000, 86400) == "fail"  # RPO goal missed
    assert d.verdict(steps, None, 300, 3, 86400) == "fail"  # never healthy
    steps[2].status = "fail"
    assert d.verdict(steps, 235, 300, 3, 86400) == "fail"
    skipped = d.new_steps()
    skipped[0].skip("not run")
    assert skipped[0].status == "skipped" and skipped[0].seconds is None


def test_fixes_name_the_failed_step_the_slowest_step_and_warnings():
    steps = passed({2: (0, 200), 4: (200, 260)})
    found = d.fixes(steps, 400, 300, 100000, 86400, ["host-1: memory at 91 %"])
    assert found[0].startswith("RTO 6 min 40 s exceeds the goal 5 min 00 s")
    assert "slowest step: 2 provision (3 min 20 s)" in found[0]
    assert "RPO 27 h 46 min exceeds the goal 24 h 00 min" in found[1]
    assert found[2] == "warning: host-1: memory at 91 %"
    steps[2].status, steps[2].problems = "fail", ["pg_restore: error: could not read input"]
    first = d.fixes(steps, None, 300, 5, 86400, [])[0]
    assert first.startswith("step 3 (restore): pg_restore: error") and "cannot be relied" in first


def test_health_and_benchmark_judgement():
    findings = [{"check": "health:local", "level": "ok", "message": "200"},
                {"check": "memory", "level": "warning", "message": "memory 91 %"},
                {"check": "db", "level": "critical", "message": "database down"}]
    bad, warned = d.health_problems("critical", findings)
    assert bad == ["db: database down"] and warned == ["memory: memory 91 %"]
    assert d.health_problems("warning", findings[:2]) == ([], ["memory: memory 91 %"])
    assert d.health_problems("unknown", []) == (["health is unknown"], [])
    ok = {"url": "u1", "count": 50, "p95_ms": 12.0, "error_rate_pct": 0.0,
          "comparison": {"within_target": True, "target_ms": 500, "crosses_rollback": False}}
    slow = {**ok, "url": "u2", "p95_ms": 612.0,
            "comparison": {"within_target": False, "target_ms": 500, "crosses_rollback": True,
                           "degradation_pct": 260.0, "baseline_ms": 170}}
    errors = {**ok, "url": "u3", "error_rate_pct": 4.0}
    dead = {"url": "u4", "count": 0}
    bad, warned = d.benchmark_problems([ok, slow, errors, dead], 1.0)
    assert bad == ["u2: p95 612 ms, target 500 ms", "u3: error rate 4.0 % > 1 %",
                   "u4: no successful request"]
    assert warned == ["u2: p95 612 ms is +260 % vs the baseline 170 ms"]
    assert d.benchmark_problems([], 1.0) == (["the benchmark measured no endpoint"], [])


def report(**overrides):
    steps = passed({1: (1000, 1003), 2: (1003, 1100), 3: (1100, 1110), 4: (1110, 1200),
                    5: (1200, 1220), 7: (1220, 1230)})
    steps[2].evidence.append("exact row counts equal the backup's | 3 tables")
    values = dict(drill_inventory="/x/drill.py", source_inventory="/x/production.py",
                  hosts=["spare-1"], database="tpedb_drill", started=1000.0, ended=1231.0,
                  steps=steps, rto=205.0, rto_goal=300, rpo=3.0, rpo_goal=86400,
                  backup={"file": "/b/tpedb-1.dump", "time": "2026-01-02T03:04:05Z",
                          "tables": 3, "rows": 11, "migration": "002_events"},
                  release={"release": "20260101-abc", "commit": "abcdef0123456789"},
                  health={"classification": "healthy"}, benchmark=[], warnings=[],
                  kept=False)
    values.update(overrides)
    return d.drill_report(**values)


def test_report_json_and_markdown():
    data = report()
    assert data["status"] == "pass" and data["exit_code"] == 0 and data["fix"] == []
    assert data["seconds"] == 231.0 and data["rto_seconds"] == 205.0
    assert [s["seconds"] for s in data["steps"]] == [3, 97, 10, 90, 20, 10]
    assert json.loads(d.report_json(data)) == data
    text = d.report_markdown(data)
    assert text.startswith("# Disaster-recovery drill: PASS")
    assert "**RTO** (start to healthy): 3 min 25 s, goal 5 min 00 s" in text
    assert "| 2 | provision the drill host(s) from zero | pass | 1970-01-01T00:16:43Z |" in text
    assert "| 6 | this report |" in text
    assert "- exact row counts equal the backup's / 3 tables" in text  # table-safe
    assert "## What to fix\n\n- nothing" in text
    line = d.headline(data, "/r/drill.md")
    assert line == ("DRILL: PASS; RTO 3 min 25 s (goal 5 min 00 s), RPO 3.0 s (goal "
                    "24 h 00 min); report /r/drill.md")


def test_failed_report_says_where_and_what_to_fix():
    steps = passed({})
    steps[2].status, steps[2].problems = "fail", ["restore failed (truncated or corrupted dump?)"]
    for step in steps[3:5]:
        step.status, step.started, step.ended = "skipped", None, None
    data = report(steps=steps, rto=None)
    assert data["status"] == "fail" and data["exit_code"] == 1
    assert d.headline(data).startswith("DRILL: FAIL at step 3 (restore); RTO -")
    assert data["fix"][0].startswith("step 3 (restore): restore failed")
    assert "- problem: restore failed" in d.report_markdown(data)


def test_failing_release_script_copies_by_hard_link_and_replaces_the_entry(tmp_path):
    current = tmp_path / "releases" / "r1"
    (current / "tpe-backend" / "src").mkdir(parents=True)
    entry = current / "tpe-backend" / "src" / "server.js"
    entry.write_text("console.log('serving');\n")
    (current / "tpe-backend" / "lib.js").write_text("module.exports = 1;\n")
    for marker in (".complete", ".verified"):
        (current / marker).touch()
    new = tmp_path / "releases" / "r2"
    script = d.failing_release_script(str(current), str(new), "tpe-backend/src/server.js")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert entry.read_text() == "console.log('serving');\n"  # the current release untouched
    failing = new / "tpe-backend" / "src" / "server.js"
    assert "process.exit(1)" in failing.read_text()
    assert failing.stat().st_ino != entry.stat().st_ino
    lib = new / "tpe-backend" / "lib.js"
    assert lib.stat().st_ino == (current / "tpe-backend" / "lib.js").stat().st_ino  # linked
    assert not (new / ".complete").exists() and not (new / ".verified").exists()
    node = subprocess.run(["node", str(failing)], capture_output=True, text=True)
    assert node.returncode == 1 and "fails at start on purpose" in node.stderr
    again = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwrites a release


def test_recovery_times_and_rollback_problems():
    marks = d.Marks(switched=100.0, reloaded=103.0, detected=112.5, switched_back=114.0,
                    healthy=118.25)
    assert d.recovery(marks) == {"reload_seconds": 3.0, "verify_seconds": 9.5,
                                 "switch_back_seconds": 1.5, "healthy_seconds": 4.2,
                                 "time_to_recover_seconds": 18.2}
    assert d.recovery(d.Marks(switched=1.0))["time_to_recover_seconds"] is None
    good = {"current": "r1", "bad": ["r2"]}
    assert d.rollback_problems("r1", "r2", good, False, marks) == []
    missed = d.rollback_problems("r1", "r2", {"current": "r2", "bad": []}, True, marks)
    assert any("PASSED verification" in p for p in missed)
    assert any("serves r2, not its previous release r1" in p for p in missed)
    assert any("not marked bad" in p for p in missed)
    never = d.rollback_problems("r1", "r2", good, False, d.Marks(switched=1.0))
    assert never == ["service was not verified healthy after the automatic rollback"]


def test_rollback_report():
    host = {"previous": "r1", "failing": "r2", "problems": [], "evidence": ["marked bad"],
            "recovery": d.recovery(d.Marks(100.0, 102.0, 110.0, 111.0, 115.0))}
    data = d.rollback_report(inventory="/x/staging.py", started=90.0, ended=130.0,
                             hosts={"stage-1": host}, goal=180)
    assert data["status"] == "pass" and data["exit_code"] == 0 and data["fix"] == []
    assert d.rollback_headline(data) == ("DRILL ROLLBACK: PASS; time to recover 15.0 s "
                                         "(goal 3 min 00 s)")
    assert ("| stage-1 | r1 | r2 | 2.0 s | 8.0 s | 1.0 s | 4.0 s | 15.0 s |"
            in d.rollback_markdown(data))
    slow = d.rollback_report(inventory="x", started=0, ended=1, hosts={"stage-1": host},
                             goal=10)
    assert slow["status"] == "fail" and "exceeds the goal 10.0 s" in slow["fix"][0]
