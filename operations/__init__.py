"""pyinfra facts and operations of TPE Ops, one module per area."""
