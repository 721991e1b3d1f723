"""Declarative host state of an app server (runbook section 1), as one pyinfra deploy."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from operations import nodejs, pm2
from operations.app import app_layout
from operations.db import install_client
from operations.postgres import local_postgres
from operations.privileges import as_root, as_user, home_of
from operations.redis import redis_cache
from operations.system import ServiceManager, apt_lists

# npm draws `npm list` trees in ASCII without a UTF-8 locale (pyinfra facts parse unicode).
NPM_ENV = {"npm_config_unicode": "true"}


def db_password(data, secrets: dict[str, str]) -> str | None:
    name = data.app_backend_secrets.get("DB_PASSWORD")
    return secrets.get(name) if name else None


@deploy("Provision app host")
def provision_host(secrets_by_host: dict[str, dict[str, str]]) -> None:
    data = host.data
    secrets = secrets_by_host[host.name]
    root = as_root(host)
    app_user = as_user(host, data.app_user)

    apt_lists(name="apt package lists", **root)
    nodejs.installed(
        name=f"Node.js {data.node_major_version} ({data.node_install_method})",
        major=data.node_major_version,
        method=data.node_install_method,
        **root,
    )
    pm2.installed(name=f"PM2 {data.pm2_version}", version=data.pm2_version, _env=NPM_ENV, **root)
    if data.pm2_startup and host.get_fact(ServiceManager) == "systemd":
        pm2.startup(
            name=f"PM2 startup unit pm2-{data.app_user}",
            user=data.app_user,
            home=home_of(data.app_user),
            **root,
        )
    pm2.logrotate(
        name=f"PM2 log rotation (pm2-logrotate {data.pm2_logrotate_version})",
        version=data.pm2_logrotate_version,
        settings={
            "max_size": data.pm2_logrotate_max_size,
            "retain": data.pm2_logrotate_retain,
            "compress": data.pm2_logrotate_compress,
        },
        **app_user,
    )
    redis_cache()
    if data.db_provision_local:
        local_postgres(password=db_password(data, secrets))
    install_client()
    app_layout(secrets=secrets)
