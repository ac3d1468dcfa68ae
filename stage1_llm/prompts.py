"""Versioned prompt templates for stage one: load, check and render them into chat messages.

A template is a Markdown file (`prompts/<id>.md`) with a front-matter header and up to three
sections, each introduced by a line that is exactly `## system`, `## user` or `## repair`:

    ---
    id: subclasses.visual.v1
    version: 1
    description: one line
    ---
    ## system
    ...
    ## user        (required; must contain {class_name} and {k})
    ...
    ## repair      (the follow-up turn sent after an unusable answer; may use {problems})
    ...

Variables: `{class_name}`, `{k}`, `{domain}`, `{other_classes}` (the dataset's other class
names, comma separated) and, in `repair`, `{problems}`. Only these names are substituted,
so literal braces (a JSON example) need no escaping. The template's sha256 (of the file's
bytes) goes into every cache key and into the label set's provenance.

The bundled templates end their user turn with the lines `Class: <name>` and
`Number of subtypes: <k>`; the scripted test server (`llmseg.stage1.testing.server`) finds the
class a request is about from that line. Keep them in your own templates if you want to
use that server with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmseg.errors import LlmsegError
from llmseg.io import sha256_bytes
from llmseg.resources import prompts_dir

DEFAULT_PROMPT = "subclasses.visual.v1"
VARIABLES = ("class_name", "k", "domain", "other_classes")
_SECTION = re.compile(r"^## (system|user|repair)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(class_name|k|domain|other_classes|problems)\}")

DEFAULT_SYSTEM = "You are a helpful assistant. You answer with JSON only."
DEFAULT_REPAIR = (
    "Your previous answer could not be used: {problems}.\n"
    'Answer again with only a JSON object {"subclasses": [...]} holding exactly {k} distinct subtypes of "{class_name}".'
)


class PromptError(LlmsegError, ValueError):
    """A prompt template that cannot be loaded or rendered; the message names the file."""


@dataclass(frozen=True)
class PromptTemplate:
    """One versioned template: its id, the text of each turn and the sha256 of its file."""

    id: str
    version: str
    description: str
    system: str
    user: str
    repair: str
    sha256: str
    path: Path | None = None

    def render(
        self, class_name: str, k: int, domain: str = "natural photographs", other_classes: list[str] | tuple[str, ...] = ()
    ) -> list[dict[str, str]]:
        """The first request's chat messages for one class."""
        values = self._values(class_name, k, domain, other_classes)
        messages = []
        if self.system:
            messages.append({"role": "system", "content": _fill(self.system, values)})
        messages.append({"role": "user", "content": _fill(self.user, values)})
        return messages

    def render_repair(
        self,
        class_name: str,
        k: int,
        problems: str,
        domain: str = "natural photographs",
        other_classes: list[str] | tuple[str, ...] = (),
    ) -> str:
        """The follow-up user turn that asks again after an unusable answer."""
        values = self._values(class_name, k, domain, other_classes)
        values["problems"] = problems
        return _fill(self.repair, values)

    @staticmethod
    def _values(class_name: str, k: int, domain: str, other_classes) -> dict[str, str]:
        others = ", ".join(other_classes) if other_classes else "(none)"
        return {"class_name": class_name, "k": str(k), "domain": domain, "other_classes": others}


def _fill(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _front_matter(text: str, source: str) -> tuple[dict[str, str], str]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise PromptError(f"{source}: a prompt template starts with a '---' front-matter header (id, version, description)")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration as exc:
        raise PromptError(f"{source}: the front-matter header is not closed by a '---' line") from exc
    header: dict[str, str] = {}
    for number, line in enumerate(lines[1:end], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise PromptError(f"{source}:{number}: front-matter lines are 'key: value', got {line!r}")
        key, value = line.split(":", 1)
        header[key.strip()] = value.strip()
    return header, "\n".join(lines[end + 1 :])


def parse_prompt(text: str, source: str = "<prompt>", path: Path | None = None) -> PromptTemplate:
    """Parse a template's text; errors name `source`."""
    header, body = _front_matter(text, source)
    for key in ("id", "version"):
        if not header.get(key):
            raise PromptError(f"{source}: the front matter needs '{key}:'")
    parts = _SECTION.split(body)
    sections: dict[str, str] = {}
    if parts[0].strip():
        if "## " in body:
            raise PromptError(f"{source}: text before the first '## system|user|repair' section")
        sections["user"] = parts[0].strip()  # a template with no sections is one user turn
    for name, content in zip(parts[1::2], parts[2::2], strict=True):
        if name in sections:
            raise PromptError(f"{source}: section '## {name}' appears twice")
        sections[name] = content.strip()
    user = sections.get("user", "")
    for variable in ("class_name", "k"):
        if "{" + variable + "}" not in user:
            raise PromptError(f"{source}: the user turn must contain {{{variable}}}")
    return PromptTemplate(
        id=header["id"],
        version=header["version"],
        description=header.get("description", ""),
        system=sections.get("system", DEFAULT_SYSTEM),
        user=user,
        repair=sections.get("repair") or DEFAULT_REPAIR,
        sha256=sha256_bytes(text.encode("utf-8")),
        path=path,
    )


def list_prompts() -> list[str]:
    """Ids of the bundled templates."""
    return sorted(p.name[: -len(".md")] for p in prompts_dir().glob("*.md"))


def load_prompt(id_or_path: str | Path) -> PromptTemplate:
    """A bundled template by id (`subclasses.visual.v1`) or a user's template file."""
    candidate = Path(id_or_path)
    if candidate.suffix == ".md" and candidate.is_file():
        path = candidate
    else:
        path = prompts_dir() / f"{id_or_path}.md"
        if not path.is_file():
            known = ", ".join(list_prompts())
            raise PromptError(f"unknown prompt '{id_or_path}': not a template file and not one of {known}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8: {exc}") from exc
    return parse_prompt(text, source=str(path), path=path)
