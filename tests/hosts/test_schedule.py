"""`schedule install|remove|show` on a real control host (the served app host maintaining
itself): TPE Ops and its venv installed once, a systemd timer per tier (then cron), the
scheduled command really run, secrets kept in one 0600 file, idempotent installs and removes.
Tests in this module run in order on the shared served host and leave nothing installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from operations.schedule import next_run, parse_calendar
from playbooks.schedule import checkout_files
from tests.helpers import PROJECT_ROOT, changed_steps

pytestmark = pytest.mark.hosts
OUTPUTS: list[str] = []  # every line the tool printed in this module, checked for secrets
TIERS = ("daily", "weekly", "monthly", "quarterly")
INSTALL = "/opt/tpe-ops"
STATE = "/home/ubuntu/.local/state/tpe-ops"
SECRETS = "/home/ubuntu/.config/tpe-ops/schedule-secrets.env"
UNITS = [f"/etc/systemd/system/tpe-maintain-{t}.{k}" for t in TIERS for k in ("service", "timer")]
TOOL = f"cd {INSTALL}/src && {INSTALL}/venv/bin/python deploy.py"
TEST_KEY = "/home/ubuntu/.ssh/id_tpe_schedule_test"
CHECKOUT: list[Path] = []  # the frozen checkout the commands run from (fixture below)


@pytest.fixture(scope="module", autouse=True)
def checkout(tmp_path_factory) -> Path:
    """A frozen copy of this checkout to run `deploy.py` from: `install` uploads the checkout,
    and a file edited in the working tree between two installs would be a real change."""
    root = tmp_path_factory.mktemp("tpe-ops-checkout")
    for name in checkout_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, root / name, follow_symlinks=False)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    CHECKOUT.append(root)
    return root


def cli(*args, env) -> subprocess.CompletedProcess:
    """`deploy.py ARGS` of the frozen checkout, as a user runs it."""
    root = CHECKOUT[-1]
    done = subprocess.run([sys.executable, str(root / "deploy.py"), *args], cwd=root,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    OUTPUTS.extend([done.stdout, done.stderr])
    return done


def cli_json(*args, env) -> tuple[int, dict, str]:
    done = cli(*args, "--json", env=env)
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except json.JSONDecodeError as error:
        raise AssertionError(f"no JSON (exit {done.returncode}):\n{done.stdout}\n"
                             f"{done.stderr}") from error


@pytest.fixture(scope="module")
def served(served_host):
    return served_host


def exists(host, path: str) -> bool:
    return host.ssh(f"sudo test -e {path}", check=False).returncode == 0


def systemctl(host, verb: str, unit: str) -> str:
    return host.ssh(f"systemctl {verb} {unit}", check=False).stdout.strip()


def tiers_of(payload: dict) -> dict[str, dict]:
    (result,) = payload["hosts"].values()
    return result["tiers"]


def test_bad_cadence_is_refused_before_anything_changes(served, make_inventory):
    host, _, env = served
    bad = str(make_inventory([host], "schedule-bad", schedule_daily="every day at six"))
    done = cli("schedule", "install", "-i", bad, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "schedule_daily 'every day at six'" in done.stderr and "hint:" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2 and done.stdout == ""
    assert not exists(host, INSTALL)


def test_dry_run_lists_changes_and_changes_nothing(served):
    host, inventory, env = served
    code, payload, _ = cli_json("schedule", "install", "-i", inventory, "--dry", env=env)
    assert code == 0 and payload["dry"]
    (result,) = payload["hosts"].values()
    would = [s["name"] for s in result["steps"] if s["status"] == "would-change"]
    assert f"TPE Ops in {INSTALL}/src" in would
    assert "Timer tpe-maintain-daily.timer enabled and active" in would
    assert not exists(host, INSTALL) and not any(exists(host, unit) for unit in UNITS)


def test_install_twice_timers_active_second_run_changes_nothing(served):
    host, inventory, env = served
    done = cli("schedule", "install", "-i", inventory, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for tier in TIERS:
        timer = f"tpe-maintain-{tier}.timer"
        assert systemctl(host, "is-active", timer) == "active"
        assert systemctl(host, "is-enabled", timer) == "enabled"
    listed = host.ssh("systemctl list-timers --all --no-legend 'tpe-maintain-*'").stdout
    assert sorted(line.split()[-2] for line in listed.splitlines()) == sorted(
        f"tpe-maintain-{t}.timer" for t in TIERS)
    code, payload, _ = cli_json("schedule", "install", "-i", inventory, env=env)
    assert code == 0
    assert changed_steps(payload, host.name) == []
    assert len(payload["hosts"][host.name]["steps"]) >= 20


def test_show_lists_the_four_tiers_with_a_next_run(served):
    host, inventory, env = served
    code, payload, _ = cli_json("schedule", "show", "-i", inventory, env=env)
    assert code == 0
    (result,) = payload["hosts"].values()
    assert result["scheduler"] == "systemd" and result["tool"] == "current"
    tiers = tiers_of(payload)
    assert list(tiers) == list(TIERS)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for tier, info in tiers.items():
        assert info["installed"] and info["enabled"] and info["active"], (tier, info)
        assert info["next"] and info["next"] > now, (tier, info)
    done = cli("schedule", "show", "-i", inventory, env=env)
    assert "daily: timer active, '*-*-* 06:00:00', next " in done.stdout


def test_installed_tool_runs_as_the_app_user_with_its_secrets(served):
    host, _, _ = served
    assert host.ssh(f"{TOOL} --help >/dev/null", check=False).returncode == 0
    # provision --dry loads the secrets the inventory names: from the 0600 file, as ubuntu.
    dry = host.ssh(f"{TOOL} provision -i {INSTALL}/maintain-inventory.py --dry", check=False)
    OUTPUTS.extend([dry.stdout, dry.stderr])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "[@local]" in dry.stdout


def test_the_timer_service_runs_maintain_and_keeps_its_output(served):
    host, inventory, env = served
    host.ssh(f"touch {STATE}/.before-run")
    run = host.ssh("sudo systemctl start tpe-maintain-daily.service", check=False)
    status = systemctl(host, "show -p ExecMainStatus --value", "tpe-maintain-daily.service")
    assert run.returncode == (0 if status == "0" else 1)
    journal = host.ssh("sudo journalctl -u tpe-maintain-daily -o cat --no-pager").stdout
    OUTPUTS.append(journal)
    assert "maintain: " in journal and "[@local]" in journal  # the summary of the run
    reports = host.ssh(f"find {STATE} -name 'daily*' -newer {STATE}/.before-run").stdout
    assert reports.split(), "the run left no report under TPE_STATE_DIR"
    code, payload, _ = cli_json("schedule", "show", "-i", inventory, env=env)
    daily = tiers_of(payload)["daily"]
    assert daily["last"] and daily["last_exit"] == int(status), daily


def test_calendar_expressions_agree_with_systemd(served):
    """The parser also renders cron lines and next runs: it must read as systemd does."""
    host = served[0]
    for expression in ("*-*-* 06:00:00", "Mon *-*-* 07:00:00", "*-*-01 08:00:00",
                       "*-01,04,07,10-01 09:00:00", "Mon..Fri 07:30", "Sat,Sun *:0/20",
                       "*-*-31 12:00", "quarterly"):
        out = host.ssh(f"date '+%Y-%m-%dT%H:%M:%S'; "
                       f"systemd-analyze calendar --iterations=3 '{expression}'").stdout
        lines = out.splitlines()
        now = datetime.fromisoformat(lines[0])
        theirs = [datetime.strptime(" ".join(line.split(": ", 1)[1].split()[1:3]),
                                    "%Y-%m-%d %H:%M:%S")
                  for line in lines if line.strip().startswith(("Next elapse:", "Iter. #"))]
        ours, after = [], now
        for _ in theirs:
            after = next_run(parse_calendar(expression), after)
            ours.append(after)
        assert len(theirs) == 3 and ours == theirs, expression


def test_secrets_only_in_the_0600_file(served, postgres_db):
    host = served[0]
    assert host.ssh(f"stat -c '%a %U' {SECRETS}").stdout.split() == ["600", "ubuntu"]
    assert host.ssh(f"stat -c '%a' {SECRETS.rsplit('/', 1)[0]}").stdout.strip() == "700"
    secret = postgres_db.password
    # The pattern goes through stdin: on a command line, sudo would log it to the journal.
    found = set(host.ssh(
        "sudo grep -rlF -f /dev/stdin /opt /etc /var/log /run/log /tmp /home/ubuntu/.local "
        "/home/ubuntu/.config 2>/dev/null || true", input_text=secret + "\n").stdout.split())
    assert found == {SECRETS}
    assert OUTPUTS and not any(secret in text for text in OUTPUTS)
    assert secret not in host.ssh("ps -eo args").stdout


def test_target_maintained_over_ssh_from_the_control_host(served, make_inventory):
    """--target: the control host reaches the targets over SSH (here: itself, as a remote
    host) with its own key and the host keys the controller trusts."""
    host, inventory, env = served
    host.ssh(f"[ -f {TEST_KEY} ] || ssh-keygen -q -t ed25519 -N '' -C tpe-schedule-test "
             f"-f {TEST_KEY}; cat {TEST_KEY}.pub >> ~/.ssh/authorized_keys")
    try:
        control = str(make_inventory([host], "schedule-control",
                                     schedule_ssh_key="~/.ssh/id_tpe_schedule_test"))
        done = cli("schedule", "install", "-i", control, "--target", inventory, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        keys = host.ssh(f"cat {INSTALL}/known_hosts").stdout
        assert f"[127.0.0.1]:{host.ssh_port} ssh-ed25519 " in keys
        status = host.ssh(f"{TOOL} status -i {INSTALL}/maintain-inventory.py", check=False)
        OUTPUTS.extend([status.stdout, status.stderr])
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"[{host.name}]" in status.stdout and "health 200" in status.stdout
    finally:
        host.ssh(f"sed -i '/tpe-schedule-test/d' ~/.ssh/authorized_keys; "
                 f"rm -f {TEST_KEY} {TEST_KEY}.pub")


def test_remove_twice_second_changes_nothing(served):
    host, inventory, env = served
    done = cli("schedule", "remove", "-i", inventory, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(exists(host, unit) for unit in UNITS)
    assert host.ssh("systemctl list-timers --all --no-legend 'tpe-maintain-*'").stdout == ""
    assert not exists(host, SECRETS) and not exists(host, f"{INSTALL}/maintain-inventory.py")
    assert exists(host, f"{INSTALL}/venv/bin/python")  # kept without --purge
    code, payload, _ = cli_json("schedule", "remove", "-i", inventory, env=env)
    assert code == 0 and changed_steps(payload, host.name) == []
    code, payload, _ = cli_json("schedule", "show", "-i", inventory, env=env)
    assert not any(info["installed"] for info in tiers_of(payload).values())


def test_cron_instead_of_timers(served, make_inventory):
    host, _, env = served
    cron = str(make_inventory([host], "schedule-cron", schedule_scheduler="cron",
                              schedule_randomized_delay_seconds=0))
    done = cli("schedule", "install", "-i", cron, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.ssh("stat -c '%a %U' /etc/cron.d/tpe-maintain").stdout.split() == ["644", "root"]
    assert systemctl(host, "is-active", "cron") == "active"
    assert not any(exists(host, unit) for unit in UNITS)
    code, payload, _ = cli_json("schedule", "install", "-i", cron, env=env)
    assert code == 0 and changed_steps(payload, host.name) == []
    # Run the daily line's command as cron would (as ubuntu, /bin/sh, cron's % unescaped).
    line = host.ssh("grep ' maintain daily ' /etc/cron.d/tpe-maintain").stdout.strip()
    fields = line.split(" ", 6)
    assert fields[:6] == ["0", "6", "*", "*", "*", "ubuntu"]
    command = fields[6].replace("\\%", "%")
    path = host.ssh("sed -n 's/^PATH=//p' /etc/cron.d/tpe-maintain").stdout.strip()
    host.ssh(f"env -i HOME=/home/ubuntu PATH={path} TPE_STATE_DIR={STATE} sh -c "
             f"\"$(cat)\"", input_text=command, check=False)
    log = host.ssh(f"cat {STATE}/schedule/maintain-daily.log").stdout
    assert "maintain: " in log
    marker = [x for x in log.splitlines() if x.startswith("tpe-maintain daily exit=")][-1]
    code, payload, _ = cli_json("schedule", "show", "-i", cron, env=env)
    daily = tiers_of(payload)["daily"]
    assert daily["via"] == "cron" and daily["active"] and daily["next"]
    assert daily["last_exit"] == int(marker.split("exit=")[1].split()[0])


def test_remove_purge_leaves_nothing(served, make_inventory):
    host, _, env = served
    cron = str(make_inventory([host], "schedule-cron-purge", schedule_scheduler="cron"))
    done = cli("schedule", "remove", "-i", cron, "--purge", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in (INSTALL, "/etc/cron.d/tpe-maintain", SECRETS, *UNITS):
        assert not exists(host, path), path
    code, payload, _ = cli_json("schedule", "remove", "-i", cron, "--purge", env=env)
    assert code == 0 and changed_steps(payload, host.name) == []
