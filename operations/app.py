"""The app's place on the host: directories owned by the app user, 0600 env files, and the
PM2 ecosystem file (cluster mode, cwd through `current`, env read from the env files)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from operations.privileges import as_root, connected_user
from operations.templates import template_path
from tpe_ops.settings import pm2_apps


def layout(deploy_to: str) -> dict[str, str]:
    """The release layout (DESIGN.md 3.1), one place for every module that needs a path."""
    shared = f"{deploy_to}/shared"
    return {
        "deploy_to": deploy_to,
        "releases": f"{deploy_to}/releases",
        "shared": shared,
        "logs": f"{shared}/logs",
        "current": f"{deploy_to}/current",
        "ecosystem": f"{shared}/ecosystem.config.js",
        "revisions": f"{deploy_to}/revisions.log",
    }


def backend_settings(data) -> dict[str, str]:
    """The backend's non-secret environment (also given to PM2, which stores it in dump.pm2)."""
    return {
        "NODE_ENV": data.app_node_env,
        "PORT": str(data.app_backend_port),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(data.redis_port),
        "DB_HOST": data.db_host,
        "DB_PORT": str(data.db_port),
        "DB_NAME": data.db_name,
        "DB_USER": data.db_user,
        "DB_POOL_MAX": str(data.db_pool_size),
        **{key: str(value) for key, value in data.app_backend_env.items()},
    }


def backend_env(data, secrets: dict[str, str]) -> dict[str, str]:
    """The backend's env file: settings and secrets. Linked into each release as
    `<backend>/.env`, it reaches the app without passing through PM2's process list."""
    env = backend_settings(data)
    for env_name, secret_name in data.app_backend_secrets.items():
        env[env_name] = secrets[secret_name]
    return env


def frontend_env(data) -> dict[str, str]:
    return {
        "NODE_ENV": data.app_node_env,
        "PORT": str(data.app_frontend_port),
        "NEXT_TELEMETRY_DISABLED": "1",
    }


@deploy("App directories, env files and PM2 ecosystem")
def app_layout(secrets: dict[str, str]) -> None:
    data = host.data
    paths = layout(data.app_deploy_to)
    owner = {"user": data.app_user, "group": data.app_user}
    # As the app user where we connect as it (EC2: ubuntu): no sudo round trips.
    root = {} if connected_user(host) == data.app_user else as_root(host)
    for key in ("deploy_to", "releases", "shared", "logs"):
        files.directory(
            name=f"Directory {paths[key]}", path=paths[key], mode="755", **owner, **root
        )
    for role, env in (("backend", backend_env(data, secrets)), ("frontend", frontend_env(data))):
        files.template(
            name=f"Env file shared/{role}.env (0600)",
            src=template_path("app.env.j2"),
            dest=f"{paths['shared']}/{role}.env",
            mode="600",
            env=env,
            **owner,
            **root,
        )
    files.template(
        name="PM2 ecosystem shared/ecosystem.config.js",
        src=template_path("ecosystem.config.js.j2"),
        dest=paths["ecosystem"],
        mode="644",
        apps=pm2_apps(data),
        paths=paths,
        envs={"backend": backend_settings(data), "frontend": frontend_env(data)},
        listen_timeout_ms=data.pm2_listen_timeout_ms,
        jinja_env_kwargs={"trim_blocks": True, "lstrip_blocks": True},
        **owner,
        **root,
    )
