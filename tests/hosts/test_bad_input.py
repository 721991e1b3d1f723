"""Dry runs and bad input against a bare host: clear errors, exit codes, nothing changed."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli, run_json

pytestmark = pytest.mark.hosts


@pytest.fixture(scope="module")
def bare(host_factory):
    (booted,) = host_factory(1)
    return booted


def assert_untouched(host) -> None:
    probe = host.ssh(
        "command -v node pm2 redis-server; ls /home/ubuntu/The-Power100-Experience 2>&1; "
        "ls /etc/redis 2>&1", check=False,
    ).stdout
    assert "/usr/bin/node" not in probe and "redis-server" not in probe.split("\n")[0]
    assert "No such file or directory" in probe


def test_dry_run_lists_changes_and_changes_nothing(bare, make_inventory, secret_env):
    inventory = str(make_inventory([bare], "dry"))
    code, payload, _ = run_json("provision", "-i", inventory, "--dry", env=secret_env)
    assert code == 0 and payload["dry"] is True
    steps = payload["hosts"][bare.name]["steps"]
    would = [s["name"] for s in steps if s["status"] == "would-change"]
    assert "Node.js 18 (distro)" in would and "PM2 7.0.4" in would
    assert any("redis.conf" in name for name in would)
    assert_untouched(bare)


def test_malformed_inventory_is_a_clear_error(bare, make_inventory, secret_env):
    inventory = make_inventory([bare], "malformed", redis_port="63x9")
    done = run_cli("provision", "-i", str(inventory), env=secret_env)
    assert done.returncode == 2
    assert "malformed.py" in done.stderr and "'redis_port' must be int" in done.stderr
    assert "Traceback" not in done.stderr
    assert_untouched(bare)


def test_syntax_error_in_inventory(bare, tmp_path, secret_env):
    broken = tmp_path / "broken.py"
    broken.write_text("app_servers = [('h', {'ssh_port': 22)]\n")
    done = run_cli("provision", "-i", str(broken), env=secret_env)
    assert done.returncode == 2 and "broken.py:1: syntax error" in done.stderr


def test_missing_secret_stops_before_any_change(bare, make_inventory):
    inventory = make_inventory([bare], "nosecret")
    done = run_cli("provision", "-i", str(inventory), env={"TPE_DB_PASSWORD": ""})
    assert done.returncode == 2
    assert "missing secret(s): TPE_DB_PASSWORD" in done.stderr
    assert_untouched(bare)


def test_unreachable_host_is_reported(bare, make_inventory, secret_env, tmp_path):
    inventory = make_inventory([bare], "unreachable", ssh_port=1)
    code, payload, _ = run_json("provision", "-i", str(inventory), env=secret_env)
    assert code == 1
    assert "cannot connect" in payload["hosts"][bare.name]["error"]


def test_production_inventory_needs_confirmation(bare, make_inventory, secret_env):
    inventory = make_inventory([bare], "prod", deploy_environment="production")
    done = run_cli("provision", "-i", str(inventory), env=secret_env)
    assert done.returncode == 3 and "--yes" in done.stderr
    assert_untouched(bare)
