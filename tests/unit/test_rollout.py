"""Rolling batches (tpe_ops.rollout): order, sizes, canary, the gate."""

from __future__ import annotations

import pytest

from tpe_ops import rollout as r
from tpe_ops.errors import ConfigError

HOSTS = ["h1", "h2", "h3", "h4", "h5", "h6"]


def test_batch_size_in_hosts_or_percent():
    assert r.parse_batch_size(None, 6) == 6
    assert r.parse_batch_size("2", 6) == 2
    assert r.parse_batch_size("50%", 6) == 3
    assert r.parse_batch_size("10%", 6) == 1  # rounded up, at least one host
    assert r.parse_batch_size("34%", 6) == 3


@pytest.mark.parametrize("bad", ["0", "-1", "x", "0%", "150%", ""])
def test_bad_batch_size_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="--batch-size"):
        r.parse_batch_size(bad, 6)


def test_batches_keep_inventory_order_with_a_canary_first():
    assert r.make_batches(HOSTS, 2) == [["h1", "h2"], ["h3", "h4"], ["h5", "h6"]]
    assert r.make_batches(HOSTS, 4, canary=True) == [["h1"], ["h2", "h3", "h4", "h5"], ["h6"]]
    assert r.make_batches(["h1"], 3, canary=True) == [["h1"]]
    assert r.make_batches(HOSTS, 6) == [HOSTS]


def test_gate():
    assert r.parse_max_fail(None) == 0
    assert r.gate_passes(0, 3, 0) and not r.gate_passes(1, 3, 0)
    assert r.allowed_failures(3, 34) == 1 and r.allowed_failures(3, 33) == 0
    assert r.gate_passes(1, 2, 50) and not r.gate_passes(2, 2, 50)
    assert r.allowed_failures(3, 100) == 3
    with pytest.raises(ConfigError, match="--max-fail"):
        r.parse_max_fail("abc")
