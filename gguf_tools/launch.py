"""The ``gguf-tools`` command's entry point: ``unpack`` and ``install`` without the command-line framework.

They run on small devices and in install scripts, where start-up is a large part of their time: importing
typer (and, through it, click) costs more than a quarter of a second, about what unpacking a 250 MB model
takes. So a well-formed ``unpack`` or ``install`` command line is parsed here, with the same options and
output as cli.py's commands; anything else (help, a typo, another command) goes to cli.py, whose usage
errors and help stay the only ones.
"""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from .errors import EXIT_INTERRUPTED, exit_code, message
from .system import MAX_THREADS

_UNPACK_OPTIONS = {"-o": "output", "--output": "output", "--threads": "threads"}
_INSTALL_OPTIONS = {"--to": "to"}
_FLAGS = {"unpack": {"--json": "as_json"}, "install": {"--force": "force"}}


def parse(argv: list[str]) -> tuple[str, list[str], dict] | None:
    """(command, positionals, options) for a complete, well-formed unpack or install; None otherwise."""
    if not argv or argv[0] not in _FLAGS:
        return None
    command, rest = argv[0], argv[1:]
    options_with_value = _UNPACK_OPTIONS if command == "unpack" else _INSTALL_OPTIONS
    flags = _FLAGS[command]
    positionals: list[str] = []
    opts: dict = {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg == "--":
            positionals += rest[i + 1:]
            break
        if name in options_with_value:
            if not eq:
                if i + 1 >= len(rest):
                    return None
                value = rest[i + 1]
                i += 1
            if options_with_value[name] in opts:
                return None
            opts[options_with_value[name]] = value
        elif arg in flags:
            opts[flags[arg]] = True
        elif arg.startswith("-") and arg != "-":
            return None  # --help, a typo, an option of another command: cli.py answers
        else:
            positionals.append(arg)
        i += 1
    if len(positionals) != 1 or (command == "install" and "to" not in opts):
        return None
    if "threads" in opts:
        try:
            opts["threads"] = int(opts["threads"])
        except ValueError:
            return None
        if not 1 <= opts["threads"] <= MAX_THREADS:
            return None
    return command, positionals, opts


def _unpack(src: str, output: str | None = None, threads: int | None = None, as_json: bool = False) -> None:
    from .packed import SUFFIX
    from .packed.decode import unpack

    source = Path(src)
    out = Path(output) if output else (source.with_suffix(".gguf") if source.suffix == SUFFIX
                                       else source.with_name(source.name + ".gguf"))
    if out.exists() and source.exists() and os.path.samefile(source, out):
        raise _Usage
    header = unpack(source, out, threads=threads)
    if as_json:
        _emit_json({"output": str(out), "size": header.original_size, "sha256": header.sha256})
    else:
        sys.stdout.write(f"wrote {out} ({header.original_size / 2**20:.1f} MiB, sha256 {header.sha256})\n")


def _install(package_dir: str, to: str, force: bool = False) -> None:
    from .device.install import install

    files = install(Path(package_dir), Path(to), overwrite=force)
    sys.stdout.write(f"installed {len(files)} files in {to}\n")


def _emit_json(obj: dict) -> None:
    import json

    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


class _Usage(Exception):
    """A case cli.py words better (here: the output is the input): run the command there instead."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return its exit code (errors.EXIT_CODES)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parsed = parse(argv)
    if parsed is not None:
        # a short run that makes no garbage cycles worth collecting; the collector would only walk the
        # objects the imports create, several times (about 20 ms)
        gc.disable()
        command, (target,), opts = parsed
        try:
            if command == "unpack":
                _unpack(target, **opts)
            else:
                _install(target, **opts)
            return 0
        except _Usage:
            pass
        except KeyboardInterrupt:
            sys.stderr.write("gguf-tools: interrupted; no output was left behind\n")
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return 0
        except Exception as e:
            if os.environ.get("GGUF_TOOLS_DEBUG"):
                raise
            code, text = exit_code(e), message(e)
            sys.stderr.write(f"gguf-tools: error: {text}\n")
            if opts.get("as_json"):
                _emit_json({"error": text, "exit_code": code})
            return code
    from .cli import main as full_main

    return full_main(argv)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
