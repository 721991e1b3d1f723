"""Facts and operations of the maintenance checklists (runbook section 7) that no other area
owns: disk use in bytes, `npm audit`, and archiving the log files pm2-logrotate has
rotated."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation

q = shlex.quote


class DiskUsage(FactBase):
    """Bytes under `path` (hard links counted once) and the use of its filesystem."""

    def command(self, path: str) -> str:
        return f"du -sb {q(path)} 2>/dev/null | cut -f1; df -P -B1 {q(path)} | tail -1"

    def process(self, output: list[str]) -> dict[str, Any]:
        parts = output[-1].split()
        size, used = int(parts[1]), int(parts[2])
        return {"bytes": int(output[0]) if output[0].isdigit() else 0, "fs_size": size,
                "fs_used": used, "fs_used_pct": used / size * 100 if size else None}


class NpmAudit(FactBase):
    """`npm audit --json` (production dependencies) of a release: (exit code, output)."""

    def command(self, release: str, registry: str = "") -> str:
        option = f" --registry {q(registry)}" if registry else ""
        return (f"cd {q(release)} && npm audit --json --omit=dev{option} 2>/dev/null; "
                "echo \"exit=$?\"")

    def process(self, output: list[str]) -> dict[str, Any]:
        code = 0
        if output and output[-1].startswith("exit="):
            code = int(output.pop()[5:])
        return {"exit_code": code, "output": "\n".join(output)}


class RotatedLogs(FactBase):
    """Log files pm2-logrotate rotated (`<app>-out__<date>.log[.gz]`, next to the live log)
    older than `days` days, and files in the archive older than `keep_days`:
    {"rotated": [...], "expired": [...]}."""

    def command(self, logs_dir: str, archive: str, days: int, keep_days: int) -> str:
        return (f"find {q(logs_dir)} -maxdepth 1 -type f -name '*__*' -mtime +{int(days)} "
                "-printf 'rotated %p\\n' 2>/dev/null; "
                f"find {q(archive)} -maxdepth 1 -type f -mtime +{int(keep_days)} "
                "-printf 'expired %p\\n' 2>/dev/null; true")

    @staticmethod
    def default() -> dict[str, list[str]]:
        return {"rotated": [], "expired": []}

    def process(self, output: list[str]) -> dict[str, list[str]]:
        found = self.default()
        for line in output:
            kind, _, path = line.partition(" ")
            if kind in found and path:
                found[kind].append(path)
        return {k: sorted(v) for k, v in found.items()}


@operation()
def archive_rotated_logs(logs_dir: str, archive: str, days: int, keep_days: int):
    """Move rotated PM2 logs older than `days` into `archive` (compressed), and delete archived
    files older than `keep_days`. Nothing old enough: no change."""
    found = host.get_fact(RotatedLogs, logs_dir=logs_dir, archive=archive, days=days,
                          keep_days=keep_days)
    if not found["rotated"] and not found["expired"]:
        host.noop(f"no rotated log older than {days} days, no archive older than {keep_days}")
        return
    if found["rotated"]:
        yield f"mkdir -p {q(archive)} && chmod 0750 {q(archive)}"
        for path in found["rotated"]:
            if not path.endswith(".gz"):
                yield f"gzip -f {q(path)}"
                path += ".gz"
            yield f"mv -f {q(path)} {q(archive)}/"
    for path in found["expired"]:
        yield f"rm -f {q(path)}"
