"""``--plot``: the plan as a picture (matplotlib, an optional extra: ``gguf-tools[plot]``).

Left: layers down, tensor roles across, colour = bits per weight. Right: predicted KLD against file size, for plans at
several budgets and for the llama.cpp presets, with this plan marked.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ResourceError
from ..gguf_file import layout

_BLOCK = re.compile(r"blk\.(\d+)\.(.+)\.weight$")


def grid(types_bpw: dict[str, float]) -> tuple[list[str], np.ndarray, dict[str, float]]:
    """(roles, layers x roles array of bpw with NaN where absent, the non-layer tensors' bpw)."""
    roles: list[str] = []
    cells: dict[tuple[int, str], float] = {}
    other: dict[str, float] = {}
    for name, bpw in types_bpw.items():
        m = _BLOCK.match(name)
        if m is None:
            other[name.removesuffix(".weight")] = bpw
            continue
        layer, role = int(m.group(1)), m.group(2)
        if role not in roles:
            roles.append(role)
        cells[(layer, role)] = bpw
    n_layers = 1 + max((k[0] for k in cells), default=-1)
    arr = np.full((n_layers, len(roles)), np.nan)
    for (layer, role), bpw in cells.items():
        arr[layer, roles.index(role)] = bpw
    return roles, arr, other


def draw(path: str | Path, types: dict, shapes: dict[str, tuple[int, ...]], curve: list[tuple[int, float]],
         presets: dict[str, tuple[int, float]], point: tuple[int, float], title: str = "") -> Path:
    """Write the figure to ``path``: ``types`` name -> GGML type of the quantized tensors, ``curve`` the (bytes,
    predicted KLD) of plans, ``presets`` name -> (bytes, KLD), ``point`` this plan's (bytes, KLD)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ResourceError("--plot needs matplotlib: pip install 'gguf-tools[plot]'") from None
    bpw = {n: layout.bits_per_weight(q) for n, q in types.items() if len(shapes[n]) >= 2}
    roles, arr, other = grid(bpw)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1, 1.2]})
    im = ax.imshow(arr, aspect="auto", cmap="viridis", vmin=2.5, vmax=16, interpolation="nearest")
    ax.set_xticks(range(len(roles)), roles, rotation=45, ha="right")
    ax.set_ylabel("layer")
    ax.yaxis.get_major_locator().set_params(integer=True)
    extra = ", ".join(f"{k} {v:.2f}" for k, v in other.items())
    ax.set_title("bits per weight" + (f"\n({extra})" if extra else ""), fontsize=9)
    fig.colorbar(im, ax=ax, label="bits per weight")
    curve = [(b, k) for b, k in curve if k > 0]   # a log axis: the lossless end has no point
    if curve:
        xs, ys = zip(*sorted(curve))
        ax2.plot(np.array(xs) / 1e6, ys, "o-", label="plans (predicted)")
    for name, (size, kld) in presets.items():
        ax2.plot(size / 1e6, kld, "s", color="tab:red")
        ax2.annotate(name, (size / 1e6, kld), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax2.plot(point[0] / 1e6, point[1], "*", markersize=14, color="tab:orange", label="this plan")
    ax2.set_yscale("log")
    ax2.set_xlabel("file size (MB)")
    ax2.set_ylabel("KLD vs the source")
    ax2.legend(fontsize=8)
    ax2.set_title("size / KLD (red squares: llama.cpp presets)", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
