"""TPE Ops: the runbook logic that is not a pyinfra operation (settings, secrets, runs, reports)."""
