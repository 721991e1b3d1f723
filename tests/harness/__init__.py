"""Real-test-host harness: systemd-nspawn hosts booted from a cached Debian image."""
