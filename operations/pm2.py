"""PM2: facts from `pm2 jlist` and the PM2 home, operations for the pinned install,
the boot-time systemd unit and log rotation."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation

# Fields of `pm2 jlist` that are safe to keep: pm2_env also carries the process
# environment, secrets included, so nothing else is ever read.
SAFE_ENV_FIELDS = (
    "status", "exec_mode", "restart_time", "unstable_restarts", "pm_uptime", "pm_cwd",
    "instances", "version", "node_version", "pm_out_log_path", "pm_err_log_path",
)
LOGROTATE = "pm2-logrotate"


def parse_jlist(text: str) -> list[dict[str, Any]]:
    """Parse `pm2 jlist` (a banner may precede the JSON) into secret-free process records."""
    start = text.find("[")
    if start < 0:
        return []
    try:
        raw = json.loads(text[start:])
    except json.JSONDecodeError:
        return []
    processes = []
    for proc in raw:
        env = proc.get("pm2_env") or {}
        monit = proc.get("monit") or {}
        processes.append(
            {
                "name": proc.get("name"),
                "pm_id": proc.get("pm_id"),
                "pid": proc.get("pid"),
                "memory": monit.get("memory"),
                "cpu": monit.get("cpu"),
                **{field: env.get(field) for field in SAFE_ENV_FIELDS},
            }
        )
    return processes


# `pm2 jlist` in a few lines of Node: the same call to the daemon's RPC socket, through the
# client modules the pm2 package vendors in its `modules/`, without loading the pm2 CLI (0.1 s
# of CPU instead of 0.26 s on the test hosts; health checks and verification ask every host,
# often). Only the safe fields leave the host. argv[1]: the pm2 package's folder.
JLIST_JS = """
const path = require("path");
const need = (m) => require(path.join(process.argv[1], "modules", m));
const axon = need("pm2-axon"), rpc = need("pm2-axon-rpc");
const sock = axon.socket("req"), client = new rpc.Client(sock);
setTimeout(() => process.exit(3), 5000).unref();
sock.connect(path.join(process.env.PM2_HOME || path.join(process.env.HOME, ".pm2"), "rpc.sock"));
client.call("getMonitorData", {}, (err, list) => {
  if (err) process.exit(2);
  const keep = (env) => Object.fromEntries(FIELDS.map((k) => [k, (env || {})[k]]));
  process.stdout.write(JSON.stringify(list.map((p) => ({
    name: p.name, pm_id: p.pm_id, pid: p.pid, monit: p.monit, pm2_env: keep(p.pm2_env) }))));
  sock.close();
});
""".replace("FIELDS", json.dumps(list(SAFE_ENV_FIELDS)))


def jlist_reader() -> str:
    """The shell command running JLIST_JS with the installed pm2 package's folder."""
    package = '"$(dirname "$(readlink -f "$(command -v pm2)")")/.."'
    return f"node -e {shlex.quote(JLIST_JS)} {package}"


class Pm2Processes(FactBase):
    """The PM2 processes of the connected user, without their environment."""

    def command(self) -> str:
        # Only ask a running daemon (`pm2 jlist` would start one); `pm2 jlist` itself when
        # the short reader cannot (another PM2 layout).
        return ('[ -S "$HOME/.pm2/rpc.sock" ] && command -v pm2 >/dev/null && '
                f'{{ {jlist_reader()} 2>/dev/null || pm2 jlist; }} || echo "[]"')

    @staticmethod
    def default() -> list:
        return []

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        return parse_jlist("\n".join(output))


class Pm2Version(FactBase):
    """Version of the globally installed pm2 package, or None."""

    def command(self) -> str:
        return (
            'p=$(command -v pm2) && '
            'cat "$(dirname "$(readlink -f "$p")")/../package.json" 2>/dev/null || true'
        )

    def process(self, output: list[str]) -> str | None:
        try:
            return json.loads("\n".join(output)).get("version")
        except (json.JSONDecodeError, AttributeError):
            return None


class Pm2StartupUnit(FactBase):
    """Whether `pm2-<user>.service` is enabled at boot."""

    def command(self, user: str) -> str:
        return f"systemctl is-enabled pm2-{user}.service 2>/dev/null || true"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "enabled"


class Pm2Modules(FactBase):
    """Installed PM2 modules (name -> version) and their settings (module_conf.json)."""

    def command(self) -> str:
        return (
            'cd "$HOME/.pm2" 2>/dev/null && { '
            'for m in modules/*/node_modules/*/package.json; do [ -f "$m" ] && '
            'printf "module %s\\n" "$(tr -d "\\n" < "$m")"; done; '
            'printf "conf %s\\n" "$(tr -d "\\n" < module_conf.json 2>/dev/null)"; } || true'
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {"modules": {}, "conf": {}}

    def process(self, output: list[str]) -> dict[str, Any]:
        modules: dict[str, str] = {}
        conf: dict[str, Any] = {}
        for line in output:
            kind, _, payload = line.partition(" ")
            try:
                data = json.loads(payload) if payload.strip() else {}
            except json.JSONDecodeError:
                continue
            if kind == "module" and "name" in data:
                modules[data["name"]] = data.get("version")
            elif kind == "conf":
                conf = data
        return {"modules": modules, "conf": conf}


@operation()
def installed(version: str):
    """Install pm2 `version` globally (npm), unless that exact version is there."""
    present = host.get_fact(Pm2Version)
    if present == version:
        host.noop(f"pm2 {version} is installed")
        return
    yield f"npm install -g --no-fund --no-audit --loglevel=error pm2@{version}"


@operation()
def startup(user: str, home: str):
    """Enable the `pm2-<user>` systemd unit that resurrects the saved process list at boot."""
    if host.get_fact(Pm2StartupUnit, user=user):
        host.noop(f"pm2-{user}.service is enabled")
        return
    yield f'env PATH="$PATH:/usr/bin:/usr/local/bin" pm2 startup systemd -u {user} --hp {home}'


def _setting(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@operation()
def logrotate(version: str, settings: dict[str, Any]):
    """Install pm2-logrotate `version` and apply its settings (run as the app user)."""
    state = host.get_fact(Pm2Modules)
    commands = []
    if state["modules"].get(LOGROTATE) != version:
        commands.append(f"pm2 install {LOGROTATE}@{version}")
    current = state["conf"].get(LOGROTATE, {})
    for key, value in settings.items():
        if _setting(current.get(key)) != _setting(value):
            commands.append(f"pm2 set {LOGROTATE}:{key} {_setting(value)}")
    if not commands:
        host.noop(f"{LOGROTATE} {version} is installed and configured")
    yield from commands
