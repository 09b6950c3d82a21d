"""``python -m bench`` (``make bench``): the engine benchmark (bench/bench_engines.py), then the library's
(bench/bench_library.py), then evaluation's against lm-evaluation-harness (bench/bench_eval.py), then data
analysis against pandas (bench/bench_data.py). Arguments go to the engine benchmark; each writes its own files in
bench/results/."""

import sys

from bench import bench_data, bench_engines, bench_eval, bench_library

status = bench_engines.main(sys.argv[1:])
sys.exit(status or bench_library.main([]) or bench_eval.main([]) or bench_data.main([]))
