"""``python -m bench``: the engine benchmark (see bench/bench_engines.py)."""

import sys

from bench.bench_engines import main

sys.exit(main(sys.argv[1:]))
