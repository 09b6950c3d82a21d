"""Benchmarks: run one with ``python -m bench.<name>``; figures go to bench/results/."""

import sys


def say(message: str) -> None:
    """Progress for a person watching: to stderr at once, so stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)
