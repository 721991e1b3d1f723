"""`cache`: parsing the prefix counts, the stats figures and their judgement, confirmation."""

from __future__ import annotations

import pytest

from operations.cache import NO_PREFIX, parse_prefix_counts, prefix_count_command
from playbooks.cache import confirm_clear, judged_rate, stats_figures, stats_steps
from playbooks.common import Options
from tpe_ops import judgement as j
from tpe_ops.errors import AbortedError

INFO = {"keyspace_hits": "300", "keyspace_misses": "100", "used_memory": "1048576",
        "used_memory_human": "1.00M", "maxmemory": "268435456", "maxmemory_human": "256.00M",
        "maxmemory_policy": "allkeys-lru", "evicted_keys": "2", "expired_keys": "40"}
KEYS = {"total": 7, "prefixes": {"contractor": 5, "event": 1, NO_PREFIX: 1}}


def test_prefix_counts_parsed_most_first_with_keys_without_a_colon():
    lines = ["1 p event", "5 p contractor", "2 none", "3 p a b", "scanned"]
    assert parse_prefix_counts(lines) == {
        "total": 11, "prefixes": {"contractor": 5, "a b": 3, NO_PREFIX: 2, "event": 1}}


def test_prefix_counts_empty_unreachable_or_unfinished():
    assert parse_prefix_counts(["scanned"]) == {"total": 0, "prefixes": {}}
    assert parse_prefix_counts(["unreachable"]) is None
    assert parse_prefix_counts(["5 p contractor"]) is None  # the scan did not finish


def test_prefix_count_command_scans_never_keys():
    command = prefix_count_command(6402)
    assert "--scan" in command and " keys " not in command.lower()
    assert "-p 6402" in command


def test_stats_figures_first_run_overall_rate_only():
    figures = stats_figures(INFO, KEYS, None, now=1000.0)
    assert figures["keys"] == 7 and figures["prefixes"]["contractor"] == 5
    assert figures["hit_rate_pct"] == 75.0 and figures["since_last"] is None
    assert figures["memory"]["used_pct"] == pytest.approx(100 / 256)
    assert figures["memory"]["policy"] == "allkeys-lru"
    assert (figures["evicted_keys"], figures["expired_keys"]) == (2, 40)
    assert judged_rate(figures) == ("since Redis started", 75.0)


def test_stats_figures_since_the_previous_sample():
    previous = {"time": 880.0, "keyspace_hits": 290, "keyspace_misses": 60}
    figures = stats_figures(INFO, KEYS, previous, now=1000.0)
    since = figures["since_last"]
    assert (since["hits"], since["misses"], since["seconds"]) == (10, 40, 120.0)
    assert since["hit_rate_pct"] == 20.0
    assert judged_rate(figures) == ("since the last stats run", 20.0)


def test_no_lookup_since_the_previous_sample_is_not_judged_on_the_all_time_rate():
    previous = {"time": 880.0, "keyspace_hits": 300, "keyspace_misses": 100}
    figures = stats_figures(INFO, KEYS, previous, now=1000.0)
    assert judged_rate(figures) == ("since the last stats run", None)
    assert j.redis_hit_rate_finding(None, j.Thresholds()).level == "ok"


def test_stats_figures_after_a_redis_restart_counts_from_zero():
    previous = {"time": 0.0, "keyspace_hits": 5000, "keyspace_misses": 10}
    since = stats_figures(INFO, KEYS, previous, now=60.0)["since_last"]
    assert (since["hits"], since["misses"], since["hit_rate_pct"]) == (300, 100, 75.0)


def test_no_maxmemory_and_no_lookups():
    info = {**INFO, "maxmemory": "0", "keyspace_hits": "0", "keyspace_misses": "0"}
    figures = stats_figures(info, KEYS, None, now=0.0)
    assert figures["memory"]["used_pct"] is None and figures["hit_rate_pct"] is None
    finding = j.redis_hit_rate_finding(None, j.Thresholds())
    text = [s.name for s in stats_steps(figures, finding)]
    assert any("no maxmemory limit" in line for line in text)
    assert text[-1] == "hit rate judged since Redis started: no cache lookups yet"


def test_low_recent_rate_is_a_warning_step_naming_guide_5():
    previous = {"time": 880.0, "keyspace_hits": 290, "keyspace_misses": 60}
    figures = stats_figures(INFO, KEYS, previous, now=1000.0)
    finding = j.redis_hit_rate_finding(judged_rate(figures)[1], j.Thresholds())
    last = stats_steps(figures, finding)[-1]
    assert last.status == "warning" and "guide 5" in last.name and "20%" in last.name
    assert "(no prefix) 1" in stats_steps(figures, finding)[0].name


def test_clear_without_yes_and_without_a_terminal_is_not_confirmed(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(AbortedError, match="not confirmed") as error:
        confirm_clear({"web1": 12}, Options())
    assert error.value.exit_code == 3 and "web1 (12 keys)" in str(error.value)
    confirm_clear({"web1": 12}, Options(yes=True))  # --yes: no question
    confirm_clear({"web1": 12}, Options(dry=True))  # --dry changes nothing: no question


def test_clear_asks_at_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: "yes")
    confirm_clear({"web1": 3}, Options())
    monkeypatch.setattr("builtins.input", lambda question: "no")
    with pytest.raises(AbortedError, match="not confirmed"):
        confirm_clear({"web1": 3}, Options())
