"""One module per `sluice` sub-command; each exposes `run(args) -> int` (the exit code)."""
