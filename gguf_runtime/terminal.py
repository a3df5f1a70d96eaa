"""The terminal chat: reads messages and slash commands, streams answers, never loses the conversation.

Line editing and history come from prompt_toolkit when both ends are a terminal; piped input is read
line by line, so ``echo question | gguf-tools chat MODEL`` answers and exits. Answers go to stdout;
notes and the stats line go to stderr (dim on a terminal), so a script reads answers only.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from gguf_tools.errors import GGUFToolsError

from .chat import ChatSession, Sampling, Turn
from .model import Model

HELP = """\
/help                 this list
/system TEXT          set the system prompt (empty: remove it)
/clear                forget the conversation (the system prompt stays)
/undo                 forget the last question and its answer
/regen                answer the last question again
/context              tokens used and free
/stats                what this chat has cost so far
/save FILE            write the conversation as a JSON transcript
/load FILE            continue a saved conversation
/set NAME VALUE       temp, top_k, top_p, min_p, repeat_penalty or max_tokens (no arguments: show them)
/bye                  end the chat (also Ctrl-D)
\"\"\"                   start and end a message of several lines
Ctrl-C stops an answer; at an empty prompt it ends the chat."""

FENCE = '"""'


class Terminal:
    """Where text goes: answers to stdout, notes to stderr, dim when stderr is a terminal."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.dim_on = sys.stderr.isatty()

    def answer(self, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    def note(self, line: str) -> None:
        sys.stdout.flush()
        sys.stderr.write(f"\x1b[2m{line}\x1b[0m\n" if self.dim_on else f"{line}\n")
        sys.stderr.flush()

    def stats(self, turn: Turn, n_ctx: int) -> None:
        if self.quiet:
            return
        p_rate = turn.evaluated / turn.prompt_seconds if turn.prompt_seconds > 0 else 0.0
        g_rate = turn.generated / turn.generate_seconds if turn.generate_seconds > 0 else 0.0
        used = turn.prompt_tokens + turn.generated
        self.note(f"prompt {turn.evaluated} tok {p_rate:.0f} tok/s · answer {turn.generated} tok {g_rate:.1f} tok/s"
                  f" · context {used}/{n_ctx} tokens")


def _history_file() -> Path | None:
    """The prompt history under the user's state directory ($XDG_STATE_HOME on Linux)."""
    import platformdirs

    path = Path(platformdirs.user_state_dir("gguf-tools")) / "chat_history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def _line_reader() -> Callable[[str], str]:
    """A function that shows a prompt and returns one line; EOFError at the end, KeyboardInterrupt on Ctrl-C."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        path = _history_file()
        session = PromptSession(history=FileHistory(str(path)) if path else InMemoryHistory())
        return lambda prompt: session.prompt(prompt)

    def read(_prompt: str) -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


def read_message(read: Callable[[str], str]) -> str:
    """One message: a line, or the lines between two ``\"\"\"`` lines. Pasted text stays one message."""
    line = read("> ").strip()
    if not line.startswith(FENCE):
        return line
    body = line[len(FENCE):]
    if body.endswith(FENCE):   # """one line"""
        return body[: -len(FENCE)].strip()
    lines = [body]
    while True:
        line = read("... ")
        if line.rstrip().endswith(FENCE):
            lines.append(line.rstrip()[: -len(FENCE)])
            return "\n".join(lines).strip()
        lines.append(line)


def run_chat(model: Model, *, system: str | None = None, sampling: Sampling | None = None,
             quiet: bool = False, verbose: bool = False) -> int:
    """The chat loop; returns the exit code (0 on Ctrl-D or /bye, 130 on Ctrl-C at the prompt)."""
    out = Terminal(quiet)
    session = ChatSession(model, system=system, sampling=sampling, notify=out.note, verbose=verbose)
    read = _line_reader()
    turns: list[Turn] = []
    if sys.stdin.isatty():
        out.note(f"chatting with {session.model.path.name} (context {session.model.n_ctx}); /help lists commands")
    while True:
        try:
            text = read_message(read)
        except EOFError:
            return 0
        except KeyboardInterrupt:
            return 130
        if not text:
            continue
        try:
            if text.startswith("/"):
                name, _, arg = text.partition(" ")
                answer = _command(session, out, name, arg.strip(), turns)
                if answer == "bye":
                    return 0
                if answer is None:
                    continue
            else:
                answer = session.ask(text)
            _stream(session, out, answer)
            turns.append(session.last)
        except GGUFToolsError as e:
            out.note(f"error: {e}")


def _stream(session: ChatSession, out: Terminal, answer) -> None:
    """Print an answer as it comes; Ctrl-C stops it, and what was said stays in the history."""
    try:
        for piece in answer:
            out.answer(piece)
    except KeyboardInterrupt:
        pass
    finally:
        answer.close()
    out.answer("\n")
    stop = session.last.stop
    if stop == "interrupted":
        out.note("(answer stopped)")
    elif stop == "context":
        out.note("(the answer reached the end of the context and was cut; /clear or /undo makes room)")
    elif stop == "max_tokens":
        out.note(f"(answer cut at {session.sampling.max_tokens} tokens; /set max_tokens N allows more)")
    out.stats(session.last, session.model.n_ctx)


def _command(session: ChatSession, out: Terminal, name: str, arg: str, turns: list[Turn]):
    """Run one slash command: an answer to stream (/regen), "bye", or None when done."""
    if name in ("/bye", "/exit", "/quit"):
        return "bye"
    if name == "/help":
        out.note(HELP)
    elif name == "/system":
        session.set_system(arg)
        out.note("system prompt set" if arg else "system prompt removed")
    elif name == "/clear":
        session.clear()
        out.note("conversation cleared")
    elif name == "/undo":
        out.note("last exchange forgotten" if session.undo() else "nothing to undo")
    elif name == "/regen":
        return session.regen()
    elif name == "/context":
        used, n_ctx = session.context()
        out.note(f"context: {used} tokens used, {max(0, n_ctx - used)} free of {n_ctx}"
                 f" ({sum(m['role'] == 'user' for m in session.messages)} exchanges)")
    elif name == "/stats":
        evaluated = sum(t.evaluated for t in turns)
        prompt = sum(t.prompt_tokens for t in turns)
        generated = sum(t.generated for t in turns)
        seconds = sum(t.prompt_seconds + t.generate_seconds for t in turns)
        out.note(f"{len(turns)} answers: {evaluated} prompt tokens evaluated ({prompt - evaluated} reused from the"
                 f" cache), {generated} generated, {seconds:.1f} s")
    elif name == "/save":
        if not arg:
            out.note("usage: /save FILE")
        else:
            session.save(os.path.expanduser(arg))
            out.note(f"saved {len(session.messages)} messages to {arg}")
    elif name == "/load":
        if not arg:
            out.note("usage: /load FILE")
        else:
            session.load(os.path.expanduser(arg))
            out.note(f"loaded {len(session.messages)} messages from {arg}")
    elif name == "/set":
        if not arg:
            out.note(" ".join(f"{k}={v}" for k, v in asdict(session.sampling).items()))
        else:
            key, _, value = arg.partition(" ")
            session.sampling.set(key, value.strip())
            out.note(f"{key} = {getattr(session.sampling, key)}")
    else:
        out.note(f"unknown command {name}; /help lists them")
    return None
