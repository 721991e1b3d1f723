"""Reference for the benchmark: a hand-written pyinfra deploy converging a similar state with
pyinfra's stock operations (run with the `pyinfra` CLI), as in the issue's 2.7 s figure."""

from pyinfra import host
from pyinfra.operations import apt, files, npm, systemd

apt.packages(name="Node.js and Redis", packages=["nodejs", "npm", "redis-server"], _sudo=True)
npm.packages(name="pm2", packages=["pm2"], _sudo=True, _env={"npm_config_unicode": "true"})
for path in ("releases", "shared", "shared/logs"):
    files.directory(name=path, path=f"/home/ubuntu/The-Power100-Experience/{path}",
                    user="ubuntu", group="ubuntu", _sudo=True)
files.file(name="redis config present", path="/etc/redis/redis.conf", _sudo=True)
systemd.service(name="redis", service="redis-server", running=True, enabled=True, _sudo=True)
systemd.service(name="pm2 unit", service=f"pm2-{host.data.ssh_user}", enabled=True, _sudo=True,
                running=None)
