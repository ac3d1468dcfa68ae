"""Compare two label sets class by class (e.g. the same dataset from two LLMs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmseg.labelset import normalize_subclass


@dataclass
class ClassDiff:
    """One class's lists in A and B, compared after normalisation and ignoring case."""

    name: str
    common: list[str] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.only_a and not self.only_b

    @property
    def jaccard(self) -> float:
        union = len(self.common) + len(self.only_a) + len(self.only_b)
        return len(self.common) / union if union else 1.0


@dataclass
class LabelSetDiff:
    classes: list[ClassDiff]
    only_in_a: list[str]  # class keys present only in A
    only_in_b: list[str]

    @property
    def identical(self) -> bool:
        return not self.only_in_a and not self.only_in_b and all(c.same for c in self.classes)

    @property
    def changed(self) -> list[ClassDiff]:
        return [c for c in self.classes if not c.same]

    @property
    def mean_jaccard(self) -> float:
        return sum(c.jaccard for c in self.classes) / len(self.classes) if self.classes else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "classes_only_in_a": self.only_in_a,
            "classes_only_in_b": self.only_in_b,
            "mean_jaccard": round(self.mean_jaccard, 4),
            "changed": {c.name: {"common": c.common, "only_a": c.only_a, "only_b": c.only_b} for c in self.changed},
            "unchanged": [c.name for c in self.classes if c.same],
        }


def _keyed(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        normal = normalize_subclass(str(item))
        out.setdefault(normal.casefold(), normal)
    return out


def diff_label_sets(a: dict[str, list[str]], b: dict[str, list[str]]) -> LabelSetDiff:
    """Per class: subclasses in both, only in A, only in B (order of A, then of B)."""
    classes = []
    for name in a:
        if name not in b:
            continue
        ka, kb = _keyed(a[name]), _keyed(b[name])
        classes.append(
            ClassDiff(
                name,
                common=[v for key, v in ka.items() if key in kb],
                only_a=[v for key, v in ka.items() if key not in kb],
                only_b=[v for key, v in kb.items() if key not in ka],
            )
        )
    return LabelSetDiff(classes, [n for n in a if n not in b], [n for n in b if n not in a])


def format_diff(result: LabelSetDiff, label_a: str, label_b: str, show_all: bool = False) -> list[str]:
    """Human-readable lines: `- only in A`, `+ only in B`, `= in both` per changed class, then a summary."""
    lines = [f"--- {label_a}", f"+++ {label_b}"]
    for name in result.only_in_a:
        lines.append(f"class '{name}': only in {label_a}")
    for name in result.only_in_b:
        lines.append(f"class '{name}': only in {label_b}")
    for item in result.classes:
        if item.same and not show_all:
            continue
        lines.append(f"{item.name}:" + ("  (same)" if item.same else f"  (overlap {len(item.common)}, jaccard {item.jaccard:.2f})"))
        lines += [f"  - {s}" for s in item.only_a]
        lines += [f"  + {s}" for s in item.only_b]
        lines += [f"  = {s}" for s in item.common]
    shared = len(result.classes)
    lines.append(
        f"{len(result.changed)} of {shared} shared classes differ, {shared - len(result.changed)} identical; "
        f"mean jaccard {result.mean_jaccard:.3f}"
        + (f"; {len(result.only_in_a)} classes only in A, {len(result.only_in_b)} only in B" if result.only_in_a or result.only_in_b else "")
    )
    return lines
