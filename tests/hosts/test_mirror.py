"""app_source = "mirror": the host keeps a git mirror and builds releases from it (Capistrano
style), here fetching from a git daemon on the loopback that the hosts share."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.hosts


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def git_url(app_repo):
    port = _free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={app_repo.parent}",
         "--listen=127.0.0.1", f"--port={port}", str(app_repo.parent)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"git://127.0.0.1:{port}/{app_repo.name}"
    deadline = time.monotonic() + 10
    while subprocess.run(["git", "ls-remote", url], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "git daemon did not start"
        time.sleep(0.2)
    yield url
    daemon.terminate()
    daemon.wait(timeout=10)


def test_deploy_from_a_mirror_on_the_host(host_factory, make_inventory, secret_env, git_url,
                                          commit_of):
    (host,) = host_factory(1)
    inventory = str(make_inventory([host], "mirror", app_source="mirror", app_repo=git_url))
    assert run_cli("provision", "-i", inventory, env=secret_env).returncode == 0
    done = run_cli("deploy", "-i", inventory, "--commit", "good", env=secret_env)
    assert done.returncode == 0, done.stdout + done.stderr
    deploy_to = "/home/ubuntu/The-Power100-Experience"
    assert host.ssh(f"git -C {deploy_to}/repo rev-parse good^{{commit}}").stdout.strip() == \
        commit_of("good")
    revision = host.ssh(f"cat {deploy_to}/current/REVISION").stdout.strip()
    assert revision == commit_of("good")
    health = host.ssh(f"curl -s http://127.0.0.1:{host.backend_port}/api/health").stdout
    assert '"status":"healthy"' in health.replace(" ", "")
    # A commit the mirror lacks is fetched; an unknown branch is refused before any change.
    done = run_cli("deploy", "-i", inventory, "--commit", "nope-branch", env=secret_env)
    assert done.returncode == 2 and "unknown branch 'nope-branch'" in done.stderr
