"""Chat templates come from model files, so they render only in an immutable sandbox."""
from __future__ import annotations

from datetime import date

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gguf_tools.errors import InputError

# Used only when a model carries no template of its own.
FALLBACK = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _raise(message: str):
    raise TemplateError(message)


def render(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "") -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: date.today().strftime(fmt)
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
        )
    except TemplateError as e:
        raise InputError(f"chat template failed to render: {e}") from None
