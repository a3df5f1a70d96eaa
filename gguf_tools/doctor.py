"""`gguf-tools doctor`: what this installation will run on, for bug reports and slow-machine questions.

llama.cpp is probed in a child process: a build made for another CPU can die on load with an
illegal instruction, and the report should say so instead of dying with it.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

PROBE = (
    "import llama_cpp, sys; "
    "sys.stdout.write(llama_cpp.llama_print_system_info().decode('utf-8', 'replace').strip())"
)
PROBE_SECONDS = 60


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe_llama_cpp() -> dict:
    """Load llama-cpp-python in a child process; report whether it loaded and what it was built for."""
    if _version("llama_cpp_python") is None:
        return {"loads": False, "error": "not installed", "system_info": None}
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_SECONDS,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"loads": False, "error": f"import took over {PROBE_SECONDS}s", "system_info": None}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}" + (" (illegal instruction: built for another CPU)"
                                                            if proc.returncode == -4 else "")
        return {"loads": False, "error": why, "system_info": None}
    return {"loads": True, "error": None, "system_info": proc.stdout.strip().rstrip("|").strip()}


def diagnose() -> dict:
    """Everything the report shows, as plain data (the ``--json`` output)."""
    from . import __version__
    from .engine import kernels
    from .quantize import native_available
    from .system import cache_dir, default_threads

    cache = cache_dir()
    return {
        "gguf_tools": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "simd": {
            "in_use": kernels.simd_level(),
            "available": list(kernels.available_levels()),
            "forced_by_env": os.environ.get(kernels.SIMD_ENV) or None,
        },
        "threads_default": default_threads(),
        "native_quantizer": native_available(),
        "versions": {d: _version(d) for d in ("gguf", "numpy", "llama_cpp_python")},
        "llama_cpp": probe_llama_cpp(),
        "cache_dir": str(cache),
        "cache_dir_exists": cache.is_dir(),
    }


def format_report(d: dict) -> str:
    simd = d["simd"]
    forced = f" (forced by {simd['forced_by_env']!r})" if simd["forced_by_env"] else ""
    v = d["versions"]
    lc = d["llama_cpp"]
    llama = (f"{v['llama_cpp_python']}, loads" if lc["loads"]
             else f"{v['llama_cpp_python'] or 'not installed'}, does not load: {lc['error']}")
    lines = [
        f"gguf-tools        {d['gguf_tools']} (Python {d['python']}, {d['platform']})",
        f"SIMD in use       {simd['in_use']}{forced}",
        f"SIMD available    {', '.join(simd['available'])}",
        f"threads (default) {d['threads_default']}",
        f"native quantizer  {'built' if d['native_quantizer'] else 'not built (NumPy fallback, slow)'}",
        f"gguf              {v['gguf'] or 'not installed'}",
        f"numpy             {v['numpy']}",
        f"llama-cpp-python  {llama}",
    ]
    if lc["system_info"]:
        lines.append(f"llama.cpp build   {lc['system_info']}")
    lines.append(f"cache dir         {d['cache_dir']}{'' if d['cache_dir_exists'] else ' (not created yet)'}")
    return "\n".join(lines)
