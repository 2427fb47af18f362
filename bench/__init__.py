"""Benchmarks that print figures (DESIGN.md: never part of the pass/fail test run).

Run from the repository root, e.g. `.venv/bin/python -m bench.bench_ledger --servers 2000`.
"""
