"""The command line's contract: usage errors exit 2 with click's one error line, help is not an error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gguf_tools.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Each command with the smallest arguments it accepts (paths need not exist: parsing fails first).
COMMANDS = {
    "convert": ["model-dir", "--plan"],
    "quantize": ["in.gguf", "--plan"],
    "inspect": ["m.gguf"],
    "run": ["m.gguf", "-p", "hi"],
    "chat": ["m.gguf"],
    "eval": ["m.gguf", "--ref", "r.gguf", "--text", "t.txt"],
    "imatrix": ["m.gguf", "--text", "t.txt", "-o", "i.gguf"],
    "pack": ["m.gguf"],
    "unpack": ["m.ggpk"],
    "serve": ["m.gguf"],
    "fit": ["m.gguf"],
    "split": ["m.gguf", "--max-size", "1GB"],
    "merge": ["m-00001-of-00002.gguf", "-o", "m.gguf"],
    "manifest": ["pkg"],
    "verify": ["pkg"],
    "package": ["model-dir", "-o", "pkg"],
    "install": ["pkg", "--to", "dest"],
    "doctor": [],
}
NEEDS_AN_ARGUMENT = [c for c, args in COMMANDS.items() if args]


def test_every_command_is_in_this_contract():
    from typer.main import get_command

    from gguf_tools.cli import app

    assert set(get_command(app).commands) == set(COMMANDS)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_usage_error(code: int, out: str, err: str, *words: str) -> None:
    """Exit 2, nothing on stdout, exactly one `Error:` line naming the problem, no traceback."""
    assert code == 2, err
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_a_usage_error_for_every_command(capsys, command):
    assert_usage_error(*run(capsys, command, *COMMANDS[command], "--bogus"), "No such option: --bogus")


@pytest.mark.parametrize("command", NEEDS_AN_ARGUMENT)
def test_a_missing_argument_is_a_usage_error_for_every_command(capsys, command):
    assert_usage_error(*run(capsys, command), "Missing")


def test_an_extra_argument_to_doctor_is_a_usage_error(capsys):
    assert_usage_error(*run(capsys, "doctor", "extra"), "unexpected extra argument")


@pytest.mark.parametrize("command", ["run", "chat", "eval", "imatrix", "pack", "unpack"])
def test_an_option_without_its_value_is_a_usage_error(capsys, command):
    assert_usage_error(*run(capsys, command, *COMMANDS[command], "--threads"), "--threads", "requires an argument")


@pytest.mark.parametrize(("args", "words"), [
    (["pack", "m.gguf", "--threads", "abc"], ["'--threads'"]),
    (["pack", "m.gguf", "--threads", "0"], ["'--threads'"]),
    (["unpack", "m.ggpk", "--threads", "100000"], ["'--threads'"]),
    (["run", "m.gguf", "-p", "hi", "--threads", "abc"], ["'--threads'"]),
    (["run", "m.gguf", "-p", "hi", "--temp", "-1"], ["'--temp'"]),
    (["eval", "m.gguf", "--ref", "r.gguf", "--text", "t.txt", "--ctx", "many"], ["'--ctx'"]),
    (["convert", "model-dir", "--plan", "--quant", "Q9_Z"], ["'--quant'", "unknown preset 'Q9_Z'", "Q4_K_M"]),
    (["quantize", "in.gguf", "out.gguf", "--quant", "Q4_K_XXL"], ["'--quant'", "unknown preset"]),
    (["convert", "model-dir", "--plan", "--search", "nope"], ["'--search'", "default, best, ggml"]),
    (["quantize", "in.gguf", "out.gguf", "--search", "nope"], ["'--search'", "default, best, ggml"]),
    (["convert", "model-dir"], ["'-o' / '--output'", "--plan"]),
    (["quantize", "in.gguf"], ["'OUTPUT'", "--plan"]),
])
def test_a_bad_value_is_a_usage_error_naming_the_option(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(*run(capsys, *args), *words)
    assert list(tmp_path.iterdir()) == []


def test_output_equal_to_the_input_is_a_usage_error(tmp_path, capsys):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    assert_usage_error(*run(capsys, "pack", str(src), "-o", str(src)), "is the input file")
    assert src.read_bytes() == b"GGUF"


def test_no_arguments_prints_the_help_on_stdout_and_succeeds(capsys):
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: gguf-tools")
    for command in COMMANDS:
        assert command in out
    assert "Exit codes:" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_succeeds_and_shows_flags_without_a_value(capsys, command):
    code, out, err = run(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: gguf-tools {command}")
    assert "<bool>" not in out
    assert "--help  " in out or "--help " in out


def test_help_shows_value_types_only_for_options_that_take_one(capsys):
    _, out, _ = run(capsys, "pack", "--help")
    lines = {line.split()[0].rstrip(","): line for line in out.splitlines() if line.strip().startswith("-")}
    assert "<int" in lines["--threads"]
    assert "<" not in lines["--smallest"].split("Code")[0]
    assert "<" not in lines["--json"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_installed_command_prints_help_for_no_arguments_and_exits_0():
    proc = cli()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: gguf-tools") and proc.stderr == ""


def test_the_installed_command_exits_2_on_an_unknown_option_without_internal_error():
    proc = cli("inspect", "--bogus")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Error: No such option: --bogus" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_package_root_is_the_api_and_imports_its_functions_on_first_use():
    code = ("import sys, gguf_tools; heavy = [m for m in ('numpy', 'gguf_tools.convert') if m in sys.modules]; "
            "from gguf_tools.convert import convert; import gguf_tools.convert; "
            "assert gguf_tools.convert is convert, gguf_tools.convert; "
            "from gguf_tools import *; print(heavy, sorted(gguf_tools.__all__))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    heavy, names = proc.stdout.split("] ")
    assert heavy == "["
    for name in ("convert", "quantize_gguf", "pack", "unpack", "describe", "load_imatrix", "collect_imatrix",
                 "InputError", "UnsupportedError", "OutputError", "ResourceError", "GGUFToolsError", "__version__"):
        assert repr(name) in names
