"""Ingest rate, recall p50/p95 and size of each memory at 1k, 10k (and 100k) observations,
with ratios against frame_bank measured in the same run.

    python benchmarks/bench_memory.py --frames 1000 10000 100000
"""

import sys

from embodied_mem.eval.bench import main

if __name__ == "__main__":
    sys.exit(main(["--skip-sim", *sys.argv[1:]]))
