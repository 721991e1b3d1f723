"""EC2 discovery: the app servers found by tag through boto3, for inventories/ec2.py.

An inventory file cannot take command-line options, so everything comes from the environment:

  TPE_EC2_REGION       region (else AWS_REGION / AWS_DEFAULT_REGION / the AWS profile's region,
                       else us-east-1, the runbook's region)
  TPE_EC2_TAGS         "Key=Value,Key=Value": every tag must match (a key given twice matches
                       either value); default "Role=tpe-app,Environment=<TPE_EC2_ENVIRONMENT>"
  TPE_EC2_ENVIRONMENT  production | staging (default production): the hosts' deploy_environment
  TPE_EC2_ADDRESS      private | public (default private): the address hosts are named and
                       reached by (public: the public IP, else the public DNS name)
  TPE_EC2_CACHE_TTL    seconds a discovered host list is reused (default 300; 0 disables)
  TPE_EC2_REFRESH      1: ask AWS now, whatever the cache holds
  TPE_EC2_ALLOW_STALE  1: when AWS cannot be asked, use the last cached list, however old
  TPE_EC2_ENDPOINT_URL another EC2 endpoint (a VPC endpoint, or a test server)
  TPE_EC2_TIMEOUT      seconds to connect and to read (default 5)
  TPE_EC2_ATTEMPTS     attempts per AWS call, retries included (default 3)

Credentials are boto3's own chain (AWS_PROFILE, environment, ~/.aws, an instance role); no
secret is read, printed or cached here (the profile name and access key id only keep the
caches of two accounts apart). Only running instances are returned, sorted by their
`Name` tag (natural order: app-2 before app-10), then launch time, then id: rolling deploys go
in inventory order, so the order must not change between runs. The cache is a JSON file under
$XDG_CACHE_HOME/tpe-ops (default ~/.cache/tpe-ops), one per region, tag set, endpoint and AWS
identity. One process keeps the first list it got (pyinfra phases re-read the inventory).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

# pyinfra's CLI module patches ssl for gevent when imported; botocore must be imported after
# that patch or creating an SSL context recurses forever. So boto3 is imported inside functions.
import pyinfra_cli  # noqa: F401

from tpe_ops.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"  # the runbook's RDS host is in us-east-1
DEFAULT_ROLE_TAG = "Role=tpe-app"
ENVIRONMENTS = ("production", "staging")
ADDRESSES = ("private", "public")
CACHE_VERSION = 1
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
_BAD_CREDENTIALS = {
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "RequestExpired", "UnrecognizedClientException",
}
_FIX_ENV = "fix it in the environment (see the EC2 discovery section of README.md)"


@dataclass(frozen=True)
class Ec2Config:
    region: str
    tags: tuple[tuple[str, str], ...]
    environment: str = "production"
    address: str = "private"
    cache_ttl: float = 300.0
    refresh: bool = False
    allow_stale: bool = False
    endpoint_url: str | None = None
    timeout: float = 5.0
    attempts: int = 3
    cache_dir: Path = Path("~/.cache/tpe-ops").expanduser()
    identity: str = ""  # AWS_PROFILE / access key id: another account must not share a cache

    @property
    def cache_key(self) -> str:
        """What the answer depends on (the address choice does not: instances are cached)."""
        identity = json.dumps([self.region, sorted(self.tags), self.endpoint_url, self.identity])
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    @property
    def cache_file(self) -> Path:
        return self.cache_dir / f"ec2-{self.region}-{self.cache_key}.json"

    @property
    def tags_text(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.tags)


@dataclass(frozen=True)
class Instance:
    instance_id: str
    name: str
    az: str
    launch_time: str  # ISO 8601, UTC
    private_ip: str
    public_ip: str
    public_dns: str

    def address(self, which: str) -> str:
        if which == "private":
            return self.private_ip
        return self.public_ip or self.public_dns


# --- configuration (pure: the environment is a parameter) -----------------------------------


def parse_tags(text: str) -> tuple[tuple[str, str], ...]:
    """'Role=tpe-app,Environment=production' -> (('Role', 'tpe-app'), ('Environment', ...))."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        if not item or not sep or not key.strip() or not value.strip():
            raise ConfigError(
                f"TPE_EC2_TAGS: {item!r} is not Key=Value",
                "write the tags as Key=Value,Key=Value, e.g. Role=tpe-app,Environment=production",
            )
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ConfigError(f"{name}={env[name]!r} is not a yes/no value", f"set {name}=1 or 0")
    return value in _TRUE


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{name}={raw!r} is not a number >= {minimum:g}", _FIX_ENV)
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name}={env[name]!r}: expected one of {', '.join(choices)}", _FIX_ENV)
    return value


def _default_region() -> str:
    """The region boto3 would use (AWS_DEFAULT_REGION, the profile's), else the runbook's."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session().region_name or DEFAULT_REGION
    except ProfileNotFound as error:
        raise ConfigError(f"EC2 discovery: {error}", "fix AWS_PROFILE or ~/.aws/config") from None


def config_from_env(env: Mapping[str, str] | None = None) -> Ec2Config:
    """Read and check every TPE_EC2_* variable (a typo fails here, before any AWS call)."""
    env = os.environ if env is None else env
    region = (env.get("TPE_EC2_REGION") or env.get("AWS_REGION") or "").strip()
    region = region or _default_region()
    if not _REGION.match(region):
        raise ConfigError(f"EC2 region {region!r} is not a region name", "set e.g. "
                          "TPE_EC2_REGION=us-east-1")
    environment = _choice(env, "TPE_EC2_ENVIRONMENT", ENVIRONMENTS)
    tags = env.get("TPE_EC2_TAGS", "").strip()
    cache_home = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Ec2Config(
        region=region,
        tags=parse_tags(tags or f"{DEFAULT_ROLE_TAG},Environment={environment}"),
        environment=environment,
        address=_choice(env, "TPE_EC2_ADDRESS", ADDRESSES),
        cache_ttl=_number(env, "TPE_EC2_CACHE_TTL", 300.0, 0),
        refresh=_flag(env, "TPE_EC2_REFRESH"),
        allow_stale=_flag(env, "TPE_EC2_ALLOW_STALE"),
        endpoint_url=env.get("TPE_EC2_ENDPOINT_URL", "").strip() or None,
        timeout=_number(env, "TPE_EC2_TIMEOUT", 5.0, 0.1),
        attempts=int(_number(env, "TPE_EC2_ATTEMPTS", 3, 1)),
        cache_dir=Path(cache_home).expanduser() / "tpe-ops",
        identity=f"{env.get('AWS_PROFILE', '')}/{env.get('AWS_ACCESS_KEY_ID', '')}",
    )


# --- the AWS answer, turned into instances (pure) -------------------------------------------


def describe_filters(tags: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """EC2 filters: each tag key (values of one key OR'ed), and running instances only."""
    by_key: dict[str, list[str]] = {}
    for key, value in tags:
        by_key.setdefault(key, []).append(value)
    filters = [{"Name": f"tag:{key}", "Values": values} for key, values in by_key.items()]
    return [*filters, {"Name": "instance-state-name", "Values": ["running"]}]


def instances_from_pages(pages: Iterable[Mapping[str, Any]]) -> list[Instance]:
    """DescribeInstances pages -> running instances, in the stable inventory order."""
    found = []
    for page in pages:
        for reservation in page.get("Reservations", []):
            for raw in reservation.get("Instances", []):
                if raw.get("State", {}).get("Name", "running") != "running":
                    continue  # the filter already says so; a stale page must not add a host
                found.append(_instance(raw))
    return ordered(found)


def _instance(raw: Mapping[str, Any]) -> Instance:
    tags = {tag["Key"]: tag["Value"] for tag in raw.get("Tags", [])}
    launched = raw.get("LaunchTime")
    return Instance(
        instance_id=raw["InstanceId"],
        name=tags.get("Name", ""),
        az=raw.get("Placement", {}).get("AvailabilityZone", ""),
        launch_time=launched.astimezone(UTC).isoformat() if launched else "",
        private_ip=raw.get("PrivateIpAddress", ""),
        public_ip=raw.get("PublicIpAddress", ""),
        public_dns=raw.get("PublicDnsName", ""),
    )


def _natural(text: str) -> tuple:
    """'tpe-app-10' after 'tpe-app-2'."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text))


def ordered(instances: Iterable[Instance]) -> list[Instance]:
    """Named instances first by Name, then launch time, then id: stable between runs."""
    return sorted(instances, key=lambda i: (not i.name, _natural(i.name), i.launch_time,
                                            i.instance_id))


def host_entries(instances: list[Instance], address: str) -> list[tuple[str, dict[str, str]]]:
    """(host name, host data) per instance; the name is the address SSH connects to."""
    entries = []
    for instance in instances:
        name = instance.address(address)
        if not name:
            raise ConfigError(
                f"EC2 instance {instance.instance_id} ({instance.name or 'no Name tag'}) "
                f"has no {address} address",
                "give it one, or set TPE_EC2_ADDRESS="
                f"{'private' if address == 'public' else 'public'}",
            )
        entries.append((name, {
            "ec2_instance_id": instance.instance_id,
            "ec2_name": instance.name,
            "ec2_az": instance.az,
        }))
    names = [name for name, _ in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"EC2 instances share the address {', '.join(duplicates)}",
            "narrow TPE_EC2_TAGS to one VPC, or use TPE_EC2_ADDRESS=public",
        )
    return entries


# --- the cache file --------------------------------------------------------------------------


def read_cache(config: Ec2Config) -> tuple[float, list[Instance]] | None:
    """(fetched_at, instances), or None when the file is missing or not ours (corrupt, other
    version or key): such a file is ignored and replaced by the next successful query."""
    try:
        payload = json.loads(config.cache_file.read_text())
        if payload["version"] != CACHE_VERSION or payload["key"] != config.cache_key:
            return None
        return float(payload["fetched_at"]), [Instance(**item) for item in payload["instances"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.debug("ignoring unreadable EC2 cache %s: %s", config.cache_file, error)
        return None


def write_cache(config: Ec2Config, instances: list[Instance], now: float) -> None:
    """Atomically (a reader never sees half a file), private to the user (addresses, ids)."""
    config.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = {
        "version": CACHE_VERSION, "key": config.cache_key, "fetched_at": now,
        "region": config.region, "tags": config.tags_text,
        "instances": [asdict(instance) for instance in instances],
    }
    handle, temp = tempfile.mkstemp(dir=config.cache_dir, prefix=".ec2-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:  # mkstemp creates it 0600
            json.dump(payload, out, indent=1)
        os.replace(temp, config.cache_file)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --- asking AWS --------------------------------------------------------------------------------


def make_client(config: Ec2Config) -> Any:
    """An EC2 client with short timeouts and bounded retries: an unreachable API must fail
    in seconds, not hang a deploy or a scheduled health check."""
    import boto3
    import botocore.session
    from botocore.config import Config

    retries = {"max_attempts": config.attempts, "mode": "standard"}
    settings = Config(connect_timeout=config.timeout, read_timeout=config.timeout,
                      retries=retries)
    # A new session each time (credentials are read afresh), sharing the parsed AWS models.
    session = botocore.session.get_session()
    session.register_component("data_loader", _aws_models())
    return boto3.session.Session(botocore_session=session, region_name=config.region).client(
        "ec2", endpoint_url=config.endpoint_url, config=settings)


@functools.cache
def _aws_models() -> Any:
    """botocore's loader caches what it parsed (~0.4 s of JSON per session otherwise)."""
    from botocore.loaders import create_loader

    return create_loader()


ClientFactory = Callable[[Ec2Config], Any]


def query_aws(config: Ec2Config, client_factory: ClientFactory | None = None,
              page_size: int | None = None) -> list[Instance]:
    """All pages of DescribeInstances with our filters; AWS failures become a clear error."""
    try:
        client = (client_factory or make_client)(config)  # looked up now: tests count calls
        paginator = client.get_paginator("describe_instances")
        paging = {"PageSize": page_size} if page_size else {}
        pages = paginator.paginate(Filters=describe_filters(config.tags),
                                   PaginationConfig=paging)
        return instances_from_pages(pages)
    except Exception as error:  # botocore's errors: classified, anything else propagates
        raise aws_error(config, error) from None


def aws_error(config: Ec2Config, error: Exception) -> Exception:
    """The one or two lines a user needs: what went wrong, how to fix it (never a secret:
    botocore's messages name the endpoint and the error code, not the credentials)."""
    from botocore import exceptions as aws

    where = config.endpoint_url or f"the EC2 API of {config.region}"
    stale_hint = "; or TPE_EC2_ALLOW_STALE=1 to use the last cached host list"
    if isinstance(error, aws.NoCredentialsError | aws.PartialCredentialsError):
        return Ec2Unavailable(
            "EC2 discovery: no AWS credentials found",
            "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run it where "
            "an instance role applies" + stale_hint,
        )
    if isinstance(error, aws.ProfileNotFound):
        return ConfigError(f"EC2 discovery: {error}", "fix AWS_PROFILE or ~/.aws/config")
    if isinstance(error, aws.HTTPClientError | aws.EndpointConnectionError):
        return Ec2Unavailable(
            f"EC2 discovery: cannot reach {where} ({type(error).__name__})",
            "check the network, proxy and TPE_EC2_ENDPOINT_URL" + stale_hint,
        )
    if isinstance(error, aws.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in _DENIED:
            return Ec2Unavailable(
                f"EC2 discovery: access denied to ec2:DescribeInstances in {config.region} "
                f"({code})",
                "grant ec2:DescribeInstances to the IAM identity in use (aws sts "
                "get-caller-identity shows which)" + stale_hint,
            )
        if code in _BAD_CREDENTIALS:
            return Ec2Unavailable(
                f"EC2 discovery: AWS refused the credentials ({code})",
                "renew them (aws sso login, or new access keys), and check the system clock"
                + stale_hint,
            )
        return Ec2Unavailable(f"EC2 discovery: DescribeInstances failed: {code}",
                              "check the region and TPE_EC2_TAGS" + stale_hint)
    if isinstance(error, aws.BotoCoreError):
        return Ec2Unavailable(f"EC2 discovery failed: {type(error).__name__}",
                              "check the AWS configuration" + stale_hint)
    return error


class Ec2Unavailable(ConfigError):
    """AWS could not answer (unreachable, no credentials, denied): a stale cache may serve."""


# --- discovery: memo, cache, AWS --------------------------------------------------------------

# One run sees one host list: pyinfra phases re-read the inventory file (LoadedInventory.fresh),
# and hosts must not appear or vanish between the build and the switch of a deploy.
_MEMO: dict[str, list[Instance]] = {}


def forget() -> None:
    """Drop the in-process memo (tests; a long-running process that wants new hosts)."""
    _MEMO.clear()


def discover(config: Ec2Config, client_factory: ClientFactory | None = None,
             now: Callable[[], float] = time.time) -> list[Instance]:
    """The running instances with the tags: memo, else a fresh cache, else AWS (then cached)."""
    if config.cache_key in _MEMO:
        return _MEMO[config.cache_key]
    cached = read_cache(config)
    if cached and not config.refresh and config.cache_ttl > 0:
        age = now() - cached[0]
        if 0 <= age < config.cache_ttl:
            _MEMO[config.cache_key] = cached[1]
            return cached[1]
    try:
        instances = query_aws(config, client_factory)
    except Ec2Unavailable as error:
        if not (config.allow_stale and cached):
            raise
        minutes = max(0.0, now() - cached[0]) / 60
        log.warning("warning: %s; using the host list cached %.0f min ago (TPE_EC2_ALLOW_STALE)",
                    error.message, minutes)
        instances = cached[1]
    else:
        if not instances:  # never cached: starting the instances must work at once
            raise ConfigError(
                f"EC2 discovery: no running instance in {config.region} has the tags "
                f"{config.tags_text}",
                "check TPE_EC2_TAGS and TPE_EC2_REGION (or AWS_DEFAULT_REGION), or start the "
                "instances",
            )
        if config.cache_ttl > 0:
            write_cache(config, instances, now())
    _MEMO[config.cache_key] = instances
    return instances


def inventory_hosts(env: Mapping[str, str] | None = None
                    ) -> tuple[list[tuple[str, dict[str, str]]], str]:
    """For inventories/ec2.py: ([(address, host data)], deploy_environment)."""
    config = config_from_env(env)
    return host_entries(discover(config), config.address), config.environment
