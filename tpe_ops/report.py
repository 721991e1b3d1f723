"""What people and machines read: a line per step per host, a summary table, or JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from tpe_ops.runner import RunResult, Step
from tpe_ops.secrets import redact

SYMBOLS = {"changed": "~", "would-change": "+", "ok": ".", "failed": "x",
           "warning": "!", "critical": "X", "unknown": "?"}


def step_line(host: str, step: Step) -> str:
    line = f"[{host}] {SYMBOLS.get(step.status, '?')} {step.status:<12} {step.name}"
    if step.seconds >= 1:
        line += f" [{step.seconds:.1f} s]"
    return redact(f"{line}  ({step.detail})" if step.detail else line)


def print_step(host: str, step: Step, out: TextIO = sys.stdout) -> None:
    print(step_line(host, step), file=out, flush=True)


def summary_table(command: str, result: RunResult) -> str:
    verb = "would change" if result.dry else "changed"
    rows = [("host", "result", verb, "steps", "error")]
    for host in result.hosts.values():
        outcome = "ok" if host.ok else "FAILED"
        error = host.error or next((s.name for s in host.steps if s.status == "failed"), "")
        rows.append((host.name, outcome, str(host.changed), str(len(host.steps)), error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    dry = " (dry run: nothing changed)" if result.dry else ""
    title = f"{command}{dry}: {result.seconds:.1f} s"
    return redact("\n".join([title, *lines]))


def as_json(command: str, result: RunResult, extra: dict[str, Any] | None = None) -> str:
    payload = {
        "command": command,
        "dry": result.dry,
        "ok": result.ok,
        "seconds": round(result.seconds, 3),
        "hosts": {
            name: {"ok": h.ok, "changed": h.changed, "error": h.error,
                   "steps": [asdict(s) for s in h.steps], **h.data}
            for name, h in result.hosts.items()
        },
        **result.extra,
        **(extra or {}),
    }
    if result.headline:
        payload["status_line"] = result.headline
    return redact(json.dumps(payload, indent=2))
