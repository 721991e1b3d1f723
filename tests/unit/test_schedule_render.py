"""What `schedule install` writes on a control host, rendered from the real templates: units,
cron file, the maintenance inventory, the secrets file; and what the controller uploads."""

from __future__ import annotations

import os
import runpy
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from operations.schedule import (
    cron_file,
    inventory_text,
    maintain_argv,
    schedule_paths,
    secrets_text,
    service_unit,
    timer_unit,
)
from playbooks.schedule import (
    checkout_files,
    merged_secrets,
    own_data,
    target_data,
    tree_fingerprint,
    validate,
)
from tests.helpers import PROJECT_ROOT
from tpe_ops.errors import ConfigError
from tpe_ops.secrets import parse_secrets_file
from tpe_ops.settings import SCHEMA, validate_complete, validate_values

DEFAULTS = {k: v for k, v in runpy.run_path(str(PROJECT_ROOT / "group_data" / "all.py")).items()
            if k in SCHEMA}
SECRET = "s3cret-value-never-shown"


def data(**overrides) -> SimpleNamespace:
    return SimpleNamespace(**{**DEFAULTS, **overrides})


def host(**overrides) -> SimpleNamespace:
    return SimpleNamespace(name="app1", data=data(**overrides))


def test_paths_expand_home_of_the_app_user():
    paths = schedule_paths(data(app_user="deploy"))
    assert paths.src == "/opt/tpe-ops/src" and paths.venv == "/opt/tpe-ops/venv"
    assert paths.state_dir == "/home/deploy/.local/state/tpe-ops"
    assert paths.secrets_file == "/home/deploy/.config/tpe-ops/schedule-secrets.env"
    assert paths.log_dir == "/home/deploy/.local/state/tpe-ops/schedule"


def test_service_unit_runs_maintain_as_the_app_user_with_no_secret():
    d = data()
    paths = schedule_paths(d)
    unit = service_unit(d, paths, "weekly")
    lines = unit.splitlines()
    assert f"ExecStart={' '.join(maintain_argv(paths, 'weekly'))}" in lines
    assert "User=ubuntu" in lines and "Type=oneshot" in lines
    assert f"Environment=TPE_STATE_DIR={paths.state_dir}" in lines
    assert "TimeoutStartSec=120min" in lines
    assert "maintain weekly -i /opt/tpe-ops/maintain-inventory.py --yes" in unit
    assert "TPE_DB_PASSWORD" not in unit and "EnvironmentFile" not in unit  # secrets: a file


def test_timer_unit_has_cadence_persistence_and_random_delay():
    timer = timer_unit(data(schedule_quarterly="*-01,04,07,10-01 09:00:00"), "quarterly")
    lines = timer.splitlines()
    assert "OnCalendar=*-01,04,07,10-01 09:00:00" in lines
    assert "Persistent=true" in lines and "RandomizedDelaySec=900" in lines
    assert "Unit=tpe-maintain-quarterly.service" in lines and "WantedBy=timers.target" in lines


def test_cron_file_has_each_tier_with_its_cadence_lock_and_log():
    d = data(schedule_randomized_delay_seconds=60)
    text = cron_file(d, schedule_paths(d))
    jobs = [line for line in text.splitlines() if line and not line.startswith("#")
            and "=" not in line.split()[0]]
    assert [job.split()[:6] for job in jobs] == [
        ["0", "6", "*", "*", "*", "ubuntu"], ["0", "7", "*", "*", "1", "ubuntu"],
        ["0", "8", "1", "*", "*", "ubuntu"], ["0", "9", "1", "1,4,7,10", "*", "ubuntu"]]
    for job, tier in zip(jobs, ("daily", "weekly", "monthly", "quarterly"), strict=True):
        assert "sleep $(shuf -i 0-60 -n 1); " in job
        assert f"flock -n /home/ubuntu/.local/state/tpe-ops/schedule/.maintain-{tier}.lock" in job
        assert f"timeout 7200 /opt/tpe-ops/venv/bin/python /opt/tpe-ops/src/deploy.py " \
               f"maintain {tier} -i /opt/tpe-ops/maintain-inventory.py --yes" in job
        assert f">> /home/ubuntu/.local/state/tpe-ops/schedule/maintain-{tier}.log 2>&1" in job
        # cron cuts a command at an unescaped %
        assert "%" not in job.replace("\\%", "")
    assert "TPE_STATE_DIR=/home/ubuntu/.local/state/tpe-ops" in text.splitlines()
    no_delay = data(schedule_randomized_delay_seconds=0)
    assert "sleep" not in cron_file(no_delay, schedule_paths(no_delay))


def test_maintenance_inventory_is_valid_with_the_hosts_own_settings(tmp_path):
    d = data(app_backend_port=5123, secrets_generate_missing=True)
    paths = schedule_paths(d)
    own = own_data({**vars(d), "ssh_port": 2222, "ssh_key": "/home/me/.ssh/id"}, paths)
    path = tmp_path / "inventory.py"
    path.write_text(inventory_text([("@local", own)], "test.py (host app1)"))
    hosts = runpy.run_path(str(path))["app_servers"]
    assert [name for name, _ in hosts] == ["@local"]
    (_, written), = hosts
    assert "ssh_port" not in written and "ssh_key" not in written  # @local: no SSH
    assert written["app_backend_port"] == 5123
    assert written["secrets_file"] == paths.secrets_file
    assert written["secrets_generate_missing"] is False
    validate_values(written, "generated")
    validate_complete(written, "@local")


def test_target_data_uses_the_control_hosts_key_and_copied_host_keys():
    paths = schedule_paths(data())
    source = {**DEFAULTS, "ssh_hostname": "10.0.1.5", "ssh_port": 22, "ssh_user": "ubuntu",
              "ssh_key": "/home/laptop/.ssh/id_ed25519", "ssh_key_password": "nope",
              "ssh_known_hosts_file": "/home/laptop/.config/tpe-ops/known_hosts"}
    result = target_data(source, paths, "/home/ubuntu/.ssh/id_schedule", known_hosts=True)
    assert result["ssh_hostname"] == "10.0.1.5" and result["ssh_port"] == 22
    assert result["ssh_key"] == "/home/ubuntu/.ssh/id_schedule"
    assert result["ssh_known_hosts_file"] == paths.known_hosts
    assert result["ssh_strict_host_key_checking"] == "yes"
    assert "ssh_key_password" not in result
    bare = target_data(source, paths, "", known_hosts=False)
    assert "ssh_key" not in bare and "ssh_known_hosts_file" not in bare


def test_secrets_file_round_trips_through_the_tools_parser(tmp_path):
    path = tmp_path / "secrets.env"
    path.write_text(secrets_text({"TPE_DB_PASSWORD": SECRET, "OTHER": "x=y"}))
    assert parse_secrets_file(path) == {"TPE_DB_PASSWORD": SECRET, "OTHER": "x=y"}


def test_targets_needing_different_values_of_a_secret_are_refused():
    assert merged_secrets({"a": {"X": "1"}, "b": {"X": "1", "Y": "2"}}) == {"X": "1", "Y": "2"}
    with pytest.raises(ConfigError, match="different values of X"):
        merged_secrets({"a": {"X": "1"}, "b": {"X": "2"}})


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("schedule_daily", "every day", "schedule_daily 'every day'"),
    ("schedule_weekly", "Mon *-*-01 07:00", "both a weekday"),
    ("schedule_install_dir", "/opt/tpe ops", "schedule_install_dir"),
    ("schedule_state_dir", "relative/dir", "schedule_state_dir"),
    ("schedule_secrets_file", "/opt/tpe-ops/secrets.env", "inside schedule_install_dir"),
    ("schedule_timeout_minutes", 0, "schedule_timeout_minutes"),
])
def test_validation_refuses_what_units_or_cron_could_not_run(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(host(**{setting: value}))


def test_systemd_only_accepts_what_cron_could_not():
    validate(host(schedule_scheduler="systemd", schedule_weekly="Mon *-*-01 07:00"))
    validate(host())  # the defaults


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_checkout_files_and_fingerprint(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "tracked.py").write_text("print(1)\n")
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "secret.env").write_text("X=1\n")
    git(tmp_path, "add", "tracked.py", ".gitignore")
    (tmp_path / "new.py").write_text("print(2)\n")  # not committed yet, not ignored
    names = checkout_files(tmp_path)
    assert names == [".gitignore", "new.py", "tracked.py"]
    before = tree_fingerprint(names, tmp_path)
    assert tree_fingerprint(names, tmp_path) == before
    os.chmod(tmp_path / "new.py", 0o755)
    assert tree_fingerprint(names, tmp_path) != before
    os.chmod(tmp_path / "new.py", 0o644)
    (tmp_path / "tracked.py").write_text("print(3)\n")
    assert tree_fingerprint(names, tmp_path) != before


def test_checkout_files_outside_git_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot list the files"):
        checkout_files(tmp_path)
