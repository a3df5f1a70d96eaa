"""Measure a model's sensitivity once (or read it from the cache): the input of every plan for it."""
from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from ..errors import InputError
from ..plan import TensorSpec
from . import cache, sensitivity
from .candidates import candidates
from .executor import run_map

Q = gguf.GGMLQuantizationType

# events(stage, done, total): "hash", "reference", "errors", "probes" as each finishes a step (the CLI draws them)
Events = Callable[[str, int, int], None]


@dataclass
class Sensitivity:
    """Predicted damage (dKLD) of each tensor at each candidate type, and how it was measured."""

    key: str
    errors: dict[str, dict[str, float]]     # tensor -> type -> weighted squared error
    alphas: dict[str, float]                # tensor -> KLD per unit of weighted error
    groups: dict[str, str]                  # tensor -> group
    tokens: list[int]                       # the held-out calibration tokens
    ref_logp: np.ndarray                    # the reference model's log-probabilities on them
    kld: dict[str, float] = field(default_factory=dict)   # measured KLD of files already verified, by label
    measured: bool = False                  # False: read from the cache
    forwards: int = 0                       # forward passes run (a cached read runs none)
    tensors_measured: int = 0
    seconds: float = 0.0
    cache_dir: Path | None = None

    def damage(self, name: str, qtype: str) -> float:
        errs = self.errors.get(name)
        if errs is None:
            return 0.0
        return self.alphas.get(name, 0.0) * errs[qtype]

    def by_group(self) -> dict[str, float]:
        """Each group's predicted dKLD at the probe type: the measured sensitivity per role and layer band."""
        out: dict[str, float] = {}
        for n, g in self.groups.items():
            if sensitivity.PROBE.name in self.errors.get(n, {}):
                out[g] = out.get(g, 0.0) + self.damage(n, sensitivity.PROBE.name)
        return out

    def remember(self, label: str, value: float) -> None:
        """Keep a measured KLD (a preset's file) with the entry, so the next plan does not measure it again."""
        self.kld[label] = value
        if self.cache_dir is not None:
            data, _ = cache.load(self.cache_dir, self.key) or ({}, {})
            if data:
                data["kld"] = self.kld
                cache.update(self.cache_dir, self.key, data)


def settings(search: str) -> dict:
    s = sensitivity
    return {"method": s.METHOD, "probe": s.PROBE.name, "rows": s.MAX_ROWS, "bands": s.BANDS, "ctx": s.CTX, "search": search}


def measure(
    src: str | Path,
    text: str,
    *,
    imatrix: str | Path | None = None,
    search: str = "default",
    cluster: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    events: Events | None = None,
    keep: MutableMapping | None = None,
) -> Sensitivity:
    """The sensitivity of the F16/BF16/F32 GGUF ``src`` on calibration ``text`` (the end of it is held out for the
    probes), with the quantizer that ``imatrix`` and ``search`` make; from the cache when it has it.

    ``workers`` (default: the cores) threads share the per-tensor errors (or ``cluster`` takes them) and the group
    probes; ``threads`` is the reference pass's matmul threads. ``keep`` receives the probes' encoded tensors."""
    from ..engine.transformer import Engine
    from ..packed import open_gguf

    start = time.perf_counter()
    note = events or (lambda stage, done, total: None)
    src = Path(src)
    f = open_gguf(src)
    directory = Path(cache_dir) if cache_dir is not None else cache.default_dir()
    imatrix_bytes = Path(imatrix).read_bytes() if imatrix is not None else None
    key = cache.entry_key(cache.source_digest(f), imatrix_bytes, text, settings(search))
    note("hash", 1, 1)
    if use_cache:
        hit = cache.load(directory, key)
        if hit is not None:
            data, arrays = hit
            return Sensitivity(key, data["errors"], data["alphas"], data["groups"], arrays["tokens"].tolist(),
                               arrays["ref_logp"], data.get("kld", {}), seconds=time.perf_counter() - start,
                               cache_dir=directory)

    importance: dict[str, np.ndarray] = {}
    if imatrix is not None:
        from ..imatrix.file import load_imatrix

        importance = load_imatrix(imatrix)
    tokens = held_out_tokens(src, text)
    engine = Engine(src, n_ctx=len(tokens), threads=threads)
    n_layers = engine.cfg.n_layer
    bands = min(sensitivity.BANDS, n_layers)
    groups = {t.name: sensitivity.group_of(t.name, n_layers, bands) for t in f.tensors}
    band_start: dict[int, int] = {}
    for i in range(n_layers):
        band_start.setdefault(i * bands // n_layers, i)
    ref = sensitivity.reference_pass(engine, tokens, sorted(band_start.values()))
    note("reference", 1, 1)

    tasks = []
    for t in f.tensors:
        types = candidates(TensorSpec(t.name, t.shape, t.ggml_type), f.architecture)
        if len(types) < 2:
            continue
        rows, scale = sensitivity.sample_rows(f, t)
        tasks.append(sensitivity.ErrorTask(
            t.name, rows, scale, tuple(int(q) for q in types), importance.get(t.name),
            sensitivity.column_weights(ref.sum2, ref.count, t.name), search, sensitivity.column_rounding(ref, t.name)))
    errors = dict(zip((t.name for t in tasks), run_map(sensitivity.tensor_errors, tasks, cluster=cluster,
                                                        workers=workers)))
    note("errors", len(tasks), len(tasks))

    members: dict[str, list[str]] = {}
    for name in errors:
        members.setdefault(groups[name], []).append(name)

    def first_layer(name: str) -> int | None:
        m = sensitivity.BLOCK_NAME.match(name)
        return None if m is None else band_start[int(m.group(1)) * bands // n_layers]

    from ..system import default_threads

    side = min(workers or default_threads(), len(members))   # probes run side by side, one engine each
    if side > 1:
        engine.threads = 1
    engines = [engine] + [Engine(src, n_ctx=len(tokens), threads=1) for _ in range(side - 1)]
    alphas = sensitivity.calibrate(engines, f, ref, tokens, members, errors, importance, search, first_layer,
                                   keep)
    note("probes", len(members), len(members))
    groups = {n: g for n, g in groups.items() if n in errors}
    if use_cache:
        cache.save(directory, key, {"errors": errors, "alphas": alphas, "groups": groups, "kld": {}},
                   {"tokens": np.asarray(tokens, np.int64), "ref_logp": ref.logp.astype(np.float32)})
    return Sensitivity(key, errors, alphas, groups, tokens, ref.logp.astype(np.float32), {}, True,
                       1 + len(members), len(tasks), time.perf_counter() - start,
                       directory if use_cache else None)


def held_out_tokens(src: Path, text: str) -> list[int]:
    """The last ``CTX`` tokens of the calibration text (the imatrix reads its beginning), BOS first if the model
    adds one."""
    from ..imatrix.collect import tokenize

    n = sensitivity.CTX
    tokens, bos = tokenize(src, text[-64 * n:])   # the tail is all it needs: no tokenizing of a whole corpus
    if len(tokens) < n:
        raise InputError(f"the calibration text has {len(tokens)} tokens; the planner needs at least {n}")
    chunk = list(tokens[-n:])
    if bos is not None:
        chunk[0] = bos
    return chunk


def file_kld(path: str | Path, sens: Sensitivity, threads: int | None = None) -> float:
    """Mean KLD of a quantized GGUF against the reference on the held-out tokens, with the reference engine running
    it as llama.cpp does (activations rounded per block); types the kernels lack are read as float32."""
    from ..engine import kernels
    from ..engine.transformer import Engine, Weight
    from .candidates import dequantize

    engine = Engine(path, n_ctx=len(sens.tokens), threads=threads)
    for n, w in list(engine.w.items()):
        if w.qtype not in kernels.SUPPORTED_TYPES:
            engine.w[n] = Weight(n, Q.F32, dequantize(w.qtype, w.data, w.shape), w.shape)
    return float(sensitivity.kld(sens.ref_logp, engine.head(sensitivity.scored(engine.hidden(sens.tokens)))).mean())


def file_klds(paths: list[Path], sens: Sensitivity, threads: int | None = None) -> list[float]:
    """``file_kld`` of each file, side by side on threads (each single-threaded) when there are several: a forward
    pass over the held-out tokens is small matmuls, which keep a core each busier than two cores one."""
    if len(paths) <= 1:
        return [file_kld(p, sens, threads) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda p: file_kld(p, sens, 1), paths))
