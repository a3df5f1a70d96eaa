"""`python -m bench.measure CMD...`: run CMD, print its wall seconds and peak RSS as JSON (`measure` calls it).

Run as its own small process so the measured child's RSS is not inflated by a big parent
(a forked child counts the parent's pages until it execs).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one command, measured by this module as a small launcher."""
    r = measure_all(cmd, env)
    return r["wall"], r["rss"]


def measure_all(cmd: list[str], env: dict | None = None) -> dict:
    """``wall`` and ``cpu`` (user + system) seconds and peak ``rss`` (bytes) of one command: CPU time is what
    other load on a shared machine changes least."""
    proc = subprocess.run([sys.executable, "-m", "bench.measure", *cmd], env=env, capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode or not proc.stdout.strip():
        raise RuntimeError(f"{cmd[1]} failed:\n{proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if r["rc"]:
        raise RuntimeError(f"{cmd[1]} exited {r['rc']}:\n{proc.stderr[-2000:]}")
    return r


def main() -> None:
    cmd = sys.argv[1:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)  # onto fd 1 whatever else is closed (a launcher without stdin)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024,
                      "rc": os.waitstatus_to_exitcode(status)}))


if __name__ == "__main__":
    main()
