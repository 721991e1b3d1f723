"""Release directories and the atomic switch (DESIGN.md 3.1-3.3), as facts and operations.

Command builders are pure functions (no I/O); the operations yield them.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, FileDownloadCommand, FileUploadCommand, operation

q = shlex.quote


class ReleaseState(FactBase):
    """current release, releases on disk (commit and markers of each), the last known-good
    one, bad ones, and the lock."""

    def command(self, deploy_to: str) -> str:
        d = q(deploy_to)
        return (
            f"cd {d} 2>/dev/null && {{ "
            'echo "current $(basename "$(readlink current 2>/dev/null)" 2>/dev/null)"; '
            'for r in releases/*/; do [ -d "$r" ] || continue; '
            'f=""; for m in complete verified bad; do [ -f "$r.$m" ] && f="$f,$m"; done; '
            'echo "release $(basename "$r") $(cat "${r}REVISION" 2>/dev/null || echo -) ${f:-,}"; '
            "done; "
            'echo "good $(cat .known-good 2>/dev/null)"; '
            '[ -f .deploy.lock/owner ] && echo "lock $(tr -d "\\n" < .deploy.lock/owner)"; '
            "true; } || true"
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {"current": None, "releases": [], "meta": {}, "known_good": None, "bad": [],
                "lock": None}

    def process(self, output: list[str]) -> dict[str, Any]:
        state = self.default()
        for line in output:
            kind, _, value = line.partition(" ")
            value = value.strip()
            if kind == "release":  # name, commit, flags
                name, commit, flags = (value.split() + ["-", ","])[:3]
                state["releases"].append(name)
                state["meta"][name] = {
                    "commit": None if commit == "-" else commit,
                    **{m: m in flags.split(",") for m in ("complete", "verified", "bad")},
                }
            elif value and kind in ("current", "lock"):
                state[kind] = value
            elif value and kind == "good":
                state["known_good"] = value
        state["releases"].sort()
        state["bad"] = [name for name in state["releases"] if state["meta"][name]["bad"]]
        return state


class HttpCheck(FactBase):
    """GET a URL from the host itself: status code, seconds, and the body (first 4 KB)."""

    def command(self, url: str, timeout: float) -> str:
        return (
            f"curl -sS -m {timeout} -w '\\n__http__ %{{http_code}} %{{time_total}}' {q(url)} "
            "2>&1 | head -c 8192 || true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        code, seconds, body = 0, 0.0, []
        for line in output:
            if line.startswith("__http__ "):
                _, raw_code, raw_time = line.split()
                code, seconds = int(raw_code), float(raw_time)
            else:
                body.append(line)
        return {"status": code, "seconds": seconds, "body": "\n".join(body)[:4096]}


def release_name(timestamp: str, commit: str) -> str:
    return f"{timestamp}-{commit[:12]}"


def unpack_upload(archive: str, release_dir: str) -> list[str]:
    return [f"mkdir -p {q(release_dir)}", f"tar -xzf {q(archive)} -C {q(release_dir)}",
            f"rm -f {q(archive)}"]


def unpack_mirror(repo_url: str, mirror: str, commit: str, subdir: str, release: str) -> list[str]:
    tree = f"{commit}:{subdir}" if subdir else commit
    return [
        f"[ -d {q(mirror)} ] || git clone --quiet --mirror {q(repo_url)} {q(mirror)}",
        f"git -C {q(mirror)} cat-file -e {q(commit + '^{commit}')} 2>/dev/null"
        f" || git -C {q(mirror)} fetch --quiet --prune origin",
        f"mkdir -p {q(release)}",
        f"git -C {q(mirror)} archive --format=tar {q(tree)} | tar -x -C {q(release)}",
    ]


def link_shared(shared: str, release: str, backend_dir: str) -> list[str]:
    """Shared files into the release: the backend's env file as `.env`, logs as `logs`."""
    return [
        f"ln -sfn {q(shared + '/backend.env')} {q(release + '/' + backend_dir + '/.env')}",
        f"ln -sfn {q(shared + '/logs')} {q(release + '/logs')}",
    ]


def dependencies_script(release: str, previous: str | None) -> str:
    """Reuse the previous release's node_modules (hard links) unless the lockfile, package.json
    files or Node.js version changed; then `npm ci`. The lockfile is never deleted."""
    prev = q(previous) if previous else "''"
    return f"""cd {q(release)}
fp=$( (cat package-lock.json package.json */package.json 2>/dev/null; node --version) \\
  | sha256sum | cut -c1-64)
prev={prev}
old=""
if [ -n "$prev" ] && [ -f "$prev/.deps-fingerprint" ]; then old=$(cat "$prev/.deps-fingerprint"); fi
if [ -n "$old" ] && [ "$old" = "$fp" ]; then
  for d in $(cd "$prev" && find . -maxdepth 3 -name node_modules -type d -prune); do
    cp -al "$prev/$d" "$d" && rm -rf "$d/.cache"
  done
  echo "dependencies: unchanged, reused from $(basename "$prev") (hard links)"
else
  npm ci --no-audit --no-fund --loglevel=error
  echo "dependencies: installed with npm ci"
fi
echo "$fp" > .deps-fingerprint"""


def build_script(release: str, previous: str | None, frontend_dir: str, command: str) -> str:
    """Build inside the new release (never the served one), seeding Next.js's build cache."""
    cache = f"{frontend_dir}/.next/cache"
    seed = ""
    if previous:
        seed = (
            f"[ -d {q(previous + '/' + cache)} ] && mkdir -p {q(frontend_dir + '/.next')} && "
            f"cp -a {q(previous + '/' + cache)} {q(cache)}; "
        )
    return f"cd {q(release)} && {seed}NEXT_TELEMETRY_DISABLED=1 {command}"


def pack_build_command(release: str, outputs: list[str], archive: str) -> str:
    """The build's outputs (without Next.js's cache) and the dependency fingerprint they were
    built against, for the other hosts building the same release."""
    paths = " ".join(q("./" + o.strip("/")) for o in outputs)
    return (f"cd {q(release)} && tar -czf {q(archive)} --exclude=.next/cache "
            f"./.deps-fingerprint {paths}")


def unpack_build_script(release: str, archive: str, builder: str, build: str) -> str:
    """Take the build made on `builder` when it was built against the same dependencies as
    this release has; otherwise build here (`build`, from build_script)."""
    a = q(archive)
    return f"""set -e
trap 'rm -f {a}' EXIT
cd {q(release)}
if [ "$(tar -xzOf {a} ./.deps-fingerprint 2>/dev/null)" = "$(cat .deps-fingerprint)" ]; then
  tar -xzf {a} --exclude=./.deps-fingerprint
  printf 'build: copied from %s (same release, same dependencies)\n' {q(builder)}
else
  printf 'build: dependencies differ from those of %s, building here\n' {q(builder)}
  {build}
fi"""


def with_app_env(shared: str, release: str, command: str) -> str:
    """Run `command` in the release with the backend env loaded into this process only
    (secrets never appear on a command line)."""
    return (
        f"set -a && . {q(shared + '/backend.env')} && set +a && cd {q(release)} && {command}"
    )


def switch_commands(deploy_to: str, release: str) -> list[str]:
    """Atomic switch: a new symlink renamed over `current` (one rename(2))."""
    d = q(deploy_to)
    return [f"cd {d} && ln -sfn releases/{q(release)} current.tmp && mv -T current.tmp current"]


def reload_commands(ecosystem: str) -> list[str]:
    """Reload the apps (starting any not running), then keep the process list for boot."""
    return [f"pm2 startOrReload {q(ecosystem)} --update-env", save_process_list(ecosystem)]


def save_process_list(ecosystem: str) -> str:
    """`pm2 save` (the list `pm2 resurrect` starts at boot), unless the dump is the one saved
    from this same ecosystem file and nothing has written it since (`pm2 save` by hand, PM2
    dumping as it stops): saving it again would write the same list, and costs a Node start-up
    per host. A stamp next to the dump holds the file's checksum (a new PM2 home has none)."""
    eco = q(ecosystem)
    return (  # one compound command: the callers join commands with &&
        '{ pm2_home="${PM2_HOME:-$HOME/.pm2}"; stamp="$pm2_home/dump.pm2.tpe-ops"; '
        'if [ -f "$pm2_home/dump.pm2" ] && [ "$stamp" -nt "$pm2_home/dump.pm2" ] '
        f'&& sha256sum {eco} | cmp -s - "$stamp"; '
        "then echo 'PM2 process list: already saved from this ecosystem file'; "
        f'else pm2 save --force && sha256sum {eco} > "$stamp"; fi; }}'
    )


def lock_command(deploy_to: str, owner: dict[str, Any]) -> str:
    lock = q(f"{deploy_to}/.deploy.lock")
    info = q(json.dumps(owner, sort_keys=True))
    return (
        f"mkdir {lock} 2>/dev/null || {{ echo \"deploy lock held: $(cat {lock}/owner)\" >&2; "
        f"exit 75; }}; printf '%s\\n' {info} > {lock}/owner"
    )


def unlock_command(deploy_to: str, token: str | None) -> str:
    lock = q(f"{deploy_to}/.deploy.lock")
    if token is None:  # --force
        return f"rm -rf {lock}"
    return f"grep -q {q(token)} {lock}/owner 2>/dev/null && rm -rf {lock} || true"


def prune_command(deploy_to: str, keep: list[str]) -> str:
    """Delete releases not in `keep` (computed by the caller: newest N, current, known-good)."""
    keep_pattern = " ".join(q(k) for k in keep)
    return (
        f"cd {q(deploy_to + '/releases')} && for r in */; do r=${{r%/}}; "
        f"case \" {keep_pattern} \" in *\" $r \"*) ;; *) rm -rf \"$r\";; esac; done"
    )


def releases_to_keep(meta: dict[str, dict[str, Any]], keep: int, current: str | None,
                     known_good: str | None) -> list[str]:
    """The newest `keep` complete releases, plus current and known-good whatever they are.
    Partial releases (an interrupted build) are not kept."""
    complete = sorted(name for name, flags in meta.items() if flags.get("complete"))
    newest = complete[-keep:] if keep > 0 else []
    return sorted(set(newest) | {r for r in (current, known_good) if r})


class RevisionsLog(FactBase):
    """The last entries of the host's revisions log (JSON lines)."""

    def command(self, path: str, lines: int = 200) -> str:
        return f"tail -n {int(lines)} {q(path)} 2>/dev/null || true"

    @staticmethod
    def default() -> list:
        return []

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        entries = []
        for line in output:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries


class ReleaseMigrations(FactBase):
    """Migration names (file stems) a release's code knows."""

    def command(self, path: str) -> str:
        return f"ls -1 {q(path)} 2>/dev/null | sed -n 's/\\.sql$//p' || true"

    @staticmethod
    def default() -> list:
        return []

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


APPLIED_MIGRATIONS_JS = (
    "const {Client}=require('pg');const c=new Client({host:process.env.DB_HOST,"
    "port:+process.env.DB_PORT,database:process.env.DB_NAME,user:process.env.DB_USER,"
    "password:process.env.DB_PASSWORD});c.connect().then(()=>c.query("
    "'SELECT version FROM '+process.argv[1]+' ORDER BY version')).then(r=>{"
    "for(const x of r.rows)console.log('applied '+x.version);return c.end()})"
    ".catch(e=>{console.log('error '+e.message);process.exit(0)})"
)


class AppliedMigrations(FactBase):
    """Versions recorded in the app's migrations table, read through the app host with the
    app's own driver and env file (the password stays in that one process's environment)."""

    def command(self, shared: str, backend: str, table: str) -> str:
        return with_app_env(shared, backend, f"node -e {q(APPLIED_MIGRATIONS_JS)} {q(table)}")

    def process(self, output: list[str]) -> dict[str, Any]:
        applied = [line[8:].strip() for line in output if line.startswith("applied ")]
        errors = [line[6:].strip() for line in output if line.startswith("error ")]
        return {"applied": applied, "error": errors[0] if errors else None}


@operation(is_idempotent=False)
def run_script(script: str):
    """Run a (multi-line) script as one command: each release step is a change by nature."""
    yield script


@operation(is_idempotent=False)
def upload(src: str, dest: str):
    yield FileUploadCommand(src, dest, remote_temp_filename=host.get_temp_filename(dest))


@operation(is_idempotent=False)
def download(src: str, dest: str):
    yield FileDownloadCommand(src, dest)
