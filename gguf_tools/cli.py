"""The `gguf-tools` command: a thin layer over the Python API.

Every failure the user can act on is a typed error mapped to one exit code here, in ``main``. Usage errors are
typer's own: typer (>= 0.26) bundles its own copy of click, so its exceptions are ``typer.TyperException`` and never
``click.ClickException``; only typer's names are used here.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .errors import EXIT_CODES, EXIT_INTERRUPTED, exit_code, message
from .system import MAX_THREADS

if TYPE_CHECKING:  # the pipelines load only when a command runs: the CLI starts fast
    from .pipeline import Progress, WriteResult
    from .plan import Plan

app = typer.Typer(
    name="gguf-tools",
    help="Convert Hugging Face models to GGUF, inspect them, and run them offline.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: typer's rich help labels every flag `<bool>`, as if it took a value
    epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
)


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def _preset_name(value: str) -> str:
    """A preset name is checked while parsing, so a typo is a usage error before any file is read."""
    from .plan import PRESETS

    if value.upper() not in PRESETS:
        raise typer.BadParameter(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
    return value


def _search_name(value: str) -> str:
    from .quantize import SEARCHES

    if value not in SEARCHES:
        raise typer.BadParameter(f"must be one of {', '.join(SEARCHES)}, got {value!r}")
    return value


def _threads_option():
    return typer.Option(None, "--threads", min=1, max=MAX_THREADS,
                        help="Default: the physical cores this process may use (`gguf-tools doctor` shows it).")


def _missing(what: str, why: str) -> typer.BadParameter:
    return typer.BadParameter(why, param_hint=what)


def _target_size_option():
    return typer.Option(None, "--target-size", help="Write the best file of at most this size (95MB, 1GiB, bytes),"
                                                    " its types planned from measured sensitivity.")


def _bpw_option():
    return typer.Option(None, "--bpw", min=0.5, max=32.0, help="As --target-size, in bits per weight.")


def _calibration_option():
    return typer.Option(None, "--calibration", help="Text the sensitivity is measured on (needed with --target-size"
                                                    " or --bpw; its end is held out for the KLD probes).")


def _cluster_option():
    return typer.Option(None, "--cluster", help="Measure on Ray: ray://HOST:PORT or auto (pip install"
                                                " 'gguf-tools[cluster]'); default: local processes.")


def _plot_option():
    return typer.Option(None, "--plot", help="Draw the plan and the size/KLD curve to this PNG (matplotlib).")


def _no_verify_option():
    return typer.Option(False, "--no-verify", help="Do not measure the plan against the best preset under the budget.")


def _budget_options(target_size: str | None, bpw: float | None, calibration: Path | None, imatrix: Path | None,
                    search: str, cluster: str | None, no_verify: bool, force: bool, progress: Progress | None) -> dict:
    """The keyword arguments of budgeted planning, checked: a usage error names the option at fault."""
    from .planner.sizes import parse_size

    if target_size is not None and bpw is not None:
        raise _missing("--target-size / --bpw", "use only one of them")
    if calibration is None:
        raise _missing("--calibration", "--target-size and --bpw measure sensitivity on calibration text:"
                                        " give it with --calibration TEXT")
    return {"target_size": parse_size(target_size) if target_size is not None else None, "bpw": bpw,
            "calibration": _read_text(calibration), "imatrix": imatrix, "search": search, "cluster": cluster,
            "verify": not no_verify, "overwrite": force, "progress": progress}


def _report_budget(result: WriteResult, plan_only: bool, as_json: bool, plot: Path | None) -> None:
    from .planner import report

    plan = result.budget
    shapes = {n: tuple(int(d) for d in s) for n, s in _shapes(result).items()}
    for note in result.notes + plan.notes:
        sys.stderr.write(f"gguf-tools: note: {note}\n")
    if plot is not None:
        _plot(result, shapes, plot)
    if as_json:
        _emit_json({**result.as_dict(), "plan": report.as_dict(plan, shapes, result.n_params)})
    elif plan_only:
        typer.echo(report.format_plan(plan, shapes, result.n_params))
    else:
        typer.echo(f"wrote {result.output} in {result.seconds:.1f}s\n" + report.summary(plan, result.n_params))


def _shapes(result: WriteResult) -> dict[str, tuple[int, ...]]:
    from .gguf_file.layout import numpy_shape

    return {n: numpy_shape(s) for n, s in result.budget.shapes.items()}  # report rows in numpy order


def _plot(result: WriteResult, shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    from .planner import plot

    plot.draw(path, result.budget.types, shapes, result.budget.curve, result.budget.presets,
              (result.budget.size, result.budget.predicted_kld), title=str(result.output or ""))


@app.command()
def convert(
    src: str = typer.Argument(..., help="Hugging Face model directory, HF cache entry, or org/name in the HF cache."),
    output: Path | None = typer.Option(None, "-o", "--output", help="GGUF file to write."),
    quant: str = typer.Option("F16", "--quant", "--outtype", "-q",
                              help="Preset: F32 F16 BF16 Q8_0 Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S Q3_K_L Q3_K_M"
                                   " Q3_K_S Q2_K Q5_1 Q5_0 Q4_1 Q4_0.", callback=_preset_name),
    imatrix: Path | None = typer.Option(None, "--imatrix", help="Importance matrix (llama.cpp GGUF or .dat)."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the type chosen for every tensor; write nothing."),
    search: str = typer.Option("default", "--search", callback=_search_name,
                               help="Block search: default (ours), best (ours, wider and slower) or ggml (bit-exact)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Read pytorch_model.bin (weights_only)."),
    pre_tokenizer: str | None = typer.Option(None, "--pre-tokenizer", help="Force llama.cpp's pre-tokenizer name."),
    force: bool = typer.Option(True, "--force/--no-overwrite", help="Replace an existing output file."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    pack_output: bool = typer.Option(False, "--pack", help="Write the Huffman-packed file instead of the GGUF."),
    target_size: str | None = _target_size_option(),
    bpw: float | None = _bpw_option(),
    calibration: Path | None = _calibration_option(),
    cluster: str | None = _cluster_option(),
    plot: Path | None = _plot_option(),
    no_verify: bool = _no_verify_option(),
) -> None:
    """Convert a Hugging Face checkpoint into a GGUF file, at any llama.cpp preset or the best one under a size."""
    from .convert import convert as run_convert

    if output is None and not plan_only:
        raise _missing("'-o' / '--output'", "required unless --plan is given")
    if target_size is not None or bpw is not None:
        from .budgeted import convert_to_budget

        if pack_output:
            raise _missing("--pack", "pack a budgeted file afterwards with `gguf-tools pack`")
        with _progress_bar(not no_progress and not plan_only) as progress:
            result = convert_to_budget(src, None if plan_only else output, allow_pickle=allow_pickle,
                                       pre_tokenizer=pre_tokenizer,
                                       **_budget_options(target_size, bpw, calibration, imatrix, search, cluster,
                                                         no_verify, force, progress) | {"curve": plot is not None})
        _report_budget(result, plan_only, as_json, plot)
        return
    with _progress_bar(not no_progress and not plan_only) as progress:
        result = run_convert(
            src,
            None if plan_only else output,
            quant=quant,
            imatrix=imatrix,
            search=search,
            allow_pickle=allow_pickle,
            overwrite=force,
            progress=progress,
            pre_tokenizer=pre_tokenizer,
            pack=pack_output,
        )
    _report(result, plan_only, as_json)


@app.command()
def quantize(
    src: Path = typer.Argument(..., help="GGUF file (F32/F16/BF16)."),
    output: Path | None = typer.Argument(None, help="GGUF file to write."),
    quant: str = typer.Option("Q4_K_M", "--quant", "-q", help="Preset, as for convert.", callback=_preset_name),
    imatrix: Path | None = typer.Option(None, "--imatrix", help="Importance matrix (llama.cpp GGUF or .dat)."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the type chosen for every tensor; write nothing."),
    search: str = typer.Option("default", "--search", callback=_search_name,
                               help="Block search: default (ours), best (ours, wider and slower) or ggml (bit-exact)."),
    allow_requantize: bool = typer.Option(False, "--allow-requantize", help="Re-quantize quantized tensors."),
    force: bool = typer.Option(True, "--force/--no-overwrite", help="Replace an existing output file."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    as_json: bool = typer.Option(False, "--json"),
    target_size: str | None = _target_size_option(),
    bpw: float | None = _bpw_option(),
    calibration: Path | None = _calibration_option(),
    cluster: str | None = _cluster_option(),
    plot: Path | None = _plot_option(),
    no_verify: bool = _no_verify_option(),
) -> None:
    """Quantize a GGUF file to a preset (llama.cpp's mixtures, our block search), or to the best file under a size."""
    from .requantize import quantize_gguf

    if output is None and not plan_only:
        raise _missing("'OUTPUT'", "required unless --plan is given")
    if target_size is not None or bpw is not None:
        from .budgeted import quantize_to_budget

        with _progress_bar(not no_progress and not plan_only) as progress:
            result = quantize_to_budget(src, None if plan_only else output, allow_requantize=allow_requantize,
                                        **_budget_options(target_size, bpw, calibration, imatrix, search, cluster,
                                                          no_verify, force, progress) | {"curve": plot is not None})
        _report_budget(result, plan_only, as_json, plot)
        return
    with _progress_bar(not no_progress and not plan_only) as progress:
        result = quantize_gguf(src, None if plan_only else output, quant, imatrix=imatrix, search=search,
                               allow_requantize=allow_requantize, overwrite=force, progress=progress)
    _report(result, plan_only, as_json)


@contextlib.contextmanager
def _progress_bar(wanted: bool) -> Iterator[Progress | None]:
    """A progress callback that draws a tqdm bar on stderr (a terminal only); the library never draws."""
    if not wanted or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="writing", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _report(result: WriteResult, plan_only: bool, as_json: bool) -> None:
    for note in result.notes:
        sys.stderr.write(f"gguf-tools: note: {note}\n")
    if plan_only:
        _show_plan(result.plan, as_json)
    elif as_json:
        _emit_json(result.as_dict())
    else:
        types = ", ".join(f"{k} x{v}" for k, v in sorted(result.types.items()))
        packed = result.packed_size
        size = f"{result.size / 2**20:.1f} MiB" if packed is None else \
            f"{packed / 2**20:.1f} MiB packed from {result.size / 2**20:.1f} MiB"
        typer.echo(
            f"wrote {result.output} ({size}, {result.arch}, {types},"
            f" {result.bits_per_weight:.2f} bpw) in {result.seconds:.1f}s"
        )


def _show_plan(plan: Plan, as_json: bool) -> None:
    from .plan import bits_per_weight, explain, format_table

    rows = explain(plan)
    if as_json:
        _emit_json({"preset": plan.preset.name,
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


def _default_output(src: Path, old: str, new: str) -> Path:
    """model.gguf <-> model.ggpk; any other name gets the new suffix added."""
    return src.with_suffix(new) if src.suffix == old else src.with_name(src.name + new)


def _check_distinct(src: Path, output: Path) -> None:
    if output.exists() and src.exists() and os.path.samefile(src, output):
        raise _missing("'-o' / '--output'", f"{output} is the input file; choose another output")


@app.command()
def pack(
    src: Path = typer.Argument(..., help="GGUF file."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Packed file (default: SRC with .ggpk)."),
    threads: int | None = _threads_option(),
    smallest: bool = typer.Option(False, "--smallest",
                                  help="Code every field that saves a byte: a little smaller, about twice as slow to load."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Huffman-pack a GGUF file, losslessly: smaller to store and ship, loads directly (docs/packed-format.md)."""
    from .packed import MIN_SAVING, SUFFIX
    from .packed import pack as run_pack

    output = output or _default_output(src, ".gguf", SUFFIX)
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
    threads: int | None = _threads_option(),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore the original GGUF byte for byte (its sha256 is checked before the file appears)."""
    from .packed import SUFFIX
    from .packed import unpack as run_unpack

    output = output or _default_output(src, SUFFIX, ".gguf")
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
    threads: int | None = _threads_option(),
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
    threads: int | None = _threads_option(),
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
    threads: int | None = _threads_option(),
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
    threads: int | None = _threads_option(),
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
    threads: int | None = _threads_option(),
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
def fit(
    model: Path = typer.Argument(..., help="GGUF or packed file."),
    device: str | None = typer.Option(None, "--device", help="Device profile (see devices.toml)."),
    ram: str | None = typer.Option(None, "--ram", help="Memory budget instead of a device, e.g. 4GiB."),
    ctx: str = typer.Option("4096", "--ctx", help="Context length, or 'max' for the largest that fits."),
    kv: str = typer.Option("f16", "--kv", help="KV cache type: f16, q8_0 or q4_0."),
    swa_full: bool = typer.Option(True, "--swa-full/--swa-window", help="Full-size SWA cache (llama.cpp's default)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Memory plan before loading: weights, KV cache, compute, overhead; fits / pages / cannot."""
    from .device.devices import device as find_device
    from .device.devices import parse_size
    from .device.fit import fit as run_fit

    if device and ram:
        raise _missing("--device / --ram", "use one of them, not both")
    if ctx != "max" and not ctx.isdigit():
        raise _missing("--ctx", f"must be a number or 'max', not {ctx!r}")
    dev = find_device(device) if device else None
    budget = dev.budget if dev else parse_size(ram) if ram else None
    p = run_fit(model, ctx if ctx == "max" else int(ctx), kv, budget=budget,
                bandwidth=dev.bandwidth if dev else None, swa_full=swa_full)
    if as_json:
        _emit_json({"model": str(model), "device": device, **p.as_dict()})
        return
    mib = 2**20
    lines = [f"{model.name} at ctx {p.ctx}, KV {p.kv_type}" + (f", on {device}" if device else ""),
             f"  weights   {p.weights / mib:9.1f} MiB  ({'anonymous: packed' if p.packed else 'mapped'})",
             f"  KV cache  {p.kv / mib:9.1f} MiB",
             f"  compute   {p.compute / mib:9.1f} MiB",
             f"  overhead  {p.overhead / mib:9.1f} MiB",
             f"  total     {p.total / mib:9.1f} MiB" + (f" of {p.budget / mib:.1f} MiB budget" if p.budget else ""),
             f"verdict: {p.verdict}"]
    if p.budget:
        lines.append(f"largest context that fits: {p.max_ctx or 'none'}")
    if p.tokens_per_s:
        lines.append(f"decode bound: {p.tokens_per_s:.0f} tokens/s (bandwidth / bytes read per token)")
    typer.echo("\n".join(lines))


@app.command("split")
def split_cmd(
    model: Path = typer.Argument(..., help="GGUF file to split."),
    max_size: str = typer.Option(..., "--max-size", help="Largest shard, whole file: 4GiB, 100MB (G = 10^9), fat32, hf."),
    output: Path | None = typer.Option(None, "-o", "--output-dir", help="Directory for the shards (default: beside MODEL)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Split into llama.cpp-compatible shards NAME-00001-of-0000N.gguf (llama.cpp loads the first)."""
    from .device.devices import parse_size
    from .device.split import split

    names = split(model, parse_size(max_size), output)
    if as_json:
        _emit_json({"shards": [{"path": str(n), "bytes": n.stat().st_size} for n in names]})
    else:
        typer.echo("\n".join(f"wrote {n} ({n.stat().st_size} bytes)" for n in names))


@app.command()
def merge(
    first: Path = typer.Argument(..., help="The first shard, NAME-00001-of-0000N.gguf."),
    output: Path = typer.Option(..., "-o", "--output", help="GGUF file to write."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Join shards into the original GGUF, byte for byte (checked against its sha256)."""
    from .device.split import merge as run_merge

    dest = run_merge(first, output)
    if as_json:
        _emit_json({"output": str(dest), "bytes": dest.stat().st_size})
    else:
        typer.echo(f"wrote {dest} ({dest.stat().st_size} bytes)")


@app.command()
def manifest(
    target: Path = typer.Argument(..., help="Directory of GGUF files (or shards), or one GGUF file."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Where to write (default: DIR/manifest.json)."),
) -> None:
    """Write manifest.json: every file's bytes and sha256, every tensor's gguf-hash line, metadata digests."""
    from .device.manifest import build_manifest, gguf_files, write_manifest

    directory = target if target.is_dir() else target.parent
    files = gguf_files(target) if target.is_dir() else [target]
    dest = output or directory / "manifest.json"
    write_manifest(dest, build_manifest(directory, files))
    typer.echo(f"wrote {dest} ({len(files)} files)")


@app.command()
def verify(
    target: Path = typer.Argument(..., help="Package directory, or one file with --manifest."),
    manifest_path: Path | None = typer.Option(None, "--manifest", help="manifest.json (default: in the directory)."),
    fast: bool = typer.Option(False, "--fast", help="xxh64 file digests instead of sha256."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check files against manifest.json; name each file, shard, tensor or metadata key that differs (exit 3)."""
    from .device.verify import verify as run_verify
    from .errors import InputError

    r = run_verify(target, manifest_path, fast=fast)
    if as_json:
        _emit_json(r.as_dict())
    else:
        typer.echo("\n".join(r.problems) if r.problems else f"ok: {r.checked} files match the manifest")
    if not r.ok:
        if as_json:
            raise typer.Exit(3)
        raise InputError(f"{target}: {len(r.problems)} problems against the manifest")


@app.command()
def package(
    src: str = typer.Argument(..., help="Hugging Face model directory or GGUF file."),
    output: Path = typer.Option(..., "-o", "--output", help="Package directory to create."),
    quant: str | None = typer.Option(None, "--quant", "-q", help="Preset (default: the source as it is)."),
    target_size: str | None = typer.Option(None, "--target-size", help="Best preset under this size, e.g. 100MB."),
    device: str | None = typer.Option(None, "--device", help="Best preset whose fit verdict is 'fits' on this device."),
    ctx: int = typer.Option(4096, "--ctx", help="Context the package is planned for."),
    max_file_size: str | None = typer.Option(None, "--max-file-size", help="Split above this: 4GiB, fat32, hf, 100MB."),
    pack_files: bool = typer.Option(False, "--pack", help="Entropy-code the model files (install unpacks them)."),
    smoke_prompt: str | None = typer.Option(None, "--smoke", help="Run this prompt once; record answer and tokens/s."),
    force: bool = typer.Option(False, "--force", help="Replace an existing package directory."),
    as_json: bool = typer.Option(False, "--json"),
    calibration: Path | None = typer.Option(None, "--calibration", help="With --target-size or --device: plan a type"
                                            " per tensor from sensitivity measured on this text, not a whole preset;"
                                            " with --device the weights get the budget less the context's memory."),
) -> None:
    """Build a verified, device-ready directory: model or shards, manifest.json, README.md model card."""
    from .device.devices import device as find_device
    from .device.devices import parse_size
    from .device.package import package as run_package

    if sum(x is not None for x in (quant, target_size, device)) > 1:
        raise _missing("--quant / --target-size / --device", "use only one of them")
    smoke = None
    if smoke_prompt:
        def smoke(path: Path) -> dict:
            import time

            from gguf_runtime import Model

            m = Model(path, n_ctx=min(ctx, 2048))
            t = time.perf_counter()
            tokens = list(m.stream_chat(smoke_prompt, max_tokens=32))
            return {"prompt": smoke_prompt, "answer": "".join(tokens),
                    "tokens_per_s": len(tokens) / max(time.perf_counter() - t, 1e-9)}
    r = run_package(src, output, quant=quant, device=find_device(device) if device else None,
                    target_size=parse_size(target_size) if target_size else None, ctx=ctx,
                    max_file_size=parse_size(max_file_size) if max_file_size else None, pack=pack_files, smoke=smoke,
                    overwrite=force, calibration=_read_text(calibration) if calibration else None)
    if as_json:
        _emit_json(r.as_dict())
    else:
        typer.echo(f"wrote {r.directory}: " + ", ".join(f.name for f in r.files) + (f" ({r.quant})" if r.quant else ""))


@app.command()
def install(
    package_dir: Path = typer.Argument(..., help="Package directory (with manifest.json)."),
    to: Path = typer.Option(..., "--to", help="Destination directory to create."),
    force: bool = typer.Option(False, "--force", help="Replace an existing destination."),
) -> None:
    """Check every sha256 of the manifest; copy the package to DEST atomically, unpacking packed files."""
    from .device.install import install as run_install

    files = run_install(package_dir, to, overwrite=force)
    typer.echo(f"installed {len(files)} files in {to}")


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
    """Run the command line; return the exit code (errors.EXIT_CODES) instead of exiting."""
    argv = sys.argv[1:] if argv is None else list(argv)
    want_json = "--json" in argv
    try:
        # No arguments is a request for the help, not a mistake. In non-standalone mode typer returns the
        # code of an exit (--help: 0; Ctrl-C: 130) and None when a command finishes.
        code = app(args=argv or ["--help"], prog_name="gguf-tools", standalone_mode=False) or 0
    except typer.TyperException as e:  # a usage error (exit 2): click's own message, no traceback
        e.show()
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:  # one line for everything, traceback on request
        if os.environ.get("GGUF_TOOLS_DEBUG"):
            raise
        code, text = exit_code(e), message(e)
        sys.stderr.write(f"gguf-tools: error: {text}\n")
        if want_json:
            _emit_json({"error": text, "exit_code": code})
        return code
    if code == EXIT_INTERRUPTED:
        sys.stderr.write("gguf-tools: interrupted; no output was left behind\n")
    return code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
