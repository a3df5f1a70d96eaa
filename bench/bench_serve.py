"""The local server (`gguf-tools serve`, llama_cpp.server): time to first token and tokens/s for one client and
for 4 concurrent clients, against direct Model use in one process."""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

from bench.common import REPO, smollm2_gguf

QUESTION = "Tell me about the moon."
MAX_TOKENS = 64
THREADS = 2


def _stream(url: str) -> tuple[float, int, float]:
    """(seconds to the first piece, pieces, seconds from the first piece to the last) for one streamed answer;
    the end of the stream itself is not timed (the server may hold the connection a while after its last piece)."""
    import httpx

    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": MAX_TOKENS, "temperature": 0,
            "stream": True}
    start, first, last, n = time.perf_counter(), None, None, 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    n += 1
                    last = time.perf_counter()
                    first = first or last
                    if n == MAX_TOKENS:   # every piece is here
                        break
    return first - start, n, last - first


def _clients(url: str, k: int) -> list[tuple[float, int, float]]:
    results: list = [None] * k
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _stream(url))) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _direct() -> tuple[float, int, float]:
    from gguf_runtime import Model

    m = Model(smollm2_gguf(), n_ctx=2048, threads=THREADS)
    runs = []
    for _ in range(3):
        start, first, n = time.perf_counter(), None, 0
        for piece in m.stream_chat(QUESTION, max_tokens=MAX_TOKENS):
            n += bool(piece)
            first = first or time.perf_counter()
        runs.append((first - start, n, time.perf_counter() - first))
    return min(runs, key=lambda r: r[0] + r[2])


def run() -> str:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gguf_tools.cli", "serve", str(smollm2_gguf()), "--port", str(port),
                             "--ctx", "2048", "--threads", str(THREADS)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(url + "/v1/models", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        _stream(url)   # warm-up
        one = min((_stream(url) for _ in range(3)), key=lambda r: r[0] + r[2])
        four = _clients(url, 4)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    direct = _direct()
    rows = ["| setup | time to first token | tokens/s per client | tokens/s in all |", "|---|---:|---:|---:|"]
    rate = lambda r: (r[1] - 1) / r[2] if r[2] > 0 else 0.0
    rows.append(f"| direct `Model.stream_chat` | {direct[0] * 1000:.0f} ms | {rate(direct):.1f} | {rate(direct):.1f} |")
    rows.append(f"| server, 1 client | {one[0] * 1000:.0f} ms | {rate(one):.1f} | {rate(one):.1f} |")
    ttft = statistics.median(r[0] for r in four)
    per = statistics.median(rate(r) for r in four)
    total = sum(r[1] for r in four) / max(r[0] + r[2] for r in four)
    rows.append(f"| server, 4 concurrent clients | {ttft * 1000:.0f} ms (median; last {max(r[0] for r in four):.1f} s)"
                f" | {per:.1f} (median) | {total:.1f} |")
    return (f"SmolLM2-135M Q4_1, greedy, {MAX_TOKENS} tokens, {THREADS} threads, n_ctx 2048; streamed pieces counted"
            " as tokens; tokens/s from the first piece to the last.\n\n" + "\n".join(rows))
