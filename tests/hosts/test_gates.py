"""The pre-deploy gates of the runbook's checklist, on the provisioned host `app_hosts.first`:
a host unhealthy before the deploy, and a production commit not verified on staging. Without
their flags (and no terminal to confirm at) the deploy stops with exit 3 and changes nothing."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli
from tests.hosts.conftest import SecretEnv, http_code, read_layout

pytestmark = pytest.mark.hosts


@pytest.fixture(scope="module")
def host(app_hosts):
    return app_hosts.first


def test_unhealthy_host_needs_a_confirmation(host, app_hosts, secret_env):
    # Serving a verified release first (a no-op when an earlier module left it there).
    done = run_cli("deploy", "-i", app_hosts.first_inventory, "--commit", "good",
                   env=secret_env)
    assert done.returncode == 0, done.stdout + done.stderr
    before = read_layout(host)
    host.ssh("pm2 stop tpe-backend >/dev/null")
    try:
        done = run_cli("deploy", "-i", app_hosts.first_inventory, "--commit", "slow",
                       env=secret_env)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "unhealthy before the deploy" in done.stderr and "--unhealthy-ok" in done.stderr
        after = read_layout(host)
        assert after.releases == before.releases and after.current == before.current
        # A fix is often what is being deployed: with the flag it goes ahead and verifies.
        done = run_cli("deploy", "-i", app_hosts.first_inventory, "--commit", "slow",
                       "--unhealthy-ok", env=secret_env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert http_code(host, host.backend_port) == "200"
    finally:
        host.ssh("pm2 restart tpe-backend >/dev/null 2>&1 || true")


def test_production_commit_not_verified_on_staging_is_refused(host, make_inventory, secret_env,
                                                              tmp_path):
    inventory = make_inventory([host], "prod-gate", deploy_environment="production")
    before = read_layout(host)
    env = SecretEnv({**secret_env, "TPE_STAGING_HOSTS": "", "TPE_HOSTS_DIR": str(tmp_path)})
    done = run_cli("deploy", "-i", str(inventory), "--commit", "good", "--yes", env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "has not been verified on staging" in done.stderr
    assert "--unverified-ok" in done.stderr
    after = read_layout(host)
    assert after.releases == before.releases and after.current == before.current
