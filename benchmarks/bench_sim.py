"""Simulator frames/s at 160x120, 320x240 and 640x480 (ratios against 160x120, same run).

    python benchmarks/bench_sim.py
"""

import sys

from embodied_mem.eval.bench import main

if __name__ == "__main__":
    sys.exit(main(["--skip-memory", *sys.argv[1:]]))
