"""Micro-benchmarks that print figures (`python -m bench.benchmarks.NAME --help`); shared pieces in common.py."""
