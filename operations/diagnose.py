"""Facts and an operation for `diagnose` (runbook section 4) that no other area owns: Redis
ping and service state, connections by state, and a PM2 app brought back online.

The rest of the evidence comes from health's facts (operations/health.py), the error-log tails
of operations/logs.py and the key count of operations/cache.py; the other fixes are
cache.flushed, release_flow.warm_cache and system.service.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation

from operations.pm2 import Pm2Processes
from operations.release import with_app_env

q = shlex.quote
# redis-cli has no timeout of its own: a Redis that accepts but never answers must not hang us.
REDIS_CLI_TIMEOUT = 5


def redis_cli(port: int, *args: str) -> str:
    return f"timeout {REDIS_CLI_TIMEOUT} redis-cli -p {int(port)} {' '.join(args)}"


class RedisState(FactBase):
    """The runbook's first Redis check, `redis-cli ping`, and whether its service runs
    (systemd, or the SysV script where there is no systemd): {"ping", "service"}."""

    def command(self, port: int, unit: str) -> str:
        u = q(unit)
        return (
            f'echo "ping $({redis_cli(port, "ping")} 2>&1 | head -1)"; '
            "if [ -d /run/systemd/system ]; then "
            f'echo "service $(systemctl is-active {u} 2>/dev/null)"; '
            f"elif service {u} status >/dev/null 2>&1; then echo 'service active'; "
            "else echo 'service inactive'; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        state: dict[str, Any] = {"ping": None, "service": None}
        for line in output:
            kind, _, value = line.partition(" ")
            value = value.strip()
            if kind == "ping":
                state["ping"] = value or None
            elif kind == "service":
                state["service"] = value or "unknown"
        return state


DB_ACTIVITY_JS = (
    "const {Client}=require('pg');const c=new Client({host:process.env.DB_HOST,"
    "port:+process.env.DB_PORT,database:process.env.DB_NAME,user:process.env.DB_USER,"
    "password:process.env.DB_PASSWORD,connectionTimeoutMillis:3000});"
    "c.connect().then(()=>c.query(\"SELECT coalesce(state,'unknown') AS s,count(*)::int AS n "
    "FROM pg_stat_activity WHERE backend_type='client backend' AND datname=current_database() "
    "AND pid<>pg_backend_pid() GROUP BY 1\")).then(r=>{for(const x of r.rows)"
    "console.log('state '+x.s.replace(/ /g,'_')+' '+x.n);return c.query('SHOW max_connections')})"
    ".then(r=>{console.log('max_connections '+r.rows[0].max_connections);return c.end()})"
    ".catch(e=>{console.log('error '+(e.code||'')+' '+e.message.split('\\n')[0]);"
    "process.exit(0)})"
)


class DbActivity(FactBase):
    """The runbook's connection investigation (connections by state, max_connections), run
    through the app host with the app's driver and env file (the password stays in that one
    process's environment): {"states": {state: n}, "max_connections": n} or {"error": text}."""

    def command(self, shared: str, backend: str) -> str:
        return with_app_env(shared, backend, f"node -e {q(DB_ACTIVITY_JS)}") + " || true"

    def process(self, output: list[str]) -> dict[str, Any]:
        activity: dict[str, Any] = {"states": {}, "max_connections": None, "error": None}
        for line in output:
            kind, _, value = line.partition(" ")
            if kind == "state" and len(value.split()) == 2:
                state, count = value.split()
                activity["states"][state.replace("_", " ")] = int(count)
            elif kind == "max_connections" and value.strip().isdigit():
                activity["max_connections"] = int(value)
            elif kind == "error":
                activity["error"] = value.strip()[:200]
        return activity


class Pm2AppEvents(FactBase):
    """The PM2 daemon's last log lines about an app (started, online, exited with code N):
    in cluster mode an exception at boot reaches neither the app's error log nor `pm2 logs`,
    so these are the only trace of a crash loop. Run as the app user (its PM2 home)."""

    def command(self, app: str, lines: int) -> str:
        return (f'grep -F {q("[" + app + ":")} "$HOME/.pm2/pm2.log" 2>/dev/null '
                f"| tail -n {int(lines)} || true")

    @staticmethod
    def default() -> list:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.rstrip() for line in output if line.strip()]


# PM2 statuses in which the app stays down until someone starts it. Others (launching, waiting
# restart, stopping) are PM2's own restart cycle: a restart on top of it is refused.
DOWN_STATUSES = ("stopped", "errored")


@operation()
def pm2_app_online(app: str, ecosystem: str):
    """PM2 app `app` started again when it is down: `pm2 restart` when an instance is stopped or
    errored, `pm2 start` from the ecosystem file when PM2 does not know it; then the process
    list saved (what `pm2 resurrect` starts at boot). Run as the app user."""
    procs = [p for p in host.get_fact(Pm2Processes) if p.get("name") == app]
    statuses = sorted({p.get("status") or "?" for p in procs})
    if procs and not set(statuses) & set(DOWN_STATUSES):
        host.noop(f"{app} is {', '.join(statuses)}: nothing to start")
        return
    if procs:
        yield f"pm2 restart {q(app)}"
    else:
        yield f"pm2 start {q(ecosystem)} --only {q(app)}"
    yield "pm2 save --force"
