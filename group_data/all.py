"""Defaults for every host. Override per group (group_data/<group>.py) or per host (inventory).

Every setting is validated in tpe_ops/settings.py; names carry a prefix saying where they
belong (app_, node_, pm2_, redis_, db_, health_, threshold_, secrets_). Defaults mirror the
production runbook of The Power100 Experience.
"""

# --- deploy_: what kind of environment this inventory is ----------------------------------
# "production" asks for confirmation before changing anything (unless --yes).
deploy_environment = "production"
# A production deploy of a commit not verified on this inventory asks for --unverified-ok.
deploy_verify_inventory = "staging"

# --- app_: the application and where it lives --------------------------------------------
app_name = "tpe"
# Git repository of the app; a URL (mirrored on the host) or a local path (uploaded).
app_repo = "https://github.com/Power100/The-Power100-Experience.git"
# Folder of the repository that holds the app ("" = the repository root).
app_repo_subdir = ""
app_branch = "main"
# "mirror": a cached git mirror on the host fetches the commit (Capistrano style);
# "upload": the controller archives the commit and uploads it (hosts without repo access).
app_source = "mirror"
app_user = "ubuntu"
app_deploy_to = "/home/ubuntu/The-Power100-Experience"
app_node_env = "production"
# Releases kept on disk (current and the last known-good one are never deleted).
app_keep_releases = 5
app_backend_port = 5000
app_frontend_port = 3000
# npm workspace folders of the monorepo.
app_backend_dir = "tpe-backend"
app_frontend_dir = "tpe-front-end"
# Non-secret environment of the backend, written to shared/backend.env.
app_backend_env = {"LOG_LEVEL": "info"}
# Environment variables whose values are secrets: env-file name -> secret name.
app_backend_secrets = {"DB_PASSWORD": "TPE_DB_PASSWORD"}
# Commands run inside the release, as the app user (see DESIGN.md 3).
app_build_command = "npm run build"
app_migrate_command = "npm run migrate"
app_warm_cache_command = "npm run warm-cache"
# Where the release's SQL migrations are (the rollback guard compares them with the database).
app_migrations_dir = "tpe-backend/migrations"

# --- node_: Node.js runtime ----------------------------------------------------------------
node_major_version = 20
# "nodesource": NodeSource apt repository (production); "distro": the OS package.
node_install_method = "nodesource"

# --- pm2_: process manager -----------------------------------------------------------------
pm2_version = "7.0.4"
pm2_logrotate_version = "3.0.0"
# Start the apps at boot through a `pm2-<user>` systemd unit (`pm2 startup`).
pm2_startup = True
pm2_logrotate_max_size = "10M"
pm2_logrotate_retain = 14
pm2_logrotate_compress = True
# The PM2 apps: role "backend"/"frontend" takes its port from app_<role>_port.
pm2_apps = [
    {
        "name": "tpe-backend",
        "role": "backend",
        "script": "src/server.js",
        "args": "",
        "instances": 2,
        "exec_mode": "cluster",
        "wait_ready": True,
        "max_memory_restart": "512M",
    },
    {
        "name": "tpe-frontend",
        "role": "frontend",
        "script": "../node_modules/next/dist/bin/next",
        "args": "start",
        "instances": 1,
        "exec_mode": "cluster",
        "wait_ready": False,
        "max_memory_restart": "512M",
    },
]

# --- redis_: the cache on the app host -------------------------------------------------------
redis_bind = "127.0.0.1"
redis_port = 6379
redis_maxmemory = "256mb"
redis_maxmemory_policy = "allkeys-lru"
# A cache: no RDB snapshots.
redis_save = ""

# --- db_: PostgreSQL (RDS in production) -----------------------------------------------------
db_host = "127.0.0.1"
db_port = 5432
db_name = "tpedb"
db_user = "tpeadmin"
# The app's connection pool size (DB_POOL_MAX), against which connection use is judged.
db_pool_size = 20
db_migrations_table = "schema_migrations"
# Provision a local PostgreSQL server as a stand-in for RDS (the embedded local target).
db_provision_local = False

# --- secrets_: where secret values come from -------------------------------------------------
# KEY=VALUE file outside the repository (mode 0600); the environment wins over it.
secrets_file = "~/.config/tpe-ops/secrets.env"
# Generate missing secrets into secrets_file (only for the embedded local target).
secrets_generate_missing = False

# --- health_: endpoints the checks use ------------------------------------------------------
health_endpoint = "/api/health"
health_public_url = ""
health_public_endpoints = [
    "/api/health",
    "/api/state-machine/diagram",
    "/api/state-machine/metadata",
]
# Seconds the apps must stay online without restarts after a reload (runbook waits 120 s).
health_stabilisation_seconds = 10
# After a rollback to a release that already passed verification, a shorter window.
health_rollback_stabilisation_seconds = 2
health_timeout_seconds = 5
# Requests per health run for p95 and error rate: few, to stay under the app's own rate limit
# (the real TPE backend allows 1,000 /api requests per 15 minutes per IP).
health_sample_requests = 20

# --- threshold_: the runbook's numbers (sections 2, 3, 5) -----------------------------------
threshold_p95_warning_ms = 300
threshold_p95_critical_ms = 500
threshold_error_rate_warning_pct = 0.1
threshold_error_rate_critical_pct = 1.0
threshold_db_pool_warning_pct = 80
threshold_db_pool_critical_pct = 100
# Memory and CPU: the runbook gives no numbers; these are ours.
threshold_memory_warning_pct = 90
threshold_memory_critical_pct = 95
threshold_cpu_warning_pct = 90
threshold_cpu_critical_pct = 98
threshold_pm2_restarts_per_hour = 5
threshold_redis_hit_rate_warning_pct = 50
threshold_redis_hit_rate_target_pct = 70
threshold_disk_warning_pct = 80
threshold_disk_critical_pct = 90
threshold_baseline_p95_ms = 170
threshold_target_p95_ms = 500
threshold_rollback_error_rate_pct = 5
threshold_rollback_error_minutes = 10
threshold_rollback_unavailable_minutes = 5
threshold_rollback_degradation_pct = 50
threshold_rollback_degradation_minutes = 10
threshold_rollback_sustained_error_rate_pct = 1
threshold_rollback_sustained_error_minutes = 30
# A longer gap between health samples breaks "continuously" in the criteria above.
threshold_rollback_max_gap_seconds = 180
