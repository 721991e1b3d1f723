"""Provisioning real hosts from zero: Node.js, PM2 (+boot unit), Redis; idempotence; handlers;
a reboot; dry runs; bad input; secrets. Tests in this module share one host, in order."""

from __future__ import annotations

import time

import pytest

from tests.helpers import changed_steps, run_cli, run_json

pytestmark = pytest.mark.hosts
OUTPUTS: list[str] = []  # every line the tool printed in this module, checked for secrets


def cli(*args, env=None):
    done = run_cli(*args, env=env)
    OUTPUTS.extend([done.stdout, done.stderr])
    return done


def cli_json(*args, env=None):
    code, payload, stderr = run_json(*args, env=env)
    OUTPUTS.extend([str(payload), stderr])
    return code, payload, stderr


@pytest.fixture(scope="module")
def host(host_factory):
    (booted,) = host_factory(1)
    return booted


@pytest.fixture(scope="module")
def inventory(host, make_inventory):
    return str(make_inventory([host], "provision"))


def redis_started_at(host) -> str:
    return host.ssh("systemctl show -p ActiveEnterTimestampMonotonic --value redis-server").stdout


def test_provision_bare_host_from_zero(host, inventory, secret_env):
    assert host.ssh("command -v node", check=False).returncode != 0  # really bare
    done = cli("provision", "-i", inventory, env=secret_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "~ changed" in done.stdout and "provision:" in done.stdout
    assert host.ssh("node --version").stdout.startswith("v18.")
    assert host.ssh("pm2 --version").stdout.strip().endswith("7.0.4")
    assert host.ssh("systemctl is-enabled pm2-ubuntu").stdout.strip() == "enabled"
    assert host.ssh("systemctl is-active redis-server").stdout.strip() == "active"
    assert host.ssh(f"redis-cli -p {host.redis_port} ping").stdout.strip() == "PONG"
    policy = host.ssh(f"redis-cli -p {host.redis_port} config get maxmemory-policy").stdout
    assert "allkeys-lru" in policy
    logrotate = host.ssh("cat ~/.pm2/module_conf.json").stdout
    assert '"max_size":"10M"' in logrotate.replace(" ", "")
    shared = "/home/ubuntu/The-Power100-Experience/shared"
    mode = host.ssh(f"stat -c '%a %U' {shared}/backend.env {shared}/frontend.env").stdout.split()
    assert mode == ["600", "ubuntu", "600", "ubuntu"]
    dirs = host.ssh("stat -c '%U' /home/ubuntu/The-Power100-Experience/{releases,shared/logs}")
    assert dirs.stdout.split() == ["ubuntu", "ubuntu"]


def test_second_provision_changes_nothing(inventory, secret_env):
    code, payload, _ = cli_json("provision", "-i", inventory, env=secret_env)
    assert code == 0
    (result,) = payload["hosts"].values()
    assert result["changed"] == 0, changed_steps(payload, next(iter(payload["hosts"])))
    assert len(result["steps"]) >= 10


def test_redis_setting_change_restarts_redis_once(host, make_inventory, secret_env):
    changed = str(make_inventory([host], "provision-redis", redis_maxmemory="128mb"))
    before = redis_started_at(host)
    code, payload, _ = cli_json("provision", "-i", changed, env=secret_env)
    assert code == 0
    assert sorted(changed_steps(payload, host.name)) == [
        "Redis cache | Render redis.conf",
        "Redis cache | Restart redis-server (config changed)",
    ]
    after = redis_started_at(host)
    assert after != before
    maxmemory = host.ssh(f"redis-cli -p {host.redis_port} config get maxmemory").stdout
    assert str(128 * 1024 * 1024) in maxmemory
    code, payload, _ = cli_json("provision", "-i", changed, env=secret_env)
    assert code == 0 and changed_steps(payload, host.name) == []
    assert redis_started_at(host) == after  # no restart on the no-op run


def test_deploy_then_reboot_brings_everything_back(host, inventory, secret_env):
    done = cli("deploy", "-i", inventory, env=secret_env)
    assert done.returncode == 0, done.stdout + done.stderr
    health = host.ssh(f"curl -s http://127.0.0.1:{host.backend_port}/api/health").stdout
    assert '"status":"healthy"' in health.replace(" ", "")
    host.reboot_cycle()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        probe = host.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' "
                         f"http://127.0.0.1:{host.backend_port}/api/health", check=False)
        if probe.stdout.strip() == "200":
            break
        time.sleep(2)
    assert probe.stdout.strip() == "200", "backend did not come back after the reboot"
    assert host.ssh(f"redis-cli -p {host.redis_port} ping").stdout.strip() == "PONG"
    jlist = host.ssh("pm2 jlist").stdout
    assert jlist.count('"status":"online"') >= 3  # 2 backend workers + 1 frontend
    front = host.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' "
                     f"http://127.0.0.1:{host.frontend_port}/", check=False).stdout
    assert front.strip() == "200"


def test_no_secret_in_output_logs_or_files(host, postgres_db):
    secret = postgres_db.password
    assert OUTPUTS and not any(secret in text for text in OUTPUTS)
    # The pattern goes through stdin: on a command line, sudo would log it to the journal.
    found = host.ssh(
        "sudo grep -rlF -f /dev/stdin /home /etc /var/log /tmp /root /var/lib/redis || true",
        input_text=secret + "\n",
    ).stdout.split()
    assert found == ["/home/ubuntu/The-Power100-Experience/shared/backend.env"]
    assert secret not in host.ssh("pm2 jlist").stdout
    assert secret not in host.ssh("cat ~/.pm2/dump.pm2").stdout
    assert secret not in host.ssh("ps -eo args").stdout
