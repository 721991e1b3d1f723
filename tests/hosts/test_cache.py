"""`cache warm|clear|stats` against the served host's real Redis (keys seeded with redis-cli)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, run_json

pytestmark = pytest.mark.hosts
SEED = {"tpetest-a": 3, "tpetest-b": 2}  # prefix -> keys; plus one key without a prefix
NO_PREFIX_KEY = "tpetestsolo"


@pytest.fixture(scope="module")
def served(served_host):
    host, _, _ = served_host
    yield served_host
    # Whatever happened, the host leaves with a warm cache and none of our keys.
    redis(host, f"del {NO_PREFIX_KEY} " + " ".join(
        f"{p}:{i}" for p, n in SEED.items() for i in range(n)))
    assert run_cli("cache", "warm", "-i", served_host[1], env=served_host[2]).returncode == 0


def redis(host, command: str) -> str:
    return host.ssh(f"redis-cli -p {host.redis_port} {command}").stdout.strip()


def seed(host) -> None:
    sets = [f"redis-cli -p {host.redis_port} set {p}:{i} v >/dev/null"
            for p, n in SEED.items() for i in range(n)]
    sets.append(f"redis-cli -p {host.redis_port} set {NO_PREFIX_KEY} v >/dev/null")
    host.ssh(" && ".join(sets))


def cache(served, *args: str) -> tuple[int, dict]:
    host, inventory, env = served
    code, payload, stderr = run_json("cache", *args, "-i", inventory, env=env)
    return code, payload["hosts"][host.name] | {"_stderr": stderr}


def test_clear_needs_a_confirmation_and_dry_says_what_it_would_clear(served):
    host, inventory, env = served
    seed(host)
    keys = int(redis(host, "dbsize"))
    assert keys >= 6
    done = run_cli("cache", "clear", "-i", inventory, env=env)  # no tty, no --yes
    assert done.returncode == 3, done.stdout + done.stderr
    assert "not confirmed" in done.stderr and "--yes" in done.stderr
    assert int(redis(host, "dbsize")) == keys
    dry = run_cli("cache", "clear", "-i", inventory, "--dry", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would-change" in dry.stdout and f"({keys} keys)" in dry.stdout
    assert int(redis(host, "dbsize")) == keys


def test_clear_with_yes_empties_the_cache_then_changes_nothing(served):
    host = served[0]
    seed(host)
    code, result = cache(served, "clear", "--yes")
    assert code == 0, result
    assert result["keys_before"] >= 6 and result["keys_after"] == 0
    assert result["changed"] == 1
    assert redis(host, "dbsize") == "0"
    code, again = cache(served, "clear", "--yes")
    assert code == 0 and again["changed"] == 0  # idempotent: an empty cache stays as is


def test_stats_counts_keys_by_prefix_exactly(served):
    host, inventory, env = served
    redis(host, "flushdb")
    seed(host)
    code, result = cache(served, "stats")
    assert code == 0, result
    assert result["prefixes"] == {"tpetest-a": 3, "tpetest-b": 2, "": 1}
    assert result["keys"] == 6
    memory = result["memory"]
    assert memory["used_bytes"] > 0 and memory["policy"] == "allkeys-lru"
    assert memory["maxmemory_bytes"] == 256 * 1024 * 1024
    assert isinstance(result["evicted_keys"], int) and isinstance(result["expired_keys"], int)
    human = run_cli("cache", "stats", "-i", inventory, env=env)
    assert human.returncode == 0
    assert "keys: 6 (tpetest-a 3, tpetest-b 2, (no prefix) 1)" in human.stdout
    assert "policy allkeys-lru" in human.stdout


def test_hit_rate_since_the_last_stats_run_is_judged(served):
    host = served[0]
    seed(host)
    cache(served, "stats")  # the sample the next run compares with
    lookups = ["get tpetest-a:0"] * 3 + ["get tpetest-missing"]
    host.ssh(" && ".join(f"redis-cli -p {host.redis_port} {c} >/dev/null" for c in lookups))
    _, good = cache(served, "stats")
    since = good["since_last"]
    assert (since["hits"], since["misses"], since["hit_rate_pct"]) == (3, 1, 75.0)
    assert good["hits"] >= 3 and good["misses"] >= 1
    assert good["hit_rate_pct"] == pytest.approx(100 * good["hits"] /
                                                 (good["hits"] + good["misses"]))
    assert good["finding"]["level"] == "ok"
    lookups = ["get tpetest-a:0"] + ["get tpetest-missing"] * 3
    host.ssh(" && ".join(f"redis-cli -p {host.redis_port} {c} >/dev/null" for c in lookups))
    code, low = cache(served, "stats")
    assert low["since_last"]["hit_rate_pct"] == 25.0
    finding = low["finding"]
    assert finding["level"] == "warning" and finding["guide"] == 5  # below the runbook's 50 %
    assert code == 0  # a finding, not a failed host


def test_warm_fills_the_cache_through_the_apps_script(served, postgres_db):
    host, inventory, env = served
    redis(host, "flushdb")
    done = run_cli("cache", "warm", "-i", inventory, "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert postgres_db.password not in done.stdout + done.stderr
    result = json.loads(done.stdout)["hosts"][host.name]
    assert result["keys_before"] == 0 and result["keys_after"] > 0
    contractors = host.ssh(f"redis-cli -p {host.redis_port} --scan --pattern 'contractor:*' "
                           "| wc -l").stdout.strip()
    assert int(contractors) == result["keys_after"]
    warmed = next(s for s in result["steps"] if s["name"] == "Warm the cache")
    assert warmed["status"] == "changed" and f"warmed {contractors} keys" in warmed["output"]
