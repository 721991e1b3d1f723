"""inventories/ec2.py: loaded as the CLI loads it (moto's EC2 in-process), and the command line
against a small EC2 API on 127.0.0.1 (a subprocess is out of moto's reach): discovered hosts,
cache across processes, and the bad-input paths (exit 2, two lines, nothing changed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.helpers import run_cli
from tests.unit.test_ec2_discovery import CallCounter, aws_test_env, closed_port, launch_fleet
from tpe_ops import ec2_discovery
from tpe_ops.errors import ConfigError
from tpe_ops.inventory import load_inventory

SECRET = "never-print-this-secret-value"


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """moto's EC2 with two roles, two environments, running and stopped instances; every
    client the inventory makes counts its DescribeInstances calls."""
    aws_test_env(monkeypatch, tmp_path)
    import boto3  # after pyinfra_cli (see tests/unit/test_ec2_discovery.py)
    from moto import mock_aws

    counter = CallCounter()
    monkeypatch.setattr(ec2_discovery, "make_client", counter)
    with mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        ids = launch_fleet(client)
        described = client.describe_instances(InstanceIds=list(ids.values()))
        instances = {i["InstanceId"]: i for r in described["Reservations"] for i in r["Instances"]}
        yield {"ids": ids, "instances": instances, "counter": counter}
    ec2_discovery.forget()


def test_ec2_inventory_finds_the_running_app_servers_in_order(fleet):
    loaded = load_inventory("ec2")
    order = ["tpe-app-1", "tpe-app-2", "tpe-app-10", ""]
    expected = [fleet["instances"][fleet["ids"][name]] for name in order]
    assert [h.name for h in loaded.hosts] == [i["PrivateIpAddress"] for i in expected]
    first = loaded.hosts[0].data
    assert (first.ec2_instance_id, first.ec2_name, first.ec2_az) == (
        fleet["ids"]["tpe-app-1"], "tpe-app-1", "us-east-1c")
    assert loaded.hosts[3].data.ec2_name == ""
    assert loaded.is_production and first.deploy_environment == "production"
    assert first.ssh_strict_host_key_checking == "yes" and first.ssh_user == "ubuntu"
    assert first.app_backend_port == 5000  # group_data/all.py still applies


def test_staging_and_public_addresses(fleet, monkeypatch):
    monkeypatch.setenv("TPE_EC2_ENVIRONMENT", "staging")
    monkeypatch.setenv("TPE_EC2_ADDRESS", "public")
    loaded = load_inventory("ec2")
    staging = fleet["instances"][fleet["ids"]["tpe-stage-1"]]
    assert [h.name for h in loaded.hosts] == [staging["PublicIpAddress"]]
    assert not loaded.is_production
    assert loaded.hosts[0].data.deploy_environment == "staging"


def test_cache_spares_aws_calls_and_refresh_forces_one(fleet, monkeypatch):
    counter = fleet["counter"]
    loaded = load_inventory("ec2")
    assert counter.calls == 1
    loaded.fresh()  # the next phase of the same run
    ec2_discovery.forget()  # as in a new process: the cache file answers
    assert [h.name for h in load_inventory("ec2").hosts] == [h.name for h in loaded.hosts]
    assert counter.calls == 1
    ec2_discovery.forget()
    monkeypatch.setenv("TPE_EC2_REFRESH", "1")
    load_inventory("ec2")
    assert counter.calls == 2


def test_no_match_is_a_config_error_with_its_own_hint(fleet, monkeypatch):
    monkeypatch.setenv("TPE_EC2_TAGS", "Role=tpe-nothing")
    with pytest.raises(ConfigError) as error:
        load_inventory("ec2")
    assert error.value.message == ("inventories/ec2.py: EC2 discovery: no running instance in "
                                   "us-east-1 has the tags Role=tpe-nothing")
    assert "TPE_EC2_TAGS" in error.value.hint


def test_static_inventories_are_unchanged(monkeypatch):
    monkeypatch.setenv("TPE_PRODUCTION_HOSTS", "10.0.0.5,10.0.0.6")
    loaded = load_inventory("production")
    assert [h.name for h in loaded.hosts] == ["10.0.0.5", "10.0.0.6"]
    assert loaded.hosts[0].data.ec2_instance_id == ""  # the default of group_data/all.py


# --- the command line, against a small EC2 API on 127.0.0.1 --------------------------------


def _instances_xml(rows: list[tuple[str, str, str]]) -> str:
    items = "".join(
        f"<item><instanceId>{iid}</instanceId>"
        "<instanceState><code>16</code><name>running</name></instanceState>"
        f"<privateIpAddress>{ip}</privateIpAddress>"
        "<placement><availabilityZone>us-east-1a</availabilityZone></placement>"
        "<launchTime>2026-01-01T00:00:00.000Z</launchTime>"
        f"<tagSet><item><key>Name</key><value>{name}</value></item></tagSet></item>"
        for iid, name, ip in rows
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            "<requestId>r-1</requestId><reservationSet>"
            + (f"<item><reservationId>r-1</reservationId><instancesSet>{items}</instancesSet>"
               "</item>" if rows else "")
            + "</reservationSet></DescribeInstancesResponse>")


def _error_xml(code: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
            f"<Code>{code}</Code><Message>You are not authorized to perform this operation."
            "</Message></Error></Errors><RequestID>r-1</RequestID></Response>")


class Ec2Api:
    """Answers every request with (status, XML) and records the decoded form bodies."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body, self.requests = status, body, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                api.requests.append(parse_qs(self.rfile.read(length).decode()))
                payload = api.body.encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Test credentials (a secret to look for in the output), no metadata lookups, one try."""
    return {
        "AWS_ACCESS_KEY_ID": "AKIATESTONLY", "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"), "TPE_EC2_REGION": "us-east-1",
        "TPE_EC2_ATTEMPTS": "1", "TPE_EC2_TIMEOUT": "2", "TPE_STATE_DIR": str(tmp_path / "state"),
    }


def _bad_input(done, *expected: str) -> list[str]:
    """Exit 2, the error and its hint on two lines, no traceback, no secret."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  hint: ")
    for text in expected:
        assert text in done.stderr
    assert SECRET not in done.stdout + done.stderr
    return lines


def test_cli_discovers_and_caches_across_runs(cli_env, tmp_path):
    api = Ec2Api(200, _instances_xml([("i-2", "tpe-app-2", "10.9.0.2"),
                                      ("i-1", "tpe-app-1", "10.9.0.1")]))
    try:
        env = {**cli_env, "TPE_EC2_ENDPOINT_URL": api.url}
        # --limit with a name that is not there: discovery runs, nothing is connected to.
        done = run_cli("status", "-i", "ec2", "--limit", "nope", env=env)
        _bad_input(done, "--limit nope: no such host or group", "10.9.0.1, 10.9.0.2")
        assert len(api.requests) == 1
        sent = api.requests[0]
        assert sent["Action"] == ["DescribeInstances"]
        filters = {sent[k][0]: sent[k.replace(".Name", ".Value.1")][0]
                   for k in sent if k.startswith("Filter.") and k.endswith(".Name")}
        assert filters == {"tag:Role": "tpe-app", "tag:Environment": "production",
                           "instance-state-name": "running"}
        run_cli("status", "-i", "ec2", "--limit", "nope", env=env)
        assert len(api.requests) == 1  # the second run read the cache
        run_cli("status", "-i", "ec2", "--limit", "nope", env={**env, "TPE_EC2_REFRESH": "1"})
        assert len(api.requests) == 2
    finally:
        api.close()


@pytest.mark.parametrize("status, body, expected", [
    (403, _error_xml("UnauthorizedOperation"),
     "access denied to ec2:DescribeInstances in us-east-1 (UnauthorizedOperation)"),
    (200, _instances_xml([]), "no running instance in us-east-1 has the tags Role=tpe-app,"
                              "Environment=production"),
])
def test_cli_refusals_are_bad_input(cli_env, tmp_path, status, body, expected):
    api = Ec2Api(status, body)
    try:
        done = run_cli("deploy", "-i", "ec2", "--dry", env={**cli_env,
                                                             "TPE_EC2_ENDPOINT_URL": api.url})
    finally:
        api.close()
    _bad_input(done, f"error: inventories/ec2.py: EC2 discovery: {expected}")
    assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached, nothing changed


def test_cli_unreachable_aws_is_fast_and_clear(cli_env, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    done = run_cli("status", "-i", "ec2", "--dry", env={**cli_env, "TPE_EC2_ENDPOINT_URL": url})
    assert time.monotonic() - started < 30  # the process, imports included; AWS part ~1 s
    lines = _bad_input(done, f"cannot reach {url}", "TPE_EC2_ALLOW_STALE=1")
    assert "AKIATESTONLY" not in done.stderr and len(lines[0]) < 120


def test_cli_without_credentials_or_with_bad_settings(cli_env, tmp_path):
    env = {**cli_env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "TPE_EC2_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    _bad_input(run_cli("status", "-i", "ec2", env=env), "no AWS credentials found", "AWS_PROFILE")
    env["TPE_EC2_CACHE_TTL"] = "5 minutes"
    _bad_input(run_cli("status", "-i", "ec2", env=env), "TPE_EC2_CACHE_TTL='5 minutes'")
