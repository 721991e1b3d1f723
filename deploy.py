#!/usr/bin/env python3
"""TPE Ops: the production runbook of The Power100 Experience as commands.

The command line parses, confirms and prints; playbooks orchestrate; pyinfra changes hosts.
Exit codes: 0 ok, 1 a host failed, 2 bad input (nothing changed), 3 not confirmed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from playbooks.common import Options
from tpe_ops.errors import OpsError
from tpe_ops.inventory import DEFAULT_INVENTORY, LoadedInventory, load_inventory
from tpe_ops.report import as_json, print_step, summary_table
from tpe_ops.runner import RunResult
from tpe_ops.secrets import redact


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-i", "--inventory", default=DEFAULT_INVENTORY,
        help="inventory name in inventories/ or a path (default: local, this machine)",
    )
    common.add_argument("--limit", metavar="HOST|GROUP", help="only these hosts")
    common.add_argument("--dry", action="store_true", help="show what would change, change nothing")
    common.add_argument("-y", "--yes", action="store_true", help="confirm production changes")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


COMMANDS: dict[str, str] = {
    "provision": "converge hosts: Node.js, PM2 (+boot unit, log rotation), Redis, dirs, env files",
    "deploy": "deploy the app: new release, build, migrate, atomic switch, reload, verify",
    "status": "releases and PM2 processes on each host",
    "unlock": "clear the deploy lock (yours; anyone's with --force)",
    "rollback": "switch back to a kept release (seconds) or build any commit; migration guard",
    "releases": "per host: releases, commits, who deployed them, status, instant rollback",
    "health": "measure and judge: healthy/warning/critical, severity P0-P3, exit 0/1/2/3",
    "benchmark": "per endpoint: success rate, min/median/avg/p95/p99/max, rating, baseline",
    "diagnose": "the five troubleshooting guides: which matches, evidence; --fix the safe ones",
    "cache": "the app's Redis: warm (keys before/after), clear (FLUSHDB, confirmed), stats",
    "logs": "the PM2 logs of an app (or all), from every host, prefixed; --follow streams",
    "maintain": "run a maintenance checklist (daily|weekly|monthly|quarterly): judged, reported",
    "schedule": "maintenance tiers on their cadence on a control host: install, remove, show",
    "db": "database: connections, slow-queries, sizes, index-usage, vacuum, backup, "
          "verify-backup, migrations",
    "drill": "disaster-recovery drill: backup (RPO), fresh host, restore + verify, deploy, "
             "health, benchmark, RTO, report, teardown; `drill rollback`: a failing build "
             "rolled back automatically",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy.py",
        description="TPE Ops: deploy and operate The Power100 Experience with pyinfra.",
        epilog="Exit codes: 0 ok, 1 a host failed, 2 bad input (nothing changed), 3 not confirmed.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "unlock":
            command.add_argument("--force", action="store_true", help="clear anyone's lock")
        if name == "health":
            command.add_argument("--watch", type=float, metavar="INTERVAL",
                                 help="sample every INTERVAL seconds, keep a history, evaluate "
                                      "the rollback criteria")
            command.add_argument("--count", type=int, help="with --watch: stop after N samples")
            command.add_argument("--notify", metavar="URL",
                                 help="POST a Slack-compatible message when the status changes")
            command.add_argument("--prometheus", metavar="FILE",
                                 help="write the figures as a Prometheus textfile (atomically)")
        if name == "benchmark":
            command.add_argument("--requests", type=int, default=50, help="per endpoint")
            command.add_argument("--concurrency", type=int, default=1)
            command.add_argument("--rate", type=float, metavar="PER_SECOND",
                                 help="fixed rate; latency from the intended send time")
            command.add_argument("--url", action="append", metavar="URL",
                                 help="benchmark from this machine (repeatable); default: "
                                      "each host against its localhost")
            command.add_argument("--save-baseline", action="store_true")
        if name == "cache":
            command.add_argument("action", choices=("warm", "clear", "stats"),
                                 help="warm: run the app's warm-cache script; clear: FLUSHDB "
                                      "(asks, or --yes); stats: keys by prefix, memory, hit rate")
        if name == "logs":
            command.add_argument("app", metavar="APP", help="a PM2 app of the inventory, or all")
            command.add_argument("--lines", type=int, default=100, metavar="N",
                                 help="last N lines of each log file (default 100)")
            command.add_argument("--err", action="store_true", help="the error log only")
            command.add_argument("--follow", action="store_true",
                                 help="keep streaming new lines until Ctrl-C")
        if name == "maintain":
            command.add_argument("tier", choices=("daily", "weekly", "monthly", "quarterly"))
            command.add_argument("--notify", metavar="URL",
                                 help="POST a Slack-compatible message when the tier fails")
        if name == "schedule":
            command.add_argument("action", choices=("install", "remove", "show"),
                                 help="install: TPE Ops + a systemd timer (or cron) per tier; "
                                      "remove: the timers/cron, secrets, inventory; show: state")
            command.add_argument("--target", metavar="INVENTORY",
                                 help="install: maintain these hosts over SSH (default: each "
                                      "control host maintains itself)")
            command.add_argument("--purge", action="store_true",
                                 help="remove: also delete the installed tool and its venv")
        if name == "db":
            command.add_argument("action", choices=(
                "connections", "slow-queries", "sizes", "index-usage", "vacuum", "backup",
                "verify-backup", "migrations"), help="what to do (see README: db)")
            command.add_argument("file", nargs="?", metavar="FILE",
                                 help="verify-backup: the .dump to verify (default: the latest)")
            command.add_argument("--top", type=int, metavar="N",
                                 help="slow-queries, sizes: show the top N")
            command.add_argument("--threshold-ms", type=float, metavar="MS",
                                 help="slow-queries: mean time above MS (default "
                                      "db_slow_query_ms)")
            command.add_argument("--keep", action="store_true",
                                 help="verify-backup: keep the scratch database")
        if name == "drill":
            command.add_argument("action", nargs="?", choices=("rollback",),
                                 help="rollback: deploy a deliberately failing build to the "
                                      "(staging) hosts and time the automatic rollback")
            command.add_argument("--source", metavar="INVENTORY",
                                 help="the inventory recovered: its database and last "
                                      "known-good release (default: production)")
            command.add_argument("--backup", metavar="FILE|latest",
                                 help="restore this backup, or the latest one (default: take "
                                      "a new backup of the source)")
            command.add_argument("--keep", action="store_true",
                                 help="keep the scratch database and the drill hosts' app "
                                      "(drill rollback: the failing release)")
        if name == "diagnose":
            command.add_argument("--fix", action="store_true",
                                 help="apply the matched guides' safe fixes (start a stopped "
                                      "PM2 app or Redis, warm the cache), then re-check")
            command.add_argument("--flush", action="store_true",
                                 help="with --fix: clear the cache (FLUSHDB) before warming it "
                                      "when guide 5 matches")
        if name in ("deploy", "rollback"):
            command.add_argument("--batch-size", metavar="N|P%",
                                 help="rolling: N hosts or P%% of the fleet at a time, in "
                                      "inventory order (default: all at once)")
            command.add_argument("--max-fail", metavar="P%",
                                 help="rolling: share of a batch allowed to fail verification "
                                      "before the rollout stops (default 0%%)")
            command.add_argument("--canary", action="store_true",
                                 help="rolling: one host alone first")
        if name == "rollback":
            command.add_argument("--to", metavar="COMMIT|RELEASE",
                                 help="target (default: the last verified release before current)")
            command.add_argument("--force", action="store_true",
                                 help="roll back even though newer migrations are applied")
            command.add_argument("--reason", help="what went wrong (for the incident record)")
        if name == "deploy":
            command.add_argument(
                "--commit", metavar="REF", help="commit or branch (default: app_branch)"
            )
            command.add_argument("--unverified-ok", action="store_true",
                                 help="production: deploy a commit not verified on staging")
            command.add_argument("--unhealthy-ok", action="store_true",
                                 help="deploy even though hosts are unhealthy before it")
    return parser


def _rollout(args: argparse.Namespace):
    from playbooks.rollout import RolloutOptions

    return RolloutOptions(args.batch_size, args.max_fail, args.canary)


def _run_provision(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                   printer) -> RunResult:
    from playbooks.provision import provision

    return provision(loaded, options, printer)


def _run_deploy(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                printer) -> RunResult:
    from playbooks.deploy import deploy

    return deploy(loaded, options, printer, args.commit, _rollout(args))


def _run_status(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                printer) -> RunResult:
    from playbooks.status import status

    return status(loaded, options, printer)


def _run_unlock(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                printer) -> RunResult:
    from playbooks.unlock import unlock

    return unlock(loaded, options, printer, args.force)


def _run_rollback(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                  printer) -> RunResult:
    from playbooks.rollback import rollback

    return rollback(loaded, options, printer, args.to, args.force, args.reason, _rollout(args))


def _run_releases(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                  printer) -> RunResult:
    from playbooks.releases import releases

    return releases(loaded, options, printer)


def _run_health(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                printer) -> RunResult:
    from playbooks.health import health, watch

    if args.watch:
        return watch(loaded, options, None, args.watch, args.count, args.notify,
                     args.prometheus)
    result = health(loaded, options, printer)
    if args.prometheus:
        from pathlib import Path

        from playbooks.health import prometheus_text, write_atomically

        write_atomically(Path(args.prometheus), prometheus_text(result, time.time()))
    return result


def _run_benchmark(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                   printer) -> RunResult:
    from playbooks.benchmark import BenchOptions, benchmark

    bench = BenchOptions(args.requests, args.concurrency, args.rate, args.url,
                         args.save_baseline)
    return benchmark(loaded, options, printer, bench)


def _run_cache(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
               printer) -> RunResult:
    from playbooks.cache import cache

    return cache(loaded, options, printer, args.action)


def _run_logs(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
              printer) -> RunResult:
    from playbooks.logs import LogsRequest, logs

    request = LogsRequest(args.app, args.lines, args.err, args.follow)
    return logs(loaded, options, printer, request)


def _run_maintain(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                  printer) -> RunResult:
    from playbooks.maintain import maintain

    return maintain(loaded, options, None, args.tier, args.notify)  # printed after its headline


def _run_schedule(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                  printer) -> RunResult:
    from playbooks import schedule
    from tpe_ops.errors import ConfigError

    if args.target and args.action != "install" or args.purge and args.action != "remove":
        raise ConfigError(f"schedule {args.action}: --target goes with install, --purge with "
                          "remove", "drop the option or change the action")
    if args.action == "install":
        return schedule.install(loaded, options, printer, args.target)
    if args.action == "remove":
        return schedule.remove(loaded, options, printer, args.purge)
    return schedule.show(loaded, options, printer)


def _run_diagnose(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
                  printer) -> RunResult:
    from playbooks.diagnose import diagnose

    return diagnose(loaded, options, printer, args.fix, args.flush)


def _run_db(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
            printer) -> RunResult:
    from playbooks.db import DbRequest, run

    request = DbRequest(args.action, args.file, args.top, args.threshold_ms, args.keep)
    return run(loaded, options, printer, request)


def _run_drill(args: argparse.Namespace, loaded: LoadedInventory, options: Options,
               printer) -> RunResult:
    from playbooks.drill import DrillRequest, run

    request = DrillRequest(args.action, args.source, args.backup, args.keep)
    return run(loaded, options, printer, request)


RUNNERS: dict[str, Callable[..., RunResult]] = {
    "provision": _run_provision,
    "deploy": _run_deploy,
    "status": _run_status,
    "unlock": _run_unlock,
    "rollback": _run_rollback,
    "releases": _run_releases,
    "health": _run_health,
    "benchmark": _run_benchmark,
    "diagnose": _run_diagnose,
    "cache": _run_cache,
    "logs": _run_logs,
    "maintain": _run_maintain,
    "schedule": _run_schedule,
    "db": _run_db,
    "drill": _run_drill,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(args.inventory, args.limit, args.dry, args.yes, args.json,
                      getattr(args, "unverified_ok", False), getattr(args, "unhealthy_ok", False))
    printer = None if args.json else print_step
    try:
        loaded = load_inventory(options.inventory, options.limit)
        result = RUNNERS[args.command](args, loaded, options, printer)
    except OpsError as error:
        print(redact(f"error: {error}"), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(as_json(args.command, result))
    else:
        if result.headline:  # a status line first, then the steps it sums up
            print(redact(result.headline))
            for name, host in result.hosts.items():
                for step in host.steps:
                    print_step(name, step)
        print("\n" + summary_table(args.command, result))
    if result.exit_code is not None:
        return result.exit_code
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
