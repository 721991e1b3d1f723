"""Scheduled maintenance on a control host: TPE Ops installed there (its code and a venv), and
one systemd timer per maintenance tier (a cron file where there is no systemd) running
`deploy.py maintain <tier>` on its cadence, as the app user, output kept.

Pure builders first (calendar expressions, unit/cron/inventory text, scripts), then facts,
operations and the two deploys (install, remove).
"""

from __future__ import annotations

import io
import json
import pprint
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import jinja2
from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, systemd

from operations.privileges import as_root, as_user, home_of
from operations.system import ServiceManager, apt_lists, service
from operations.templates import TEMPLATES
from tpe_ops.maintenance import TIERS

q = shlex.quote

UNIT_DIR = "/etc/systemd/system"
CRON_FILE = "/etc/cron.d/tpe-maintain"  # cron.d ignores names with dots
TOOL_FINGERPRINT = ".tpe-fingerprint"  # in src/: which checkout is installed
VENV_FINGERPRINT = ".tpe-requirements"  # in venv/: which requirements it was built from
RUN_MARKER = "tpe-maintain"  # cron: the line appended to a tier's log after each run


# --- where things live on the control host ------------------------------------------------

@dataclass(frozen=True)
class SchedulePaths:
    install_dir: str
    src: str  # the TPE Ops checkout
    venv: str
    inventory: str  # the inventory the scheduled runs use
    known_hosts: str  # with --target: host keys of the targets
    state_dir: str  # TPE_STATE_DIR of the runs (maintain reports, samples)
    log_dir: str  # cron: one log per tier
    secrets_file: str


def expand_home(path: str, user: str) -> str:
    """`~` is the app user's home on the control host (the runs are that user's)."""
    if path == "~" or path.startswith("~/"):
        return home_of(user) + path[1:]
    return path


def schedule_paths(data: Any) -> SchedulePaths:
    install = data.schedule_install_dir.rstrip("/") or "/"
    state = expand_home(data.schedule_state_dir, data.app_user).rstrip("/")
    return SchedulePaths(
        install_dir=install,
        src=f"{install}/src",
        venv=f"{install}/venv",
        inventory=f"{install}/maintain-inventory.py",
        known_hosts=f"{install}/known_hosts",
        state_dir=state,
        log_dir=f"{state}/schedule",
        secrets_file=expand_home(data.schedule_secrets_file, data.app_user),
    )


def unit_name(tier: str, kind: str) -> str:
    return f"tpe-maintain-{tier}.{kind}"


def unit_names() -> list[str]:
    return [unit_name(tier, kind) for tier in TIERS for kind in ("service", "timer")]


def tier_cadences(data: Any) -> dict[str, str]:
    return {tier: getattr(data, f"schedule_{tier}") for tier in TIERS}


def choose_scheduler(setting: str, manager: str) -> str:
    """systemd timers where systemd runs (unless cron is asked for), else cron."""
    if setting == "auto":
        return "systemd" if manager == "systemd" else "cron"
    return setting


# --- calendar expressions: a subset of systemd.time(7) that cron can also express ----------

WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SHORTHANDS = {
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}
CALENDAR_EXAMPLES = "'*-*-* 06:00:00', 'Mon..Fri 07:30', '*-01,07-01 05:00', 'daily'"


@dataclass(frozen=True)
class Calendar:
    """When a calendar expression fires; None means any value of that field."""

    expression: str
    weekdays: frozenset[int] | None  # Monday = 0, as datetime.weekday()
    months: frozenset[int] | None
    days: frozenset[int] | None
    hours: frozenset[int] | None
    minutes: frozenset[int] | None


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{what}: {text!r} is not a number")
    return int(text)


def _field(text: str, low: int, high: int, what: str) -> frozenset[int] | None:
    """`*`, or a comma list of N, A..B and START/STEP (systemd's syntax)."""
    if text == "*":
        return None
    values: set[int] = set()
    for item in text.split(","):
        if "/" in item:
            start, step = item.split("/", 1)
            first = low if start == "*" else _number(start, what)
            stride = _number(step, what)
            if stride == 0:
                raise ValueError(f"{what}: a step of 0")
            chosen = range(first, high + 1, stride)
        elif ".." in item:
            first_text, last_text = item.split("..", 1)
            chosen = range(_number(first_text, what), _number(last_text, what) + 1)
        else:
            chosen = range(_number(item, what), _number(item, what) + 1)
        if not chosen or chosen[0] < low or chosen[-1] > high:
            raise ValueError(f"{what}: {item!r} is outside {low}..{high}")
        values.update(chosen)
    return frozenset(values)


def _weekday(name: str) -> int:
    lowered = name.lower()
    for number, full in enumerate(WEEKDAY_NAMES):
        if lowered in (full, full[:3]):
            return number
    raise ValueError(f"weekday: {name!r} is not a day name (Mon, Tue, ... or Monday, ...)")


def _weekdays(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        if ".." in item:
            first, last = (_weekday(part) for part in item.split("..", 1))
            if first > last:
                raise ValueError(f"weekday: {item!r} runs backwards (write Mon..Fri)")
            days.update(range(first, last + 1))
        else:
            days.add(_weekday(item))
    return frozenset(days)


def _date(text: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    parts = text.split("-")
    if len(parts) == 3:
        if parts[0] != "*":
            raise ValueError("year: only '*' (every year) is supported")
        parts = parts[1:]
    if len(parts) != 2:
        raise ValueError(f"date: {text!r} is not [*-]MONTH-DAY")
    return _field(parts[0], 1, 12, "month"), _field(parts[1], 1, 31, "day")


def _time(text: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"time: {text!r} is not HOUR:MINUTE[:SECOND]")
    if len(parts) == 3 and _field(parts[2], 0, 59, "second") != frozenset({0}):
        raise ValueError("second: only 00 is supported (cron runs at whole minutes)")
    return _field(parts[0], 0, 23, "hour"), _field(parts[1], 0, 59, "minute")


def parse_calendar(expression: str) -> Calendar:
    """Parse `[WEEKDAYS] [[*-]MONTH-DAY] [HOUR:MINUTE[:00]]` or a shorthand (daily, ...).

    Raises ValueError saying what is wrong. Omitted parts mean every day / midnight, as in
    systemd, so the expression means the same on a systemd timer and in cron.
    """
    text = " ".join(expression.split())
    tokens = SHORTHANDS.get(text.lower(), text).split(" ") if text else []
    if not tokens:
        raise ValueError("empty calendar expression")
    weekdays = _weekdays(tokens.pop(0)) if tokens[0][:1].isalpha() else None
    months = days = None
    hours: frozenset[int] | None = frozenset({0})
    minutes: frozenset[int] | None = frozenset({0})
    seen: set[str] = set()
    for token in tokens:
        kind = "time" if ":" in token else "date" if "-" in token else "?"
        if kind == "?" or kind in seen:
            raise ValueError(f"{token!r} is neither a date (*-MM-DD) nor a time (HH:MM)")
        seen.add(kind)
        if kind == "date":
            months, days = _date(token)
        else:
            hours, minutes = _time(token)
    return Calendar(text, weekdays, months, days, hours, minutes)


def _cron_list(values: Iterable[int] | None) -> str:
    return "*" if values is None else ",".join(str(v) for v in sorted(values))


def cron_fields(cal: Calendar) -> str:
    """The five time fields of a crontab line (minute hour day month weekday)."""
    if cal.days is not None and cal.weekdays is not None:
        # cron fires when EITHER matches; systemd when both do: they would disagree.
        raise ValueError("cron cannot require both a weekday and a day of the month")
    weekdays = None if cal.weekdays is None else [(d + 1) % 7 for d in cal.weekdays]  # Sun=0
    return " ".join([_cron_list(cal.minutes), _cron_list(cal.hours), _cron_list(cal.days),
                     _cron_list(cal.months), _cron_list(weekdays)])


def _day_matches(cal: Calendar, day: date) -> bool:
    return ((cal.weekdays is None or day.weekday() in cal.weekdays)
            and (cal.months is None or day.month in cal.months)
            and (cal.days is None or day.day in cal.days))


def next_run(cal: Calendar, after: datetime) -> datetime | None:
    """The first time strictly after `after` the expression fires (None within 5 years:
    e.g. February 30th)."""
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.date()
    for _ in range(5 * 366):
        if _day_matches(cal, day):
            for hour in sorted(cal.hours if cal.hours is not None else range(24)):
                for minute in sorted(cal.minutes if cal.minutes is not None else range(60)):
                    candidate = datetime.combine(day, time(hour, minute))
                    if candidate >= start:
                        return candidate
        day += timedelta(days=1)
    return None


# --- what the control host runs ------------------------------------------------------------

def maintain_argv(paths: SchedulePaths, tier: str) -> list[str]:
    """The scheduled command: unattended, so `--yes` (installing the schedule was the
    confirmation); secrets come from the inventory's secrets_file, never the command line."""
    return [f"{paths.venv}/bin/python", f"{paths.src}/deploy.py", "maintain", tier,
            "-i", paths.inventory, "--yes"]


def render(name: str, **values: Any) -> str:
    """A template of templates/ (the same rendering for the host and for the tests)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False,
    )
    return env.get_template(name).render(**values)


def service_unit(data: Any, paths: SchedulePaths, tier: str) -> str:
    return render("tpe-maintain.service.j2", tier=tier, user=data.app_user, paths=paths,
                  command=" ".join(maintain_argv(paths, tier)),
                  timeout_minutes=data.schedule_timeout_minutes)


def timer_unit(data: Any, tier: str) -> str:
    return render("tpe-maintain.timer.j2", tier=tier, calendar=getattr(data, f"schedule_{tier}"),
                  delay=data.schedule_randomized_delay_seconds)


def cron_command(data: Any, paths: SchedulePaths, tier: str) -> str:
    """One tier's cron command: random delay, one run at a time (flock), a time limit, output
    appended to the tier's log, then a marker line with the exit code for `schedule show`."""
    log = q(f"{paths.log_dir}/maintain-{tier}.log")
    delay = data.schedule_randomized_delay_seconds
    sleep = f"sleep $(shuf -i 0-{delay} -n 1); " if delay > 0 else ""
    run = " ".join(q(arg) for arg in maintain_argv(paths, tier))
    lock = q(f"{paths.log_dir}/.maintain-{tier}.lock")
    # `%` ends a cron command (the rest is stdin) unless escaped.
    return (f"{sleep}cd {q(paths.src)} && flock -n {lock} "
            f"timeout {data.schedule_timeout_minutes * 60} {run} >> {log} 2>&1; "
            f"echo \"{RUN_MARKER} {tier} exit=$? end=$(date +\\%s)\" >> {log}")


def cron_file(data: Any, paths: SchedulePaths) -> str:
    lines = [(tier, cron_fields(parse_calendar(cadence)), cron_command(data, paths, tier))
             for tier, cadence in tier_cadences(data).items()]
    return render("tpe-maintain.cron.j2", user=data.app_user, paths=paths, lines=lines)


def inventory_text(hosts: Sequence[tuple[str, dict[str, Any]]], origin: str) -> str:
    """A pyinfra inventory (Python) holding each host's complete settings, so the control host
    needs neither the controller's group data overrides nor its inventory files."""
    lines = ["# Generated by `deploy.py schedule install`: the hosts the scheduled maintenance",
             f"# runs on, from {origin}.",
             "# Do not edit: the next install rewrites it.",
             "app_servers = ["]
    for name, data in hosts:
        body = pprint.pformat(data, sort_dicts=True, width=96).replace("\n", "\n     ")
        lines.append(f"    ({name!r},\n     {body}),")
    lines.append("]")
    return "\n".join(lines) + "\n"


def secrets_text(secrets: dict[str, str]) -> str:
    header = "# TPE Ops scheduled maintenance: secrets (written by `schedule install`).\n"
    return header + "".join(f"{name}={secrets[name]}\n" for name in sorted(secrets))


def unpack_script(archive: str, install_dir: str, fingerprint: str) -> str:
    """Replace src/ by the uploaded checkout (a fresh directory, so deleted files go too)."""
    d = q(install_dir)
    return (
        f"set -e; cd {d}; rm -rf src.new src.old; mkdir src.new; "
        f"tar -xzf {q(archive)} -C src.new --no-same-owner; rm -f {q(archive)}; "
        f"chmod -R a+rX src.new; echo {q(fingerprint)} > src.new/{TOOL_FINGERPRINT}; "
        "if [ -d src ]; then mv src src.old; fi; mv src.new src; rm -rf src.old"
    )


def venv_script(venv: str, src: str, fingerprint: str) -> str:
    """A fresh venv with the pinned dependencies of the checkout (pyinfra, fabric, ...)."""
    v = q(venv)
    return (
        f"set -e; python3 -m venv --clear {v}; "
        f"{v}/bin/pip install --quiet --no-input --disable-pip-version-check "
        f"-r {q(src + '/requirements.txt')} -c {q(src + '/constraints.txt')}; "
        f"echo {q(fingerprint)} > {v}/{VENV_FINGERPRINT}"
    )


# --- facts ---------------------------------------------------------------------------------

class Fingerprint(FactBase):
    """The fingerprint TPE Ops left in a file, or None."""

    def command(self, path: str) -> str:
        return f"cat {q(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class VenvFingerprint(FactBase):
    """The requirements fingerprint of a venv whose Python still works (an OS upgrade can
    break it: then None, and it is rebuilt)."""

    def command(self, venv: str) -> str:
        v = q(venv)
        return (f"{v}/bin/python -c 'import pyinfra' 2>/dev/null && "
                f"cat {v}/{VENV_FINGERPRINT} 2>/dev/null || true")

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


def _systemctl_show(unit: str, prefix: str, properties: Sequence[str]) -> str:
    props = " ".join(f"-p {p}" for p in properties)
    return (f"systemctl show --timestamp=unix {props} {q(unit)} 2>/dev/null "
            f"| sed 's|^|{prefix} |'")


class UnitsNeedingReload(FactBase):
    """Units whose file systemd has not loaded yet, or changed or removed since it did."""

    def command(self, units: Sequence[str]) -> str:
        parts = []
        for unit in units:
            path = q(f"{UNIT_DIR}/{unit}")
            parts.append(f"{{ [ -f {path} ] && echo '{unit} File=yes' || echo '{unit} File=no'; "
                         f"{_systemctl_show(unit, unit, ['LoadState', 'NeedDaemonReload'])}; }}")
        return "; ".join(parts) + "; true"

    def process(self, output: list[str]) -> list[str]:
        units: dict[str, dict[str, str]] = {}
        for line in output:
            unit, _, pair = line.partition(" ")
            key, _, value = pair.partition("=")
            units.setdefault(unit, {})[key] = value.strip()
        return sorted(
            unit for unit, p in units.items()
            if p.get("NeedDaemonReload") == "yes"
            or (p.get("File") == "yes" and p.get("LoadState") != "loaded")
        )


class TimerStates(FactBase):
    """Per tier: unit files present, timer state, next/last trigger, last run of the
    service (result, exit status, times in epoch seconds)."""

    def command(self, tiers: Sequence[str]) -> str:
        parts = []
        for tier in tiers:
            timer, unit = unit_name(tier, "timer"), unit_name(tier, "service")
            parts += [
                f"[ -f {UNIT_DIR}/{timer} ] && echo '{tier} timer File=yes'",
                f"[ -f {UNIT_DIR}/{unit} ] && echo '{tier} service File=yes'",
                _systemctl_show(timer, f"{tier} timer", ["ActiveState", "UnitFileState"]),
                _systemctl_show(unit, f"{tier} service",
                                ["ActiveState", "Result", "ExecMainStatus",
                                 "ExecMainStartTimestamp", "ExecMainExitTimestamp"]),
            ]
        return ("; ".join(parts) + "; echo \"json $(systemctl list-timers --all --output=json "
                "'tpe-maintain-*' 2>/dev/null | tr -d '\\n')\"; true")

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        timers: list[dict[str, Any]] = []
        for line in output:
            if line.startswith("json "):
                timers = _json_list(line[5:])
                continue
            tier, kind, pair = (line.split(" ", 2) + ["", ""])[:3]
            key, _, value = pair.partition("=")
            states.setdefault(tier, {}).setdefault(kind, {})[key] = value.strip()
        for timer in timers:
            tier = str(timer.get("unit", "")).removeprefix("tpe-maintain-").removesuffix(".timer")
            if tier in states:
                states[tier]["next"] = _usec(timer.get("next"))
                states[tier]["last"] = _usec(timer.get("last"))
        return states


def _json_list(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def _usec(value: Any) -> float | None:
    """systemd's microseconds since the epoch (0 = never) as seconds."""
    return value / 1e6 if isinstance(value, int | float) and value > 0 else None


class CronState(FactBase):
    """The cron file's tiers, whether a cron daemon runs, the host's local time, and each
    tier's last run (the marker line of its log: exit code, end time)."""

    def command(self, log_dir: str, tiers: Sequence[str]) -> str:
        logs = " ".join(q(f"{log_dir}/maintain-{tier}.log") for tier in tiers)
        return (
            f"grep -o 'deploy.py maintain [a-z]*' {CRON_FILE} 2>/dev/null "
            "| sed 's/^deploy.py maintain /tier /'; "
            "(pgrep -x cron || pgrep -x crond) >/dev/null && echo daemon running; "
            "echo \"now $(date '+%Y-%m-%dT%H:%M:%S')\"; "
            f"for f in {logs}; do grep -h '^{RUN_MARKER} ' \"$f\" 2>/dev/null | tail -n 1; done; "
            "true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        state: dict[str, Any] = {"tiers": [], "daemon": False, "now": None, "last": {}}
        for line in output:
            kind, _, value = line.strip().partition(" ")
            if kind == "tier":
                state["tiers"].append(value)
            elif kind == "daemon":
                state["daemon"] = True
            elif kind == "now":
                state["now"] = value
            elif kind == RUN_MARKER:
                tier, *pairs = value.split()
                fields = dict(p.partition("=")[::2] for p in pairs)
                state["last"][tier] = {"exit": int(fields.get("exit", "-1")),
                                       "end": float(fields.get("end", "0") or 0)}
        return state


# --- operations --------------------------------------------------------------------------

@operation()
def tool_installed(archive: str, fingerprint: str, install_dir: str):
    """Upload this checkout of TPE Ops unless the same one is installed."""
    if host.get_fact(Fingerprint, path=f"{install_dir}/src/{TOOL_FINGERPRINT}") == fingerprint:
        host.noop("this checkout of TPE Ops is installed")
        return
    remote = f"{install_dir}/.upload-{fingerprint[:16]}.tar.gz"
    yield FileUploadCommand(archive, remote, remote_temp_filename=host.get_temp_filename(remote))
    yield unpack_script(remote, install_dir, fingerprint)


@operation()
def venv_installed(venv: str, src: str, fingerprint: str):
    """Build the venv only when the requirements (or the host's Python) changed."""
    if host.get_fact(VenvFingerprint, venv=venv) == fingerprint:
        host.noop("the venv has these requirements")
        return
    yield venv_script(venv, src, fingerprint)


def _changed(ops: Sequence[OperationMeta]) -> bool:
    """Whether any of these earlier operations changed something (dry run: would)."""
    return any(op.did_change() if op.is_complete() else op.will_change for op in ops)


@operation()
def daemon_reloaded(units: list[str], after: Sequence[OperationMeta] = ()):
    """`systemctl daemon-reload` when unit files were written or removed by `after`, or when
    systemd says a unit's file differs from what it loaded (a run interrupted before the
    reload leaves that state: the next run catches up)."""
    if not _changed(after) and not host.get_fact(UnitsNeedingReload, units=units):
        host.noop("systemd has loaded the current unit files")
        return
    yield "systemctl daemon-reload"


@operation()
def refused(message: str):
    """Fail this host with a message (a setting it cannot honour)."""
    yield f"echo {q(message)} >&2; exit 1"


def _put(text: str, dest: str, mode: str, name: str, **kwargs: Any) -> OperationMeta:
    return files.put(name=name, src=io.StringIO(text), dest=dest, mode=mode, **kwargs)


# --- the deploys -------------------------------------------------------------------------

@dataclass
class InstallPlan:
    """What the controller prepared for one control host."""

    archive: str  # a tar.gz of this checkout on the controller
    tool_fingerprint: str
    venv_fingerprint: str
    inventory: str  # text of the maintenance inventory
    secrets: str  # text of the secrets file (never printed)
    known_hosts: str | None  # --target: the targets' host keys


def _tool(plan: InstallPlan, paths: SchedulePaths, data: Any) -> None:
    root, app = as_root(host), as_user(host, data.app_user)
    owner = {"user": data.app_user, "group": data.app_user}
    apt_lists(name="apt package lists", **root)
    apt.packages(name="Python 3 with venv (python3-venv)", packages=["python3-venv"],
                 no_recommends=True, **root)
    files.directory(name=f"Directory {paths.install_dir}", path=paths.install_dir, mode="755",
                    **owner, **root)
    tool_installed(name=f"TPE Ops in {paths.src}", archive=plan.archive,
                   fingerprint=plan.tool_fingerprint, install_dir=paths.install_dir, **app)
    venv_installed(name=f"Python venv {paths.venv} (requirements.txt)", venv=paths.venv,
                   src=paths.src, fingerprint=plan.venv_fingerprint, **app)
    for path, mode in ((paths.state_dir, "750"), (paths.log_dir, "750"),
                       (paths.secrets_file.rsplit("/", 1)[0], "700")):
        files.directory(name=f"Directory {path}", path=path, mode=mode, **owner, **app)
    # The directory is 0700: the file is never readable by others, even while uploading.
    _put(plan.secrets, paths.secrets_file, "600", f"Secrets file {paths.secrets_file} (0600)",
         **owner, **app)
    _put(plan.inventory, paths.inventory, "644", f"Maintenance inventory {paths.inventory}",
         **owner, **app)
    if plan.known_hosts is not None:
        _put(plan.known_hosts, paths.known_hosts, "644", f"Target host keys {paths.known_hosts}",
             **owner, **app)


def _timers(data: Any, paths: SchedulePaths) -> None:
    root = as_root(host)
    written = []
    for tier in TIERS:
        for kind, text in (("service", service_unit(data, paths, tier)),
                           ("timer", timer_unit(data, tier))):
            written.append(_put(text, f"{UNIT_DIR}/{unit_name(tier, kind)}", "644",
                                f"Unit {unit_name(tier, kind)}", user="root", group="root",
                                **root))
    daemon_reloaded(name="systemd daemon-reload (unit files changed)", units=unit_names(),
                    after=written, **root)
    for tier in TIERS:
        systemd.service(name=f"Timer {unit_name(tier, 'timer')} enabled and active",
                        service=unit_name(tier, "timer"), running=True, enabled=True, **root)


def _timers_removed() -> None:
    root = as_root(host)
    for tier in TIERS:  # disable first: it removes the timers.target.wants link
        systemd.service(name=f"Timer {unit_name(tier, 'timer')} stopped and disabled",
                        service=unit_name(tier, "timer"), running=False, enabled=False, **root)
    removed = [files.file(name=f"Unit {unit} removed", path=f"{UNIT_DIR}/{unit}",
                          present=False, **root) for unit in unit_names()]
    daemon_reloaded(name="systemd daemon-reload (unit files removed)", units=unit_names(),
                    after=removed, **root)


def _cron(data: Any, paths: SchedulePaths) -> None:
    root = as_root(host)
    apt.packages(name="Package cron", packages=["cron"], no_recommends=True, **root)
    service(name="cron running", unit="cron", running=True, enabled=True, **root)
    _put(cron_file(data, paths), CRON_FILE, "644", f"Cron file {CRON_FILE}", user="root",
         group="root", **root)


@deploy("Schedule maintenance")
def schedule_installed(plans: dict[str, InstallPlan]) -> None:
    data = host.data
    paths = schedule_paths(data)
    manager = host.get_fact(ServiceManager)
    scheduler = choose_scheduler(data.schedule_scheduler, manager)
    if scheduler == "systemd" and manager != "systemd":
        refused(name="Scheduler", message="schedule_scheduler is systemd but systemd is not "
                "running on this host: set schedule_scheduler = \"cron\" (or \"auto\")")
        return
    _tool(plans[host.name], paths, data)
    if scheduler == "systemd":
        _timers(data, paths)
        files.file(name=f"No cron file {CRON_FILE}", path=CRON_FILE, present=False,
                   **as_root(host))
    else:
        if manager == "systemd":  # switched from timers to cron: no double runs
            _timers_removed()
        _cron(data, paths)


@deploy("Remove scheduled maintenance")
def schedule_removed(purge: bool) -> None:
    data = host.data
    paths = schedule_paths(data)
    root, app = as_root(host), as_user(host, data.app_user)
    if host.get_fact(ServiceManager) == "systemd":
        _timers_removed()
    files.file(name=f"Cron file {CRON_FILE} removed", path=CRON_FILE, present=False, **root)
    for label, path in (("Secrets file", paths.secrets_file),
                        ("Maintenance inventory", paths.inventory),
                        ("Target host keys", paths.known_hosts)):
        files.file(name=f"{label} {path} removed", path=path, present=False, **app)
    if purge:
        files.directory(name=f"TPE Ops {paths.install_dir} removed (code and venv)",
                        path=paths.install_dir, present=False, **root)
