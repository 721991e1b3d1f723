"""Prepare the controller before a test run (`make test`): PostgreSQL up with
pg_stat_statements preloaded. Preloading restarts the cluster (once per machine): done here,
before any test host's app connects, not by a test worker while another worker's apps run."""

from __future__ import annotations

from tests.harness import postgres


def main() -> None:
    cluster = postgres.ensure_cluster()
    restarted = postgres.enable_pg_stat_statements(cluster)
    print(f"prepare: PostgreSQL {cluster.version}/{cluster.name} ready, pg_stat_statements "
          f"{'preloaded now' if restarted else 'already preloaded'}")


if __name__ == "__main__":
    main()
