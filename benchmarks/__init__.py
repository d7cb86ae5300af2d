"""Timing scripts: ``python -m benchmarks.<name> --out FILE.json``."""
