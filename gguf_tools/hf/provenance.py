"""Provenance for the GGUF's general.* keys: license, base models and tags from the model card's
front matter (README.md). The hub and ollama read these; the size label is hf/naming.py's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

MAX_CARD_BYTES = 1 << 20


@dataclass(frozen=True)
class Provenance:
    license: str | None
    base_models: tuple[str, ...]
    tags: tuple[str, ...]


def read_card(root: Path) -> Provenance:
    """The front matter of ``root/README.md`` (YAML between ``---`` lines); empty when absent or malformed."""
    import yaml

    empty = Provenance(None, (), ())
    path = Path(root) / "README.md"
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            return empty
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return empty
    if not text.startswith("---"):
        return empty
    end = text.find("\n---", 3)
    try:
        front = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return empty
    if not isinstance(front, dict):
        return empty

    def strings(value) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value] if value else []
        return tuple(str(v) for v in items if isinstance(v, str | int | float))[:64]

    lic = front.get("license")
    return Provenance(str(lic) if isinstance(lic, str) else None, strings(front.get("base_model")),
                      strings(front.get("tags")))



def add_provenance(w: gguf.GGUFWriter, root: Path) -> None:
    card = read_card(root)
    if card.license:
        w.add_license(card.license)
    if card.base_models:
        w.add_base_model_count(len(card.base_models))
        for i, name in enumerate(card.base_models):
            w.add_base_model_name(i, name.split("/")[-1])
            if "/" in name:
                w.add_base_model_organization(i, name.split("/")[0])
                w.add_base_model_repo_url(i, f"https://huggingface.co/{name}")
    if card.tags:
        w.add_tags(list(card.tags))
