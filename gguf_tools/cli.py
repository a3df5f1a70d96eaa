"""The `gguf-tools` command: a thin layer over the Python API.

Every failure the user can act on is a typed error mapped to one exit code here, in ``main``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import typer

from .errors import EXIT_CODES, EXIT_INTERRUPTED, GGUFToolsError, exit_code

app = typer.Typer(
    name="gguf-tools",
    help="Convert Hugging Face models to GGUF, inspect them, and run them offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
)


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@app.command()
def convert(
    src: str = typer.Argument(..., help="Hugging Face model directory, HF cache entry, or org/name in the HF cache."),
    output: Path | None = typer.Option(None, "-o", "--output", help="GGUF file to write."),
    quant: str = typer.Option("F16", "--quant", "--outtype", "-q",
                              help="Preset: F32 F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S Q3_K_L Q3_K_M"
                                   " Q3_K_S Q2_K Q5_1 Q5_0 Q4_1 Q4_0."),
    imatrix: Path | None = typer.Option(None, "--imatrix", help="Importance matrix (llama.cpp GGUF or .dat)."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the type chosen for every tensor; write nothing."),
    search: str = typer.Option("default", "--search", help="Block search: default (ours), best (ours, wider and slower) or ggml (bit-exact)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Read pytorch_model.bin (weights_only)."),
    pre_tokenizer: str | None = typer.Option(None, "--pre-tokenizer", help="Force llama.cpp's pre-tokenizer name."),
    force: bool = typer.Option(True, "--force/--no-overwrite", help="Replace an existing output file."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    pack_output: bool = typer.Option(False, "--pack", help="Write the Huffman-packed file instead of the GGUF."),
) -> None:
    """Convert a Hugging Face checkpoint into a GGUF file, at any llama.cpp preset."""
    from .convert import convert as run_convert

    if output is None and not plan_only:
        raise click.UsageError("missing option '-o' / '--output' (or use --plan)")
    _check_search(search)
    result = run_convert(
        src,
        None if plan_only else output,
        quant=quant,
        imatrix=imatrix,
        mode=search,
        allow_pickle=allow_pickle,
        overwrite=force,
        progress=False if no_progress else None,
        pre_tokenizer=pre_tokenizer,
        pack=pack_output,
    )
    _report(result, plan_only, as_json)


@app.command()
def quantize(
    src: Path = typer.Argument(..., help="GGUF file (F32/F16/BF16)."),
    output: Path | None = typer.Argument(None, help="GGUF file to write."),
    quant: str = typer.Option("Q4_K_M", "--quant", "-q", help="Preset, as for convert."),
    imatrix: Path | None = typer.Option(None, "--imatrix", help="Importance matrix (llama.cpp GGUF or .dat)."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the type chosen for every tensor; write nothing."),
    search: str = typer.Option("default", "--search", help="Block search: default (ours), best (ours, wider and slower) or ggml (bit-exact)."),
    allow_requantize: bool = typer.Option(False, "--allow-requantize", help="Re-quantize quantized tensors."),
    force: bool = typer.Option(True, "--force/--no-overwrite", help="Replace an existing output file."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Quantize a GGUF file to a preset (llama.cpp's mixtures, our block search)."""
    from .requantize import quantize_gguf

    if output is None and not plan_only:
        raise click.UsageError("missing OUTPUT (or use --plan)")
    _check_search(search)
    result = quantize_gguf(src, None if plan_only else output, quant, imatrix=imatrix, mode=search,
                           allow_requantize=allow_requantize, overwrite=force,
                           progress=False if no_progress else None)
    _report(result, plan_only, as_json)


def _check_search(search: str) -> None:
    from .quantize import MODES

    if search not in MODES:
        raise click.UsageError(f"--search must be one of {', '.join(MODES)}, got {search!r}")


def _report(result, plan_only: bool, as_json: bool) -> None:
    for note in getattr(result, "notes", []):
        sys.stderr.write(f"gguf-tools: note: {note}\n")
    if plan_only:
        _show_plan(result.plan, as_json)
    elif as_json:
        _emit_json(result.as_dict())
    else:
        types = ", ".join(f"{k} x{v}" for k, v in sorted(result.types.items()))
        packed = getattr(result, "packed_size", None)
        size = f"{result.size / 2**20:.1f} MiB" if packed is None else \
            f"{packed / 2**20:.1f} MiB packed from {result.size / 2**20:.1f} MiB"
        typer.echo(
            f"wrote {result.output} ({size}, {result.arch}, {types},"
            f" {result.bits_per_weight:.2f} bpw) in {result.seconds:.1f}s"
        )


def _show_plan(plan, as_json: bool) -> None:
    from .plan import bits_per_weight, explain, format_table

    rows = explain(plan)
    if as_json:
        _emit_json({"preset": plan.preset.name if hasattr(plan.preset, "name") else str(plan.preset),
                    "bits_per_weight": bits_per_weight(plan),
                    "tensors": [vars(r) for r in rows]})
    else:
        typer.echo(format_table(rows))
        typer.echo(f"\n{len(rows)} tensors, {bits_per_weight(plan):.3f} bits per weight")


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="GGUF file, plain or packed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a GGUF file's metadata, tensors, types and bits per weight (and, packed, what packing saved)."""
    from .inspection import describe, format_text

    info = describe(path)
    if as_json:
        _emit_json(info)
    else:
        typer.echo(format_text(info))


PACKED_SUFFIX = ".ggpk"


def _default_output(src: Path, old: str, new: str) -> Path:
    """model.gguf <-> model.ggpk; any other name gets the new suffix added."""
    return src.with_suffix(new) if src.suffix == old else src.with_name(src.name + new)


def _check_distinct(src: Path, output: Path) -> None:
    if output.exists() and src.exists() and os.path.samefile(src, output):
        raise click.UsageError(f"{output} is the input file; choose another output with -o")


@app.command()
def pack(
    src: Path = typer.Argument(..., help="GGUF file."),
    output: Path | None = typer.Option(None, "-o", "--output", help=f"Packed file (default: SRC with {PACKED_SUFFIX})."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Default: all available cores."),
    smallest: bool = typer.Option(False, "--smallest",
                                  help="Code every field that saves a byte: a little smaller, about twice as slow to load."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Huffman-pack a GGUF file, losslessly: smaller to store and ship, loads directly (docs/packed-format.md)."""
    from .packed import MIN_SAVING
    from .packed import pack as run_pack

    output = output or _default_output(src, ".gguf", PACKED_SUFFIX)
    _check_distinct(src, output)
    stats = run_pack(src, output, threads=threads, min_saving=0.0 if smallest else MIN_SAVING)
    if as_json:
        _emit_json({"output": str(output), "original_size": stats.original_size, "packed_size": stats.packed_size,
                    "ratio": round(stats.ratio, 4), "chunks": stats.n_chunks, "seconds": round(stats.seconds, 3)})
    else:
        typer.echo(f"wrote {output} ({stats.packed_size / 2**20:.1f} MiB, {100 * stats.ratio:.1f}% of "
                   f"{stats.original_size / 2**20:.1f} MiB) in {stats.seconds:.1f}s")


@app.command()
def unpack(
    src: Path = typer.Argument(..., help="Packed file."),
    output: Path | None = typer.Option(None, "-o", "--output", help="GGUF file (default: SRC with .gguf)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Default: all available cores."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore the original GGUF byte for byte (its sha256 is checked before the file appears)."""
    from .packed import unpack as run_unpack

    output = output or _default_output(src, PACKED_SUFFIX, ".gguf")
    _check_distinct(src, output)
    header = run_unpack(src, output, threads=threads)
    if as_json:
        _emit_json({"output": str(output), "size": header.original_size, "sha256": header.sha256})
    else:
        typer.echo(f"wrote {output} ({header.original_size / 2**20:.1f} MiB, sha256 {header.sha256})")


@app.command()
def run(
    model: Path = typer.Argument(..., help="GGUF model file, plain or packed."),
    prompt: str = typer.Option(..., "-p", "--prompt", help="Text to continue."),
    max_tokens: int = typer.Option(128, "--max-tokens", "-n", min=1),
    temp: float = typer.Option(0.0, "--temp", min=0.0, help="0 = greedy."),
    seed: int = typer.Option(0, "--seed"),
    ctx: int = typer.Option(2048, "--ctx", min=16),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Default: physical cores."),
) -> None:
    """Stream a completion of PROMPT."""
    from gguf_runtime import Model

    m = Model(model, n_ctx=ctx, threads=threads, seed=seed)
    for piece in m.stream(prompt, max_tokens=max_tokens, temperature=temp, seed=seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
def chat(
    model: Path = typer.Argument(..., help="GGUF model file, plain or packed."),
    system: str | None = typer.Option(None, "--system", help="System prompt."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", "-n", min=1, help="Longest answer (default 512)."),
    temp: float | None = typer.Option(None, "--temp", min=0.0, help="0 = greedy. Default: the model's own, else 0.8."),
    top_k: int | None = typer.Option(None, "--top-k", min=0, help="Default: the model's own, else 40."),
    top_p: float | None = typer.Option(None, "--top-p", min=0.0, max=1.0, help="Default: the model's own, else 0.95."),
    min_p: float | None = typer.Option(None, "--min-p", min=0.0, max=1.0, help="Default: the model's own, else 0.05."),
    repeat_penalty: float | None = typer.Option(None, "--repeat-penalty", min=0.0, help="Default: the model's own, else 1.0."),
    seed: int = typer.Option(0, "--seed"),
    ctx: int = typer.Option(4096, "--ctx", min=64),
    threads: int | None = typer.Option(None, "--threads", min=1),
    quiet: bool = typer.Option(False, "--quiet", help="No stats line after each answer."),
    verbose: bool = typer.Option(False, "--verbose", help="Also say when the KV cache cannot be reused."),
) -> None:
    """Chat with a model in the terminal, using its own chat template. /help lists commands; Ctrl-D ends."""
    from gguf_runtime import Model
    from gguf_runtime.chat import sampling_for
    from gguf_runtime.terminal import run_chat

    m = Model(model, n_ctx=ctx, threads=threads, seed=seed)
    sampling = sampling_for(m.metadata, temp=temp, top_k=top_k, top_p=top_p, min_p=min_p,
                            repeat_penalty=repeat_penalty, max_tokens=max_tokens)
    code = run_chat(m, system=system, sampling=sampling, quiet=quiet, verbose=verbose)
    if code:   # Ctrl-C at the prompt: the chat ended as asked, nothing to report but the code
        sys.exit(code)


@app.command()
def serve(
    model: Path = typer.Argument(..., help="GGUF model file, plain or packed."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; another than localhost only when asked."),
    port: int = typer.Option(8080, "--port", min=0, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY' on the API."),
    ctx: int = typer.Option(4096, "--ctx", min=64),
    threads: int | None = typer.Option(None, "--threads", min=1),
) -> None:
    """Serve MODEL over an OpenAI-compatible API (llama-cpp-python's server), with a chat page at /."""
    from gguf_runtime.serve import serve as run_server

    typer.echo(f"serving {model.name} on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    run_server(model, host=host, port=port, n_ctx=ctx, threads=threads, api_key=api_key)


@app.command("eval")
def eval_(
    candidate: Path = typer.Argument(..., help="GGUF model to judge."),
    ref: Path = typer.Option(..., "--ref", help="Reference GGUF (e.g. the F16 model)."),
    text: Path = typer.Option(..., "--text", help="UTF-8 text to score on."),
    ctx: int = typer.Option(512, "--ctx", min=16),
    chunks: int | None = typer.Option(None, "--chunks", min=1, help="Score at most this many chunks."),
    threads: int | None = typer.Option(None, "--threads", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """KL divergence, top-1 agreement and perplexity of CANDIDATE against --ref."""
    from gguf_runtime.evaluate import evaluate

    body = _read_text(text)
    r = evaluate(candidate, ref, body, ctx=ctx, max_chunks=chunks, threads=threads)
    if as_json:
        _emit_json(r.as_dict())
        return
    typer.echo(
        f"positions {r.positions} ({r.chunks} chunks of {r.ctx})\n"
        f"mean KLD  {r.mean_kld:.6f}\n99% KLD   {r.p99_kld:.6f}\nmax KLD   {r.max_kld:.6f}\n"
        f"top-1     {100 * r.top1_agreement:.2f}%\n"
        f"PPL       {r.ppl_candidate:.4f} (reference {r.ppl_reference:.4f})"
    )


def _read_text(path: Path) -> str:
    from .errors import InputError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read as UTF-8 text: {e}") from None


@app.command()
def imatrix(
    model: Path = typer.Argument(..., help="GGUF model to run (any type the reference engine reads)."),
    text: Path = typer.Option(..., "--text", help="UTF-8 calibration text."),
    output: Path = typer.Option(..., "-o", "--output", help="Importance matrix to write (GGUF form)."),
    ctx: int = typer.Option(512, "--ctx", min=16, help="Tokens per chunk."),
    chunks: int | None = typer.Option(None, "--chunks", min=1, help="Run at most this many chunks."),
    threads: int | None = typer.Option(None, "--threads", min=1),
    include_output: bool = typer.Option(False, "--process-output", help="Also record output.weight."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Collect an importance matrix (llama-imatrix's GGUF form) by running MODEL over --text."""
    from .imatrix.collect import collect_imatrix

    body = _read_text(text)
    show = not no_progress and not as_json and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        sys.stderr.write(f"\rchunk {done}/{total}")
        sys.stderr.flush()

    r = collect_imatrix(model, body, output, ctx=ctx, chunks=chunks, threads=threads,
                        include_output=include_output, dataset=str(text), progress=progress if show else None)
    if show:
        sys.stderr.write("\n")
    if as_json:
        _emit_json(r.as_dict())
    else:
        typer.echo(f"wrote {r.output} ({r.entries} matrices, {r.chunks} chunks of {r.ctx} tokens) in {r.seconds:.1f}s")


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the SIMD path, default threads, library versions, whether llama.cpp loads, the cache dir."""
    from .doctor import diagnose, format_report

    d = diagnose()
    if as_json:
        _emit_json(d)
    else:
        typer.echo(format_report(d))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    want_json = "--json" in argv
    try:
        app(args=argv, prog_name="gguf-tools", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("gguf-tools: interrupted\n")
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("gguf-tools: interrupted; no output was left behind\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except (GGUFToolsError, Exception) as e:  # noqa: BLE001 - one line for everything, traceback on request
        code = exit_code(e)
        message = str(e) if isinstance(e, GGUFToolsError) else f"internal error: {type(e).__name__}: {e}"
        if os.environ.get("GGUF_TOOLS_DEBUG"):
            raise
        sys.stderr.write(f"gguf-tools: error: {message}\n")
        if want_json:
            _emit_json({"error": message, "exit_code": code})
        return code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
