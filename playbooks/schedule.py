"""`schedule install|remove|show`: the maintenance tiers (runbook section 7) run unattended on
their cadence from a control host, with their output kept.

The control host is each host of the inventory (often an app host). `install` puts TPE Ops
there (this checkout and a venv), an inventory for the runs (by default the host maintains
itself through pyinfra's @local with its own settings; `--target INVENTORY` maintains other
hosts over SSH), the secrets those runs need (a 0600 file), and a systemd timer per tier (a
cron file where there is no systemd). Everything is converged: a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operations.privileges import as_user
from operations.schedule import (
    CALENDAR_EXAMPLES,
    TOOL_FINGERPRINT,
    CronState,
    Fingerprint,
    InstallPlan,
    SchedulePaths,
    TimerStates,
    VenvFingerprint,
    choose_scheduler,
    cron_fields,
    expand_home,
    inventory_text,
    next_run,
    parse_calendar,
    schedule_installed,
    schedule_paths,
    schedule_removed,
    secrets_text,
    tier_cadences,
)
from operations.system import ServiceManager
from playbooks.common import Options, confirm_production, secrets_for_hosts
from tpe_ops import judgement as j
from tpe_ops.errors import ConfigError
from tpe_ops.inventory import PROJECT_ROOT, LoadedInventory, load_inventory
from tpe_ops.maintenance import TIERS, WORDS
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather, run_deploy
from tpe_ops.settings import SCHEMA

# Unit files and cron lines do not quote paths: keep them to plain characters.
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._@+/-]*$")
# Connection settings a target keeps on the control host (keys and files are the controller's).
TARGET_SSH_KEYS = ("ssh_hostname", "ssh_port", "ssh_user", "ssh_connect_retries",
                   "ssh_connect_retry_min_delay", "ssh_connect_retry_max_delay")


# --- this checkout, as it goes to the control host ------------------------------------------

def checkout_files(root: Path = PROJECT_ROOT) -> list[str]:
    """The files of this checkout: tracked, plus new ones git does not ignore."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as error:
        raise ConfigError(f"cannot list the files of {root} ({error})",
                          "run deploy.py from a git checkout of TPE Ops") from None
    names = sorted({name for name in listed.split("\0") if name})
    return [n for n in names if (root / n).is_symlink() or (root / n).is_file()]


def tree_fingerprint(names: list[str], root: Path = PROJECT_ROOT) -> str:
    """Content, names and executable bits of the files: what the control host must match."""
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        link = path.is_symlink()
        content = os.readlink(path).encode() if link else path.read_bytes()
        executable = not link and os.access(path, os.X_OK)
        digest.update(f"{name}\0{int(executable)}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def requirements_fingerprint(root: Path = PROJECT_ROOT) -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "constraints.txt"):
        digest.update((root / name).read_bytes() + b"\0")
    return digest.hexdigest()


def write_archive(names: list[str], dest: Path, root: Path = PROJECT_ROOT) -> None:
    with tarfile.open(dest, "w:gz") as archive:
        for name in names:
            archive.add(root / name, arcname=name, recursive=False)


# --- settings ----------------------------------------------------------------------------

def validate(host) -> None:
    """Refuse, before any change, what the units or cron could not run."""
    data = host.data
    paths = schedule_paths(data)
    for key, value in (("schedule_install_dir", paths.install_dir),
                       ("schedule_state_dir", paths.state_dir),
                       ("schedule_secrets_file", paths.secrets_file)):
        if not PLAIN_PATH.match(value) or value == "/":
            raise ConfigError(f"host {host.name}: {key} {value!r} must be an absolute path of "
                              "letters, digits and ._@+-/ (no spaces or quotes)",
                              f"fix {key} in the inventory or group data")
    if paths.secrets_file.startswith(paths.install_dir + "/"):
        raise ConfigError(f"host {host.name}: schedule_secrets_file is inside "
                          "schedule_install_dir", "keep secrets outside the installed tool")
    for key in ("schedule_randomized_delay_seconds", "schedule_timeout_minutes"):
        if getattr(data, key) < (0 if key.endswith("seconds") else 1):
            raise ConfigError(f"host {host.name}: {key} is {getattr(data, key)}",
                              f"set {key} to a positive number")
    for tier, cadence in tier_cadences(data).items():
        try:
            calendar = parse_calendar(cadence)
            if data.schedule_scheduler != "systemd":  # auto may pick cron
                cron_fields(calendar)
        except ValueError as error:
            raise ConfigError(f"host {host.name}: schedule_{tier} {cadence!r}: {error}",
                              f"use a calendar expression such as {CALENDAR_EXAMPLES}"
                              ) from None


def own_data(data: dict[str, Any], paths: SchedulePaths) -> dict[str, Any]:
    """The control host's settings for its own maintenance through @local."""
    return {**{k: v for k, v in data.items() if k in SCHEMA},
            "secrets_file": paths.secrets_file, "secrets_generate_missing": False}


def target_data(data: dict[str, Any], paths: SchedulePaths, ssh_key: str,
                known_hosts: bool) -> dict[str, Any]:
    """A target's settings as the control host uses them: its own SSH key (if set) and the
    targets' host keys copied from the controller (strict checking)."""
    result = {**own_data(data, paths), **{k: data[k] for k in TARGET_SSH_KEYS if k in data}}
    if known_hosts:
        result.update(ssh_known_hosts_file=paths.known_hosts,
                      ssh_strict_host_key_checking="yes")
    if ssh_key:
        result["ssh_key"] = ssh_key
    return result


def known_hosts_text(target: LoadedInventory) -> str | None:
    """The lines of the known-hosts files the target hosts use on the controller."""
    lines: list[str] = []
    for host in target.hosts:
        name = host.data.get("ssh_known_hosts_file")
        path = Path(name).expanduser() if name else None
        if path and path.is_file():
            lines += [line for line in path.read_text().splitlines()
                      if line.strip() and line not in lines]
    return "\n".join(lines) + "\n" if lines else None


def merged_secrets(by_host: dict[str, dict[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for host, secrets in by_host.items():
        for name, value in secrets.items():
            if merged.setdefault(name, value) != value:
                raise ConfigError(f"--target: hosts need different values of {name} ({host})",
                                  "schedule one target inventory per set of secrets")
    return merged


# --- install / remove ----------------------------------------------------------------------

def _plans(loaded: LoadedInventory, target: LoadedInventory | None, archive: Path,
           names: list[str]) -> dict[str, InstallPlan]:
    """Per control host: the inventory, secrets and host keys its runs need (a missing
    secret stops here, before any change)."""
    tool, venv = tree_fingerprint(names), requirements_fingerprint()
    if target is None:
        own_secrets, keys = secrets_for_hosts(loaded), None
    else:
        shared_secrets, keys = merged_secrets(secrets_for_hosts(target)), known_hosts_text(target)
    plans = {}
    for host in loaded.hosts:
        paths = schedule_paths(host.data)
        if target is None:
            secrets = own_secrets[host.name]
            hosts = [("@local", own_data(host.data.dict(), paths))]
            origin = f"{loaded.path.name} (host {host.name}, maintaining itself)"
        else:
            secrets = shared_secrets
            ssh_key = expand_home(host.data.schedule_ssh_key, host.data.app_user)
            hosts = [(h.name, target_data(h.data.dict(), paths, ssh_key, keys is not None))
                     for h in target.hosts]
            origin = f"{target.path.name} (targets of {host.name})"
        plans[host.name] = InstallPlan(str(archive), tool, venv, inventory_text(hosts, origin),
                                       secrets_text(secrets), keys)
    return plans


def _describe(loaded: LoadedInventory, result: RunResult, target: str | None) -> None:
    for host in loaded.hosts:
        paths = schedule_paths(host.data)
        result.hosts[host.name].data = {
            "install_dir": paths.install_dir, "inventory": paths.inventory,
            "state_dir": paths.state_dir, "secrets_file": paths.secrets_file,
            "scheduler_setting": host.data.schedule_scheduler, "maintains": target or "itself",
            "cadences": tier_cadences(host.data)}


def install(loaded: LoadedInventory, options: Options, printer: Printer | None,
            target_name: str | None) -> RunResult:
    for host in loaded.hosts:
        validate(host)
    target = load_inventory(target_name) if target_name else None
    names = checkout_files()
    with tempfile.TemporaryDirectory(prefix="tpe-schedule-") as tmp:
        archive = Path(tmp) / "tpe-ops.tar.gz"
        plans = _plans(loaded, target, archive, names)
        confirm_production(loaded, options, "schedule install")
        if target is not None:
            confirm_production(target, options, "unattended maintenance")
        if not options.dry:
            write_archive(names, archive)
        result = run_deploy(loaded, schedule_installed, plans, dry=options.dry, printer=printer)
    _describe(loaded, result, target_name)
    return result


def remove(loaded: LoadedInventory, options: Options, printer: Printer | None,
           purge: bool) -> RunResult:
    confirm_production(loaded, options, "schedule remove")
    return run_deploy(loaded, schedule_removed, purge, dry=options.dry, printer=printer)


# --- show --------------------------------------------------------------------------------

def _read(host) -> dict[str, Any]:
    data = host.data
    paths = schedule_paths(data)
    app = as_user(host, data.app_user)
    manager = host.get_fact(ServiceManager)
    facts = {
        "manager": manager,
        "tool": host.get_fact(Fingerprint, path=f"{paths.src}/{TOOL_FINGERPRINT}"),
        "venv": host.get_fact(VenvFingerprint, venv=paths.venv),
        "cron": host.get_fact(CronState, log_dir=paths.log_dir, tiers=list(TIERS), **app),
        "timers": host.get_fact(TimerStates, tiers=list(TIERS)) if manager == "systemd" else {},
    }
    return facts


def _when(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_word(exit_code: int | None) -> str | None:
    """A maintain exit code as the tier's outcome (its codes are health's: 0/1/2/3)."""
    if exit_code is None:
        return None
    levels = {code: level for level, code in j.EXIT_CODES.items()}
    level = levels.get(exit_code)
    return WORDS.get("ok" if level == "healthy" else level or "", f"error (exit {exit_code})")


def timer_tier(state: dict[str, Any]) -> dict[str, Any]:
    timer, unit = state.get("timer", {}), state.get("service", {})
    ran = unit.get("ExecMainExitTimestamp", "").lstrip("@")
    exit_code = int(unit["ExecMainStatus"]) if ran and unit.get("ExecMainStatus") else None
    return {
        "installed": timer.get("File") == "yes" and unit.get("File") == "yes",
        "enabled": timer.get("UnitFileState") == "enabled",
        "active": timer.get("ActiveState") == "active",
        "running": unit.get("ActiveState") in ("activating", "active"),
        "next": _when(state.get("next")),
        "last": _when(state.get("last")) or _when(float(ran) if ran else None),
        "last_exit": exit_code,
        "last_result": result_word(exit_code),
    }


def cron_tier(cron: dict[str, Any], tier: str, cadence: str) -> dict[str, Any]:
    installed = tier in cron["tiers"]
    last = cron["last"].get(tier)
    upcoming = None
    if installed and cron["now"]:
        after = next_run(parse_calendar(cadence), datetime.fromisoformat(cron["now"]))
        upcoming = after.strftime("%Y-%m-%dT%H:%M:%S") + " host time" if after else None
    exit_code = last["exit"] if last else None
    return {"installed": installed, "enabled": installed, "active": installed and cron["daemon"],
            "running": False, "next": upcoming, "last": _when(last["end"]) if last else None,
            "last_exit": exit_code, "last_result": result_word(exit_code)}


def tier_step(tier: str, cadence: str, how: str, info: dict[str, Any]) -> Step:
    if not info["installed"]:
        return Step(f"{tier}: not installed", "ok")
    if not (info["active"] and info["enabled"]):
        return Step(f"{tier}: {how} installed but not active ({cadence})", "failed",
                    "run schedule install")
    text = f"{tier}: {how} active, {cadence!r}, next {info['next'] or '-'}"
    if info["running"]:
        return Step(text + ", running now", "ok")
    if info["last"] is None:
        return Step(text + ", never ran yet", "ok")
    text += f", last {info['last']}"
    if info["last_exit"] is None:
        return Step(text, "ok")
    text += f": exit {info['last_exit']} ({info['last_result']})"
    return Step(text, "ok" if info["last_exit"] == 0 else "warning")


def _tool_state(installed: str | None, current: str) -> str:
    if installed is None:
        return "not installed"
    return "current" if installed == current else "differs from this checkout"


def _show_host(host, facts: dict[str, Any], current: str) -> HostResult:
    result = HostResult(host.name)
    scheduler = choose_scheduler(host.data.schedule_scheduler, facts["manager"])
    cadences = tier_cadences(host.data)
    paths = schedule_paths(host.data)
    tool = _tool_state(facts["tool"], current)
    venv = "ready" if facts["venv"] else "missing"
    result.steps.append(Step(f"TPE Ops in {paths.install_dir}: {tool}, venv {venv}; "
                             f"scheduler {scheduler}", "ok"))
    tiers = {}
    for tier in TIERS:
        state = facts["timers"].get(tier, {})
        if scheduler == "systemd" or state.get("timer", {}).get("File") == "yes":
            info, how = timer_tier(state), "timer"
        else:
            info, how = cron_tier(facts["cron"], tier, cadences[tier]), "cron"
        tiers[tier] = {"cadence": cadences[tier], "via": how, **info}
        result.steps.append(tier_step(tier, cadences[tier], how, info))
    result.data = {"scheduler": scheduler, "install_dir": paths.install_dir, "tool": tool,
                   "venv": venv, "state_dir": paths.state_dir, "tiers": tiers}
    return result


def show(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    started = time.monotonic()
    current = tree_fingerprint(checkout_files())
    read = gather(loaded, _read)
    results: dict[str, HostResult] = {}
    for host in loaded.hosts:
        facts = read[host.name]
        if isinstance(facts, Exception):
            results[host.name] = HostResult(host.name, error=str(facts))
            continue
        results[host.name] = _show_host(host, facts, current)
        for step in results[host.name].steps:
            if printer:
                printer(host.name, step)
    return RunResult(dry=False, hosts=results, seconds=time.monotonic() - started)
