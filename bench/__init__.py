"""Benchmarks: run one with ``python -m bench.<name>``; figures go to bench/results/."""
