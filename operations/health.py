"""Facts for `health` (runbook section 2): HTTP samples, Redis INFO, database connections
through the app host, disk/memory/CPU. Read-only; parsing is pure."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from operations.release import with_app_env

q = shlex.quote


class HttpSample(FactBase):
    """`count` GETs of a URL from the host itself: [(status, milliseconds)], status 0 for no
    answer. Sequential on purpose: a health check must not load the app."""

    def command(self, url: str, count: int, timeout: float) -> str:
        return (
            f"for i in $(seq {int(count)}); do curl -s -o /dev/null -m {timeout} "
            f"-w '%{{http_code}} %{{time_total}}\\n' {q(url)} || echo '000 0'; done"
        )

    @staticmethod
    def default() -> list:
        return []

    def process(self, output: list[str]) -> list[tuple[int, float]]:
        sample = []
        for line in output:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                sample.append((int(parts[0]), float(parts[1]) * 1000))
        return sample


def parse_info(lines: list[str]) -> dict[str, str]:
    info = {}
    for line in lines:
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key] = value
    return info


class RedisInfo(FactBase):
    """`INFO stats` + `INFO memory` of the Redis on `port`, or None when it does not answer."""

    def command(self, port: int) -> str:
        return (f"redis-cli -p {int(port)} info stats 2>/dev/null && "
                f"redis-cli -p {int(port)} info memory 2>/dev/null || echo unreachable")

    def process(self, output: list[str]) -> dict[str, str] | None:
        info = parse_info(output)
        return info if "keyspace_hits" in info else None


DB_CONNECTIONS_JS = (
    "const {Client}=require('pg');const c=new Client({host:process.env.DB_HOST,"
    "port:+process.env.DB_PORT,database:process.env.DB_NAME,user:process.env.DB_USER,"
    "password:process.env.DB_PASSWORD,connectionTimeoutMillis:3000});"
    "c.connect().then(()=>c.query(\"SELECT count(*)::int AS n FROM pg_stat_activity WHERE "
    "backend_type='client backend' AND datname=current_database()\")).then(r=>{"
    "console.log('connections '+(r.rows[0].n-1));return c.end()})"
    ".catch(e=>{console.log('error '+(e.code||'')+' '+e.message.split('\\n')[0]);"
    "process.exit(0)})"
)


class DbConnections(FactBase):
    """Client connections to the app's database (ours excluded), through the app host with the
    app's own driver and env file; {"connections": n} or {"error": text}."""

    def command(self, shared: str, backend: str) -> str:
        return with_app_env(shared, backend, f"node -e {q(DB_CONNECTIONS_JS)}") + " || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        for line in output:
            if line.startswith("connections "):
                return {"connections": int(line.split()[1]), "error": None}
            if line.startswith("error "):
                return {"connections": None, "error": line[6:].strip()[:200]}
        return {"connections": None, "error": "no answer from the database check"}


def _cpu_ticks(line: str) -> tuple[int, int]:
    values = [int(v) for v in line.split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values), idle


class HostResources(FactBase):
    """Disk use of /, memory use ((total - available) / total), and the CPU counters."""

    def command(self) -> str:
        return ("df -P / | tail -1; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; "
                "head -1 /proc/stat")

    def process(self, output: list[str]) -> dict[str, Any]:
        figures: dict[str, Any] = {"disk_pct": None, "mem_pct": None, "cpu": None}
        mem: dict[str, int] = {}
        for line in output:
            parts = line.split()
            if line.startswith("cpu "):
                figures["cpu"] = _cpu_ticks(line)
            elif parts and parts[0] in ("MemTotal:", "MemAvailable:"):
                mem[parts[0]] = int(parts[1])
            elif len(parts) >= 5 and parts[4].endswith("%"):
                figures["disk_pct"] = float(parts[4].rstrip("%"))
        if mem.get("MemTotal:"):
            total = mem["MemTotal:"]
            figures["mem_pct"] = (total - mem.get("MemAvailable:", total)) / total * 100
        return figures


def cpu_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """CPU use between two /proc/stat readings."""
    if not before or not after or after[0] <= before[0]:
        return None
    total, idle = after[0] - before[0], after[1] - before[1]
    return (total - idle) / total * 100
