"""Facts and an operation for `cache` (runbook section 7): the keys of the app's Redis by
prefix (SCAN, never KEYS: KEYS blocks Redis for the whole walk), and FLUSHDB.

Redis INFO (memory, policy, hits, misses, evictions) is operations/health.py's RedisInfo.
Command builders and parsers are pure.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation

UNREACHABLE = "unreachable"
NO_PREFIX = ""  # the prefix of a key without ':'


def key_count_command(port: int) -> str:
    return f"redis-cli -p {int(port)} dbsize 2>/dev/null || echo {UNREACHABLE}"


def prefix_count_command(port: int) -> str:
    """Count the keys by prefix (the text before the first ':') on the host: one line per
    prefix crosses the network, not every key. `redis-cli --scan` walks the keyspace with
    SCAN; `sort -u` drops the duplicates SCAN may return while the table rehashes."""
    redis = f"redis-cli -p {int(port)}"
    return (
        f'[ "$({redis} ping 2>/dev/null)" = PONG ] || {{ echo {UNREACHABLE}; exit 0; }}; '
        f"{redis} --scan | LC_ALL=C sort -u | awk '"
        '{ i = index($0, ":"); if (i) n["p " substr($0, 1, i - 1)]++; else n["none"]++ } '
        "END { for (k in n) print n[k], k }'; echo scanned"
    )


def parse_prefix_counts(lines: list[str]) -> dict[str, Any] | None:
    """{"total": n, "prefixes": {prefix: count}} ("" for keys without ':'), most keys first;
    None when Redis did not answer or the scan did not finish."""
    markers = {line.strip() for line in lines}
    if UNREACHABLE in markers or "scanned" not in markers:
        return None
    counts: dict[str, int] = {}
    for line in lines:
        count, _, rest = line.partition(" ")
        if not count.isdigit():
            continue
        if rest == "none":
            counts[NO_PREFIX] = counts.get(NO_PREFIX, 0) + int(count)
        elif rest.startswith("p "):
            counts[rest[2:]] = counts.get(rest[2:], 0) + int(count)
    ordered = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return {"total": sum(ordered.values()), "prefixes": ordered}


class RedisKeyCount(FactBase):
    """Keys in the app's Redis database (DBSIZE), or None when Redis does not answer."""

    def command(self, port: int) -> str:
        return key_count_command(port)

    def process(self, output: list[str]) -> int | None:
        text = output[0].strip() if output else ""
        return int(text) if text.isdigit() else None


class RedisKeyPrefixes(FactBase):
    """Keys of the app's Redis by prefix: {"total", "prefixes"}, or None (no answer)."""

    def command(self, port: int) -> str:
        return prefix_count_command(port)

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parse_prefix_counts(output)


def flush_command(port: int) -> str:
    # redis-cli exits 0 on an error reply: success is its "OK"; the reply is shown either way.
    return (f"out=$(redis-cli -p {int(port)} flushdb 2>&1); echo \"$out\"; "
            '[ "$out" = OK ]')


@operation()
def flushed(port: int):
    """The app's Redis database emptied (FLUSHDB); nothing to do when it holds no key."""
    if host.get_fact(RedisKeyCount, port=port) == 0:
        host.noop("the cache holds no keys")
        return
    yield flush_command(port)
