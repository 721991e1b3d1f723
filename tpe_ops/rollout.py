"""Rolling batches for fleet deploys and rollbacks (DESIGN.md 3.7): pure, no I/O.

pyinfra's --serial/--parallel visit hosts in arbitrary order and do not stop after a bad
batch, so the order, the batch sizes and the gate are ours: hosts go in inventory order, an
optional canary alone first, then batches of N hosts or P % of the fleet; a batch passes its
gate when no more than --max-fail P % of its hosts failed verification.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tpe_ops.errors import ConfigError


def parse_batch_size(text: str | None, fleet: int) -> int:
    """`N` hosts or `P%` of the fleet (rounded up, at least 1); None: the whole fleet."""
    if text is None:
        return max(fleet, 1)
    value = text.strip()
    try:
        if value.endswith("%"):
            pct = float(value[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, math.ceil(fleet * pct / 100))
        size = int(value)
        if size < 1:
            raise ValueError
        return size
    except ValueError:
        raise ConfigError(f"--batch-size {text!r}: not a number of hosts or a percentage",
                          "give e.g. --batch-size 2 or --batch-size 25%") from None


def parse_max_fail(text: str | None) -> float:
    """--max-fail P% (or P): the share of a batch allowed to fail verification; default 0."""
    if text is None:
        return 0.0
    try:
        pct = float(text.strip().rstrip("%"))
        if not 0 <= pct <= 100:
            raise ValueError
        return pct
    except ValueError:
        raise ConfigError(f"--max-fail {text!r}: not a percentage between 0 and 100",
                          "give e.g. --max-fail 0% or --max-fail 34%") from None


def make_batches(hosts: Sequence[str], size: int, canary: bool = False) -> list[list[str]]:
    """Hosts in inventory order: [canary], then groups of `size`."""
    order = list(hosts)
    batches: list[list[str]] = []
    if canary and order:
        batches.append([order.pop(0)])
    batches += [order[i:i + size] for i in range(0, len(order), size)]
    return batches


def allowed_failures(batch_size: int, max_fail_pct: float) -> int:
    """How many hosts of a batch may fail before the batch fails its gate."""
    return math.floor(batch_size * max_fail_pct / 100 + 1e-9)


def gate_passes(failed: int, batch_size: int, max_fail_pct: float) -> bool:
    return failed <= allowed_failures(batch_size, max_fail_pct)
