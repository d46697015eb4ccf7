"""Benchmarks: speed, memory and quality. Run each from the repository root (see benchmarks/README.md)."""
