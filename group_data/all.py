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

# --- ec2_: set per host by inventories/ec2.py (EC2 discovery); "" for other inventories ----
# The instance id, its Name tag and its availability zone, as EC2 reported them.
ec2_instance_id = ""
ec2_name = ""
ec2_az = ""

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
# What the build command writes, relative to the release (Next.js's cache is left out). When
# several hosts build the same release, one builds and the others get these from it: one build
# for the fleet, and the same Next.js build id on every host behind the load balancer.
app_build_outputs = ["tpe-front-end/.next"]
app_migrate_command = "npm run migrate"
# The backend's warm-cache script run directly: what `npm run warm-cache` runs, without the two
# npm start-ups (root script, then workspace script) that cost more CPU than the script itself.
app_warm_cache_command = "cd tpe-backend && node scripts/warm-cache.js"
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
# How long a reload waits for a new instance to listen (or send `ready`) before it stops the
# old one anyway, per app role. The frontend's is generous: a starved CPU (a deploy building
# next to the app) can make a Next.js start take many seconds, and stopping the old instance
# early refuses requests. The backend sends `ready` within a second when it is fine; a
# release that crashes at start makes each instance wait this long before the switch back.
pm2_listen_timeout_ms = {"backend": 10000, "frontend": 30000}
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
# How `db` reaches the database: "app_host" runs psql/pg_dump on the app host with the app's
# env file (as the runbook does); "direct" runs them on this machine (needs network access
# to the database and postgresql-client here).
db_access = "app_host"
# Install the PostgreSQL client on app hosts (provision). pg_dump must be of the server's
# major version or newer: e.g. "postgresql-client-16" from the PGDG repository for RDS 16.
db_client_install = True
db_client_package = "postgresql-client"
# `db slow-queries`: mean execution time above this (the runbook's 100 ms), top N.
db_slow_query_ms = 100
db_slow_query_top = 10
# `db index-usage`: fewer scans than this (since the statistics reset) is "rarely used".
db_index_rarely_used_scans = 50
# `db backup`: folder under shared/ on the app host (0700) and how many backups it keeps.
db_backup_dir = "backups"
db_backup_keep = 3
# The copies on this machine (never inside the repository), one folder per database.
db_backup_local_dir = "~/.local/share/tpe-ops/backups"
db_backup_local_keep = 14

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
# After a reload, verification waits up to 60 s for apps not answering yet; an app that answers
# but reports a problem (a dependency down, a wrong status) gets this long to recover.
health_unhealthy_grace_seconds = 10
health_timeout_seconds = 5
# Requests per health run for p95 and error rate: few, to stay under the app's own rate limit
# (the real TPE backend allows 1,000 /api requests per 15 minutes per IP).
health_sample_requests = 20

# --- diagnose_: the troubleshooting guides (runbook section 4, `deploy.py diagnose`) --------
# Last lines of each PM2 app's error log shown as evidence (the runbook reads 100-200 by hand).
diagnose_log_lines = 10
# After `--fix`, re-check (health) for up to this many seconds until the fixed guides stop
# matching: a restarted backend needs a moment before it answers.
diagnose_recheck_seconds = 30

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

# --- maintain_: the scheduled checklists (runbook section 7, `deploy.py maintain TIER`) ------
# daily: lines read from the end of each app's error log (the runbook's `--lines 100`).
maintain_error_log_lines = 100
# Error lines among them that warn / fail the daily check.
threshold_error_log_lines_warning = 1
threshold_error_log_lines_critical = 20
# weekly: requests per endpoint of the benchmark against the baseline.
maintain_benchmark_requests = 50
# weekly: rotated PM2 logs older than this move to shared/log-archive (compressed) ...
maintain_log_archive_after_days = 7
# ... and archived logs older than this are deleted.
maintain_log_archive_keep_days = 90
# monthly: disk growth (per 30 days, scaled from the time since the last run) that warns.
threshold_disk_growth_pct_per_30_days = 20
# weekly/quarterly benchmarks: a p95 slower than its baseline or history by more than the
# runbook's 50 % counts only when it is also slower by this many milliseconds (3 -> 5 ms is
# +66 % and noise).
threshold_degradation_min_ms = 50
# monthly: unused or rarely used indexes (removal candidates) weighing this many MB warn;
# smaller ones are listed in the report only.
threshold_unused_index_warning_mb = 100
# quarterly: the full performance audit's requests per endpoint (compared with history).
maintain_audit_requests = 200
# quarterly: the inventory the disaster-recovery drill runs against ("" = no drill).
maintain_drill_inventory = ""
# quarterly: when the threshold_ values were last reviewed (ISO date), and how often.
maintain_thresholds_reviewed_on = "2026-12-04"
maintain_thresholds_review_days = 90
# monthly: the registry `npm audit` asks ("" = npm's configured registry).
maintain_npm_audit_registry = ""

# --- drill_: the disaster-recovery drill (`deploy.py drill`, `drill rollback`) ----------------
# Set in the drill inventory (spare hosts, deploy_environment not production, and a db_name of
# its own: the scratch database the backup is restored into). Goals: the 5 minutes
# from a bare host to healthy (RTO), a backup at most a day old (RPO), and for `drill
# rollback` service back within 3 minutes of the switch to a failing build.
drill_rto_goal_seconds = 300
drill_rpo_goal_seconds = 86400
drill_rollback_goal_seconds = 180
# Requests per endpoint of the benchmark run on the restored service.
drill_benchmark_requests = 50
# The database the drill connects to to create and drop its scratch database.
drill_admin_database = "postgres"

# --- schedule_: maintenance timers on a control host (deploy.py schedule install) ---------------
# "auto": systemd timers where systemd runs, else a cron file in /etc/cron.d; or force one.
schedule_scheduler = "auto"
# TPE Ops on the control host: its code (src/), a venv (venv/) and the maintenance inventory.
schedule_install_dir = "/opt/tpe-ops"
# TPE_STATE_DIR of the scheduled runs (reports, samples, cron logs); "~" is the app user's home.
schedule_state_dir = "~/.local/state/tpe-ops"
# The secrets the scheduled runs need, on the control host (mode 0600, owned by the app user).
schedule_secrets_file = "~/.config/tpe-ops/schedule-secrets.env"
# With --target: the control host's private key for SSH to the targets ("" = the app user's).
schedule_ssh_key = ""
# When each tier runs: systemd calendar events (systemd.time(7)), also rendered for cron:
# [weekdays] [*-]month-day hour:minute[:00], lists (1,15), ranges (Mon..Fri) and steps (0/15),
# or daily/weekly/monthly/quarterly. In the host's time zone. Staggered so tiers never collide.
schedule_daily = "*-*-* 06:00:00"
schedule_weekly = "Mon *-*-* 07:00:00"
schedule_monthly = "*-*-01 08:00:00"
schedule_quarterly = "*-01,04,07,10-01 09:00:00"
# A random delay up to this many seconds before each run (fleets do not all start at once).
schedule_randomized_delay_seconds = 900
# A run still going after this long is stopped (a hung run would block the next ones).
schedule_timeout_minutes = 120
