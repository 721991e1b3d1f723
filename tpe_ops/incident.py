"""Incident records of the runbook's section 5, step 5: what went wrong, when the rollback
happened, from which release to which, and the status after. Pure: builds text, no I/O."""

from __future__ import annotations

import json
from typing import Any


def incident_record(host: str, when: str, reason: str, from_release: str | None,
                    to_release: str, to_commit: str, status_after: str,
                    criteria: str, migrations_ahead: list[str]) -> dict[str, Any]:
    return {
        "host": host,
        "time": when,
        "what_went_wrong": reason,
        "rollback": {"from": from_release, "to": to_release, "to_commit": to_commit},
        "status_after": status_after,
        "rollback_criteria": criteria,
        "migrations_applied_after_target": migrations_ahead,
        "database_rolled_back": False,
    }


def incident_markdown(record: dict[str, Any]) -> str:
    rollback = record["rollback"]
    ahead = record["migrations_applied_after_target"]
    lines = [
        f"# Incident: rollback on {record['host']}",
        "",
        f"- **When:** {record['time']}",
        f"- **What went wrong:** {record['what_went_wrong']}",
        f"- **Rolled back from:** {rollback['from'] or '-'}",
        f"- **Rolled back to:** {rollback['to']} (commit {rollback['to_commit'][:12]})",
        f"- **Status after:** {record['status_after']}",
        f"- **Rollback criteria:** {record['rollback_criteria']}",
        "- **Database:** not rolled back (runbook section 5, step 4)"
        + (f"; migrations newer than the target: {', '.join(ahead)}" if ahead else ""),
        "",
    ]
    return "\n".join(lines)


def incident_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"
