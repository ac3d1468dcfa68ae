"""Prompt-template sets for embedding a class or subclass name with a text encoder.

`openai80` comes from open_clip (the 80 OpenAI ImageNet templates the SCLIP family uses),
`seed13` is the seed paper's shipped set (docs/methods.md, "Text embeddings"), `single` is the
one-template baseline. A user file has one template per line, each containing `{}`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

SEED13: tuple[str, ...] = (
    "a photo of one {}.",
    "a photo of a cool {}.",
    "a photo of a weird {}.",
    "a photo of a nice {}.",
    "a jpeg corrupted photo of a {}.",
    "a pixelated photo of a {}.",
    "a photo of a {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "a bad photo of the {}.",
    "a drawing of a {}.",
    "a photo of the cool {}.",
)

SINGLE: tuple[str, ...] = ("a photo of a {}.",)

TEMPLATE_SETS = ("openai80", "seed13", "single")


@lru_cache(maxsize=1)
def openai80() -> tuple[str, ...]:
    """open_clip's OPENAI_IMAGENET_TEMPLATES as format strings (imported lazily: open_clip is slow to import)."""
    # lazy import: start-up time (open_clip imports torch; `import llmseg.cli` loads this module)
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)


def load_templates(name_or_path: str | Path) -> tuple[str, ...]:
    """A named template set or a user file (one template per line, each with exactly one `{}`)."""
    name = str(name_or_path)
    if name == "openai80":
        return openai80()
    if name == "seed13":
        return SEED13
    if name == "single":
        return SINGLE
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"unknown template set '{name}': use one of {', '.join(TEMPLATE_SETS)} or a file path")
    templates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not templates:
        raise ConfigError(f"template file {path} is empty")
    for number, template in enumerate(templates, start=1):
        if template.count("{}") != 1:
            raise ConfigError(f"{path}:{number}: a template needs exactly one '{{}}': {template!r}")
    return tuple(templates)
