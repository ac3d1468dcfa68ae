"""Refine a label set with the text encoder's eyes: re-ask the LLM for the subclasses CLIP confuses.

`llmseg validate --backbone` finds subclasses that sit nearer to another class than to their own,
near-duplicates and subclasses far from their class name (`llmseg.stage2.experiments.label_check`). This
module turns those findings into new requests: per flagged class, the LLM is told which of its
subtypes were rejected and why (the clash, with the other class and the cosines), which ones are
kept, and asked for exactly as many replacements. The requests go through the ordinary stage-one
machinery (`generate_label_set` on a one-class run with a derived prompt template), so retries,
parsing, repair turns and the resumable answer log are those of `llmseg subclasses`. The merged
label set is checked again; this repeats for up to `rounds` rounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmseg.errors import ConfigError
from llmseg.io import sha256_bytes
from llmseg.labelset import normalize_subclass

from .backends import make_backend
from .generate import generate_label_set
from .prompts import DEFAULT_PROMPT, PromptTemplate, load_prompt

if TYPE_CHECKING:
    from llmseg.stage2.experiments.label_check import ClipCheckReport

Checker = Callable[[Mapping[str, Sequence[str]]], "ClipCheckReport"]


@dataclass
class RefineRound:
    """One round: what was flagged (class -> {subclass: why}) and what replaced it (class -> new subclasses)."""

    flagged: dict[str, dict[str, str]]
    replaced: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RefineResult:
    label_set: dict[str, list[str]]
    rounds: list[RefineRound]
    remaining: ClipCheckReport  # the check of the final label set

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": [{"flagged": r.flagged, "replaced": r.replaced} for r in self.rounds],
            "remaining": self.remaining.flagged(),
        }


def clash_note(class_name: str, reasons: Mapping[str, str], kept: Sequence[str]) -> str:
    """The paragraph that tells the LLM what clashed: every rejected subtype with its reason, and what stays."""
    lines = [
        "",
        f'Some subtypes of "{class_name}" were rejected because the CLIP text encoder that uses them confuses them:',
        *[f"- {reason}" for reason in reasons.values()],
    ]
    if kept:
        lines.append("These subtypes are kept; do not repeat them: " + ", ".join(f"'{s}'" for s in kept) + ".")
    lines.append(
        f'List {{k}} new subtypes of "{class_name}" to replace the rejected ones: each clearly a "{class_name}", '
        "none of them close to the other classes or to the rejected subtypes named above."
    )
    return "\n".join(lines)


def clash_template(base: PromptTemplate, class_name: str, reasons: Mapping[str, str], kept: Sequence[str],
                   other_classes: Sequence[str], round_index: int = 0) -> PromptTemplate:
    """`base` for one class with the clash note appended to the user turn (other classes written in).

    The round goes into the template's sha256, so a later round's identical request is a new cache
    key: asked again, not replayed from the answer log.
    """
    others = ", ".join(other_classes) if other_classes else "(none)"
    note = clash_note(class_name, reasons, kept)
    user = base.user.replace("{other_classes}", others).rstrip() + "\n" + note
    repair = base.repair.replace("{other_classes}", others)
    digest = sha256_bytes(f"{base.sha256}\nrefine round {round_index}\n{user}\n{repair}".encode())  # its own cache keys
    return dataclasses.replace(base, id=f"{base.id}+refine", user=user, repair=repair, sha256=digest)


def _dedup(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = normalize_subclass(item).casefold()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def refine_label_set(
    label_set: Mapping[str, Sequence[str]],
    check: Checker,
    *,
    backend: str = "openai",
    model: str = "gpt-4o-mini",
    prompt: str | Path | PromptTemplate = DEFAULT_PROMPT,
    rounds: int = 2,
    other_classes: bool = True,
    domain: str | None = None,
    cache_path: Path | None = None,
    backend_instance: Any = None,
    backend_options: Mapping[str, Any] | None = None,
    **generate_options: Any,
) -> RefineResult:
    """Re-ask the LLM for every subclass `check` flags, until the check is clean or `rounds` rounds ran.

    Each class keeps its size: the flagged subclasses (and any repeat of a kept one) are replaced by
    as many new ones. `generate_options` go to `generate_label_set` (max_retries, temperature, seed,
    max_tokens, structured, backoff, progress ...); `backend_options` to the backend (base_url,
    api_key, api_key_env, timeout, device, dtype, gguf_file).
    """
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    template = prompt if isinstance(prompt, PromptTemplate) else load_prompt(prompt)
    current = {name: list(subs) for name, subs in label_set.items()}
    sizes = {name: len(subs) for name, subs in current.items()}
    engine = backend_instance or make_backend(backend, model, **dict(backend_options or {}))

    def ask(name: str, k: int, derived: PromptTemplate) -> list[str]:
        """`k` new subclasses of one class, through the ordinary stage-one machinery with the derived prompt."""
        answer, _meta = generate_label_set(
            [name], backend=backend, model=model, k=k, prompt=derived, other_classes=False,
            domain=domain, cache_path=cache_path, backend_instance=engine, **generate_options,
        )
        return list(answer.subclasses(name))

    history: list[RefineRound] = []
    try:
        report = check(current)
        for round_index in range(rounds):
            flagged = _flagged(report, current, sizes)
            if not flagged:
                break
            others = list(current) if other_classes else []
            history.append(_refine_round(current, sizes, flagged, template, others, round_index, ask))
            report = check(current)
    finally:
        if backend_instance is None:
            engine.close()
    return RefineResult(label_set=current, rounds=history, remaining=report)


def _flagged(report: ClipCheckReport, current: Mapping[str, Sequence[str]], sizes: Mapping[str, int]) -> dict[str, dict[str, str]]:
    """Class -> {subclass: why} of what the check flagged, plus every class an earlier answer left short."""
    flagged = report.flagged()
    for name in current:  # a class left short by an answer that repeated kept subtypes
        if len(current[name]) < sizes[name]:
            flagged.setdefault(name, {})[""] = (
                f"the previous answer repeated subtypes that are kept; {sizes[name] - len(current[name])} more are needed"
            )
    return flagged


def _refine_round(
    current: dict[str, list[str]], sizes: Mapping[str, int], flagged: dict[str, dict[str, str]], template: PromptTemplate,
    classes: Sequence[str], round_index: int, ask: Callable[[str, int, PromptTemplate], list[str]],
) -> RefineRound:
    """One round: every flagged class keeps its clean subclasses and asks (`ask`) for as many as were rejected.

    `current` is updated in place; `classes` are the other classes the prompt names (empty: none).
    """
    record = RefineRound(flagged=flagged)
    for name, reasons in flagged.items():
        kept = _dedup([s for s in current[name] if s not in reasons])
        missing = sizes[name] - len(kept)
        if missing < 1:  # only repeats were flagged: dropping them already fixes the class
            current[name] = kept
            continue
        others = [c for c in classes if c != name]
        derived = clash_template(template, name, reasons, kept, others, round_index)
        new = ask(name, missing, derived)
        record.replaced[name] = new
        current[name] = _dedup([*kept, *new])
    return record
