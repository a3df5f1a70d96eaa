"""`python -m bench [name ...]`: run the benchmarks (all bench_*.py by default) and print markdown."""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from bench.common import machine


def main(argv: list[str]) -> None:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    print(f"Machine: {machine()}\n")
    for name in names:
        mod = importlib.import_module(f"bench.bench_{name}")
        start = time.perf_counter()
        print(f"## {name}  (`python -m bench {name}`)\n")
        print(mod.run())
        print(f"\n({time.perf_counter() - start:.0f}s)\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
