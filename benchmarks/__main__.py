"""Run every benchmark, one after another, each in its own process, then draw the plots.

    python -m benchmarks                      # all of them (about 30 min on 2 cores)
    python -m benchmarks weight_store overhead # some of them

Each prints its table and writes benchmarks/results/NAME.json; the plots land next to them
as PNG files (benchmarks/plots.py). docs/benchmarks.md holds the figures measured here.
"""

from __future__ import annotations

import subprocess
import sys

from . import plots

ALL = ["weight_store", "overhead", "throughput", "pressure", "accuracy", "scaling", "contention", "inner_layer", "simulation", "own_data",
       "fashion_mnist", "guardrail",
       "heterogeneity", "startup", "chaos"]


def main() -> int:
    names = sys.argv[1:] or ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n== benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode:
            failed.append(name)
    for path in plots.draw_all():
        print("wrote", path)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
