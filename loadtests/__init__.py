"""Benchmarks: ``python -m loadtests.<name>``; each prints one JSON object as its last line."""
