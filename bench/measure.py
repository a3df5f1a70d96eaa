"""`python -m bench.measure CMD...`: run CMD, print its wall seconds and peak RSS as JSON.

Run as its own small process so the measured child's RSS is not inflated by a big parent
(a forked child counts the parent's pages until it execs).
"""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    cmd = sys.argv[1:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(1)
        os.open(os.devnull, os.O_WRONLY)
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "rss": usage.ru_maxrss * 1024, "rc": os.waitstatus_to_exitcode(status)}))


if __name__ == "__main__":
    main()
