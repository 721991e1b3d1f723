"""Plain-Python orchestration above pyinfra: secrets and confirmation first, then phases."""
