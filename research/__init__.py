"""Research probes behind docs/embedded-model-runs.md. Run each from the repository root (see research/README.md)."""
