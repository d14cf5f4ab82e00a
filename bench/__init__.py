"""Benchmarks, run from the repo root as modules: `python -m bench.pipeline --help`."""
