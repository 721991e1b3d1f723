"""Redis on the app host: installed, configured from a template, restarted only on change."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from operations.privileges import as_root
from operations.system import ConfigNewerThanService, service
from operations.templates import template_path

REDIS_CONF = "/etc/redis/redis.conf"
REDIS_UNIT = "redis-server"


@deploy("Redis cache")
def redis_cache() -> None:
    root = as_root(host)
    apt.packages(
        name="Install redis-server", packages=["redis-server"], no_recommends=True, **root
    )
    # Read before the template runs: catches a restart lost by an earlier failed run.
    stale = host.get_fact(ConfigNewerThanService, path=REDIS_CONF, unit=REDIS_UNIT, **root)
    config = files.template(
        name="Render redis.conf",
        src=template_path("redis.conf.j2"),
        dest=REDIS_CONF,
        user="redis",
        group="redis",
        mode="640",
        **root,
    )
    service(
        name="Restart redis-server (config changed)",
        unit=REDIS_UNIT,
        restarted=True,
        _if=lambda: config.did_change() or stale,
        **root,
    )
    service(name="Enable and start redis-server", unit=REDIS_UNIT, **root)
