"""EC2 discovery against moto's EC2 (pure logic: filters, order, address, cache, errors).

boto3 and moto are imported inside the fixtures, after tpe_ops (which imports pyinfra_cli):
pyinfra_cli patches ssl for gevent on import, and botocore imported before that patch breaks.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tpe_ops import ec2_discovery as ec2
from tpe_ops.errors import ConfigError

REGION = "us-east-1"
PRODUCTION = (("Role", "tpe-app"), ("Environment", "production"))
EXAMPLE_AMI = "ami-12c6146b"  # one of moto's built-in images (listing them all is slow)


def aws_test_env(monkeypatch: pytest.MonkeyPatch, cache_home: Path) -> None:
    """No real credentials, no instance-metadata lookups (169.254.169.254), a private cache."""
    for name in list(os.environ):
        if name.startswith(("TPE_EC2_", "AWS_")) and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # moto starts faster
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cache_home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(cache_home / "no-aws-credentials"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    ec2.forget()


def launch(client: Any, name: str | None, role: str = "tpe-app", environment: str = "production",
           az: str = "us-east-1a") -> str:
    tags = [{"Key": "Role", "Value": role}, {"Key": "Environment", "Value": environment}]
    if name:
        tags.append({"Key": "Name", "Value": name})
    reservation = client.run_instances(
        ImageId=EXAMPLE_AMI, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": az},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return reservation["Instances"][0]["InstanceId"]


def launch_fleet(client: Any) -> dict[str, str]:
    """Two roles, two environments, running and stopped; launched out of name order."""
    ids = {
        "tpe-app-10": launch(client, "tpe-app-10", az="us-east-1a"),
        "tpe-app-2": launch(client, "tpe-app-2", az="us-east-1b"),
        "tpe-app-1": launch(client, "tpe-app-1", az="us-east-1c"),
        "": launch(client, None),  # no Name tag: after the named ones
        "tpe-app-3 (stopped)": launch(client, "tpe-app-3"),
        "tpe-worker-1": launch(client, "tpe-worker-1", role="tpe-worker"),
        "tpe-stage-1": launch(client, "tpe-stage-1", environment="staging"),
    }
    client.stop_instances(InstanceIds=[ids["tpe-app-3 (stopped)"]])
    return ids


class CallCounter:
    """A client factory that counts DescribeInstances calls (one per page)."""

    def __init__(self) -> None:
        self.calls = 0
        self._make_client = ec2.make_client  # the real one, even once this replaces it

    def __call__(self, config: ec2.Ec2Config) -> Any:
        client = self._make_client(config)
        client.meta.events.register("before-call.ec2.DescribeInstances", self._count)
        return client

    def _count(self, **_: Any) -> None:
        self.calls += 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the with block ends


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """moto's EC2 in us-east-1 with the fleet above; yields (client, ids)."""
    aws_test_env(monkeypatch, tmp_path)
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("ec2", region_name=REGION)
        yield client, launch_fleet(client)
    ec2.forget()


def config(tmp_path: Path, **overrides: Any) -> ec2.Ec2Config:
    return ec2.Ec2Config(**{"region": REGION, "tags": PRODUCTION,
                            "cache_dir": tmp_path / "tpe-ops", **overrides})


def test_only_running_instances_with_the_tags_in_stable_order(aws, tmp_path):
    _, ids = aws
    found = ec2.discover(config(tmp_path))
    assert [i.name for i in found] == ["tpe-app-1", "tpe-app-2", "tpe-app-10", ""]
    assert [i.instance_id for i in found] == [ids[n] for n in ("tpe-app-1", "tpe-app-2",
                                                               "tpe-app-10", "")]
    assert [i.az for i in found[:3]] == ["us-east-1c", "us-east-1b", "us-east-1a"]
    assert all(i.private_ip and i.public_ip for i in found)


def test_staging_tags_find_the_staging_host(aws, tmp_path):
    _, ids = aws
    found = ec2.discover(config(tmp_path, tags=(("Role", "tpe-app"), ("Environment", "staging"))))
    assert [i.instance_id for i in found] == [ids["tpe-stage-1"]]


def test_a_key_given_twice_matches_either_value(aws, tmp_path):
    tags = ec2.parse_tags("Role=tpe-app, Role=tpe-worker ,Environment=production")
    assert ec2.describe_filters(tags)[0] == {"Name": "tag:Role",
                                             "Values": ["tpe-app", "tpe-worker"]}
    names = [i.name for i in ec2.discover(config(tmp_path, tags=tags))]
    assert names == ["tpe-app-1", "tpe-app-2", "tpe-app-10", "tpe-worker-1", ""]


def test_every_page_is_read(aws, tmp_path):
    counter = CallCounter()
    found = ec2.query_aws(config(tmp_path), counter, page_size=5)
    assert len(found) == 4 and counter.calls == 1
    client, _ = aws
    for n in range(4, 9):
        launch(client, f"tpe-app-{n}")
    counter.calls = 0
    found = ec2.query_aws(config(tmp_path), counter, page_size=5)
    assert len(found) == 9 and counter.calls == 2  # 9 running app hosts: two pages of 5


def test_host_entries_by_private_or_public_address(aws, tmp_path):
    found = ec2.discover(config(tmp_path))
    private = ec2.host_entries(found, "private")
    public = ec2.host_entries(found, "public")
    assert [name for name, _ in private] == [i.private_ip for i in found]
    assert [name for name, _ in public] == [i.public_ip for i in found]
    assert private[0][1] == {"ec2_instance_id": found[0].instance_id, "ec2_name": "tpe-app-1",
                             "ec2_az": "us-east-1c"}


def test_public_falls_back_to_dns_and_a_missing_address_is_an_error():
    dns_only = ec2.Instance("i-1", "a", "az", "t", "10.0.0.1", "", "ec2-1.compute.amazonaws.com")
    assert ec2.host_entries([dns_only], "public")[0][0] == "ec2-1.compute.amazonaws.com"
    private_only = ec2.Instance("i-2", "b", "az", "t", "10.0.0.2", "", "")
    with pytest.raises(ConfigError, match="i-2 .b. has no public address") as error:
        ec2.host_entries([private_only], "public")
    assert "TPE_EC2_ADDRESS=private" in error.value.hint


def test_two_instances_with_one_address_are_refused():
    twins = [ec2.Instance(f"i-{n}", "", "az", "t", "10.0.0.9", "", "") for n in (1, 2)]
    with pytest.raises(ConfigError, match="share the address 10.0.0.9"):
        ec2.host_entries(twins, "private")


def test_order_is_name_naturally_then_launch_then_id():
    def instance(iid: str, name: str, launched: str) -> ec2.Instance:
        return ec2.Instance(iid, name, "az", launched, "10.0.0.1", "", "")

    shuffled = [instance("i-9", "", "2024-01-01"), instance("i-5", "web-10", "2024-01-01"),
                instance("i-4", "web-2", "2024-01-03"), instance("i-3", "web-2", "2024-01-02"),
                instance("i-1", "", "2024-01-01"), instance("i-2", "web-2", "2024-01-02")]
    assert [i.instance_id for i in ec2.ordered(shuffled)] == ["i-2", "i-3", "i-4", "i-5", "i-1",
                                                              "i-9"]


def test_second_load_within_the_ttl_asks_aws_nothing(aws, tmp_path):
    settings, counter = config(tmp_path, cache_ttl=300), CallCounter()
    first = ec2.discover(settings, counter, now=lambda: 1000.0)
    assert counter.calls == 1
    assert settings.cache_file.stat().st_mode & 0o777 == 0o600
    assert settings.cache_file.parent.stat().st_mode & 0o777 == 0o700
    ec2.forget()  # a new process
    assert ec2.discover(settings, counter, now=lambda: 1299.0) == first
    assert counter.calls == 1  # cache hit
    ec2.forget()
    assert ec2.discover(settings, counter, now=lambda: 1300.0) == first
    assert counter.calls == 2  # expired: asked again, and cached again
    assert json.loads(settings.cache_file.read_text())["fetched_at"] == 1300.0


def test_refresh_asks_aws_and_ttl_zero_never_caches(aws, tmp_path):
    counter = CallCounter()
    ec2.discover(config(tmp_path), counter)
    ec2.forget()
    ec2.discover(config(tmp_path, refresh=True), counter)
    assert counter.calls == 2
    uncached = config(tmp_path / "other", cache_ttl=0)
    for _ in range(2):
        ec2.forget()
        ec2.discover(uncached, counter)
    assert counter.calls == 4 and not uncached.cache_file.exists()


def test_one_process_sees_one_host_list(aws, tmp_path):
    """pyinfra phases reload the inventory: a host must not vanish between build and switch."""
    client, ids = aws
    counter = CallCounter()
    before = ec2.discover(config(tmp_path, cache_ttl=0), counter)
    client.terminate_instances(InstanceIds=[ids["tpe-app-2"]])
    assert ec2.discover(config(tmp_path, cache_ttl=0, refresh=True), counter) == before
    assert counter.calls == 1
    ec2.forget()
    after = ec2.discover(config(tmp_path, cache_ttl=0), counter)
    assert [i.name for i in after] == ["tpe-app-1", "tpe-app-10", ""]


def test_corrupt_or_foreign_cache_is_ignored_and_rewritten(aws, tmp_path):
    settings, counter = config(tmp_path), CallCounter()
    settings.cache_dir.mkdir(parents=True)
    for junk in ("{not json", json.dumps({"version": 1, "key": "other", "fetched_at": 1e12,
                                          "instances": []}), json.dumps([1, 2])):
        settings.cache_file.write_text(junk)
        ec2.forget()
        assert len(ec2.discover(settings, counter)) == 4
        assert json.loads(settings.cache_file.read_text())["key"] == settings.cache_key
    assert counter.calls == 3


def test_zero_instances_matched_is_clear_and_not_cached(aws, tmp_path):
    settings = config(tmp_path, tags=(("Role", "tpe-ap"),))
    with pytest.raises(ConfigError) as error:
        ec2.discover(settings)
    assert str(error.value.message) == (
        "EC2 discovery: no running instance in us-east-1 has the tags Role=tpe-ap")
    assert "TPE_EC2_TAGS" in error.value.hint and "TPE_EC2_REGION" in error.value.hint
    assert not settings.cache_file.exists()


def test_unreachable_endpoint_fails_fast_and_clearly(monkeypatch, tmp_path):
    aws_test_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTONLY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-print-this-secret")
    settings = config(tmp_path, endpoint_url=f"http://127.0.0.1:{closed_port()}", attempts=2,
                      timeout=1)
    started = time.monotonic()
    with pytest.raises(ec2.Ec2Unavailable) as error:
        ec2.discover(settings)
    assert time.monotonic() - started < 5
    assert error.value.message == (
        f"EC2 discovery: cannot reach {settings.endpoint_url} (EndpointConnectionError)")
    assert "TPE_EC2_ALLOW_STALE=1" in error.value.hint
    assert "never-print-this-secret" not in str(error.value)


def test_stale_cache_serves_only_when_allowed(monkeypatch, tmp_path, caplog):
    aws_test_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTONLY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-print-this-secret")
    down = config(tmp_path, endpoint_url=f"http://127.0.0.1:{closed_port()}", attempts=1)
    kept = [ec2.Instance("i-1", "tpe-app-1", "us-east-1a", "t", "10.0.0.1", "", "")]
    ec2.write_cache(down, kept, now=time.time() - 3600)  # an hour old: expired
    with pytest.raises(ec2.Ec2Unavailable):
        ec2.discover(down)
    allowed = config(tmp_path, endpoint_url=down.endpoint_url, attempts=1, allow_stale=True)
    assert ec2.discover(allowed) == kept
    assert "using the host list cached 60 min ago" in caplog.text


def test_no_credentials_is_clear(monkeypatch, tmp_path):
    aws_test_env(monkeypatch, tmp_path)
    settings = config(tmp_path, endpoint_url=f"http://127.0.0.1:{closed_port()}", attempts=1)
    with pytest.raises(ec2.Ec2Unavailable, match="no AWS credentials found") as error:
        ec2.discover(settings)
    assert "AWS_PROFILE" in error.value.hint


@pytest.mark.parametrize("code, expected", [
    ("UnauthorizedOperation", "access denied to ec2:DescribeInstances in us-east-1"),
    ("AuthFailure", "AWS refused the credentials (AuthFailure)"),
    ("Throttling", "DescribeInstances failed: Throttling"),
])
def test_aws_refusals_are_named(tmp_path, code, expected):
    from botocore.exceptions import ClientError

    refusal = ClientError({"Error": {"Code": code, "Message": "no"}}, "DescribeInstances")
    error = ec2.aws_error(config(tmp_path), refusal)
    assert isinstance(error, ec2.Ec2Unavailable) and expected in error.message


def test_config_from_env_defaults(monkeypatch, tmp_path):
    aws_test_env(monkeypatch, tmp_path)
    settings = ec2.config_from_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert settings.region == "us-east-1"  # the runbook's region when AWS names none
    assert settings.tags == PRODUCTION and settings.environment == "production"
    assert (settings.address, settings.cache_ttl, settings.refresh) == ("private", 300, False)
    assert settings.cache_file.parent == tmp_path / "tpe-ops"
    assert settings.cache_file.name.startswith("ec2-us-east-1-")
    other_account = ec2.config_from_env({"XDG_CACHE_HOME": str(tmp_path), "AWS_PROFILE": "b"})
    assert other_account.cache_file != settings.cache_file  # never another account's hosts
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    staging = ec2.config_from_env({"TPE_EC2_ENVIRONMENT": "staging", "TPE_EC2_ADDRESS": "public",
                                   "TPE_EC2_CACHE_TTL": "0", "TPE_EC2_REFRESH": "1"})
    assert staging.region == "eu-west-2"
    assert staging.tags == (("Role", "tpe-app"), ("Environment", "staging"))
    assert (staging.address, staging.cache_ttl, staging.refresh) == ("public", 0, True)
    assert staging.cache_key != settings.cache_key


@pytest.mark.parametrize("name, value, expected", [
    ("TPE_EC2_TAGS", "Role", "'Role' is not Key=Value"),
    ("TPE_EC2_TAGS", "Role=tpe-app,,", "'' is not Key=Value"),
    ("TPE_EC2_ADDRESS", "both", "TPE_EC2_ADDRESS='both': expected one of private, public"),
    ("TPE_EC2_ENVIRONMENT", "dev", "expected one of production, staging"),
    ("TPE_EC2_CACHE_TTL", "-1", "TPE_EC2_CACHE_TTL='-1' is not a number >= 0"),
    ("TPE_EC2_CACHE_TTL", "5m", "TPE_EC2_CACHE_TTL='5m' is not a number"),
    ("TPE_EC2_REFRESH", "maybe", "TPE_EC2_REFRESH='maybe' is not a yes/no value"),
    ("TPE_EC2_REGION", "us-east1", "EC2 region 'us-east1' is not a region name"),
    ("TPE_EC2_ATTEMPTS", "0", "TPE_EC2_ATTEMPTS='0' is not a number >= 1"),
])
def test_bad_settings_name_the_variable(monkeypatch, tmp_path, name, value, expected):
    aws_test_env(monkeypatch, tmp_path)
    with pytest.raises(ConfigError) as error:
        ec2.config_from_env({name: value})
    assert expected in error.value.message and error.value.hint
