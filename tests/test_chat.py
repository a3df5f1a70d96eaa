"""The chat: KV reuse counted by llama.cpp itself, and the terminal driven through a real pseudo-terminal."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import smollm2_gguf

from gguf_runtime import Model
from gguf_runtime.chat import ChatSession, read_transcript, sampling_for
from gguf_tools.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
LONG = [
    "Explain in detail why the sky is blue during the day and why sunsets are red, including the physics of"
    " Rayleigh scattering and how the path of light through the atmosphere changes at dusk.",
    "Describe the water cycle step by step: evaporation from oceans, condensation into clouds, precipitation as"
    " rain or snow, and how rivers and groundwater carry the water back to the sea.",
    "Tell me about the history of the printing press, who invented it, how it spread across Europe, and what"
    " effects it had on literacy, religion, science and politics in the centuries after.",
    "What are the main differences between a crocodile and an alligator, including where they live, the shape"
    " of their snouts, their colours, their teeth and how they behave around people?",
    "Give me a simple recipe for bread with flour, water, salt and yeast, with the times for kneading, rising"
    " and baking, and the oven temperature, and explain what each step does to the dough.",
]


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_gguf()
    return Model(path, n_ctx=1024, threads=1)


def test_turn_three_evaluates_only_its_new_tokens(smollm2):
    import llama_cpp

    session = ChatSession(smollm2, sampling=sampling_for(smollm2.metadata, temp=0, max_tokens=12))
    llm, ctx = smollm2._llm, smollm2._llm._ctx.ctx
    for question in ("What is the capital of France?", "And of Italy?"):
        "".join(session.ask(question))
    before = smollm2.chat_prompt(session.messages[:-1])  # turn 2's prompt ...
    cached = [int(t) for t in llm.input_ids[: llm.n_tokens]]   # turn 2's prompt and answer, as llama.cpp holds them
    llama_cpp.llama_perf_context_reset(ctx)
    "".join(session.ask("Name three colours."))
    prompt = smollm2.chat_prompt(session.messages[:-1])
    common = next((i for i, (a, b) in enumerate(zip(prompt, cached)) if a != b), min(len(prompt), len(cached)))
    assert common >= len(before)                                 # the template keeps the history as a prefix
    assert session.last.evaluated == len(prompt) - common        # the new tokens, not the whole history
    assert session.last.evaluated < len(prompt) // 2
    assert llama_cpp.llama_perf_context(ctx).n_p_eval == session.last.evaluated   # llama.cpp's own count
    assert llm.n_tokens >= len(prompt)


def test_a_full_context_drops_the_oldest_exchanges_but_keeps_the_system_prompt(smollm2):
    small = Model(smollm2.path, n_ctx=256, threads=1)
    notes: list[str] = []
    session = ChatSession(small, system="Answer briefly.", notify=notes.append,
                          sampling=sampling_for(small.metadata, temp=0, max_tokens=8))
    for question in LONG:
        "".join(session.ask(question))
    assert session.messages[0] == {"role": "system", "content": "Answer briefly."}
    assert session.messages[-2]["content"] == LONG[-1] and session.messages[-1]["role"] == "assistant"
    assert session.messages[1]["content"] != LONG[0]
    assert any("dropped the oldest" in n for n in notes)
    assert session.context()[0] <= 256


def test_a_transcript_round_trips_and_a_hostile_one_is_refused(smollm2, tmp_path):
    session = ChatSession(smollm2, system="Be kind.", sampling=sampling_for(smollm2.metadata, temp=0.3))
    session.messages += [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    session.save(tmp_path / "t.json")
    other = ChatSession(smollm2)
    other.load(tmp_path / "t.json")
    assert other.messages == session.messages and other.sampling.temp == pytest.approx(0.3)
    for bad in ('{"format": "gguf-tools chat transcript", "version": 99, "messages": []}',
                '{"format": "gguf-tools chat transcript", "version": 1, "messages": [{"role": "tool"}]}',
                '{"format": "gguf-tools chat transcript", "version": 1, "messages": [], "sampling": {"x": 1}}',
                "not json", "[]"):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(InputError):
            read_transcript(tmp_path / "bad.json")
    assert other.messages == session.messages


def test_sampling_defaults_come_from_the_model_then_the_command_line():
    meta = {"general.sampling.temp": "0.6", "general.sampling.top_k": "20", "general.sampling.top_p": "oops"}
    s = sampling_for(meta, top_k=5)
    assert (s.temp, s.top_k, s.top_p) == (pytest.approx(0.6), 5, pytest.approx(0.95))


# --- the terminal, through a real pseudo-terminal -------------------------------------------------------

STATS = r"context \d+/256 tokens"
PROMPT_READY = "\x1b[?2004h"   # prompt_toolkit turns bracketed paste on once it reads the keyboard


def _spawn(tmp_path: Path, *args: str):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(tmp_path / "state"), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "gguf_tools.cli", "chat", str(smollm2_gguf()),
                                           "--ctx", "256", "--temp", "0", "--threads", "1", *args],
                          env=env, cwd=str(tmp_path), timeout=120, encoding="utf-8", dimensions=(40, 200))
    child.logfile_read = open(tmp_path / f"screen-{len(list(tmp_path.glob('screen-*')))}.txt", "w")  # noqa: SIM115
    child.expect("/help lists commands")
    return child


def _say(child, text: str) -> None:
    child.send(text + "\r")


def test_a_long_chat_in_a_terminal_drops_old_turns_survives_ctrl_c_and_ends_on_ctrl_d(tmp_path):
    child = _spawn(tmp_path, "-n", "16")
    for question in LONG:
        _say(child, question)
        child.expect(STATS)
    child.logfile_read.flush()
    assert "context full: dropped the oldest" in Path(child.logfile_read.name).read_text()
    _say(child, "/set max_tokens 400")
    child.expect("max_tokens = 400")
    _say(child, "Write a very long story about a dragon who learns to bake bread.")
    child.expect_exact("\x1b[?2004l")                 # prompt_toolkit has handed the terminal back ...
    child.expect(r"\n[A-Za-z][^\x1b\r\n]* \w+ \w+")      # ... and the answer (not a dim note) is streaming
    child.sendintr()
    child.expect(r"\(answer stopped\)")
    child.expect(STATS)
    _say(child, "/set max_tokens 16")
    _say(child, "What is 2 + 2?")
    child.expect(STATS)
    _say(child, "/undo")
    child.expect("last exchange forgotten")
    _say(child, "/regen")
    child.expect(STATS)
    _say(child, "/context")
    child.expect(r"context: \d+ tokens used, \d+ free of 256")
    _say(child, "/save first.json")
    child.expect("saved")
    child.expect_exact(PROMPT_READY)
    child.send("\x04")                                # Ctrl-D
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
    messages, _ = read_transcript(tmp_path / "first.json")
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
    assert messages[-2]["content"].startswith("Write a very long story")   # regenerated after /undo
    assert (tmp_path / "state" / "gguf-tools" / "chat_history").read_text().count("+/undo") == 1

    child = _spawn(tmp_path, "-n", "8")
    _say(child, "/load first.json")
    child.expect("loaded")
    _say(child, "/save second.json")
    child.expect("saved")
    _say(child, '"""')
    _say(child, "Say hello")
    _say(child, 'in French."""')
    child.expect(STATS)
    _say(child, "/bye")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
    assert read_transcript(tmp_path / "second.json")[0] == messages


def test_ctrl_c_at_an_empty_prompt_ends_the_chat_with_130(tmp_path):
    child = _spawn(tmp_path)
    child.expect_exact(PROMPT_READY)
    child.sendintr()
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 130


def pexpect_eof():
    import pexpect

    return pexpect.EOF


def test_piped_questions_are_answered_and_the_transcript_is_json(tmp_path):
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "gguf_tools.cli", "chat", str(smollm2_gguf()), "--temp", "0",
         "--max-tokens", "8", "--ctx", "256", "--threads", "1", "--quiet"],
        input="What is 2 + 2?\n\n/save t.json\n", capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "tok/s" not in proc.stderr
    assert json.loads((tmp_path / "t.json").read_text())["messages"][0]["content"] == "What is 2 + 2?"
