"""The one place where inventory and group data are validated.

Each setting has a type; group_data/all.py holds the documented defaults. Validation names
the file and the key, so a typo fails before anything changes on any host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tpe_ops.errors import ConfigError

# pyinfra's own connection settings that may appear in inventory data.
PYINFRA_KEYS = {
    "ssh_hostname": str,
    "ssh_port": int,
    "ssh_user": str,
    "ssh_key": str,
    "ssh_key_password": str,
    "ssh_known_hosts_file": str,
    "ssh_strict_host_key_checking": str,
    "ssh_connect_retries": int,
    "ssh_connect_retry_min_delay": (int, float),
    "ssh_connect_retry_max_delay": (int, float),
    "ssh_config_file": str,
    "ssh_forward_agent": bool,
    "ssh_paramiko_connect_kwargs": dict,
}

NUMBER = (int, float)

# key -> accepted type(s). Everything the tool reads from host data is listed here.
SCHEMA: dict[str, type | tuple[type, ...]] = {
    "deploy_environment": str,
    "deploy_verify_inventory": str,
    # set per host by inventories/ec2.py (EC2 discovery)
    "ec2_instance_id": str,
    "ec2_name": str,
    "ec2_az": str,
    "app_migrations_dir": str,
    "db_migrations_table": str,
    "app_name": str,
    "app_repo": str,
    "app_repo_subdir": str,
    "app_branch": str,
    "app_source": str,
    "app_user": str,
    "app_deploy_to": str,
    "app_node_env": str,
    "app_keep_releases": int,
    "app_backend_port": int,
    "app_frontend_port": int,
    "app_backend_dir": str,
    "app_frontend_dir": str,
    "app_backend_env": dict,
    "app_backend_secrets": dict,
    "app_build_command": str,
    "app_build_outputs": list,
    "app_migrate_command": str,
    "app_warm_cache_command": str,
    "node_major_version": int,
    "node_install_method": str,
    "pm2_version": str,
    "pm2_logrotate_version": str,
    "pm2_startup": bool,
    "pm2_listen_timeout_ms": dict,
    "pm2_logrotate_max_size": str,
    "pm2_logrotate_retain": int,
    "pm2_logrotate_compress": bool,
    "pm2_apps": list,
    "redis_bind": str,
    "redis_port": int,
    "redis_maxmemory": str,
    "redis_maxmemory_policy": str,
    "redis_save": str,
    "db_host": str,
    "db_port": int,
    "db_name": str,
    "db_user": str,
    "db_pool_size": int,
    "db_provision_local": bool,
    "db_access": str,
    "db_client_install": bool,
    "db_client_package": str,
    "db_slow_query_ms": NUMBER,
    "db_slow_query_top": int,
    "db_index_rarely_used_scans": int,
    "db_backup_dir": str,
    "db_backup_keep": int,
    "db_backup_local_dir": str,
    "db_backup_local_keep": int,
    "secrets_file": str,
    "secrets_generate_missing": bool,
    "health_endpoint": str,
    "health_public_url": str,
    "health_public_endpoints": list,
    "health_stabilisation_seconds": NUMBER,
    "health_rollback_stabilisation_seconds": NUMBER,
    "health_unhealthy_grace_seconds": NUMBER,
    "health_timeout_seconds": NUMBER,
    "health_sample_requests": int,
    # diagnose (runbook section 4)
    "diagnose_log_lines": int,
    "diagnose_recheck_seconds": NUMBER,
    "threshold_p95_warning_ms": NUMBER,
    "threshold_p95_critical_ms": NUMBER,
    "threshold_error_rate_warning_pct": NUMBER,
    "threshold_error_rate_critical_pct": NUMBER,
    "threshold_db_pool_warning_pct": NUMBER,
    "threshold_pm2_restarts_per_hour": int,
    "threshold_redis_hit_rate_warning_pct": NUMBER,
    "threshold_redis_hit_rate_target_pct": NUMBER,
    "threshold_disk_warning_pct": NUMBER,
    "threshold_disk_critical_pct": NUMBER,
    "threshold_baseline_p95_ms": NUMBER,
    "threshold_target_p95_ms": NUMBER,
    "threshold_rollback_error_rate_pct": NUMBER,
    "threshold_rollback_error_minutes": NUMBER,
    "threshold_rollback_unavailable_minutes": NUMBER,
    "threshold_rollback_degradation_pct": NUMBER,
    "threshold_db_pool_critical_pct": NUMBER,
    "threshold_memory_warning_pct": NUMBER,
    "threshold_memory_critical_pct": NUMBER,
    "threshold_cpu_warning_pct": NUMBER,
    "threshold_cpu_critical_pct": NUMBER,
    "threshold_rollback_degradation_minutes": NUMBER,
    "threshold_rollback_sustained_error_rate_pct": NUMBER,
    "threshold_rollback_sustained_error_minutes": NUMBER,
    "threshold_rollback_max_gap_seconds": NUMBER,
    # maintain (runbook section 7)
    "maintain_error_log_lines": int,
    "maintain_benchmark_requests": int,
    "maintain_audit_requests": int,
    "maintain_log_archive_after_days": int,
    "maintain_log_archive_keep_days": int,
    "maintain_drill_inventory": str,
    # drill (disaster-recovery drill, issue 6)
    "drill_rto_goal_seconds": NUMBER,
    "drill_rpo_goal_seconds": NUMBER,
    "drill_rollback_goal_seconds": NUMBER,
    "drill_benchmark_requests": int,
    "drill_admin_database": str,
    "maintain_thresholds_reviewed_on": str,
    "maintain_thresholds_review_days": int,
    "threshold_error_log_lines_warning": int,
    "threshold_error_log_lines_critical": int,
    "threshold_disk_growth_pct_per_30_days": NUMBER,
    "threshold_degradation_min_ms": NUMBER,
    "threshold_unused_index_warning_mb": NUMBER,
    "maintain_npm_audit_registry": str,
    # schedule (maintenance timers on a control host)
    "schedule_scheduler": str,
    "schedule_install_dir": str,
    "schedule_state_dir": str,
    "schedule_secrets_file": str,
    "schedule_ssh_key": str,
    "schedule_daily": str,
    "schedule_weekly": str,
    "schedule_monthly": str,
    "schedule_quarterly": str,
    "schedule_randomized_delay_seconds": int,
    "schedule_timeout_minutes": int,
}

CHOICES: dict[str, set[str]] = {
    "deploy_environment": {"production", "staging", "local", "test"},
    "app_source": {"mirror", "upload"},
    "node_install_method": {"nodesource", "distro"},
    "db_access": {"app_host", "direct"},
    "schedule_scheduler": {"auto", "systemd", "cron"},
    "redis_maxmemory_policy": {
        "noeviction", "allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu",
        "allkeys-random", "volatile-random", "volatile-ttl",
    },
}

PM2_APP_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "role": str,
    "script": str,
    "args": str,
    "instances": int,
    "exec_mode": str,
    "wait_ready": bool,
    "max_memory_restart": str,
}
PM2_ROLES = {"backend", "frontend"}
PORT_KEYS = ("app_backend_port", "app_frontend_port", "redis_port", "db_port", "ssh_port")


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def _is_instance(value: Any, expected: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; a port of True is a typo, not a port.
    if isinstance(value, bool) and expected is not bool:
        return False
    return isinstance(value, expected)


def validate_values(data: dict[str, Any], source: str) -> None:
    """Check the types of the keys `source` sets (unknown keys are typos: refuse them)."""
    for key, value in data.items():
        if key.startswith("_") or value is None:  # None: unset (validate_complete decides)
            continue
        expected = SCHEMA.get(key) or PYINFRA_KEYS.get(key)
        if expected is None:
            raise ConfigError(
                f"{source}: unknown setting '{key}'",
                "check the spelling against group_data/all.py, which lists every setting",
            )
        if not _is_instance(value, expected):
            raise ConfigError(
                f"{source}: '{key}' must be {_type_name(expected)}, got {type(value).__name__} "
                f"{value!r}",
                f"fix '{key}' in {source}",
            )
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(
                f"{source}: '{key}' is {value!r}, expected one of {sorted(CHOICES[key])}",
                f"fix '{key}' in {source}",
            )
        if key in PORT_KEYS and not 0 < value < 65536:
            raise ConfigError(f"{source}: '{key}' {value} is not a TCP port", f"fix it in {source}")
        if key == "pm2_apps":
            _validate_pm2_apps(value, source)


def _validate_pm2_apps(apps: list, source: str) -> None:
    for index, app in enumerate(apps):
        where = f"{source}: pm2_apps[{index}]"
        if not isinstance(app, dict):
            raise ConfigError(f"{where} must be a dict", f"fix pm2_apps in {source}")
        for key, expected in PM2_APP_KEYS.items():
            if key not in app:
                raise ConfigError(f"{where} is missing '{key}'", f"add '{key}' in {source}")
            if not _is_instance(app[key], expected):
                raise ConfigError(
                    f"{where}: '{key}' must be {_type_name(expected)}", f"fix it in {source}"
                )
        if app["role"] not in PM2_ROLES:
            raise ConfigError(
                f"{where}: role {app['role']!r} must be one of {sorted(PM2_ROLES)}",
                f"fix it in {source}",
            )


def validate_complete(data: dict[str, Any], host_name: str) -> None:
    """Every setting of the schema must resolve to a value for each host."""
    missing = [key for key in SCHEMA if data.get(key) is None]
    if missing:
        raise ConfigError(
            f"host {host_name}: missing required setting(s): {', '.join(missing)}",
            "set them in group_data/all.py (defaults) or in the inventory",
        )


@dataclass(frozen=True)
class Pm2App:
    name: str
    role: str
    script: str
    args: str
    instances: int
    exec_mode: str
    wait_ready: bool
    max_memory_restart: str
    port: int
    cwd: str


def pm2_apps(data: Any) -> list[Pm2App]:
    """The PM2 apps of a host, with ports and working directories resolved through current."""
    current = f"{data.app_deploy_to}/current"
    apps = []
    for app in data.pm2_apps:
        role = app["role"]
        apps.append(
            Pm2App(
                **{k: app[k] for k in PM2_APP_KEYS},
                port=getattr(data, f"app_{role}_port"),
                cwd=f"{current}/{getattr(data, f'app_{role}_dir')}",
            )
        )
    return apps
